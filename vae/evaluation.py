"""Statistics of the latent space over a dataset, reduced correctly across processes.

Active units (Burda et al. 2015): dimension d is active when Cov_x(E_q[z_d|x]) > 0.01, the variance
over the data of the posterior mean. The KL per dimension is the dataset mean of D_KL(q(z_d|x) ‖ p(z_d)),
where the prior factorises over dimensions (it does not for a mixture or the VampPrior).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import reduce
from torch import Tensor
from torchmetrics import Metric

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass  # not frozen: torchmetrics maps over the fields of what compute() returns
class LatentSummary:
    """kl_per_dim: (d,) nats, or None if no batch had one; mean_variance: (d,) Var_x(E_q[z_d|x]);
    active_units: how many dimensions' variances exceed the threshold."""

    kl_per_dim: Tensor | None
    mean_variance: Tensor
    active_units: int


class LatentStatistics(Metric):
    """Accumulates, over batches (and processes), the KL per latent dimension and the active units."""

    full_state_update = False

    def __init__(self, *, latent_dim: int, threshold: float = ACTIVE_UNIT_THRESHOLD) -> None:
        super().__init__()
        self.threshold = threshold
        for name in ("kl_sum", "mean_sum", "mean_sq_sum"):
            self.add_state(name, default=torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("count", "kl_count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior_mean: Tensor, kl_per_dim: Tensor | None) -> None:
        """posterior_mean and kl_per_dim: (b, d); kl_per_dim is None where the prior does not factorise."""
        if kl_per_dim is not None:
            self.kl_sum += reduce(kl_per_dim.double(), "b d -> d", "sum")
            self.kl_count += kl_per_dim.shape[0]
        self.mean_sum += reduce(posterior_mean.double(), "b d -> d", "sum")
        self.mean_sq_sum += reduce(posterior_mean.double().square(), "b d -> d", "sum")
        self.count += posterior_mean.shape[0]

    def compute(self) -> LatentSummary:
        n = self.count.clamp_min(1)
        mean = self.mean_sum / n
        # Unbiased variance over the examples seen.
        variance = ((self.mean_sq_sum - n * mean.square()) / (n - 1).clamp_min(1)).clamp_min(0)
        return LatentSummary(
            kl_per_dim=(self.kl_sum / self.kl_count).float() if self.kl_count > 0 else None,
            mean_variance=variance.float(),
            active_units=int((variance > self.threshold).sum()),
        )
