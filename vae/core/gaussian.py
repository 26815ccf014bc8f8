"""Gaussian posteriors as the networks emit them: ``GaussianMoments`` (mean, log-variance) with the log-variance
soft-clamped to ±``LOGVAR_BOUND`` (so exp never overflows and the KL stays finite), and ``full_precision``: the
densities and the KL are computed in float32 even under bf16/fp16 autocast."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

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
