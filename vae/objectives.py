"""Training objectives. Each returns its terms, never only their sum.

    ELBO(x)  = E_q[log p(x|z)] − D_KL(q(z|x) ‖ p(z))  ≤ log p(x)
    β-loss   = −E_q[log p(x|z)] + β · D_KL(q(z|x) ‖ p(z))

All terms are in nats per example. β = 1 makes the loss the negative ELBO; the ELBO reported is always
the unweighted one, whatever weighting trains the model (schedules, capacity, free bits and GECO are in
``vae.weighting``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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
