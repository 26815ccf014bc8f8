"""A quiet console (vae.training.console): `vae fit`, as a new user runs it (no W&B key, no WANDB_* setting), with
its output going to files (not a terminal), prints no library advert, deprecation notice or duplicate line: one plain
line per epoch instead of a redrawn progress bar, one `wandb sync` line. A terminal keeps Lightning's bar.

The fit is conftest's ``trained_run``, run in this process by ``support.run``, which captures everything the
command writes (at the file descriptors too, Lightning's and W&B's logging included). What only a real process
shows (what its imports and its exit print, a real Ctrl-C) is tests/e2e/test_console_process.py's."""

import io
import re

import pytest
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE
from support import NOISE

from vae.training.progress import LineProgressBar, progress_bar_for

LIGHTNINGS_BAR = RichProgressBar if _RICH_AVAILABLE else TQDMProgressBar  # Lightning's default: Rich where installed
MOST_BYTES = 4000  # a 2-epoch fit's whole console: ~1.9 kB measured (the model summary is 0.9 kB of it)


def noise_in(text: str) -> list[str]:
    return [name for name, pattern in NOISE.items() if re.search(pattern, text)]


@pytest.fixture(scope="module")
def fit(trained_run):
    """What the shared 2-epoch fit (conftest's ``trained_run``) printed: (stdout, stderr)."""
    _, trained, _ = trained_run
    return (trained / "fit.out").read_text(), (trained / "fit.err").read_text()


def test_a_fit_prints_no_library_noise_and_one_line_per_epoch(fit):
    out, err = fit
    console = out + err
    assert noise_in(console) == []
    epochs = re.findall(r"^epoch (\d+), step (\d+), [\d.]+ s: train/elbo -[\d.]+, val/elbo -[\d.]+$", out, re.M)
    assert epochs == [("0", "4"), ("1", "8")]
    assert len(console.encode()) < MOST_BYTES, console
    assert "Trainer.fit` stopped: `max_epochs=2` reached" in err  # Lightning's own information stays


def test_a_fit_says_once_how_to_sync_its_offline_run(fit):
    out, err = fit
    assert (out + err).count("wandb sync") == 1
    assert re.search(r"^W&B run saved offline; upload it with: wandb sync runs/wandb/offline-run-\S+$", out, re.M)


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "settings", "expected"),
    [
        (True, {}, LIGHTNINGS_BAR),  # a terminal: Lightning's own bar
        (False, {}, LineProgressBar),  # a file, a pipe, a SLURM log: one line per epoch
        (False, {"enable_progress_bar": False}, type(None)),  # the user's choice wins
        (False, {"callbacks": [TQDMProgressBar(refresh_rate=50)]}, TQDMProgressBar),  # and their own bar
    ],
    ids=["terminal", "file", "no bar", "own bar"],
)
def test_the_progress_bar_is_chosen_by_where_the_output_goes(tty, settings, expected):
    settings = {"enable_progress_bar": None, "callbacks": [], **settings}
    bar = progress_bar_for(settings, [], stream=Stream(tty))
    trainer = Trainer(
        **{**settings, "callbacks": [*settings["callbacks"], *([bar] if bar else [])]},
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    assert type(trainer.progress_bar_callback) is expected
