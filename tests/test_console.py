"""A quiet console (vae.training.console): a real `vae fit`, as a new user runs it (no W&B key, no WANDB_* setting)
with its
output going to files (not a terminal), prints no library advert, deprecation notice or duplicate line: one plain
line per epoch instead of a redrawn progress bar, one `wandb sync` line; a resumed run does not warn that its own
checkpoint folder is not empty; a Ctrl-C says once how to resume and exits 130. A terminal keeps Lightning's bar."""

import io
import re
import shutil
import signal
import subprocess

import pytest
import yaml
from conftest import QUICKSTART, REPO, new_user, run_vae
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import TQDMProgressBar

from vae.training.console import LineProgressBar, progress_bar_for

SHORT = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
SHORT += ["--trainer.log_every_n_steps", "2"]  # as conftest's trained_run, whose run is resumed
FIT = ["fit", "--config", str(QUICKSTART)]
NOISE = {  # what each library used to print, by the words it used
    "Lightning's advert": r"💡|Tip:|litlogger|LitLogger|litmodels",
    "W&B's anonymous warning": r"anonymous setting",
    "W&B's git root warning": r"git root",
    "a pytree deprecation": r"pytree|treespec|LeafSpec",
    "W&B's own sync footer": r"You can sync this run",
    "W&B's version line": r"Tracking run with wandb version",
    "Lightning's SIGTERM notice": r"Received SIGTERM",
    "a progress bar redraw": r"\r|\x1b\[",
    "a traceback": r"Traceback",
}
MOST_BYTES = 4000  # a 2-epoch fit's whole console: ~1.9 kB measured (the model summary is 0.9 kB of it)


def noise_in(text: str) -> list[str]:
    return [name for name, pattern in NOISE.items() if re.search(pattern, text)]


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory):
    """The shared 2-epoch fit's output (conftest's ``trained_run``), then, in a copy of its folder, its resumption
    (--ckpt_path last, to epoch 3) stopped by a Ctrl-C (SIGINT) mid-epoch; each command's own process, with stdout
    and stderr going to files."""
    _, trained, _ = trained_run
    fit = subprocess.CompletedProcess([], 0, (trained / "fit.out").read_text(), (trained / "fit.err").read_text())
    root = tmp_path_factory.mktemp("console") / "user"
    shutil.copytree(trained, root, symlinks=True)
    env = new_user(root / "home")
    ctrl_c = root / "ctrl_c.yaml"  # a real SIGINT, sent by the process to itself after step 10 (epoch 2 of 3)
    ctrl_c.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [{"class_path": "faults.SignalAtStep", "init_args": {"step": 10, "signal": "SIGINT"}}]
                }
            }
        )
    )
    faults = {**env, "PYTHONPATH": str(REPO / "tests"), "VAE_TRUSTED_MODULES": "faults"}
    resumed = run_vae(
        [*FIT, *SHORT, "--trainer.max_epochs", "3", "--ckpt_path", "last", "--config", str(ctrl_c)],
        cwd=root,
        env=faults,
    )
    return fit, resumed


def test_a_fit_prints_no_library_noise_and_one_line_per_epoch(runs):
    fit, _ = runs
    console = fit.stdout + fit.stderr
    assert noise_in(console) == []
    epochs = re.findall(r"^epoch (\d+), step (\d+), [\d.]+ s: train/elbo -[\d.]+, val/elbo -[\d.]+$", fit.stdout, re.M)
    assert epochs == [("0", "4"), ("1", "8")]
    assert len(console.encode()) < MOST_BYTES, console
    assert "Trainer.fit` stopped: `max_epochs=2` reached" in fit.stderr  # Lightning's own information stays


def test_a_fit_says_once_how_to_sync_its_offline_run(runs):
    fit, _ = runs
    console = fit.stdout + fit.stderr
    assert console.count("wandb sync") == 1
    assert re.search(
        r"^W&B run saved offline; upload it with: wandb sync runs/wandb/offline-run-\S+$", fit.stdout, re.M
    )


def test_a_resumed_run_is_quiet_and_a_ctrl_c_says_once_how_to_resume(runs):
    _, resumed = runs
    console = resumed.stdout + resumed.stderr
    assert resumed.returncode == 128 + signal.SIGINT, resumed.stderr[-3000:]
    assert "exists and is not empty" not in console
    assert noise_in(console) == []
    assert "resuming runs/vae/" in resumed.stdout
    (stopped,) = re.findall(
        r"^stopped by SIGINT at step 10, epoch 2: saved \S+/last\.ckpt; resume with --ckpt_path last$",
        resumed.stdout,
        re.M,
    )
    assert console.count("resume with --ckpt_path last") == 1
    assert console.count("wandb sync") == 1


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "settings", "expected"),
    [
        (True, {}, TQDMProgressBar),  # a terminal: Lightning's own bar
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


def test_the_epoch_line_shows_this_epochs_numbers_only_and_only_where_enabled():
    class Trained:
        current_epoch, global_step, loggers = 3, 280, []
        progress_bar_metrics = {"train/elbo": -112.414, "val/elbo": -5.0}

    out = Stream(tty=False)
    bar = LineProgressBar(stream=out)
    bar.on_train_epoch_start(Trained, None)
    bar.on_train_epoch_end(Trained, None)  # no validation this epoch: the last one's numbers are not shown
    assert re.fullmatch(r"epoch 3, step 280, 0\.\d s: train/elbo -112\.41\n", out.getvalue())
    bar.validated = True
    assert bar.epoch_line(Trained, None).endswith(": train/elbo -112.41, val/elbo -5.00")
    bar.disable()  # what Lightning does on every process but the first
    bar.on_train_epoch_end(Trained, None)
    assert not bar.is_enabled and out.getvalue().count("\n") == 1
