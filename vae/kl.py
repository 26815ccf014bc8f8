"""KL divergences and the KL-to-prior regularizer.

D_KL(q ‖ p) = E_q[log q(z) − log p(z)] ≥ 0, in nats.

In a VAE the KL term of the ELBO is the *reverse* direction D_KL(q(z|x) ‖ p(z)): the expectation is
under the approximate posterior q, the distribution being fitted (mode-seeking).

Closed forms (diagonal Gaussians, per latent dimension d):

    D_KL(N(μq, σq²) ‖ N(μp, σp²)) = ½ [ log σp² − log σq² + (σq² + (μq − μp)²) / σp² − 1 ]
    D_KL(N(μ, σ²) ‖ N(0, 1))      = ½ [ μ² + σ² − log σ² − 1 ]

Monte-Carlo estimate with K samples z_k ~ q:

    D̂_KL = 1/K Σ_k [ log q(z_k) − log p(z_k) ],   standard error = std_k / √K.

Every function returns values per latent dimension (shape ``(..., d)``) or per example (summed over the
latent dimensions, shape ``(...)``); none of them averages over latent dimensions (units contract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import reduce
from torch import Tensor, nn
from torch.distributions import Distribution, Normal

from vae.errors import ConfigError

KLEstimator = Literal["auto", "analytic", "mc"]


def gaussian_kl(
    mean_q: Tensor, logvar_q: Tensor, mean_p: Tensor | None = None, logvar_p: Tensor | None = None
) -> Tensor:
    """Closed-form D_KL(N(mean_q, exp(logvar_q)) ‖ N(mean_p, exp(logvar_p))) per dimension, in nats.

    With ``mean_p`` and ``logvar_p`` left out, p is the standard normal N(0, 1). Shapes broadcast; the
    result is element-wise (one value per latent dimension): sum over the last axis for the KL of the
    diagonal Gaussian.
    """
    if mean_p is None and logvar_p is None:
        return 0.5 * (mean_q.square() + logvar_q.exp() - logvar_q - 1.0)
    if mean_p is None or logvar_p is None:
        raise ValueError("gaussian_kl needs both mean_p and logvar_p, or neither (for N(0, 1))")
    # exp(logvar_q − logvar_p) is exactly 1 when q = p, so the KL is exactly 0 there.
    variance_ratio = (logvar_q - logvar_p).exp()
    return 0.5 * (logvar_p - logvar_q + variance_ratio + (mean_q - mean_p).square() / logvar_p.exp() - 1.0)


@dataclass(frozen=True)
class MonteCarloKL:
    """A Monte-Carlo KL estimate: the mean over samples and its standard error, same shape."""

    estimate: Tensor
    stderr: Tensor


def monte_carlo_kl(q: Distribution, p: Distribution, num_samples: int) -> MonteCarloKL:
    """Estimate D_KL(q ‖ p) = E_q[log q(z) − log p(z)] from ``num_samples`` reparameterised samples of q.

    The result has q's batch shape: per example for an ``Independent`` distribution, per dimension for
    a factorised one such as ``Normal``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    z = q.rsample((num_samples,))  # (k, *batch, *event)
    log_ratio = q.log_prob(z) - p.log_prob(z)  # (k, *batch)
    estimate = log_ratio.mean(dim=0)
    if num_samples == 1:
        return MonteCarloKL(estimate=estimate, stderr=torch.full_like(estimate, float("inf")))
    return MonteCarloKL(estimate=estimate, stderr=log_ratio.std(dim=0) / num_samples**0.5)


@dataclass(frozen=True)
class Regularized:
    """What the regularizer returns for a batch.

    z: a reparameterised posterior sample, (b, d).
    kl: D_KL(q(z|x) ‖ p(z)) per example, summed over latent dimensions, (b,), in nats.
    kl_per_dim: the same KL per latent dimension, (b, d); it sums to ``kl``.
    estimator: which estimator produced ``kl``: "analytic" or "mc".
    """

    z: Tensor
    kl: Tensor
    kl_per_dim: Tensor
    estimator: Literal["analytic", "mc"]


class KLRegularizer(nn.Module):
    """Turns the encoder's moments into a latent sample and its KL to the prior N(0, I).

    estimator: "analytic" uses the closed form, "mc" the Monte-Carlo estimate with ``num_samples``
    samples of q, "auto" the closed form wherever one exists (always, for the N(0, I) prior).
    z is one further reparameterised sample of q, so the reconstruction term stays unbiased.
    """

    def __init__(self, *, estimator: KLEstimator = "auto", num_samples: int = 1) -> None:
        super().__init__()
        if estimator not in ("auto", "analytic", "mc"):
            raise ConfigError(f"kl estimator must be 'auto', 'analytic' or 'mc', got {estimator!r}")
        if num_samples < 1:
            raise ConfigError(f"kl num_samples must be at least 1, got {num_samples}")
        self.estimator: Literal["analytic", "mc"] = "mc" if estimator == "mc" else "analytic"
        self.num_samples = num_samples

    def posterior(self, mean: Tensor, logvar: Tensor) -> Normal:
        """q(z|x) as a factorised Normal with batch shape (b, d)."""
        return Normal(mean, (0.5 * logvar).exp())

    def forward(self, mean: Tensor, logvar: Tensor) -> Regularized:
        q = self.posterior(mean, logvar)
        z = q.rsample()  # (b, d)
        if self.estimator == "analytic":
            kl_per_dim = gaussian_kl(mean, logvar)  # (b, d)
        else:
            prior = Normal(torch.zeros_like(mean), torch.ones_like(mean))
            kl_per_dim = monte_carlo_kl(q, prior, self.num_samples).estimate  # (b, d)
        kl = reduce(kl_per_dim, "b d -> b", "sum")
        return Regularized(z=z, kl=kl, kl_per_dim=kl_per_dim, estimator=self.estimator)
