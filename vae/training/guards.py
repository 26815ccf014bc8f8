"""Gradient-norm clipping and the skipping of updates whose gradient norm is too large (VDVAE, Child 2021),
with a threshold that adapts and cannot stall training.

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
from typing import Literal

import torch
from torch import nn

from vae.core.errors import ConfigError

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
