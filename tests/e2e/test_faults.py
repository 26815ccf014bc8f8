"""Faults that only a real process can meet, through the `vae` command: a run SIGKILLed mid-epoch resumes from
last.ckpt and ends exactly where an uninterrupted run ends, under the same W&B run id, with the completed epochs'
metrics in W&B; a SIGTERM (or Ctrl-C, SIGHUP, SIGUSR1) saves mid-epoch, says how to resume, marks the W&B run and
exits non-zero, and the resumed run ends exactly where an uninterrupted one does; two processes never train in one
run folder; a checkpoint write failing on a full disk (RLIMIT_FSIZE), or killed half-way, leaves the previous
checkpoint whole. The uninterrupted reference run and the resumptions run in this process (``support.run``)."""

import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO, offline, run
from support import FIT, copy_of, finished, run_process, start_process

from vae.training.checkpoint_io import read_checkpoint
from vae.training.tracking import read_history, read_records

FINAL = ("val/elbo", "val/recon", "val/kl", "val/active_units", "train/loss", "train/kl")


@pytest.fixture
def fault_env(offline_env):
    """The tests' fault callbacks (tests/faults.py) importable and trusted by a `vae` process."""
    return {**offline_env, "PYTHONPATH": str(REPO / "tests"), "VAE_TRUSTED_MODULES": "faults"}


def fault_config(tmp_path, name: str, init_args: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    callbacks = [{"class_path": f"faults.{name}", "init_args": init_args}]
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return str(path)


def finals(run_file) -> dict[str, float]:
    history = read_history(run_file)
    return {key: history.values(key)[-1] for key in FINAL}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 3-epoch run that the interrupted ones must end exactly like (in this process): its folder and its W&B
    run file."""
    whole = tmp_path_factory.mktemp("whole")
    result = run(FIT, cwd=whole, env=offline(whole))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_file,) = (whole / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    return whole, run_file


def assert_ends_like(uninterrupted, folder, run_folder) -> None:
    """The resumed run's last W&B part ends with the uninterrupted run's metrics (to 1e-6), at the same step,
    with the same best checkpoint."""
    whole, whole_file = uninterrupted
    files = sorted((folder / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {f.parent.name.rsplit("-", 1)[1] for f in files} == {run_folder.name}
    expected, got = finals(whole_file), finals(files[-1])
    assert got == {key: pytest.approx(value, rel=1e-6, abs=1e-6) for key, value in expected.items()}
    best = sorted(p.name for p in (run_folder / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in whole.glob("runs/vae/*/checkpoints/best-*.ckpt")) and len(best) == 1
    steps = [read_history(f).values("trainer/global_step")[-1] for f in (whole_file, files[-1])]
    assert steps[0] == steps[1] > 12  # the resumed run ran on to the same last step


def stdout(result) -> str:
    return " ".join(result.stdout.split())


def test_a_run_killed_mid_epoch_resumes_to_the_same_final_metrics(tmp_path, fault_env, uninterrupted):
    kill = fault_config(tmp_path, "KillAtStep", {"step": 9})  # epoch 2 of 3, step 3 of 6
    killed = run_process([*FIT, "--config", kill], cwd=tmp_path, env=fault_env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    assert read_checkpoint(run_folder / "checkpoints" / "last.ckpt")["global_step"] == 6  # the end of epoch 1
    (killed_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    assert len(read_history(killed_file).values("val/elbo")) == 1  # the completed epoch reached W&B's file
    resumed = run([*FIT, "--ckpt_path", "last"], cwd=tmp_path, env=fault_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_folder / 'checkpoints' / 'last.ckpt'}".replace(str(tmp_path) + "/", "") in resumed.stdout
    assert_ends_like(uninterrupted, tmp_path, run_folder)
    files = sorted((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert sum(len(read_history(f).values("val/elbo")) for f in files) == 3  # every epoch, once, after sync


def test_sigterm_saves_mid_epoch_reports_and_the_resumed_run_ends_the_same(tmp_path, fault_env, uninterrupted):
    term = fault_config(tmp_path, "SignalAtStep", {"step": 9, "signal": "SIGTERM"})
    stopped = run_process([*FIT, "--config", term], cwd=tmp_path, env=fault_env)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    last = (run_folder / "checkpoints" / "last.ckpt").relative_to(tmp_path)
    assert f"stopped by SIGTERM at step 9, epoch 1: saved {last}; resume with --ckpt_path last" in stdout(stopped)
    assert "W&B run saved offline; upload it with: wandb sync " in stopped.stdout
    assert read_checkpoint(tmp_path / last)["global_step"] == 9  # mid-epoch, where it stopped
    (stopped_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    kinds = {record.WhichOneof("record_type"): record for record in read_records(stopped_file)}
    assert "preempting" in kinds and kinds["exit"].exit.exit_code == 143  # W&B: preempted, failed with 143
    resumed = run([*FIT, "--ckpt_path", "last"], cwd=tmp_path, env=fault_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "You're resuming from a checkpoint that ended before the epoch ended" not in resumed.stderr
    assert_ends_like(uninterrupted, tmp_path, run_folder)


@pytest.mark.parametrize(  # SIGINT in the default suite; the other two take the same path (slow set)
    "name", ["SIGINT", pytest.param("SIGHUP", marks=pytest.mark.slow), pytest.param("SIGUSR1", marks=pytest.mark.slow)]
)
def test_other_stop_signals_save_and_exit_with_their_number(tmp_path, fault_env, name):
    stop = fault_config(tmp_path, "SignalAtStep", {"step": 3, "signal": name})
    stopped = run_process([*FIT, "--config", stop], cwd=tmp_path, env=fault_env)
    assert stopped.returncode == 128 + getattr(signal, name), stopped.stderr[-3000:]
    assert f"stopped by {name} at step 3, epoch 0: saved " in stdout(stopped)
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    assert read_checkpoint(run_folder / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert "Traceback" not in stopped.stderr


def lock_text(run_folder) -> str:
    lock = run_folder / ".lock"
    return lock.read_text() if lock.is_file() else ""


def test_a_run_folder_takes_one_process_at_a_time(tmp_path, fault_env, one_epoch):
    """A process trains in the run (a real one, stopped by SIGTERM as a scheduler would); a second command that
    resumes the same run (in this process) is refused in one line naming the holder; once the holder has gone, the
    run is free again."""
    run_folder = copy_of(one_epoch, tmp_path)
    long = [*FIT, "--trainer.max_epochs", "1000", "--trainer.limit_train_batches", "10", "--ckpt_path", "last"]
    holder = start_process(long, cwd=tmp_path, env=fault_env)
    last = run_folder / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns
    try:
        deadline = time.monotonic() + 120
        while f"process {holder.pid}" not in lock_text(run_folder) and time.monotonic() < deadline:
            time.sleep(0.2)
        second = run([*FIT, "--trainer.max_epochs", "1000", "--ckpt_path", "last"], cwd=tmp_path, env=fault_env)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: the run {run_folder} is in use by process {holder.pid} on "), line
        while last.stat().st_mtime_ns == before and time.monotonic() < deadline:  # training, past an epoch
            time.sleep(0.2)
    finally:
        holder.send_signal(signal.SIGTERM)  # which stops it cleanly, as a scheduler would
        stopped = finished(holder, timeout=120)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stdout
    again = run(
        [*FIT, "--trainer.max_epochs", "1000", "--trainer.max_steps", "1", "--ckpt_path", "last"],
        cwd=tmp_path,
        env=fault_env,
    )
    assert "is in use by" not in again.stderr  # the lock went with its process


def file_size_limit(limit: int):
    """For a child process: writes beyond ``limit`` bytes fail with EFBIG (as on a full disk or quota), not
    SIGXFSZ."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_good_one(tmp_path, fault_env, one_epoch):
    """Writes beyond 4 MB fail (RLIMIT_FSIZE, as a full disk or quota does): the resumed run cannot write its
    20 MB checkpoints; it stops with one line, removes the partial file and leaves last.ckpt as it was."""
    run_folder = copy_of(one_epoch, tmp_path)
    last = run_folder / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    args = [*FIT, "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    process = start_process(args, cwd=tmp_path, env=fault_env, preexec_fn=file_size_limit(4_000_000))
    result = finished(process)
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write: File too large;"), line
    assert f".ckpt.partial); removed it, the last good checkpoint {last.relative_to(tmp_path)} is intact" in line
    assert "Traceback" not in result.stderr
    assert not list((run_folder / "checkpoints").glob("*.partial"))
    assert last.read_bytes() == before


WRITER = """
import sys, torch
from vae.training.checkpoint_io import AtomicCheckpointIO
AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(int(sys.argv[2]))}, sys.argv[1])
"""


@pytest.mark.slow
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
