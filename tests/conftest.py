"""Fixtures every tier shares. The tiers:

tests/unit          no Trainer, no command: maths against exact references, parts, bad arguments
tests/integration   Lightning fits and `vae` commands in this process (``support.run``)
tests/e2e           real processes: signals, a killed job, a full disk, DDP, the console script, the README
"""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from support import FIT, QUICKSTART, REPO, new_user, offline, only_run, run, study_rows, unbroken_and_resumed  # noqa: F401 (the tests import them from here)

DATA = REPO / "tests" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def offline_env(tmp_path):
    """W&B offline, its files in tmp_path."""
    return offline(tmp_path)


@pytest.fixture
def new_user_env(tmp_path):
    """A new user's environment: no W&B key, no WANDB_* setting, a home of their own."""
    return new_user(tmp_path / "home")


def tiny_trainer(root: Path, **settings) -> pl.Trainer:
    """A quiet CPU Trainer for the tests: no logger, checkpoints, progress bar or summary unless given."""
    quiet = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
    }
    return pl.Trainer(**{**quiet, **settings})


@pytest.fixture
def trainer(tmp_path):
    """``trainer(**settings)``: a quiet CPU Trainer (``tiny_trainer``) in this test's folder."""

    def make(**settings) -> pl.Trainer:
        return tiny_trainer(tmp_path, **settings)

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run folder of the quick start after 2 short epochs (4 steps each, metrics every 2), trained by `vae fit`
    as a new user runs it (no W&B key: offline by itself), and the user's folder and environment."""
    root = tmp_path_factory.mktemp("trained")
    env = new_user(root / "home")
    args = ["fit", "--config", str(QUICKSTART), "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4"]
    result = run([*args, "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "2"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (root / "fit.out").write_text(result.stdout)  # what the fit printed, for tests of the console
    (root / "fit.err").write_text(result.stderr)
    (folder,) = (root / "runs" / "vae").iterdir()
    return folder, root, env


@pytest.fixture(scope="session")
def one_epoch(tmp_path_factory):
    """A finished one-epoch run of ``support.FIT`` (in this process), its working folder; tests that resume or test it
    work on a copy (``support.copy_of``)."""
    root = tmp_path_factory.mktemp("one-epoch")
    result = run([*FIT, "--trainer.max_epochs", "1"], cwd=root, env=offline(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root
