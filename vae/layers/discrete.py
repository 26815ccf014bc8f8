"""Discrete latent layers: categorical and Bernoulli codes trained through the Gumbel-softmax / Concrete relaxation
(Jang et al. 2017; Maddison et al. 2017) and judged exactly. ``vae.models.joint`` sets them beside a continuous code
(JointVAE).

A discrete layer has n variables of K outcomes each: a categorical variable has K categories, a Bernoulli unit the
K = 2 outcomes (1, 0). From the normalised log-probabilities log π, (b, n, K), and Gumbel noise g it draws

    hard              c = one_hot(argmax_k (log π_k + g_k))   an exact sample of q (the Gumbel-max trick)
    relaxed           c̃ = softmax((log π + g) / τ)           the Concrete sample at temperature τ, → c as τ → 0
    straight-through  c in the forward pass, the gradient of c̃

from the same noise. Training decodes c̃ (or c, straight-through); validation, test, ``vae evaluate`` and sampling
decode the exact c, so every ELBO and log-likelihood reported is the discrete model's own. The temperature follows
the trainer's global step, τ(t) = max(τ_min, τ_0·exp(−r·t)) (Jang et al.), so a resumed run continues exactly.

The KL to the prior p (uniform, or learned logits) per variable, in nats:

    closed form  D_KL(q ‖ p) = Σ_k q_k (log q_k − log p_k), in log space (``vae.core.kl.kl_from_log_probs``: 0·log 0
    = 0,
                 +inf where q_k > 0 = p_k, never nan); to the uniform prior it is log K − H(q)
    Monte Carlo  log q(c) − log p(c) at the hard sample c, unbiased; its gradient by the score function,
                 ∇[log q(c) − log p(c)] + [log q(c) − log p(c)]·∇log q(c), unbiased too, with more variance

The layer's KL estimator is ``model.kl_estimator`` ("auto" is the closed form).

Axes: b batch, n variables, k and o outcomes (categories), s samples per example.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.distributions import Independent, OneHotCategorical

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.core.kl import Estimator, KLEstimator, bernoulli_log_probs, kl_from_log_probs
from vae.layers.latents import LatentLayer, LatentSample

DiscretePrior = Literal["uniform", "learned"]


@dataclass(frozen=True)
class Temperature:
    """τ(t) = max(``minimum``, ``start``·exp(−``rate``·t)) at global step t; ``rate`` 0 keeps ``start``."""

    start: float = 0.67
    minimum: float = 0.5
    rate: float = 0.0

    def __post_init__(self) -> None:
        if not self.start > 0 or not self.minimum > 0 or self.rate < 0:
            raise ConfigError(
                f"the relaxation's temperature and min_temperature must be positive and its anneal_rate 0 or more, "
                f"got {self.start}, {self.minimum} and {self.rate}"
            )
        if self.rate > 0 and self.minimum > self.start:
            raise ConfigError(
                f"min_temperature ({self.minimum}) is above the starting temperature ({self.start}): the annealed "
                "temperature falls from temperature to min_temperature"
            )

    def at(self, step: int | None) -> float:
        """τ at global step ``step`` (None: the end of the schedule)."""
        if self.rate == 0:
            return self.start
        if step is None:
            return self.minimum
        return max(self.minimum, self.start * math.exp(-self.rate * step))


def gumbel_draws(log_probs: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(hard one-hot sample, relaxed sample), both (..., K), from one draw of Gumbel noise."""
    perturbed = log_probs - torch.empty_like(log_probs).exponential_().log()  # log π + g, g = −log E, E ~ Exp(1)
    hard = F.one_hot(perturbed.argmax(dim=-1), log_probs.shape[-1]).to(log_probs.dtype)
    return hard, (perturbed / temperature).softmax(dim=-1)


def score_function(value: Tensor, log_q: Tensor) -> Tensor:
    """``value`` unchanged, with the gradient ∇value + value·∇log q: the unbiased gradient of E_q[value] when the
    sample behind ``value`` was drawn from q without reparameterisation. An infinite value (a sample the prior
    cannot draw) stays infinite, without a nan from inf·0."""
    weight = torch.where(torch.isfinite(value), value.detach(), torch.zeros_like(value))
    return value + weight * (log_q - log_q.detach())


class DiscreteLatent(LatentLayer, ABC):
    """n discrete variables of K outcomes each, read from features by a linear head, against a uniform or a learned
    prior. Subclasses say how the head's outputs become log-probabilities and how a one-hot draw becomes the code
    passed to the decoder."""

    categories: int
    code_features: int

    def __init__(
        self,
        *,
        name: str,
        variables: int,
        categories: int,
        head_features: int,
        in_features: int,
        prior: DiscretePrior,
        straight_through: bool,
        kl_estimator: KLEstimator,
    ) -> None:
        super().__init__()
        if variables < 1:
            raise ConfigError(f"a discrete latent layer needs at least one variable, got {variables}")
        if prior not in ("uniform", "learned"):
            raise ConfigError(f"the discrete prior must be 'uniform' or 'learned', got {prior!r}")
        if kl_estimator not in ("auto", "analytic", "mc"):
            raise ConfigError(f"the KL estimator must be 'auto', 'analytic' or 'mc', got {kl_estimator!r}")
        self.name, self.units, self.categories = name, variables, categories
        self.head = nn.Linear(in_features, head_features)
        self.prior_kind = prior
        prior_logits = torch.zeros(head_features)
        if prior == "learned":
            self.prior_logits = nn.Parameter(prior_logits)
        else:
            self.register_buffer("prior_logits", prior_logits)
        self.straight_through = straight_through
        self.kl_estimator: Estimator = "mc" if kl_estimator == "mc" else "analytic"

    @property
    def kl_description(self) -> str:
        return "closed form" if self.kl_estimator == "analytic" else "Monte Carlo, 1 sample, score-function gradient"

    @abstractmethod
    def log_probs(self, raw: Tensor) -> Tensor:
        """The head's outputs (..., head features) as normalised log-probabilities (..., n, K)."""

    @abstractmethod
    def code(self, one_hot: Tensor) -> Tensor:
        """Draws (b, n, K), hard or relaxed, as the code the decoder reads, (b, code features)."""

    def prior_log_probs(self) -> Tensor:
        """log p per variable, (n, K): uniform (log 1/K), or the learned logits normalised."""
        return self.log_probs(self.prior_logits)

    def posterior_log_probs(self, h: Tensor) -> Tensor:
        """log q(c | x) per variable, (b, n, K), in float32 under autocast."""
        return self.log_probs(full_precision(self.head(h)))

    def forward(self, h: Tensor, *, samples: int = 1, temperature: float = 1.0) -> LatentSample:
        """h: features (b, f). In training the code is the relaxed draw at ``temperature`` (the hard one with
        straight-through); otherwise the exact hard draw. With ``samples`` K, K·b rows laid out "(k b)"."""
        log_q = self.posterior_log_probs(h)
        if samples > 1:
            log_q = repeat(log_q, "b n o -> (s b) n o", s=samples)
        log_p = self.prior_log_probs().expand_as(log_q)
        hard, relaxed = gumbel_draws(log_q, temperature)
        if not self.training:
            draw = hard
        elif self.straight_through:
            draw = hard + (relaxed - relaxed.detach())  # exactly the hard draw forward: r − r is exactly 0
        else:
            draw = relaxed
        if self.kl_estimator == "analytic":
            kl = kl_from_log_probs(log_q, log_p)  # (b, n)
        else:
            index = hard.argmax(dim=-1, keepdim=True)  # a gather, not hard·log q: 0·(−inf) would be nan
            log_q_c, log_p_c = log_q.gather(-1, index)[..., 0], log_p.gather(-1, index)[..., 0]  # (b, n)
            kl = score_function(log_q_c - log_p_c, log_q_c)
        return LatentSample(
            z=self.code(draw),
            kl=kl.sum(dim=-1),
            kl_per_unit=kl,
            posterior_mean=self.mean(log_q),
            posterior=one_hot_distribution(log_q),
            prior=one_hot_distribution(log_p),
            estimator=self.kl_estimator,
            event=hard,
        )

    def mean(self, log_q: Tensor) -> Tensor:
        """E_q of the code as (b, units, positions), for the latent statistics."""
        return log_q.exp()

    def mode(self, h: Tensor) -> Tensor:
        """The code of the most probable outcome of each variable, (b, code features)."""
        log_q = self.posterior_log_probs(h)
        return self.code(F.one_hot(log_q.argmax(dim=-1), self.categories).to(log_q.dtype))

    def sample_prior(self, n: int, *, temperature: float = 1.0) -> Tensor:
        """n codes drawn from the prior, its log-probabilities divided by ``temperature`` (sharper below 1)."""
        log_p = repeat(self.prior_log_probs() / temperature, "v k -> b v k", b=n)
        return self.code(OneHotCategorical(logits=log_p).sample())

    def outcomes(self, variable: int, base: Tensor) -> Tensor:
        """The code ``base`` (code features,) with one variable set to each of its K outcomes in turn, (K, code
        features)."""
        draws = repeat(self.decode_code(base), "v k -> o v k", o=self.categories).clone()
        draws[:, variable] = torch.eye(self.categories, device=base.device, dtype=base.dtype)
        return self.code(draws)

    @abstractmethod
    def decode_code(self, code: Tensor) -> Tensor:
        """A code (code features,) back to its one-hot draws (n, K)."""


def one_hot_distribution(log_probs: Tensor) -> Independent:
    """n independent one-hot categoricals, batch (b,), event (n, K): their log densities at the hard draw give the
    importance weights."""
    return Independent(OneHotCategorical(logits=log_probs, validate_args=False), 1, validate_args=False)


class CategoricalLatent(DiscreteLatent):
    """``variables`` categorical variables of ``categories`` categories, decoded as their concatenated one-hot
    codes; a single variable clusters the data (its most probable category), which ``vae evaluate`` scores."""

    def __init__(
        self,
        *,
        name: str,
        in_features: int,
        categories: int = 10,
        variables: int = 1,
        prior: DiscretePrior = "uniform",
        straight_through: bool = False,
        kl_estimator: KLEstimator = "auto",
    ) -> None:
        if categories < 2:
            raise ConfigError(f"a categorical latent needs at least 2 categories, got {categories}")
        super().__init__(
            name=name,
            variables=variables,
            categories=categories,
            head_features=variables * categories,
            in_features=in_features,
            prior=prior,
            straight_through=straight_through,
            kl_estimator=kl_estimator,
        )
        self.positions = categories
        self.code_features = variables * categories
        self.clusters = variables == 1

    def log_probs(self, raw: Tensor) -> Tensor:
        return rearrange(raw, "... (n k) -> ... n k", k=self.categories).log_softmax(dim=-1)

    def code(self, one_hot: Tensor) -> Tensor:
        return rearrange(one_hot, "... n k -> ... (n k)")

    def decode_code(self, code: Tensor) -> Tensor:
        return rearrange(code, "(n k) -> n k", k=self.categories)


class BernoulliLatent(DiscreteLatent):
    """``units`` binary units, each Bernoulli with a logit ℓ: the outcomes (1, 0) with log-probabilities
    (log σ(ℓ), log σ(−ℓ)), relaxed as the binary Concrete (the two-outcome Gumbel-softmax); decoded as the units'
    values in {0, 1} (relaxed in (0, 1))."""

    def __init__(
        self,
        *,
        name: str,
        in_features: int,
        units: int,
        prior: DiscretePrior = "uniform",
        straight_through: bool = False,
        kl_estimator: KLEstimator = "auto",
    ) -> None:
        super().__init__(
            name=name,
            variables=units,
            categories=2,
            head_features=units,
            in_features=in_features,
            prior=prior,
            straight_through=straight_through,
            kl_estimator=kl_estimator,
        )
        self.positions = 1
        self.code_features = units

    def log_probs(self, raw: Tensor) -> Tensor:
        return bernoulli_log_probs(raw)

    def code(self, one_hot: Tensor) -> Tensor:
        return one_hot[..., 0]  # the indicator of the outcome 1

    def mean(self, log_q: Tensor) -> Tensor:
        return log_q[..., :1].exp()  # q(1), (b, n, 1)

    def decode_code(self, code: Tensor) -> Tensor:
        return torch.stack([code, 1 - code], dim=-1)

    def outcomes(self, variable: int, base: Tensor) -> Tensor:
        """The code ``base`` with one unit set to 0 and then to 1, (2, units)."""
        return super().outcomes(variable, base).flip(0)  # the outcomes are ordered (1, 0)
