import os
from pathlib import Path

import pytest
import torch
from command import run_vae, start_vae, vae_command  # noqa: F401 (the tests import them from here)

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def offline_env(tmp_path):
    """The environment for a real `vae` process: W&B offline, its files in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return env


def new_user(home: Path) -> dict:
    """A new user's environment for a real `vae` process: no W&B key and no WANDB_* setting (so the command itself
    decides to log offline), and a home folder of their own (no ~/.netrc, no W&B settings)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")
    env.pop("WANDB_API_KEY", None)
    return env


@pytest.fixture
def new_user_env(tmp_path):
    return new_user(tmp_path / "home")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run folder of the quick start after 2 short epochs (4 steps each, metrics every 2), trained by the real
    `vae fit` as a new user runs it (no W&B key: offline by itself), and the user's folder and environment."""
    root = tmp_path_factory.mktemp("trained")
    env = new_user(root / "home")
    args = ["fit", "--config", str(QUICKSTART), "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4"]
    result = run_vae([*args, "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "2"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (root / "fit.out").write_text(result.stdout)  # what the fit printed, for tests of the console
    (root / "fit.err").write_text(result.stderr)
    (folder,) = (root / "runs" / "vae").iterdir()
    return folder, root, env
