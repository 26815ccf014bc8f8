"""Faults through the real `vae` command: a run SIGKILLed mid-epoch resumes from last.ckpt and ends exactly
where an uninterrupted run ends, under the same W&B run id; a non-finite term stops the run with one line
naming the step and the term, and leaves the last checkpoint good (or skips the batch, if asked); a
checkpoint write killed half-way leaves the previous checkpoint whole."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import QUICKSTART, REPO
from test_cli import run_vae

from vae.checkpoints import read_checkpoint
from vae.wandb_offline import read_history

# 3 epochs of 6 steps on the embedded digits (dynamically binarized: the data draw noise too), deterministic.
SHORT = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "6", "--trainer.log_every_n_steps", "1"]
SHORT += ["--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false"]
FINAL = ("val/elbo", "val/recon", "val/kl", "val/active_units", "train/loss", "train/kl")


@pytest.fixture
def fault_env(offline_env):
    """The tests' fault callbacks (tests/faults.py) importable and trusted by the `vae` command."""
    tests = str(REPO / "tests")
    return {**offline_env, "PYTHONPATH": tests, "VAE_TRUSTED_MODULES": "faults"}


def fault_config(tmp_path, name: str, init_args: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    callbacks = [{"class_path": f"faults.{name}", "init_args": init_args}]
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return str(path)


def finals(run_file) -> dict[str, float]:
    history = read_history(run_file)
    return {key: history.values(key)[-1] for key in FINAL}


def test_a_run_killed_mid_epoch_resumes_to_the_same_final_metrics(tmp_path, fault_env):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    fit = ["fit", "--config", str(QUICKSTART), *SHORT]
    uninterrupted = run_vae(fit, cwd=whole, env={**fault_env, "WANDB_DIR": str(whole)})
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    kill = fault_config(tmp_path, "KillAtStep", {"step": 9})  # epoch 2 of 3, step 3 of 6
    killed = run_vae([*fit, "--config", kill], cwd=broken, env={**fault_env, "WANDB_DIR": str(broken)})
    assert killed.returncode == -signal.SIGKILL
    (run,) = (broken / "runs" / "vae").iterdir()
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6  # the end of epoch 1
    resumed = run_vae([*fit, "--ckpt_path", "last"], cwd=broken, env={**fault_env, "WANDB_DIR": str(broken)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run / 'checkpoints' / 'last.ckpt'}".replace(str(broken) + "/", "") in resumed.stdout

    (whole_file,) = (whole / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    broken_files = sorted((broken / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(broken_files) == 2 and {f.parent.name.rsplit("-", 1)[1] for f in broken_files} == {run.name}
    expected, got = finals(whole_file), finals(broken_files[-1])
    assert got == {key: pytest.approx(value, rel=1e-6, abs=1e-6) for key, value in expected.items()}
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in whole.glob("runs/vae/*/checkpoints/best-*.ckpt")) and len(best) == 1
    steps = [read_history(f).values("trainer/global_step")[-1] for f in (whole_file, broken_files[-1])]
    assert steps[0] == steps[1] > 12  # the resumed run ran on to the same last step


def test_a_nonfinite_term_stops_the_run_with_one_line_and_a_good_checkpoint(tmp_path, fault_env):
    poison = fault_config(tmp_path, "PoisonAtStep", {"step": 8})  # epoch 2
    result = run_vae(["fit", "--config", str(QUICKSTART), *SHORT, "--config", poison], cwd=tmp_path, env=fault_env)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: step 8: non-finite train/loss = nan, train/recon = nan, train/kl = nan;"), line
    assert "Traceback" not in result.stderr
    (run,) = (tmp_path / "runs" / "vae").iterdir()
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_a_nonfinite_gradient_stops_the_run_naming_the_parameter(tmp_path, fault_env):
    poison = fault_config(tmp_path, "PoisonAtStep", {"step": 3, "what": "gradient"})
    result = run_vae(["fit", "--config", str(QUICKSTART), *SHORT, "--config", poison], cwd=tmp_path, env=fault_env)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: step 3: non-finite gradient of vae.encoder."), line


def test_skip_policy_skips_the_poisoned_updates_and_trains_on(tmp_path, fault_env):
    poison = fault_config(tmp_path, "PoisonAtStep", {"step": 3, "what": "gradient"})
    args = ["fit", "--config", str(QUICKSTART), *SHORT, "--config", poison, "--model.nonfinite", "skip"]
    result = run_vae(args, cwd=tmp_path, env=fault_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 3: non-finite gradient of vae.encoder." in result.stderr
    (run_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    assert read_history(run_file).values("train/skipped_steps")[-1] == 1.0


WRITER = """
import sys, torch
from vae.checkpoints import AtomicCheckpointIO
AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(int(sys.argv[2]))}, sys.argv[1])
"""


def test_a_checkpoint_write_killed_half_way_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    subprocess.run([sys.executable, "-c", WRITER, str(path), "10"], check=True)
    before = path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(300_000_000)])  # 1.2 GB
    partial = tmp_path / "last.ckpt.partial"
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 1_000_000) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(writer.pid, signal.SIGKILL)  # half-way through writing
    writer.wait()
    assert partial.exists() and partial.stat().st_size < 1_200_000_000
    assert path.read_bytes() == before
    assert torch.equal(read_checkpoint(path)["weights"], torch.ones(10))
