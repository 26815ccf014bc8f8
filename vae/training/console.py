"""A quiet console: what a ``vae`` command prints is its own lines, Lightning's and W&B's information, and every
real warning and error; never a library's advert or a deprecation notice meant for library authors.

- ``quiet_console`` (each entry point calls it first): Lightning's "💡 Tip: ... try installing [litlogger]" /
  "[litmodels]" adverts, torch's pytree deprecation notices (raised by Lightning's own calls to
  ``torch.utils._pytree``) and jsonargparse's "does not round-trip" notice are dropped by precise filters (the
  message, its category, the logger that says it); W&B runs with its documented ``quiet`` setting
  (``WANDB_QUIET``, unless the user set it): its "wandb sync" footer, version line and summary panel go, its
  warnings and errors stay. Our own report says where the run is and how to sync it, once. Lightning's "[rank: 0]
  Received SIGTERM" goes too: StopOnSignal (vae.training.signals) passes every stop signal, Ctrl-C too, to
  Lightning as a SIGTERM, and says itself which signal stopped the run and how to resume it.
- ``prepare_loggers``: before W&B starts a run, its folder exists (W&B looks for a git root there before it makes
  the folder, and warned "git root ... does not exist") and Lightning's ``anonymous=None`` is not passed on (W&B
  warns of any value given to that deprecated setting).
- ``quiet_resume``: a resumed run writes into its own checkpoint folder, so Lightning's "Checkpoint directory
  ... exists and is not empty" is no news then (it still shows for a new run pointed at a used folder).

Every ``vae`` command starts with ``quiet_console`` (``vae.commands.main``); this module loads no library itself, so
that a light command stays light. Progress lines off a terminal are ``vae.training.progress``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

from vae.training.tracking import after_its_last_part

# Lightning's adverts for its cloud products, said through its rank-zero logger as information.
ADVERT = r"💡 Tip:|\[lit\w*\]\(https://pypi\.org/project/lit"
# Lightning's "[rank: 0] Received SIGTERM: 15": vae.training.signals.StopOnSignal passes every stop signal
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
        after_its_last_part(folder, init.get("id"))  # a resumed run's new part in a folder of its own
