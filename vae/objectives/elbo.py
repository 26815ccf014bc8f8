"""Training objectives: the one home of the loss. Each reads a model's ``ModelOutput`` and returns the loss with
its named terms, raw, never only their sum.

    ELBO(x)  = E_q[log p(x|z)] − Σ_l D_KL(q(z_l | x, z_>l) ‖ p(z_l | z_>l))  ≤ log p(x)
    β-loss   = −E_q[log p(x|z)] + β · D_KL, β and its schedules from the weighting (``vae.objectives.weighting``)
    IWAE_K   = E[log 1/K Σ_k w_k],  w_k = p(x, z_k) / q(z_k|x),  z_k ~ q(z|x)   (Burda et al. 2015)

ELBO = IWAE_1 ≤ IWAE_K ≤ IWAE_{K+1} ≤ log p(x), and IWAE_K → log p(x) as K → ∞.

An objective is a config part like a model (``class_path: vae.objectives.ELBO`` with its ``init_args``). The
training module gives it the model once, in ``bind``, before the optimizer exists: what it needs from the model (the
top layer's size for a penalty, the layer names, the model's own term names) it takes there, and it refuses there,
in one line, a model it cannot train (a penalty on a KL that does not split, the IWAE bound on relaxed samples).

Terms logged under ``{stage}/<name>``, in nats per example (summed over pixels and units, mean over the batch):

    recon      −E_q[log p(x|z)]
    kl         Σ_l D_KL, raw and unweighted            kl/<layer>   each layer's, for more than one layer
               (and the model's KL terms: a diffusion model's kl/prior and diffusion, which add up to kl)
    elbo       −recon − kl, unweighted (higher is better)
    bits_per_dim   −elbo / (D ln 2), D = c·h·w: the negative ELBO in bits per dimension (lower is better)
    loss       what is minimised
    iwae       the IWAE bound (the ``IWAE`` objective)
    kl_split/{mi,tc,dwkl}   the top layer's KL split (``vae.core.split``), at validation and test, and at training
               steps when a penalty needs it; for a top layer with a diagonal Gaussian prior
    ...        what a penalty adds (``vae.objectives.penalties``: FactorVAE's ``factor_vae/tc``, DIP-VAE's ``dip/...``),
               and the model's own terms (``ModelOutput.terms``: a commitment loss, say), raw

and, for training steps, the weights beside them: ``kl_weight``, what the weighting adds (``capacity``,
``capacity/<layer>``, ...), ``kl_balance/<layer>`` while KL balancing is on, a penalty's weights, each model term's
``<name>_weight``, and what the model used at the step (``temperature``, the relaxation's of discrete latents).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.core.spec import Configurable
from vae.core.split import NAMES as SPLIT_NAMES
from vae.core.split import KLSplit, SplitEstimator, check_estimator
from vae.layers.latents import KLParts, kl_split, splittable
from vae.models.base import LatentVariableModel, ModelOutput
from vae.objectives.penalties import Penalty
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
    """recon, kl, elbo, for more than one layer kl/<layer>, the model's KL terms and its own terms: batch means (over
    all K·b rows), unweighted."""
    log_px, kl = out.log_px.mean(), out.kl.mean()
    terms = {"recon": -log_px, "kl": kl, "elbo": log_px - kl}
    if len(out.latents) > 1:
        terms |= {f"kl/{name}": layer.kl.mean() for name, layer in out.latents.items()}
    terms |= {name: value.mean() for name, value in out.kl_terms.items()}
    return terms | {name: term.value.mean() for name, term in out.terms.items()}


def model_terms_loss(out: ModelOutput) -> tuple[Tensor | float, dict[str, float]]:
    """The model's own terms as they enter the loss (Σ weight · batch mean) and their weights, named as logged."""
    loss: Tensor | float = 0.0
    for term in out.terms.values():
        loss = loss + term.weight * term.value.mean()
    return loss, {f"{name}_weight": term.weight for name, term in out.terms.items()}


KLSplitSetting = Literal["mss", "mws", "off"]


class Objective(Configurable, nn.Module, ABC):
    """Turns a ``ModelOutput`` into a ``Loss``. ``samples``: the posterior samples per example it needs.

    kl_split: the estimator of the top layer's KL split (``vae.core.split``), or "off"; it is logged at validation
        and test where the model's top layer has one (``capabilities.kl_split``), and estimated at training steps for
        a penalty that needs it.
    """

    samples: int = 1
    penalty: Penalty | None  # set in the constructor (a class attribute would hide the submodule)

    def __init__(self, *, kl_split: KLSplitSetting = "mss") -> None:
        super().__init__()
        if kl_split != "off":
            check_estimator(kl_split)
        self.kl_split = kl_split
        self.penalty = None
        self.layer_names: tuple[str, ...] = ()
        self.model_terms: tuple[str, ...] = ()
        self.kl_terms: tuple[str, ...] = ()
        self.dims = 0
        self.splits = False

    def bind(self, model: LatentVariableModel) -> Objective:
        """Take from the model what this objective needs (its layers' names, whether its top layer's KL splits, its
        own term names), before the optimizer exists; refuse a model it cannot train, in one line."""
        self.layer_names = model.layer_names
        self.model_terms = tuple(model.term_names)
        self.kl_terms = tuple(model.kl_term_names)
        self.dims = math.prod(model.image_shape)
        self.splits = model.capabilities.kl_split and self.kl_split != "off"
        return self

    def term_names(self) -> tuple[str, ...]:
        """The names of the raw terms it returns for the model it is bound to."""
        per_layer = tuple(f"kl/{name}" for name in self.layer_names) if len(self.layer_names) > 1 else ()
        split = tuple(f"kl_split/{name}" for name in SPLIT_NAMES) if self.splits else ()
        extra = tuple(n for n in self.penalty.term_names if n not in split) if self.penalty is not None else ()
        bits = ("bits_per_dim",) if self.dims else ()
        return ("recon", "kl", "elbo", *bits, "loss", *per_layer, *self.kl_terms, *split, *extra, *self.model_terms)

    def raw_terms(self, out: ModelOutput) -> dict[str, Tensor]:
        """``raw_terms``, and the negative ELBO in bits per dimension, −elbo / (D ln 2), once bound to a model."""
        terms = raw_terms(out)
        if self.dims:
            terms["bits_per_dim"] = -terms["elbo"] / (self.dims * math.log(2))
        return terms

    def split(self, out: ModelOutput, *, training: bool, dataset_size: int | None) -> KLSplit | None:
        """The top layer's KL split for this batch, where it is logged (validation, test) or needed (a penalty), it
        applies, and the dataset size is known; else None."""
        wanted = not training or (self.penalty is not None and self.penalty.needs_split)
        if not wanted or self.kl_split == "off" or dataset_size is None or not out.latents:
            return None
        top = next(iter(out.latents.values()))
        if not splittable(top.posterior, top.prior):
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
    plus a penalty on the latent code where one is given (``vae.objectives.penalties``).

    weighting: how the KL enters the loss at each step (``Constant(beta=1.0)``, the ELBO itself, by default; a
        constant β > 1 is the β-VAE; ``LinearWarmup``, ``Cyclical``, ``Capacity``, ``Capacities``, ``FreeBits``,
        ``GECO``).
    penalty: a disentangling penalty on the top latent layer (``BetaTCVAE``, ``FactorVAE``, ``DIPVAE``); it adds to
        the weighting's loss, so it composes with every weighting.
    kl_balancing_steps: for a hierarchy, weigh each layer's KL by NVAE's balancing coefficients (``balance``) for
        the first this many training steps (NVAE balances during its KL warm-up: give the warm-up's length); 0 off.
    kl_split: see ``Objective``; "mss" (minibatch-stratified sampling), "mws" (minibatch-weighted) or "off".
    """

    def __init__(
        self,
        *,
        weighting: Weighting | None = None,
        penalty: Penalty | None = None,
        kl_balancing_steps: int = 0,
        kl_split: KLSplitSetting = "mss",
    ) -> None:
        super().__init__(kl_split=kl_split)
        if kl_balancing_steps < 0:
            raise ConfigError(f"kl_balancing_steps must be 0 or more, got {kl_balancing_steps}")
        if penalty is not None and penalty.needs_split and kl_split == "off":
            raise ConfigError(
                f"{type(penalty).__name__} weighs the KL split: set the objective's kl_split to mss or mws"
            )
        weighting = Constant(beta=1.0) if weighting is None else weighting
        self.record(weighting=weighting)
        self.weighting = weighting
        self.kl_balancing_steps = kl_balancing_steps
        self.penalty = penalty

    def bind(self, model: LatentVariableModel) -> ELBO:
        super().bind(model)
        penalty = self.penalty
        if penalty is None:
            return self
        top = model.layers[0] if model.layers else None
        if top is None or (penalty.needs_split and not model.capabilities.kl_split):
            raise ConfigError(
                f"{type(penalty).__name__} weighs the KL split of the top latent layer, which needs one diagonal "
                "Gaussian prior on it (StandardNormal or LearnedGaussian): not a mixture, the VampPrior, or a prior "
                "that depends on a label"
            )
        if penalty.needs_diagonal_posterior and not top.diagonal:
            raise ConfigError(
                f"{type(penalty).__name__} reads the posterior means and variances of the top latent layer, which "
                "needs a diagonal Gaussian posterior (not a full covariance or a flow)"
            )
        penalty.bind(units=top.units * top.positions)
        return self

    def forward(self, out: ModelOutput, *, step: int, training: bool, dataset_size: int | None = None) -> Loss:
        terms = self.raw_terms(out)
        parts = out.kl_parts()
        weights: dict[str, Tensor | float] = {}
        if training and step < self.kl_balancing_steps and len(parts.per_layer) > 1:
            coefficients = balance(parts)
            parts = parts.scaled(coefficients)
            weights |= {f"kl_balance/{name}": value for name, value in coefficients.items()}
        weighted = self.weighting(out.log_px, parts, step=step, training=training)
        own, own_weights = model_terms_loss(out)
        weights |= {"kl_weight": weighted.kl_weight, **weighted.extras, **own_weights, **out.settings}
        loss = weighted.loss + own
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
    """The IWAE bound with K = ``samples`` importance samples (Burda et al. 2015), minimised as −IWAE_K, logged as
    ``{stage}/iwae``; the ELBO's terms are logged beside it, estimated from the same K samples. It weighs nothing:
    no KL weighting, balancing or penalty applies to a bound on log p(x)."""

    def __init__(self, *, samples: int = 5, kl_split: KLSplitSetting = "mss") -> None:
        super().__init__(kl_split=kl_split)
        if samples < 2:
            raise ConfigError(f"the IWAE objective needs at least 2 importance samples, got {samples}")
        self.samples = samples

    def bind(self, model: LatentVariableModel) -> IWAE:
        super().bind(model)
        abilities = model.capabilities
        if not (abilities.iwae_training and abilities.posterior_density):
            raise ConfigError(
                f"the IWAE objective needs exact log densities of the samples it trains on, and {type(model).__name__} "
                "trains on relaxed samples (or has no posterior density): use vae.objectives.ELBO (vae evaluate's "
                "log-likelihood still draws exact samples)"
            )
        return self

    def term_names(self) -> tuple[str, ...]:
        return (*super().term_names(), "iwae")

    def forward(self, out: ModelOutput, *, step: int, training: bool, dataset_size: int | None = None) -> Loss:
        bound = iwae_bound(out.log_w()).mean()
        own, own_weights = model_terms_loss(out)
        loss = -bound + own
        terms = {**self.raw_terms(out), "loss": loss, "iwae": bound}
        split = self.split(out, training=training, dataset_size=dataset_size)
        if split is not None:
            terms |= split.terms()
        return Loss(loss=loss, terms=terms, weights={"kl_weight": 1.0, **own_weights, **out.settings})
