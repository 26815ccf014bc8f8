"""A command leaves the process as it found it (vae.commands.process): after `vae fit`, a failed one and a bad one,
called in this process, the environment, warning filters, logging, jsonargparse's settings, signal handlers, torch's
threads, flags and random state, W&B's run and the run folders' locks are what they were before."""

import copy
import logging
import os
import random
import signal
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import QUICKSTART, new_user, run
from jsonargparse import _common

from vae.training.runs import held_locks, lock_run, release_locks


def process_state() -> dict:
    loggers = {name: logging.getLogger(name) for name in ("", "pytorch_lightning", "lightning_fabric.utilities.seed")}
    return {
        "environ": dict(os.environ),
        "warnings": list(warnings.filters),
        "logging": {n: (lg.level, list(lg.handlers), list(lg.filters)) for n, lg in loggers.items()},
        "parsing": copy.deepcopy(_common.parsing_settings),
        "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)},
        "threads": torch.get_num_threads(),
        "flags": (torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision()),
        "random": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()),
        "locks": held_locks(),
        "wandb": getattr(sys.modules.get("wandb"), "run", None),
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("environ", "warnings", "logging", "parsing", "signals", "threads", "flags", "locks", "wandb"):
        assert after[key] == before[key], key
    assert torch.equal(after["random"][0], before["random"][0])
    assert np.array_equal(after["random"][1], before["random"][1]) and after["random"][2] == before["random"][2]


@pytest.mark.parametrize(
    "args,code",
    [
        (["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.deterministic", "true"], 0),
        (["--model.model.latent_dim", "-1"], 2),  # refused before anything starts
        (["--trainer.max_steps", "2", "--data.init_args.val_size", "0"], 2),  # refused once the data is built
    ],
    ids=["a fit", "bad input", "bad data"],
)
def test_a_command_leaves_the_process_as_it_found_it(tmp_path, args, code):
    env = new_user(tmp_path / "home")
    run(["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "1"], cwd=tmp_path, env=env)  # imports done
    before = process_state()
    result = run(
        ["fit", "--config", str(QUICKSTART), *args, "--trainer.enable_progress_bar", "false"], cwd=tmp_path, env=env
    )
    assert result.returncode == code, result.stderr[-3000:]
    assert_same(before, process_state())


def test_a_run_folder_locked_by_a_command_is_free_when_it_returns(tmp_path):
    """The lock a fit takes on its run folder is released when the command returns: the same process (a notebook,
    a test) can resume or test that run at once."""
    env = new_user(tmp_path / "home")
    fit = ["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"]
    assert run(fit, cwd=tmp_path, env=env).returncode == 0
    (folder,) = (tmp_path / "runs" / "vae").iterdir()
    lock_run(folder)  # would raise RunInUse if the command still held it in another handle
    release_locks()
    resumed = run([*fit, "--trainer.max_steps", "3", "--ckpt_path", "last"], cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
