"""Training objectives. Each returns its terms, never only their sum.

    ELBO(x)  = E_q[log p(x|z)] − D_KL(q(z|x) ‖ p(z))  ≤ log p(x)
    β-loss   = −E_q[log p(x|z)] + β · D_KL(q(z|x) ‖ p(z))
    IWAE_K   = E[log 1/K Σ_k w_k],  w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)   (Burda et al. 2015)

ELBO = IWAE_1 ≤ IWAE_K ≤ IWAE_{K+1} ≤ log p(x), and IWAE_K → log p(x) as K → ∞.

All terms are in nats per example. β = 1 makes the loss the negative ELBO; the ELBO reported is always
the unweighted one, whatever weighting trains the model (schedules, capacity, free bits and GECO are in
``vae.weighting``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class ELBOTerms:
    """The ELBO's parts, per example (b,) or, after ``mean()``, as batch means (scalars).

    log_px: the reconstruction log-likelihood E_q[log p(x|z)] (one-sample estimate); its negative is
        what is logged as ``recon``.
    kl: the raw, unweighted D_KL(q(z|x) ‖ p(z)).
    elbo: log_px − kl, unweighted.
    loss: −log_px + β·kl, what the optimiser minimises.
    """

    log_px: Tensor
    kl: Tensor
    elbo: Tensor
    loss: Tensor

    def mean(self) -> ELBOTerms:
        """Average every term over the batch."""
        return ELBOTerms(**{f.name: getattr(self, f.name).mean() for f in fields(self)})


def elbo_terms(log_px: Tensor, kl: Tensor) -> ELBOTerms:
    """The unweighted ELBO's terms (loss = −ELBO), per example."""
    return beta_elbo(log_px, kl, beta=1.0)


def beta_elbo(log_px: Tensor, kl: Tensor, beta: float | Tensor = 1.0) -> ELBOTerms:
    """The β-ELBO's terms from the per-example log-likelihood and KL, both (b,)."""
    if log_px.shape != kl.shape or log_px.dim() != 1:
        raise ValueError(
            f"log_px and kl must both be per-example (b,) tensors, got {tuple(log_px.shape)} and {tuple(kl.shape)}"
        )
    return ELBOTerms(log_px=log_px, kl=kl, elbo=log_px - kl, loss=-log_px + beta * kl)


@dataclass(frozen=True)
class IWAETerms:
    """The IWAE bound per example (b,), with the ELBO's terms estimated from the same K samples.

    bound: log (1/K) Σ_k w_k, computed with log-sum-exp.
    log_px: (1/K) Σ_k log p(x|z_k); kl: (1/K) Σ_k [log q(z_k|x) − log p(z_k)] (a Monte-Carlo KL);
    elbo: log_px − kl, the K-sample ELBO estimate (≤ bound in expectation).
    """

    bound: Tensor
    log_px: Tensor
    kl: Tensor
    elbo: Tensor

    def mean(self) -> IWAETerms:
        return IWAETerms(**{f.name: getattr(self, f.name).mean() for f in fields(self)})


def iwae_bound(log_px: Tensor, log_pz: Tensor, log_qz: Tensor) -> IWAETerms:
    """The IWAE bound from (K, b) tensors of log p(x|z_k), log p(z_k), log q(z_k|x). K = 1 is the ELBO."""
    k = log_px.shape[0]
    log_w = log_px + log_pz - log_qz  # (k, b)
    kl = (log_qz - log_pz).mean(dim=0)
    log_px_mean = log_px.mean(dim=0)
    return IWAETerms(
        bound=torch.logsumexp(log_w, dim=0) - math.log(k), log_px=log_px_mean, kl=kl, elbo=log_px_mean - kl
    )
