"""KL divergences: closed forms, the Monte-Carlo estimator, one entry point, and the KL-to-prior regularizer.

    D_KL(P ‖ Q) = E_P[log P(x) − log Q(x)] ≥ 0   (nats; 0 exactly when P = Q; Gibbs' inequality)

Every function here computes D_KL(first argument ‖ second argument). The direction matters:

- forward KL, D_KL(P_data ‖ Q_θ): the expectation is under the data. Minimising it over θ is maximum
  likelihood (E_P[−log Q_θ] = D_KL(P ‖ Q_θ) + H(P), and H(P) does not depend on θ). It is mode-covering:
  Q_θ is punished wherever P has mass and Q_θ has none.
- reverse KL, D_KL(Q_φ ‖ P): the expectation is under the model being fitted. Variational inference
  minimises it, and the ELBO's KL term D_KL(q(z|x) ‖ p(z)) is of this kind: ``kl_divergence(posterior,
  prior)``. It is mode-seeking: Q_φ is punished wherever it puts mass that P lacks.

Closed forms (per event element where the distribution factorises):

    categorical    Σ_x P(x) [log P(x) − log Q(x)], with 0·log 0 = 0 and +inf where Q(x) = 0 < P(x)
    Bernoulli      the categorical form over the outcomes {1, 0}, from logits via log σ(±ℓ)
    Gaussian 1-d   ½ [ log σq² − log σp² + (σp² + (μp − μq)²) / σq² − 1 ]
    to N(0, 1)     ½ [ μ² + σ² − log σ² − 1 ]
    Gaussian k-d   ½ [ log det Σq − log det Σp − k + tr(Σq⁻¹Σp) + (μq − μp)ᵀ Σq⁻¹ (μq − μp) ]   (Cholesky)

Monte-Carlo estimate with K samples x_k ~ P:  D̂ = 1/K Σ_k [log P(x_k) − log Q(x_k)], standard error
std_k / √K. Unbiased, and the only choice where no closed form exists (a mixture or VampPrior prior).

Values are per example (event dimensions summed) and, for factorised distributions, per dimension;
nothing is ever averaged over latent dimensions (the units contract).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, MultivariateNormal, Normal

from vae.core.errors import ConfigError

KLEstimator = Literal["auto", "analytic", "mc"]
Estimator = Literal["analytic", "mc"]


# ---------------------------------------------------------------------------------------------------
# Closed forms on tensors


def kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """D_KL(P ‖ Q) = Σ_x P(x) [log P(x) − log Q(x)] over the last axis, from log-probabilities.

    Support is handled exactly: outcomes with P(x) = 0 contribute 0 (0·log 0 = 0, whatever Q is), and an
    outcome with Q(x) = 0 < P(x) makes the KL +inf, never nan, however small P(x) is (also where exp(log P(x))
    underflows to 0). Gradients stay finite wherever the value is.
    """
    absent = log_p == -math.inf  # P(x) = 0
    mismatch = ~absent & (log_q == -math.inf)  # Q(x) = 0 < P(x)
    masked = absent | mismatch
    # Replacing the masked log-probabilities (not only the product) keeps -inf and nan out of the gradient.
    log_p = torch.where(masked, torch.zeros_like(log_p), log_p)
    log_q = torch.where(masked, torch.zeros_like(log_q), log_q)
    terms = torch.where(masked, torch.zeros_like(log_p), log_p.exp() * (log_p - log_q))
    return torch.where(mismatch, torch.full_like(terms, math.inf), terms).sum(dim=-1)


def log_of_probs(probs: Tensor) -> Tensor:
    """log p, −inf where p = 0, with a finite gradient there (d log p / dp would be inf, and inf·0 is nan)."""
    positive = probs > 0
    log = torch.where(positive, probs, torch.ones_like(probs)).log()
    return torch.where(positive, log, torch.full_like(log, -math.inf))


def smooth_log_probs(log_p: Tensor, eps: float) -> Tensor:
    """Clamp probabilities to at least ``eps`` and renormalise, in log space (last axis)."""
    clamped = log_p.clamp_min(math.log(eps))
    return clamped - clamped.logsumexp(dim=-1, keepdim=True)


def check_probabilities(probs: Tensor, name: str) -> None:
    """Reject vectors that are not distributions over the last axis."""
    if (probs < 0).any() or not torch.allclose(probs.sum(-1), probs.new_ones(()), atol=1e-4):
        raise ValueError(
            f"{name} must hold probabilities (non-negative, summing to 1 over the last axis); "
            "pass logits=True for unnormalised log-probabilities"
        )


def categorical_kl(p: Tensor, q: Tensor, *, logits: bool = False, empirical_eps: float | None = None) -> Tensor:
    """D_KL(P ‖ Q) between categorical distributions over the last axis, in nats, computed in log space.

    p, q: probabilities (..., n), or unnormalised log-probabilities with ``logits=True`` (normalised by
    log_softmax, so softmax is never taken and logged again). Shapes broadcast; the result is (...).
    Returns +inf when Q(x) = 0 < P(x) (support mismatch); outcomes with P(x) = 0 contribute 0.

    empirical_eps: for empirical histograms only. Clamps both distributions' probabilities to at least this
    value and renormalises before the KL, so an empty bin gives a large finite KL instead of inf. Off by
    default: it changes the answer, and an infinite KL is the true one when the supports differ.
    """
    if logits:
        log_p, log_q = p.log_softmax(dim=-1), q.log_softmax(dim=-1)
    else:
        check_probabilities(p, "p")
        check_probabilities(q, "q")
        log_p, log_q = log_of_probs(p), log_of_probs(q)
    if empirical_eps is not None:
        if not 0 < empirical_eps < 1:
            raise ValueError(f"empirical_eps must be between 0 and 1, got {empirical_eps}")
        log_p, log_q = smooth_log_probs(log_p, empirical_eps), smooth_log_probs(log_q, empirical_eps)
    return kl_from_log_probs(log_p, log_q)


def bernoulli_log_probs(logits: Tensor) -> Tensor:
    """(log P(x=1), log P(x=0)) = (log σ(ℓ), log σ(−ℓ)) on a new last axis: exact for any finite logit."""
    return torch.stack([F.logsigmoid(logits), F.logsigmoid(-logits)], dim=-1)


def bernoulli_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """D_KL(Bern(σ(p_logits)) ‖ Bern(σ(q_logits))) element-wise, in nats.

    Computed from logits in log space, so it stays exact where σ(ℓ) rounds to 0 or 1; infinite logits are
    certain outcomes and follow the support rules of ``kl_from_log_probs``.
    """
    return kl_from_log_probs(bernoulli_log_probs(p_logits), bernoulli_log_probs(q_logits))


def diagonal_gaussian_kl(
    mean_p: Tensor, logvar_p: Tensor, mean_q: Tensor | None = None, logvar_q: Tensor | None = None
) -> Tensor:
    """D_KL(N(mean_p, exp(logvar_p)) ‖ N(mean_q, exp(logvar_q))) element-wise (one value per dimension).

    With ``mean_q`` and ``logvar_q`` left out, Q is the standard normal N(0, 1). Shapes broadcast; sum over
    the last axis for the KL of the diagonal Gaussian.
    """
    if mean_q is None and logvar_q is None:
        return 0.5 * (mean_p.square() + logvar_p.exp() - logvar_p - 1.0)
    if mean_q is None or logvar_q is None:
        raise ValueError("diagonal_gaussian_kl needs both mean_q and logvar_q, or neither (for N(0, 1))")
    # exp(logvar_p − logvar_q) is exactly 1 when P = Q, so the KL is exactly 0 there.
    variance_ratio = (logvar_p - logvar_q).exp()
    return 0.5 * (logvar_q - logvar_p + variance_ratio + (mean_p - mean_q).square() / logvar_q.exp() - 1.0)


def full_gaussian_kl(mean_p: Tensor, scale_tril_p: Tensor, mean_q: Tensor, scale_tril_q: Tensor) -> Tensor:
    """D_KL(N(μp, Σp) ‖ N(μq, Σq)) for full covariances given by their Cholesky factors Σ = L Lᵀ.

        ½ [ log det Σq − log det Σp − k + tr(Σq⁻¹Σp) + (μq − μp)ᵀ Σq⁻¹ (μq − μp) ]

    with log det Σ = 2 Σ_i log L_ii, tr(Σq⁻¹Σp) = ‖Lq⁻¹ Lp‖²_F and the quadratic form ‖Lq⁻¹(μq − μp)‖²:
    triangular solves only, no inverse or determinant is formed, so it stays accurate for k in the hundreds
    (use float64 there). Means (..., k), factors (..., k, k); batch axes broadcast; the result is (...).
    """
    k = mean_p.shape[-1]
    log_diag_p = torch.diagonal(scale_tril_p, dim1=-2, dim2=-1).log()
    log_diag_q = torch.diagonal(scale_tril_q, dim1=-2, dim2=-1).log()
    half_log_det_ratio = log_diag_q.sum(-1) - log_diag_p.sum(-1)  # ½ log(det Σq / det Σp)
    trace = torch.linalg.solve_triangular(scale_tril_q, scale_tril_p, upper=False).square().sum((-2, -1))
    diff = rearrange(mean_q - mean_p, "... k -> ... k 1")
    mahalanobis = torch.linalg.solve_triangular(scale_tril_q, diff, upper=False).square().sum((-2, -1))
    return 0.5 * (2.0 * half_log_det_ratio - k + trace + mahalanobis)


# ---------------------------------------------------------------------------------------------------
# Closed forms on torch.distributions objects, and the registry that ``kl_divergence`` consults

ClosedForm = Callable[[Distribution, Distribution], Tensor]
CLOSED_FORMS: dict[tuple[type[Distribution], type[Distribution]], ClosedForm] = {}


def register_kl(type_p: type[Distribution], type_q: type[Distribution]) -> Callable[[ClosedForm], ClosedForm]:
    """Register a closed-form D_KL(P ‖ Q) for a pair of distribution types (subclasses match too).

    The function takes (p, q) and returns the KL over their batch shape; for element-wise families such as
    ``Normal`` that is one value per dimension, and ``Independent`` wrappers are summed for you.
    """

    def decorator(fn: ClosedForm) -> ClosedForm:
        CLOSED_FORMS[(type_p, type_q)] = fn
        return fn

    return decorator


def outcome_log_probs(d: Bernoulli | Categorical) -> Tensor:
    """log-probabilities of every outcome, on the last axis, exact in the parameter the user gave.

    torch derives logits from probabilities by clamping them away from 0 and 1, which would turn a support
    mismatch into a large finite number; so a distribution built from probabilities is read through them.
    """
    built_from_probs = d._param is vars(d).get("probs")
    if isinstance(d, Bernoulli):
        if built_from_probs:
            return log_of_probs(torch.stack([d.probs, 1 - d.probs], dim=-1))
        return bernoulli_log_probs(d.logits)
    return log_of_probs(d.probs) if built_from_probs else d.logits  # Categorical's logits are normalised already


@register_kl(Normal, Normal)
def _normal_normal(p: Normal, q: Normal) -> Tensor:
    return diagonal_gaussian_kl(p.loc, 2.0 * p.scale.log(), q.loc, 2.0 * q.scale.log())


@register_kl(MultivariateNormal, MultivariateNormal)
def _mvn_mvn(p: MultivariateNormal, q: MultivariateNormal) -> Tensor:
    return full_gaussian_kl(p.loc, p.scale_tril, q.loc, q.scale_tril)


@register_kl(Bernoulli, Bernoulli)
@register_kl(Categorical, Categorical)
def _discrete(p: Bernoulli | Categorical, q: Bernoulli | Categorical) -> Tensor:
    return kl_from_log_probs(outcome_log_probs(p), outcome_log_probs(q))


def describe(d: Distribution) -> str:
    """A distribution's family for messages: ``Independent(Normal)``, ``MixtureSameFamily``."""
    name = type(d).__name__
    return f"{name}({describe(d.base_dist)})" if isinstance(d, Independent) else name


def lookup(p: Distribution, q: Distribution) -> ClosedForm | None:
    for type_p in type(p).__mro__:
        for type_q in type(q).__mro__:
            if (type_p, type_q) in CLOSED_FORMS:
                return CLOSED_FORMS[(type_p, type_q)]
    return None


def factorised(p: Distribution, q: Distribution) -> bool:
    """Both are ``Independent`` over the same number of event axes, so the KL splits per event element."""
    return (
        isinstance(p, Independent)
        and isinstance(q, Independent)
        and p.reinterpreted_batch_ndims == q.reinterpreted_batch_ndims
    )


def as_multivariate(d: Distribution) -> Distribution:
    """A diagonal Gaussian over one event axis as the ``MultivariateNormal`` it is (a diagonal Cholesky factor);
    any other distribution unchanged."""
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1:
        normal = d.base_dist
        return MultivariateNormal(normal.loc, scale_tril=torch.diag_embed(normal.scale), validate_args=False)
    return d


def gaussian_pair(p: Distribution, q: Distribution) -> tuple[Distribution, Distribution]:
    """A full-covariance Gaussian against a diagonal one (a correlated posterior against N(0, I), a diagonal
    posterior against a full-covariance prior): both as ``MultivariateNormal``, so the closed form applies."""
    if isinstance(p, MultivariateNormal) != isinstance(q, MultivariateNormal):
        return as_multivariate(p), as_multivariate(q)
    return p, q


def has_closed_form(p: Distribution, q: Distribution) -> bool:
    p, q = gaussian_pair(p, q)
    if factorised(p, q):
        return lookup(p.base_dist, q.base_dist) is not None
    return lookup(p, q) is not None


# ---------------------------------------------------------------------------------------------------
# Estimators and the single entry point


@dataclass(frozen=True)
class KLResult:
    """D_KL(P ‖ Q) for a batch.

    kl: per example, over P's batch shape (event dimensions summed), in nats.
    per_dim: per event element (batch + event shape) for factorised P and Q, summing to ``kl``; else None.
    estimator: which estimator produced it, "analytic" or "mc".
    stderr: the Monte-Carlo standard error of ``kl`` (std over samples / √K) with K ≥ 2 samples; else None.
    """

    kl: Tensor
    per_dim: Tensor | None
    estimator: Estimator
    stderr: Tensor | None = None


def sum_event(per_dim: Tensor, event_ndims: int) -> Tensor:
    return per_dim.sum(dim=tuple(range(-event_ndims, 0))) if event_ndims else per_dim


def analytic_kl(p: Distribution, q: Distribution) -> KLResult:
    """The closed-form D_KL(P ‖ Q); a ``ConfigError`` if none is registered for the pair."""
    p, q = gaussian_pair(p, q)
    if factorised(p, q) and (closed := lookup(p.base_dist, q.base_dist)) is not None:
        per_dim = closed(p.base_dist, q.base_dist)
        return KLResult(sum_event(per_dim, p.reinterpreted_batch_ndims), per_dim, "analytic")
    if (closed := lookup(p, q)) is not None:
        return KLResult(closed(p, q), None, "analytic")
    raise ConfigError(
        f"no closed-form KL is registered for {describe(p)} ‖ {describe(q)}: use the estimator 'mc' "
        "(or 'auto'), or register one with vae.core.kl.register_kl"
    )


def monte_carlo_kl(
    p: Distribution, q: Distribution, *, num_samples: int = 1, samples: Tensor | None = None
) -> KLResult:
    """Estimate D_KL(P ‖ Q) = E_P[log P(x) − log Q(x)] from K samples of P.

    samples: (K, *batch, *event) draws from P to use (the VAE passes the z it decodes); by default
    ``num_samples`` are drawn, reparameterised where P allows it, so the estimate has pathwise gradients.
    """
    if samples is None:
        if num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
        shape = torch.Size([num_samples])
        samples = p.rsample(shape) if p.has_rsample else p.sample(shape)
    k = samples.shape[0]
    if factorised(p, q):
        per_sample_dim = p.base_dist.log_prob(samples) - q.base_dist.log_prob(samples)  # (k, *batch, *event)
        per_dim = per_sample_dim.mean(dim=0)
        log_ratio = sum_event(per_sample_dim, p.reinterpreted_batch_ndims)  # (k, *batch)
    else:
        per_dim = None
        log_ratio = p.log_prob(samples) - q.log_prob(samples)  # (k, *batch)
    stderr = log_ratio.std(dim=0) / k**0.5 if k > 1 else None
    return KLResult(log_ratio.mean(dim=0), per_dim, "mc", stderr)


def resolve_estimator(p: Distribution, q: Distribution, estimator: KLEstimator) -> Estimator:
    """The estimator to use: "auto" is the closed form where one is registered, Monte Carlo elsewhere.

    Asking for "analytic" where no closed form exists is an error, never a silent fallback.
    """
    if estimator not in get_args(KLEstimator):
        raise ConfigError(f"the KL estimator must be 'auto', 'analytic' or 'mc', got {estimator!r}")
    if estimator == "mc":
        return "mc"
    if has_closed_form(p, q):
        return "analytic"
    if estimator == "analytic":
        raise ConfigError(
            f"the KL estimator 'analytic' needs a closed form, and none exists for {describe(p)} ‖ {describe(q)}: "
            "use 'auto' or 'mc'"
        )
    return "mc"


def kl_divergence(
    p: Distribution, q: Distribution, *, estimator: KLEstimator = "auto", num_samples: int = 1
) -> KLResult:
    """D_KL(P ‖ Q) for torch.distributions objects, closed form or Monte Carlo; the result says which.

    Forward and reverse KL are the two argument orders: ``kl_divergence(data, model)`` is what maximum
    likelihood minimises, ``kl_divergence(posterior, prior)`` is the KL term of the ELBO.
    """
    if resolve_estimator(p, q, estimator) == "analytic":
        return analytic_kl(p, q)
    return monte_carlo_kl(p, q, num_samples=num_samples)


# ---------------------------------------------------------------------------------------------------
# The VAE's regularizer


@dataclass(frozen=True)
class Regularized:
    """What the regularizer returns for a batch.

    z: a reparameterised posterior sample, (b, d).
    kl: D_KL(q(z|x) ‖ p(z)) per example, summed over latent dimensions, (b,), in nats.
    kl_per_dim: the same KL per latent dimension, (b, d), summing to ``kl``; None where the prior does not
        factorise over dimensions (a mixture, the VampPrior).
    estimator: which estimator produced ``kl``: "analytic" or "mc".
    """

    z: Tensor
    kl: Tensor
    kl_per_dim: Tensor | None
    estimator: Estimator


class KLRegularizer(nn.Module):
    """Turns a posterior q(z|x) and a prior p(z) into a latent sample and D_KL(q(z|x) ‖ p(z)).

    estimator: "analytic" uses the closed form (an error where none exists), "mc" the Monte-Carlo estimate
    from ``num_samples`` samples of q, "auto" the closed form where one is registered and Monte Carlo
    elsewhere. With "mc", z is the first of the samples, so with one sample the per-example objective is the
    classic single-sample ELBO log p(x|z) + log p(z) − log q(z|x).
    """

    def __init__(self, *, estimator: KLEstimator = "auto", num_samples: int = 1) -> None:
        super().__init__()
        if estimator not in get_args(KLEstimator):
            raise ConfigError(f"kl estimator must be 'auto', 'analytic' or 'mc', got {estimator!r}")
        if num_samples < 1:
            raise ConfigError(f"kl num_samples must be at least 1, got {num_samples}")
        self.estimator = estimator
        self.num_samples = num_samples

    def forward(self, posterior: Distribution, prior: Distribution) -> Regularized:
        """posterior: batch shape (b,), event shape (d,); prior: event shape (d,)."""
        if resolve_estimator(posterior, prior, self.estimator) == "analytic":
            z = posterior.rsample()  # (b, d)
            result = analytic_kl(posterior, prior)
        else:
            samples = posterior.rsample(torch.Size([self.num_samples]))  # (k, b, d)
            z = samples[0]
            result = monte_carlo_kl(posterior, prior, samples=samples)
        return Regularized(z=z, kl=result.kl, kl_per_dim=result.per_dim, estimator=result.estimator)
