"""Gaussian posteriors as the networks emit them: ``GaussianMoments`` (mean, log-variance) with the log-variance
soft-clamped to ±``LOGVAR_BOUND`` (so exp never overflows and the KL stays finite), ``FullGaussianMoments`` (mean and a
Cholesky factor of the covariance), and ``full_precision``: the densities and the KL are computed in float32 even under
bf16/fp16 autocast."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import repeat
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal

LOGVAR_BOUND = 10.0
"""|log σ²| stays below this (σ² between 4.5e-5 and 2.2e4): exp never overflows and KL stays finite."""


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """A smooth clamp to (−bound, bound): identity near 0, with gradient everywhere."""
    return bound * torch.tanh(x / bound)


def full_precision(x: Tensor) -> Tensor:
    """float16/bfloat16 (from autocast) → float32; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass(frozen=True)
class GaussianMoments:
    """A diagonal Gaussian posterior q(z|x) = N(mean, exp(logvar)); both (b, d)."""

    mean: Tensor
    logvar: Tensor

    def distribution(self) -> Independent:
        """The diagonal Gaussian as a distribution: batch shape (b,), event shape (d,)."""
        # Float32 even under bf16 autocast (the KL and log-densities need it); no argument validation: the
        # scale is exp(·) > 0 by construction, and the checks cost a host sync per step on a GPU.
        mean, scale = full_precision(self.mean), (0.5 * full_precision(self.logvar)).exp()
        return Independent(Normal(mean, scale, validate_args=False), 1, validate_args=False)

    def repeat(self, k: int) -> GaussianMoments:
        """Each example's moments k times, rows laid out "(k b)"."""
        return GaussianMoments(*(repeat(m, "b d -> (k b) d", k=k) for m in (self.mean, self.logvar)))


@dataclass(frozen=True)
class FullGaussianMoments:
    """A full-covariance Gaussian posterior q(z|x) = N(mean, L Lᵀ): mean (b, d), scale_tril L (b, d, d), lower
    triangular with a positive diagonal (a Cholesky factor). ``logvar`` is the log of the covariance's diagonal (the
    marginal variances Σ_j L_ij², what a code's variance means), so it stands wherever ``GaussianMoments`` does."""

    mean: Tensor
    scale_tril: Tensor

    @property
    def logvar(self) -> Tensor:
        return full_precision(self.scale_tril).square().sum(dim=-1).log()

    def distribution(self) -> MultivariateNormal:
        """N(mean, L Lᵀ): batch shape (b,), event shape (d,); log-densities and the KL by triangular solves."""
        mean, scale_tril = full_precision(self.mean), full_precision(self.scale_tril)
        return MultivariateNormal(mean, scale_tril=scale_tril, validate_args=False)

    def repeat(self, k: int) -> FullGaussianMoments:
        """Each example's moments k times, rows laid out "(k b)"."""
        return FullGaussianMoments(
            repeat(self.mean, "b d -> (k b) d", k=k), repeat(self.scale_tril, "b i j -> (k b) i j", k=k)
        )
