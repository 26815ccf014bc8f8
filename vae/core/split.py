"""The KL split of Chen et al. 2018 (β-TCVAE): the average KL to a factorised prior in three parts.

With q(z) = 1/N Σ_n q(z|x_n) the aggregate posterior over the N examples of a split, and p(z) = Π_j p(z_j):

    E_x[D_KL(q(z|x) ‖ p(z))] = I_q(x; z)                 mi     index-code mutual information
                             + D_KL(q(z) ‖ Π_j q(z_j))    tc     total correlation
                             + Σ_j D_KL(q(z_j) ‖ p(z_j))  dwkl   dimension-wise KL

Per example i, with one sample z_i ~ q(z|x_i):

    mi_i   = log q(z_i|x_i) − log q(z_i)
    tc_i   = log q(z_i)     − Σ_j log q(z_ij)
    dwkl_i = Σ_j log q(z_ij) − log p(z_i)

The three telescope to log q(z_i|x_i) − log p(z_i), a one-sample estimate of the KL, whatever estimates of
log q(z) and log q(z_j) are used; only the split between them depends on the estimator. Both estimate q(z_i) from
a minibatch of B examples drawn from the N, through the matrix log q(z_i,d | x_j) (b × b × d):

    mws  minibatch-weighted sampling:    log q(z_i) ≈ LSE_j Σ_d log q(z_id|x_j) − log(N·B)
                                         log q(z_id) ≈ LSE_j log q(z_id|x_j) − log(N·B)
    mss  minibatch-stratified sampling:  the same sums with weights w_ij in place of 1/(N·B): w_ii = 1/N for the
                                         example's own posterior, w_i,i+1 = (N − M)/(N·M) for one other, 1/M for
                                         the remaining B − 2 (M = B − 1; each row sums to 1)

MSS is an unbiased estimate of q(z_i) (biased only by the log's concavity); MWS is not. Where posteriors are narrow
q(z_i) ≈ q(z_i|x_i)/N, and MWS gives that term the weight 1/(N·B): log q(z_i) comes out low by up to log B, the mi
term high by as much, and the tc term off by up to (D − 1)·log B. Chen et al.'s released MSS weights fill columns
instead of the diagonal (rtqichen/beta-tcvae pull request 1); these are the weights the paper defines.

The split applies to a latent layer whose prior is an unconditional diagonal Gaussian (N(0, I), a learned
N(μ, σ²)): the single layer, or the top of a hierarchy. A mixture or the VampPrior does not factorise: no split.

Axes: i the sample's example, j the posterior's example, d latent dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, reduce
from torch import Tensor
from torch.distributions import Normal

from vae.core.errors import ConfigError

SplitEstimator = Literal["mws", "mss"]
NAMES = ("mi", "tc", "dwkl")
ELEMENTS = 2**24  # log-densities computed at a time (64 MB in float32): a large batch is split over its samples


@dataclass(frozen=True)
class KLSplit:
    """The three parts per example (b,), nats; they sum to log q(z|x) − log p(z) at the sample."""

    mi: Tensor
    tc: Tensor
    dwkl: Tensor

    @property
    def total(self) -> Tensor:
        return self.mi + self.tc + self.dwkl

    def terms(self) -> dict[str, Tensor]:
        """Batch means, named as they are logged: ``kl_split/mi``, ``kl_split/tc``, ``kl_split/dwkl``."""
        return {f"kl_split/{name}": getattr(self, name).mean() for name in NAMES}


def check_estimator(estimator: str) -> None:
    if estimator not in ("mws", "mss"):
        raise ConfigError(f"the KL split's estimator must be 'mws' or 'mss', got {estimator!r}")


def stratified_log_weights(batch: int, dataset_size: int, *, device: torch.device | None = None) -> Tensor:
    """log w_ij of minibatch-stratified sampling, (b, b): 1/N on the diagonal, (N − M)/(N·M) just right of it
    (wrapping), 1/M elsewhere, M = B − 1; a batch of one has the weight 1/N."""
    if batch < 1 or dataset_size < batch:
        raise ConfigError(f"the KL split needs 1 ≤ batch ≤ dataset size, got batch {batch} of {dataset_size}")
    n = float(dataset_size)
    if batch == 1:
        return torch.full((1, 1), -math.log(n), device=device)
    m = batch - 1
    weights = torch.full((batch, batch), 1.0 / m, dtype=torch.float64, device=device)
    rows = torch.arange(batch, device=device)
    weights[rows, (rows + 1) % batch] = (n - m) / (n * m)
    weights[rows, rows] = 1.0 / n
    return weights.log()


def split_at(
    z: Tensor, mean: Tensor, scale: Tensor, prior: Normal, *, dataset_size: int, estimator: SplitEstimator
) -> KLSplit:
    """The split for samples z (b, d) of the diagonal Gaussian posteriors N(mean, scale²) (b, d) of a minibatch
    drawn from N examples, against the prior p(z) = Π_d ``prior`` (its parameters (d,))."""
    check_estimator(estimator)
    rows, dims = z.shape
    if estimator == "mws":
        log_w = torch.full((rows, rows), -math.log(dataset_size * rows), device=z.device, dtype=z.dtype)
    else:
        log_w = stratified_log_weights(rows, dataset_size, device=z.device).to(z.dtype)
    posteriors = Normal(rearrange(mean, "j d -> 1 j d"), rearrange(scale, "j d -> 1 j d"))
    chunk = max(1, ELEMENTS // (rows * dims))  # samples at a time: the (i, j, d) block stays under ELEMENTS
    log_qz, log_product, log_qz_x = [], [], []
    for start in range(0, rows, chunk):
        i = slice(start, start + chunk)
        log_q = posteriors.log_prob(rearrange(z[i], "i d -> i 1 d"))  # (i, j, d): log q(z_id | x_j)
        joint = reduce(log_q, "i j d -> i j", "sum")
        log_qz.append(torch.logsumexp(log_w[i] + joint, dim=1))
        marginals = torch.logsumexp(rearrange(log_w[i], "i j -> i j 1") + log_q, dim=1)  # (i, d)
        log_product.append(reduce(marginals, "i d -> i", "sum"))
        log_qz_x.append(torch.diagonal(joint, offset=start))  # log q(z_i | x_i)
    qz, product, qz_x = torch.cat(log_qz), torch.cat(log_product), torch.cat(log_qz_x)
    log_pz = reduce(prior.log_prob(z), "i d -> i", "sum")
    return KLSplit(mi=qz_x - qz, tc=qz - product, dwkl=product - log_pz)
