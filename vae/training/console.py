"""A quiet console: what a ``vae`` command prints is its own lines, Lightning's and W&B's information, and every
real warning and error; never a library's advert or a deprecation notice meant for library authors.

- ``quiet_console`` (each entry point calls it first): Lightning's "💡 Tip: ... try installing [litlogger]" /
  "[litmodels]" adverts, torch's pytree deprecation notices (raised by Lightning's own calls to
  ``torch.utils._pytree``) and jsonargparse's "does not round-trip" notice are dropped by precise filters (the
  message, its category, the logger that says it); W&B runs with its documented ``quiet`` setting
  (``WANDB_QUIET``, unless the user set it): its "wandb sync" footer, version line and summary panel go, its
  warnings and errors stay. Our own report says where the run is and how to sync it, once. Lightning's "[rank: 0]
  Received SIGTERM" goes too: StopOnSignal (vae.training.checkpoints) passes every stop signal, Ctrl-C too, to
  Lightning as
  a SIGTERM, and says itself which signal stopped the run and how to resume it.
- ``prepare_loggers``: before W&B starts a run, its folder exists (W&B looks for a git root there before it makes
  the folder, and warned "git root ... does not exist") and Lightning's ``anonymous=None`` is not passed on (W&B
  warns of any value given to that deprecated setting).
- ``quiet_resume``: a resumed run writes into its own checkpoint folder, so Lightning's "Checkpoint directory
  ... exists and is not empty" is no news then (it still shows for a new run pointed at a used folder).
- ``LineProgressBar`` / ``progress_bar_for``: where the output is not a terminal (a file, a SLURM log, a pipe),
  one plain line per training epoch instead of a bar redrawn in place with carriage returns; a terminal keeps
  Lightning's bar, and a user's own progress bar, or ``--trainer.enable_progress_bar false``, wins.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar

# Lightning's adverts for its cloud products, said through its rank-zero logger as information.
ADVERT = r"💡 Tip:|\[lit\w*\]\(https://pypi\.org/project/lit"
# Lightning's "[rank: 0] Received SIGTERM: 15": vae.training.checkpoints.StopOnSignal passes every stop signal
# (Ctrl-C too) on
# to Lightning as a SIGTERM, and says itself which signal stopped the run, where, and how to resume it.
RECEIVED_SIGTERM = r"(\[rank: \d+\] )?Received SIGTERM"
DROPPED = {
    "pytorch_lightning.utilities.rank_zero": ADVERT,
    "lightning.pytorch.utilities.rank_zero": ADVERT,
    "pytorch_lightning.trainer.connectors.signal_connector": RECEIVED_SIGTERM,
}
# torch.utils._pytree's deprecations ("`isinstance(treespec, LeafSpec)` is deprecated", "`torch.utils._pytree.
# _register_pytree_node` is deprecated", ...): raised in the libraries that call it, never actionable by a user.
PYTREE_DEPRECATION = r"`[^`]*(pytree|treespec)[^`]*` is deprecated"
CHECKPOINT_FOLDER_USED = r"Checkpoint directory .* exists and is not empty"


class Drop(logging.Filter):
    """Drops a logger's records whose message matches ``pattern``."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.search(record.getMessage()) is None


FILTERS = {name: Drop(pattern) for name, pattern in DROPPED.items()}


def quiet_console() -> None:
    """Silence the libraries' noise for the rest of the process (see the module's notes); safe to call again."""
    for name, drop in FILTERS.items():
        logging.getLogger(name).addFilter(drop)  # added once: the same filter object
    # The seed is in the saved config; "Seed set to 0" would only stand before any error message.
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", message=PYTREE_DEPRECATION, category=category)
    # Dumping the defaults' tuples (ConvNet channels) as YAML lists is expected; the notice is noise.
    warnings.filterwarnings("ignore", message="(?s).*does not round-trip")
    os.environ.setdefault("WANDB_QUIET", "true")


def quiet_resume() -> None:
    """A resumed run writes into its own, non-empty checkpoint folder: say nothing of it."""
    warnings.filterwarnings(
        "ignore",
        message=CHECKPOINT_FOLDER_USED,
        category=UserWarning,
        module=r"pytorch_lightning\.callbacks\.model_checkpoint",
    )


def prepare_loggers(loggers: list) -> None:
    """Before a W&B logger starts its run: its folder made, and no ``anonymous`` setting passed unless one is set."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is not None:
            continue
        init = logger._wandb_init
        if init.get("anonymous") is None:
            init.pop("anonymous", None)
        folder = init.get("dir") or os.environ.get("WANDB_DIR")
        if folder:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError:  # W&B says what is wrong with it, in its own words
                pass


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
