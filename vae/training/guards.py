"""The training guards (``Guard``, a callback): non-finite losses and gradients, gradient-norm clipping, and the
skipping of updates whose gradient norm is too large (VDVAE, Child 2021), with a threshold that adapts and cannot
stall training (``GradientGuard``).

VDVAE skips every update whose gradient norm exceeds a fixed threshold; when the norms of a healthy run grow past
it, every update is skipped and training stops moving (vdvae issue 25). The adaptive threshold here is a multiple
of the running geometric mean of the norms, updated on every step, skipped ones included, so a lasting rise in
the norms lifts the threshold with it; and after ``max_consecutive`` skips in a row the next update is taken
(clipped to the threshold), whatever its norm. Its state is in buffers, saved in checkpoints: a resumed run
continues with the same threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from vae.core.errors import ConfigError, NonFiniteError
from vae.training.runs import last_checkpoint_path

SkipSetting = float | Literal["adaptive"] | None


@dataclass(frozen=True)
class Decision:
    """skip: drop this update; clip_to: the norm to clip the gradients to (None: leave them); threshold: the skip
    threshold in force (None if there is none)."""

    skip: bool
    clip_to: float | None
    threshold: float | None


class GradientGuard(nn.Module):
    """clip: clip the total gradient norm to this value (None: no clipping).
    skip: skip updates whose gradient norm exceeds this fixed value, or "adaptive": ``factor`` times the running
        geometric mean of the norms (an exponential average of log-norms with ``decay``), once ``warmup`` steps
        have been seen; None: never skip.
    max_consecutive: the most updates skipped in a row; the next is taken, clipped to the threshold.
    """

    def __init__(
        self,
        *,
        clip: float | None = None,
        skip: SkipSetting = None,
        factor: float = 5.0,
        decay: float = 0.99,
        warmup: int = 50,
        max_consecutive: int = 5,
    ) -> None:
        super().__init__()
        if clip is not None and not clip > 0:
            raise ConfigError(f"grad_clip must be positive, got {clip}")
        if skip is not None and skip != "adaptive" and not (isinstance(skip, (int, float)) and skip > 0):
            raise ConfigError(f"grad_skip must be a positive number or 'adaptive', got {skip!r}")
        if not factor > 1 or not 0 < decay < 1 or warmup < 0 or max_consecutive < 1:
            raise ConfigError("gradient guard: factor must exceed 1, decay lie in (0, 1), max_consecutive be positive")
        self.clip, self.skip, self.factor, self.decay = clip, skip, factor, decay
        self.warmup, self.max_consecutive = warmup, max_consecutive
        self.register_buffer("log_norm_average", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("seen", torch.tensor(0))
        self.register_buffer("skipped", torch.tensor(0))
        self.register_buffer("consecutive", torch.tensor(0))

    @property
    def active(self) -> bool:
        return self.clip is not None or self.skip is not None

    def threshold(self) -> float | None:
        if self.skip is None:
            return None
        if self.skip != "adaptive":
            return float(self.skip)
        if int(self.seen) < max(self.warmup, 1):
            return None
        return self.factor * math.exp(float(self.log_norm_average))

    def decide(self, norm: float) -> Decision:
        """The decision for a finite total gradient norm; updates the running state (call once per step)."""
        threshold = self.threshold()
        skip = threshold is not None and norm > threshold and int(self.consecutive) < self.max_consecutive
        clip_to = self.clip
        if threshold is not None and norm > threshold and not skip:  # taken after max_consecutive skips
            clip_to = threshold if clip_to is None else min(clip_to, threshold)
        log_norm = math.log(max(norm, 1e-12))
        first = int(self.seen) == 0
        self.log_norm_average.fill_(
            log_norm if first else self.decay * float(self.log_norm_average) + (1 - self.decay) * log_norm
        )
        self.seen += 1
        self.skipped += int(skip)
        self.consecutive.fill_(int(self.consecutive) + 1 if skip else 0)
        return Decision(skip=skip, clip_to=clip_to, threshold=threshold)


NonFinitePolicy = Literal["stop", "skip"]


class Guard(pl.Callback):
    """The training guards, as a callback (the ``vae`` command's ``guard`` section), once per optimizer step with
    one host sync: this step's loss terms and the gradients' total norm.

    grad_clip: clip the gradients' total norm to this value; None is off.
    grad_skip: skip updates whose gradient norm exceeds this value (VDVAE), or "adaptive" (a threshold that follows
        the norms and cannot stall training, ``GradientGuard``); None is off.
    nonfinite: what a non-finite training loss, KL, reconstruction or gradient does: "stop" (the default) ends the
        run with a message naming the step and the term, before the optimizer step, so the weights and the last
        checkpoint stay good; "skip" skips that batch's update, warns, and counts the skipped steps.

    Logged at training steps: ``train/grad_norm`` and ``train/grad_skip_threshold`` when clipping or skipping is on,
    ``train/skipped_steps`` when steps can be skipped. Under DDP the gradients are already averaged, so every process
    sees the same norm and takes the same decision. Its state (the adaptive threshold, the counts) is saved in every
    checkpoint, so a resumed run continues with it.
    """

    def __init__(
        self, *, grad_clip: float | None = None, grad_skip: SkipSetting = None, nonfinite: NonFinitePolicy = "stop"
    ) -> None:
        if nonfinite not in ("stop", "skip"):
            raise ConfigError(f"guard.nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        self.gradients = GradientGuard(clip=grad_clip, skip=grad_skip)
        self.nonfinite = nonfinite
        self.trainables: tuple[tuple[str, torch.nn.Parameter], ...] = ()

    @property
    def state_key(self) -> str:
        return "Guard"

    def state_dict(self) -> dict[str, Any]:
        return {name: value.clone() for name, value in self.gradients.state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.gradients.load_state_dict(state_dict)

    @property
    def counts_skips(self) -> bool:
        return self.nonfinite == "skip" or self.gradients.skip is not None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The parameters by name, listed once: walking the modules each step cost 0.6 ms on the CPU.
        self.trainables = tuple((name, p) for name, p in pl_module.named_parameters() if p.requires_grad)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """A non-finite term or gradient stops the run (a NonFiniteError naming the step and the terms), or under
        ``nonfinite="skip"`` drops every gradient, so the optimizer leaves all weights and its own state alone. A
        finite norm goes to the gradient guard, which clips the gradients or skips the update."""
        terms, pl_module.step_terms = getattr(pl_module, "step_terms", {}), {}
        values = [term.float().reshape(()) for term in terms.values()]
        grads = {name: p.grad for name, p in self.trainables if p.grad is not None}
        check_norm = trainer.precision != "16-mixed"  # 16-mixed: the gradient scaler skips inf steps
        guarded = self.gradients.active
        norm = None
        if grads and (check_norm or guarded):
            norm = torch.nn.utils.get_total_norm(list(grads.values()))
            values.append(norm.reshape(()))
        if values:
            numbers = torch.stack(values).tolist()  # the one host sync
            finite_terms = all(math.isfinite(v) for v in numbers[: len(terms)])
            finite_norm = norm is None or math.isfinite(numbers[-1])
            if not finite_terms or (check_norm and not finite_norm):
                self.nonfinite_step(trainer, pl_module, terms, numbers, grads)
            elif norm is not None and finite_norm and guarded:
                self.apply(pl_module, numbers[-1], norm)
        if self.counts_skips and writes_train_metrics(pl_module):
            pl_module.log("train/skipped_steps", float(self.gradients.skipped), on_step=True, on_epoch=False)

    def nonfinite_step(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        terms: dict[str, Tensor],
        numbers: list[float],
        grads: dict[str, Tensor],
    ) -> None:
        bad_terms = [f"train/{name} = {value}" for name, value in zip(terms, numbers) if not math.isfinite(value)]
        if bad_terms:
            what = ", ".join(bad_terms)
        else:
            names = [name for name, grad in grads.items() if not bool(torch.isfinite(grad).all())]
            what = f"gradient of {', '.join(names[:3])}{' and more' if len(names) > 3 else ''}"
        step = trainer.global_step
        if self.nonfinite == "stop":
            last = last_checkpoint_path(trainer)
            where = f"the last good checkpoint is {last}; " if last.is_file() else ""
            raise NonFiniteError(
                f"step {step}: non-finite {what}; stopped before the update, {where}lower the learning rate (and "
                "resume with --ckpt_path last), or set --guard.nonfinite skip to skip such batches"
            )
        self.gradients.skipped += 1
        rank_zero_warn(f"step {step}: non-finite {what}; skipped this update (guard.nonfinite: skip)")
        self.drop_gradients()

    def apply(self, pl_module: pl.LightningModule, value: float, norm: Tensor) -> None:
        """Clip or skip this update as the gradient guard decides, and log the norm and the threshold."""
        decision = self.gradients.decide(value)
        if decision.skip:
            self.drop_gradients()
        elif decision.clip_to is not None:
            torch.nn.utils.clip_grads_with_norm_([p for _, p in self.trainables], decision.clip_to, norm)
        if writes_train_metrics(pl_module):
            logged = {"train/grad_norm": value}
            if decision.threshold is not None:
                logged["train/grad_skip_threshold"] = decision.threshold
            pl_module.log_dict(logged, on_step=True, on_epoch=False)

    def drop_gradients(self) -> None:
        for _, p in self.trainables:
            p.grad = None


def writes_train_metrics(pl_module: pl.LightningModule) -> bool:
    """Whether the module logs this training step's metrics (``VAEModule.writes_train_metrics``)."""
    writes = getattr(pl_module, "writes_train_metrics", None)
    return bool(writes()) if writes is not None else False
