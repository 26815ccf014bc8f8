"""KL weightings: how the KL term enters the loss at each training step. The ELBO objective's ``weighting``.

    Constant(beta)                             β·KL                            the β-VAE (β = 1: the ELBO)
    LinearWarmup(start, end, steps)            β(t)·KL, β from start to end over ``steps`` steps
    Cyclical(beta, total_steps, cycles, ramp)  β(t)·KL, M cycles each ramping 0 → β over a fraction R (Fu et al. 2019)
    Capacity(gamma, max_capacity, steps)       γ·|KL − C(t)|, C rising linearly to C_max (Burgess et al. 2018)
    Capacities(gamma, capacities, steps)       γ·Σ_l |KL_l − C_l(t)|, each layer's own capacity (JointVAE,
                                               Dupont 2018: the continuous and the discrete code)
    FreeBits(floor, group_size, per, beta)     β(t)·Σ_g max(λ, mean_batch KL_g) (Kingma et al. 2016), groups of
                                               units, or whole layers of a hierarchy (per="layer")
    GECO(target, ...)                          KL/λ + recon, λ ← λ·exp(ν·C̄) with C̄ a moving average of
                                               recon − target (Rezende & Viola 2018)

A weighting reads the reconstruction log-likelihood per example and the KL in parts (``vae.layers.latents.KLParts``:
per layer, per unit). Every weighting returns the scalar loss (nats per example, averaged over the batch) and
the weight it put on the KL at this step, which the module logs as ``train/kl_weight``; the KL itself is always
logged raw.

State comes from the trainer's global step (schedules), or lives in buffers saved in the checkpoint (GECO's
multiplier and moving average), so a resumed run continues exactly; only training steps update it.
``FreeBits`` takes any β schedule (``beta: LinearWarmup(...)``), which is how weightings compose.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import reduce
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.core.spec import Configurable
from vae.layers.latents import KLParts


@dataclass(frozen=True)
class WeightedLoss:
    """loss: the scalar to minimise; kl_weight: the weight on the KL at this step; extras: more to log."""

    loss: Tensor
    kl_weight: float
    extras: dict[str, float] = field(default_factory=dict)


class Weighting(Configurable, nn.Module, ABC):
    """How the reconstruction and the KL combine into the loss at a training step."""

    @abstractmethod
    def forward(self, log_px: Tensor, kl: KLParts, *, step: int, training: bool) -> WeightedLoss:
        """log_px: per example (b,); kl: the KL per layer (b,) and per unit; step: the trainer's global step;
        training: whether to update any state (never during validation)."""


class BetaSchedule(Weighting):
    """β(step)·KL + recon: the weightings that only scale the KL."""

    @abstractmethod
    def beta(self, step: int) -> float: ...

    def forward(self, log_px: Tensor, kl: KLParts, *, step: int, training: bool) -> WeightedLoss:
        beta = self.beta(step)
        return WeightedLoss(loss=(-log_px + beta * kl.total).mean(), kl_weight=beta)


def non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}")


def positive_int(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


class Constant(BetaSchedule):
    """β·KL at every step (1 is the ELBO, > 1 the β-VAE)."""

    def __init__(self, *, beta: float = 1.0) -> None:
        super().__init__()
        non_negative("Constant beta (the KL weight)", beta)
        self.value = beta

    def beta(self, step: int) -> float:
        return self.value


class LinearWarmup(BetaSchedule):
    """β rises linearly from ``start`` at step 0 to ``end`` at step ``steps``, then stays at ``end``."""

    def __init__(self, *, start: float = 0.0, end: float = 1.0, steps: int = 10_000) -> None:
        super().__init__()
        non_negative("LinearWarmup start", start)
        non_negative("LinearWarmup end", end)
        positive_int("LinearWarmup steps", steps)
        self.start, self.end, self.steps = start, end, steps

    def beta(self, step: int) -> float:
        return self.start + (self.end - self.start) * min(step, self.steps) / self.steps


class Cyclical(BetaSchedule):
    """Cyclical annealing (Fu et al. 2019): ``total_steps`` split into ``cycles`` cycles; in each, β rises
    linearly from 0 to ``beta`` over the first ``ramp`` fraction and stays there. After ``total_steps``, β."""

    def __init__(self, *, beta: float = 1.0, total_steps: int = 10_000, cycles: int = 4, ramp: float = 0.5) -> None:
        super().__init__()
        non_negative("Cyclical beta", beta)
        positive_int("Cyclical total_steps", total_steps)
        positive_int("Cyclical cycles", cycles)
        if not 0 < ramp <= 1:
            raise ConfigError(f"Cyclical ramp (the rising fraction of each cycle) must be in (0, 1], got {ramp}")
        self.value, self.total_steps, self.cycles, self.ramp = beta, total_steps, cycles, ramp

    def beta(self, step: int) -> float:
        if step >= self.total_steps:
            return self.value
        period = self.total_steps / self.cycles
        position = (step % period) / period  # in [0, 1)
        return self.value * min(1.0, position / self.ramp)


class Capacity(Weighting):
    """γ·|KL − C(t)| + recon on batch means, C rising linearly from 0 to ``max_capacity`` nats over
    ``steps`` steps (Burgess et al. 2018). The KL weight logged is γ·sign(KL − C)."""

    def __init__(self, *, gamma: float = 1000.0, max_capacity: float = 25.0, steps: int = 100_000) -> None:
        super().__init__()
        non_negative("Capacity gamma", gamma)
        non_negative("Capacity max_capacity", max_capacity)
        positive_int("Capacity steps", steps)
        self.gamma, self.max_capacity, self.steps = gamma, max_capacity, steps

    def capacity(self, step: int) -> float:
        return self.max_capacity * min(step, self.steps) / self.steps

    def forward(self, log_px: Tensor, kl: KLParts, *, step: int, training: bool) -> WeightedLoss:
        c = self.capacity(step)
        gap = kl.total.mean() - c
        weight = self.gamma * float(torch.sign(gap.detach()))
        return WeightedLoss(loss=-log_px.mean() + self.gamma * gap.abs(), kl_weight=weight, extras={"capacity": c})


class Capacities(Weighting):
    """γ·Σ_l |KL_l − C_l(t)| + recon on batch means, each layer's capacity C_l rising linearly from 0 to
    ``capacities[l]`` nats over ``steps`` steps (one number for every layer, or one per layer): JointVAE's loss
    (Dupont 2018), in which the continuous code z and the discrete code c each get their own capacity. Every layer
    of the model must be named.

    A categorical variable of K categories carries at most log K nats against the uniform prior (2.30 for K = 10):
    JointVAE caps the discrete capacity there, and so should ``capacities`` (a larger one is unreachable and keeps
    pushing q towards one-hot). JointVAE raises both capacities at one rate, 5 nats over 25,000 steps, the discrete
    one until its cap: ``capacities: {z: 5.0, c: 2.3}`` with ``steps: {z: 25000, c: 11500}``. Logged:
    ``capacity/<layer>`` and ``kl_weight/<layer>`` = γ·sign(KL_l − C_l); ``kl_weight`` is γ."""

    def __init__(
        self, *, capacities: dict[str, float], gamma: float = 30.0, steps: int | dict[str, int] = 25_000
    ) -> None:
        super().__init__()
        if not capacities:
            raise ConfigError("Capacities needs a capacity for each latent layer, e.g. {z: 5.0, c: 2.3}")
        for name, value in capacities.items():
            non_negative(f"Capacities capacity of layer {name}", value)
        non_negative("Capacities gamma", gamma)
        steps = dict.fromkeys(capacities, steps) if isinstance(steps, int) else dict(steps)
        if set(steps) != set(capacities):
            raise ConfigError(
                f"Capacities steps names the layers {', '.join(steps)} and capacities {', '.join(capacities)}: give "
                "the same layers, or one number of steps for all"
            )
        for name, value in steps.items():
            positive_int(f"Capacities steps of layer {name}", value)
        self.capacities, self.gamma, self.steps = dict(capacities), gamma, steps

    def capacity(self, name: str, step: int) -> float:
        return self.capacities[name] * min(step, self.steps[name]) / self.steps[name]

    def forward(self, log_px: Tensor, kl: KLParts, *, step: int, training: bool) -> WeightedLoss:
        if set(kl.per_layer) != set(self.capacities):
            raise ConfigError(
                f"Capacities names the layers {', '.join(self.capacities)}, and the model has "
                f"{', '.join(kl.per_layer)}: give one capacity per layer"
            )
        loss, extras = -log_px.mean(), {}
        for name, per_example in kl.per_layer.items():
            c = self.capacity(name, step)
            gap = per_example.mean() - c
            loss = loss + self.gamma * gap.abs()
            extras |= {f"capacity/{name}": c, f"kl_weight/{name}": self.gamma * float(torch.sign(gap.detach()))}
        return WeightedLoss(loss=loss, kl_weight=self.gamma, extras=extras)


class FreeBits(Weighting):
    """Free bits (Kingma et al. 2016): β(t)·Σ_g max(λ, KL_g), KL_g the batch mean of the KL of group g.

    per="unit": groups of ``group_size`` consecutive units of each layer (1: each latent dimension, or each channel
    of a feature-map layer); needs a prior that factorises. per="layer": each layer of a hierarchy is one group
    (LVAE's free bits per layer; ``group_size`` unused).
    A group below its floor λ (nats) gets no gradient from the KL term, so the floor is "free".
    """

    def __init__(
        self,
        *,
        floor: float = 0.5,
        group_size: int = 1,
        per: Literal["unit", "layer"] = "unit",
        beta: BetaSchedule | None = None,
    ) -> None:
        super().__init__()
        non_negative("FreeBits floor", floor)
        positive_int("FreeBits group_size", group_size)
        if per not in ("unit", "layer"):
            raise ConfigError(f"FreeBits per must be 'unit' or 'layer', got {per!r}")
        self.floor, self.group_size, self.per = floor, group_size, per
        beta = Constant(beta=1.0) if beta is None else beta
        self.record(beta=beta)
        self.schedule = beta

    def groups(self, kl: KLParts) -> Tensor:
        """The batch-mean KL of every group, (g,)."""
        if self.per == "layer":
            return torch.stack([layer.mean() for layer in kl.per_layer.values()])
        groups = []
        for name, per_unit in kl.per_unit.items():
            if per_unit is None:
                raise ConfigError(
                    f"FreeBits per unit needs the KL of each latent unit, and layer {name} has none (a correlated "
                    "posterior, or a prior that does not factorise): use per: layer"
                )
            if per_unit.shape[-1] % self.group_size:
                raise ConfigError(
                    f"FreeBits group_size {self.group_size} must divide the units of layer {name} "
                    f"({per_unit.shape[-1]})"
                )
            groups.append(reduce(per_unit, "b (g k) -> g", "mean", k=self.group_size) * self.group_size)
        return torch.cat(groups)

    def forward(self, log_px: Tensor, kl: KLParts, *, step: int, training: bool) -> WeightedLoss:
        groups = self.groups(kl)
        beta = self.schedule.beta(step)
        free = groups.clamp_min(self.floor)  # max(λ, KL_g): the gradient is zero where the floor wins
        extras = {"free_bits_active": float((groups < self.floor).float().mean())}
        return WeightedLoss(loss=-log_px.mean() + beta * free.sum(), kl_weight=beta, extras=extras)


class GECO(Weighting):
    """GECO (Rezende & Viola 2018): minimise the KL subject to recon ≤ ``target`` (nats per example).

    The Lagrangian KL + λ·(recon − target), divided by λ, is minimised as recon + KL/λ; the constraint
    C = recon − target is averaged over steps, C̄ ← α·C̄ + (1 − α)·C, and the multiplier follows
    λ ← λ·exp(ν·C̄): up while the reconstruction is worse than the target (less weight on the KL), down
    once it is better. λ and C̄ are buffers, saved in checkpoints; validation never updates them.
    The KL weight logged is 1/λ.
    """

    def __init__(
        self, *, target: float, alpha: float = 0.99, step_size: float = 1e-3, initial_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        if not 0 <= alpha < 1:
            raise ConfigError(f"GECO alpha (the moving-average factor) must be in [0, 1), got {alpha}")
        if not step_size > 0 or not initial_multiplier > 0:
            raise ConfigError("GECO step_size and initial_multiplier must be positive")
        self.target, self.alpha, self.step_size = target, alpha, step_size
        self.register_buffer("multiplier", torch.tensor(float(initial_multiplier)))
        self.register_buffer("constraint_average", torch.tensor(0.0))
        self.register_buffer("updates", torch.tensor(0))

    def forward(self, log_px: Tensor, kl: KLParts, *, step: int, training: bool) -> WeightedLoss:
        recon = -log_px.mean()
        if training:
            with torch.no_grad():
                constraint = recon.detach() - self.target
                moving = self.alpha * self.constraint_average + (1 - self.alpha) * constraint
                average = torch.where(self.updates == 0, constraint, moving)  # starts at the first value, not 0
                self.constraint_average.copy_(average)
                self.multiplier.mul_(torch.exp(self.step_size * average)).clamp_(1e-6, 1e6)
                self.updates += 1
        weight = 1.0 / float(self.multiplier)
        extras = {"geco_multiplier": float(self.multiplier), "geco_constraint": float(self.constraint_average)}
        return WeightedLoss(loss=recon + weight * kl.total.mean(), kl_weight=weight, extras=extras)
