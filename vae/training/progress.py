"""Progress where the output is not a terminal (a file, a SLURM log, a pipe): ``LineProgressBar``, one plain line per
training epoch instead of a bar redrawn in place with carriage returns; ``progress_bar_for`` chooses it (a terminal
keeps Lightning's bar, and a user's own progress bar, or ``--trainer.enable_progress_bar false``, wins)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: stdout, where Lightning's bar writes) is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


def progress_bar_for(trainer_config: dict, callbacks: list, stream: IO[str] | None = None) -> ProgressBar | None:
    """The progress bar to add to a Trainer built from ``trainer_config`` (plus ``callbacks``): a LineProgressBar
    where ``stream`` is not a terminal; None (Lightning's own choice: its TQDM bar, the user's, or none) where it
    is, where the user turned the bar off, or gave a progress bar of their own."""
    if trainer_config.get("enable_progress_bar") is False:
        return None
    given = trainer_config.get("callbacks") or []
    given = given if isinstance(given, list) else [given]
    if any(isinstance(callback, ProgressBar) for callback in [*given, *callbacks]):
        return None
    return None if interactive(stream) else LineProgressBar()


def number(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


class LineProgressBar(ProgressBar):
    """One plain line per training epoch, for a log file: the epoch (numbered as Lightning and the checkpoints
    number it), the global step, the epoch's time and the progress-bar metrics (``train/elbo``, and ``val/elbo``
    when this epoch validated)::

        epoch 3, step 280, 41.2 s: train/elbo -112.41, val/elbo -110.87
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream
        self._enabled = True
        self.started = time.monotonic()
        self.validated = False

    @property
    def is_enabled(self) -> bool:  # LightningModule.print asks
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, **{"file": self.stream or sys.stdout, "flush": True, **kwargs})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.validated = time.monotonic(), False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            self.print(self.epoch_line(trainer, pl_module))

    def epoch_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        if not self.validated:  # last epoch's validation numbers would pass for this one's
            metrics = {k: v for k, v in metrics.items() if not k.startswith("val")}
        seconds = time.monotonic() - self.started
        line = f"epoch {trainer.current_epoch}, step {trainer.global_step}, {seconds:.1f} s"
        shown = ", ".join(f"{key} {number(value)}" for key, value in metrics.items())
        return f"{line}: {shown}" if shown else line
