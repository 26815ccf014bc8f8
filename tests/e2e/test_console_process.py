"""A quiet console, as a real process shows it: `vae fit` resuming the shared run (conftest's ``trained_run``) as a
new user runs it (no W&B key, no WANDB_* setting), its output going to files, stopped by a real Ctrl-C (SIGINT)
mid-epoch. Everything the process prints counts, what its imports and its exit print included: no library advert,
deprecation notice or duplicate line; a resumed run does not warn that its own checkpoint folder is not empty; the
Ctrl-C says once how to resume and exits 130."""

import re
import shutil
import signal

import pytest
import yaml
from conftest import QUICKSTART, REPO, new_user
from support import NOISE, run_process

SHORT = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
SHORT += ["--trainer.log_every_n_steps", "2"]  # as conftest's trained_run, whose run is resumed


def noise_in(text: str) -> list[str]:
    return [name for name, pattern in NOISE.items() if re.search(pattern, text)]


@pytest.fixture(scope="module")
def resumed(trained_run, tmp_path_factory):
    """In a copy of the shared run's folder, its resumption (--ckpt_path last, to epoch 3) in a process of its own,
    stopped by a Ctrl-C (SIGINT) that the process sends itself after step 10 (epoch 2 of 3)."""
    _, trained, _ = trained_run
    root = tmp_path_factory.mktemp("console") / "user"
    shutil.copytree(trained, root, symlinks=True)
    env = new_user(root / "home")
    ctrl_c = root / "ctrl_c.yaml"
    callback = {"class_path": "faults.SignalAtStep", "init_args": {"step": 10, "signal": "SIGINT"}}
    ctrl_c.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    faults = {**env, "PYTHONPATH": str(REPO / "tests"), "VAE_TRUSTED_MODULES": "faults"}
    args = ["fit", "--config", str(QUICKSTART), *SHORT, "--ckpt_path", "last", "--config", str(ctrl_c)]
    return run_process(args, cwd=root, env=faults)


def test_a_resumed_run_is_quiet_and_a_ctrl_c_says_once_how_to_resume(resumed):
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
