"""Resuming and the training guards through the `vae` command, in this process: a resumed run takes the settings
it is given, says which changed and keeps every part's config; a non-finite term stops the run with one line naming
the step and the term and leaves the last checkpoint good, or (``--guard.nonfinite skip``) skips the batch and
trains on. The faults are planted by tests/faults.py's callbacks (trusted through VAE_TRUSTED_MODULES=faults)."""

import pytest
import torch
import yaml
from conftest import run
from support import FIT, copy_of

from vae.training.checkpoint_io import read_checkpoint
from vae.training.tracking import read_history

# Epochs of 6 steps on the embedded digits, deterministic (as tests/e2e/test_faults.py).


@pytest.fixture
def fault_env(offline_env):
    """The tests' fault callbacks trusted by the `vae` command (tests/ is on sys.path, so `faults` imports)."""
    return {**offline_env, "VAE_TRUSTED_MODULES": "faults"}


def fault_config(tmp_path, name: str, init_args: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    callbacks = [{"class_path": f"faults.{name}", "init_args": init_args}]
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return str(path)


def test_resuming_applies_the_new_settings_says_which_and_keeps_every_config(tmp_path, fault_env, one_epoch):
    run_folder = copy_of(one_epoch, tmp_path)
    original = (run_folder / "config.yaml").read_bytes()
    args = [*FIT, "--trainer.max_epochs", "2", "--model.optimizer.init_args.lr", "1e-05", "--ckpt_path", "last"]
    resumed = run(args, cwd=tmp_path, env=fault_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "changed: model.optimizer.lr 0.001 → 1e-05, trainer.max_epochs 1 → 2" in resumed.stdout
    groups = read_checkpoint(run_folder / "checkpoints" / "last.ckpt")["optimizer_states"][0]["param_groups"]
    assert [group["lr"] for group in groups] == [1e-05]  # not the checkpoint's 1e-3
    assert (run_folder / "config.yaml").read_bytes() == original  # the first part's config, untouched
    second = yaml.safe_load((run_folder / "config-resume-1.yaml").read_text())
    assert second["model"]["optimizer"]["init_args"]["lr"] == 1e-05 and second["trainer"]["max_epochs"] == 2


def test_a_nonfinite_term_stops_the_run_with_one_line_and_a_good_checkpoint(tmp_path, fault_env):
    poison = fault_config(tmp_path, "PoisonAtStep", {"step": 8})  # epoch 2
    result = run([*FIT, "--config", poison], cwd=tmp_path, env=fault_env)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: step 8: non-finite train/loss = nan, train/recon = nan, train/kl = nan;"), line
    assert "Traceback" not in result.stderr
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    checkpoint = read_checkpoint(run_folder / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_a_nonfinite_gradient_stops_the_run_naming_the_parameter(tmp_path, fault_env):
    poison = fault_config(tmp_path, "PoisonAtStep", {"step": 3, "what": "gradient"})
    result = run([*FIT, "--config", poison], cwd=tmp_path, env=fault_env)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: step 3: non-finite gradient of model.network.encoder."), line


def test_skip_policy_skips_the_poisoned_updates_and_trains_on(tmp_path, fault_env):
    poison = fault_config(tmp_path, "PoisonAtStep", {"step": 3, "what": "gradient"})
    result = run([*FIT, "--config", poison, "--guard.nonfinite", "skip"], cwd=tmp_path, env=fault_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 3: non-finite gradient of model.network.encoder." in result.stderr
    (run_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    assert read_history(run_file).values("train/skipped_steps")[-1] == 1.0
