"""Training objectives: the one home of the loss. Each reads a model's ``ModelOutput`` and returns the loss with
its named terms, raw, never only their sum.

    ELBO(x)  = E_q[log p(x|z)] − Σ_l D_KL(q(z_l | x, z_>l) ‖ p(z_l | z_>l))  ≤ log p(x)
    β-loss   = −E_q[log p(x|z)] + β · D_KL, β and its schedules from the weighting (``vae.objectives.weighting``)
    IWAE_K   = E[log 1/K Σ_k w_k],  w_k = p(x, z_k) / q(z_k|x),  z_k ~ q(z|x)   (Burda et al. 2015)

ELBO = IWAE_1 ≤ IWAE_K ≤ IWAE_{K+1} ≤ log p(x), and IWAE_K → log p(x) as K → ∞.

Terms logged under ``{stage}/<name>``, in nats per example (summed over pixels and units, mean over the batch):

    recon      −E_q[log p(x|z)]
    kl         Σ_l D_KL, raw and unweighted            kl/<layer>   each layer's, for more than one layer
    elbo       −recon − kl, unweighted (higher is better)
    loss       what is minimised
    iwae       the IWAE bound (the ``IWAE`` objective)
    kl_split/{mi,tc,dwkl}   the top layer's KL split (``vae.core.split``), at validation and test, and at training
               steps when a penalty needs it; for a top layer with a diagonal Gaussian prior
    ...        what a penalty adds (``vae.objectives.penalties``: FactorVAE's ``factor_vae/tc``, DIP-VAE's ``dip/...``)

and, for training steps, the weights beside them: ``kl_weight``, what the weighting adds (``capacity``,
``capacity/<layer>``, ...), ``kl_balance/<layer>`` while KL balancing is on, a penalty's weights, and what the model
used at the step (``temperature``, the relaxation's of discrete latents, ``vae.layers.discrete``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.core.split import NAMES as SPLIT_NAMES
from vae.core.split import KLSplit, SplitEstimator, check_estimator
from vae.layers.latents import KLParts, kl_split, splittable
from vae.models.base import ModelOutput
from vae.objectives.penalties import PenaltyModule
from vae.objectives.weighting import Constant, Weighting


@dataclass(frozen=True)
class ELBOTerms:
    """The ELBO's parts, per example (b,) or, after ``mean()``, as batch means (scalars).

    log_px: the reconstruction log-likelihood E_q[log p(x|z)] (one-sample estimate); its negative is
        what is logged as ``recon``.
    kl: the raw, unweighted KL.
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


def beta_elbo(log_px: Tensor, kl: Tensor, beta: float | Tensor = 1.0) -> ELBOTerms:
    """The β-ELBO's terms from the per-example log-likelihood and KL, both (b,)."""
    if log_px.shape != kl.shape or log_px.dim() != 1:
        raise ValueError(
            f"log_px and kl must both be per-example (b,) tensors, got {tuple(log_px.shape)} and {tuple(kl.shape)}"
        )
    return ELBOTerms(log_px=log_px, kl=kl, elbo=log_px - kl, loss=-log_px + beta * kl)


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/K) Σ_k w_k per example from the log weights (K, b), by log-sum-exp. K = 1 is the ELBO."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


@dataclass(frozen=True)
class Loss:
    """loss: the scalar minimised; terms: raw batch means, logged at every stage; weights: what weighted them at
    this step (training only)."""

    loss: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, Tensor | float] = field(default_factory=dict)


def raw_terms(out: ModelOutput) -> dict[str, Tensor]:
    """recon, kl, elbo and, for more than one layer, kl/<layer>: batch means (over all K·b rows), unweighted."""
    log_px, kl = out.log_px.mean(), out.kl.mean()
    terms = {"recon": -log_px, "kl": kl, "elbo": log_px - kl}
    if len(out.latents) > 1:
        terms |= {f"kl/{name}": layer.kl.mean() for name, layer in out.latents.items()}
    return terms


KLSplitSetting = Literal["mss", "mws", "off"]


class Objective(nn.Module, ABC):
    """Turns a ``ModelOutput`` into a ``Loss``. ``samples``: the posterior samples per example it needs.

    kl_split: the estimator of the top layer's KL split (``vae.core.split``), or "off"; it is logged at validation
        and test, and estimated at training steps for a penalty that needs it.
    """

    samples: int = 1

    def __init__(self, *, kl_split: KLSplitSetting = "mss", penalty: PenaltyModule | None = None) -> None:
        super().__init__()
        if kl_split != "off":
            check_estimator(kl_split)
        if penalty is not None and penalty.needs_split and kl_split == "off":
            raise ConfigError(f"{type(penalty).__name__} weighs the KL split: set model.kl_split to 'mss' or 'mws'")
        self.kl_split = kl_split
        self.penalty = penalty

    def term_names(self, layers: Sequence[str], *, splittable: bool = False) -> tuple[str, ...]:
        """The names of the raw terms it returns for a model with these layers (top first); ``splittable``: whether
        the top layer's KL split applies (a diagonal Gaussian prior)."""
        per_layer = tuple(f"kl/{name}" for name in layers) if len(layers) > 1 else ()
        split = tuple(f"kl_split/{name}" for name in SPLIT_NAMES) if splittable and self.kl_split != "off" else ()
        extra = tuple(n for n in self.penalty.term_names if n not in split) if self.penalty is not None else ()
        return ("recon", "kl", "elbo", "loss", *per_layer, *split, *extra)

    def split(self, out: ModelOutput, *, training: bool, dataset_size: int | None) -> KLSplit | None:
        """The top layer's KL split for this batch, where it is logged (validation, test) or needed (a penalty), it
        applies, and the dataset size is known; else None."""
        wanted = not training or (self.penalty is not None and self.penalty.needs_split)
        top = next(iter(out.latents.values()))
        if not wanted or self.kl_split == "off" or dataset_size is None or not splittable(top.posterior, top.prior):
            return None
        estimator: SplitEstimator = self.kl_split  # type: ignore[assignment]
        return kl_split(top, dataset_size=dataset_size, estimator=estimator, samples=out.samples)

    @abstractmethod
    def forward(self, out: ModelOutput, *, step: int, training: bool, dataset_size: int | None = None) -> Loss:
        """step: the trainer's global step (schedules); training: whether state may update (never in validation);
        dataset_size: the examples of the split the batch comes from (for the KL split), if known."""


def balance(parts: KLParts) -> dict[str, Tensor]:
    """KL balancing coefficients γ_l (NVAE, Vahdat & Kautz 2020), detached, with mean 1 over the layers:

        γ_l = L · (κ_l / n_l) / Σ_j (κ_j / n_j),   κ_l = batch mean of KL_l + 0.01,  n_l = the layer's latent elements

    A layer that carries more KL per element gets more weight, one that carries little gets less, so no layer
    is pushed to collapse while the KL weight warms up."""
    per_element = {name: (kl.detach().mean() + 0.01) / parts.sizes[name] for name, kl in parts.per_layer.items()}
    total = torch.stack(list(per_element.values())).sum()
    return {name: len(per_element) * value / total for name, value in per_element.items()}


class ELBO(Objective):
    """The ELBO under a KL weighting: −E_q[log p(x|z)] + β(t)·KL, or any weighting of ``vae.objectives.weighting``,
    plus a
    penalty on the latent code where one is given (``vae.objectives.penalties``).

    kl_balancing_steps: for a hierarchy, weigh each layer's KL by NVAE's balancing coefficients (``balance``) for
        the first this many training steps (NVAE balances during its KL warm-up: give the warm-up's length); 0 off.
    """

    def __init__(
        self,
        *,
        weighting: Weighting,
        kl_balancing_steps: int = 0,
        penalty: PenaltyModule | None = None,
        kl_split: KLSplitSetting = "mss",
    ) -> None:
        super().__init__(kl_split=kl_split, penalty=penalty)
        if kl_balancing_steps < 0:
            raise ConfigError(f"kl_balancing_steps must be 0 or more, got {kl_balancing_steps}")
        self.weighting = weighting
        self.kl_balancing_steps = kl_balancing_steps

    def forward(self, out: ModelOutput, *, step: int, training: bool, dataset_size: int | None = None) -> Loss:
        terms = raw_terms(out)
        parts = out.kl_parts()
        weights: dict[str, Tensor | float] = {}
        if training and step < self.kl_balancing_steps and len(parts.per_layer) > 1:
            coefficients = balance(parts)
            parts = parts.scaled(coefficients)
            weights |= {f"kl_balance/{name}": value for name, value in coefficients.items()}
        weighted = self.weighting(out.log_px, parts, step=step, training=training)
        weights |= {"kl_weight": weighted.kl_weight, **weighted.extras, **out.settings}
        loss = weighted.loss
        split = self.split(out, training=training, dataset_size=dataset_size)
        if split is not None:
            terms |= split.terms()
        if self.penalty is not None:
            top = next(iter(out.latents.values()))
            penalized = self.penalty(top, split, samples=out.samples, training=training)
            loss = loss + penalized.loss
            terms |= penalized.terms
            weights |= penalized.weights
        return Loss(loss=loss, terms={**terms, "loss": loss}, weights=weights)


class IWAE(Objective):
    """The IWAE bound with K importance samples (Burda et al. 2015), minimised as −IWAE_K. The ELBO's terms are
    logged beside it, estimated from the same K samples."""

    def __init__(self, *, samples: int, kl_split: KLSplitSetting = "mss") -> None:
        super().__init__(kl_split=kl_split)
        if samples < 2:
            raise ConfigError(f"the IWAE objective needs at least 2 importance samples, got {samples}")
        self.samples = samples

    def term_names(self, layers: Sequence[str], *, splittable: bool = False) -> tuple[str, ...]:
        return (*super().term_names(layers, splittable=splittable), "iwae")

    def forward(self, out: ModelOutput, *, step: int, training: bool, dataset_size: int | None = None) -> Loss:
        bound = iwae_bound(out.log_w()).mean()
        terms = {**raw_terms(out), "loss": -bound, "iwae": bound}
        split = self.split(out, training=training, dataset_size=dataset_size)
        if split is not None:
            terms |= split.terms()
        return Loss(loss=-bound, terms=terms, weights={"kl_weight": 1.0, **out.settings})


def objective_for(
    *,
    weighting: Weighting,
    importance_samples: int,
    kl_balancing_steps: int,
    penalty: PenaltyModule | None = None,
    kl_split: KLSplitSetting = "mss",
) -> Objective:
    """The objective the module's settings name: IWAE for ``importance_samples`` > 1, else the weighted ELBO (with
    its penalty, if any)."""
    if importance_samples < 1:
        raise ConfigError(f"importance_samples must be at least 1, got {importance_samples}")
    if importance_samples == 1:
        return ELBO(weighting=weighting, kl_balancing_steps=kl_balancing_steps, penalty=penalty, kl_split=kl_split)
    if not (isinstance(weighting, Constant) and weighting.value == 1.0) or kl_balancing_steps or penalty is not None:
        raise ConfigError(
            "the IWAE bound (importance_samples > 1) is its own objective: use the default weighting "
            "Constant(beta=1.0), no KL balancing and no penalty with it"
        )
    return IWAE(samples=importance_samples, kl_split=kl_split)
