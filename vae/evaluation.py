"""Evaluation: latent statistics (reduced correctly across processes), the importance-weighted
log-likelihood, bits per dimension, and ``evaluate`` over a split.

Active units (Burda et al. 2015): dimension d is active when Cov_x(E_q[z_d|x]) > 0.01, the variance
over the data of the posterior mean. The KL per dimension is the dataset mean of D_KL(q(z_d|x) ‖ p(z_d)),
where the prior factorises over dimensions (it does not for a mixture or the VampPrior).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from einops import reduce
from torch import Tensor
from torchmetrics import Metric

from vae.errors import ConfigError
from vae.model import VAE, as_unit

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


def log_mean_exp_chunks(chunks: Iterable[Tensor]) -> Tensor:
    """log (1/K) Σ_k exp(a_k) over chunks of shape (k_i, b), with K = Σ k_i, merged by log-add-exp: one
    chunk in memory at a time, and exact (the same as one log-sum-exp over all K)."""
    total, count = None, 0
    for chunk in chunks:
        part = torch.logsumexp(chunk, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        count += chunk.shape[0]
    if total is None:
        raise ValueError("log_mean_exp_chunks needs at least one chunk")
    return total - math.log(count)


def importance_weighted_log_likelihood(vae: VAE, x: Tensor, *, num_samples: int, chunk_size: int = 100) -> Tensor:
    """The importance-weighted estimate of log p(x) per example (b,), nats:

        log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x)

    It is the IWAE bound with K = ``num_samples``: a lower bound in expectation that tightens as K grows
    (Burda et al. 2015). Samples are drawn ``chunk_size`` at a time, so memory does not grow with K.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ConfigError(f"num_samples and chunk_size must be positive, got {num_samples} and {chunk_size}")
    sizes = [min(chunk_size, num_samples - start) for start in range(0, num_samples, chunk_size)]
    return log_mean_exp_chunks(vae.log_weights(x, k).log_w for k in sizes)


def bits_per_dim(nll: float, image_shape: Sequence[int]) -> float:
    """Nats per example → bits per dimension: nll / (D · ln 2), D = c·h·w."""
    return nll / (math.prod(image_shape) * math.log(2))


@dataclass(frozen=True)
class Evaluation:
    """A model's numbers on one split, in nats per example (bits per dimension where named)."""

    split: str
    num_examples: int
    num_samples: int
    log_likelihood: float  # the importance-weighted estimate of log p(x), K = num_samples
    bits_per_dim: float  # −log_likelihood / (D ln 2)
    elbo: float
    recon: float  # −E_q[log p(x|z)]
    kl: float
    active_units: int
    kl_per_dim: list[float] | None

    def table(self) -> str:
        rows = [
            ("split", f"{self.split} ({self.num_examples} images)"),
            (f"log p(x), importance-weighted, K={self.num_samples}", f"{self.log_likelihood:.3f} nats"),
            ("negative log-likelihood in bits/dim", f"{self.bits_per_dim:.4f}"),
            ("ELBO", f"{self.elbo:.3f} nats"),
            ("  reconstruction −E_q[log p(x|z)]", f"{self.recon:.3f} nats"),
            ("  KL(q(z|x) || p(z))", f"{self.kl:.3f} nats"),
            ("active units (Cov_x E_q[z_d] > 0.01)", f"{self.active_units}"),
        ]
        if self.kl_per_dim is not None:
            rows.append(("KL per dimension", ", ".join(f"{v:.2f}" for v in self.kl_per_dim)))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


@torch.no_grad()
def evaluate(
    vae: VAE,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_samples: int = 5000,
    chunk_size: int = 100,
    split: str = "test",
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Importance-weighted log-likelihood, ELBO and its terms, active units and KL per dimension over a split."""
    vae = vae.eval().to(device)
    stats = LatentStatistics(latent_dim=vae.latent_dim).to(device)
    sums = torch.zeros(4, dtype=torch.float64)  # log-likelihood, log p(x|z), KL, count
    for images, _ in batches:
        x = as_unit(images.to(device))
        out = vae(x)
        log_likelihood = importance_weighted_log_likelihood(vae, x, num_samples=num_samples, chunk_size=chunk_size)
        stats.update(out.moments.mean, out.latent.kl_per_dim)
        batch = torch.stack([log_likelihood.sum(), out.log_px.sum(), out.latent.kl.sum()]).double().cpu()
        sums += torch.cat([batch, torch.tensor([float(len(x))], dtype=torch.float64)])
    n = float(sums[3])
    if n == 0:
        raise ConfigError(f"the {split} split is empty: nothing to evaluate")
    log_likelihood, log_px, kl = (float(v) / n for v in sums[:3])
    summary = stats.compute()
    return Evaluation(
        split=split,
        num_examples=int(n),
        num_samples=num_samples,
        log_likelihood=log_likelihood,
        bits_per_dim=bits_per_dim(-log_likelihood, vae.image_shape),
        elbo=log_px - kl,
        recon=-log_px,
        kl=kl,
        active_units=summary.active_units,
        kl_per_dim=None if summary.kl_per_dim is None else summary.kl_per_dim.tolist(),
    )
