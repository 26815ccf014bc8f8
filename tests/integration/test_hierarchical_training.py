"""Hierarchical VAEs trained: per-layer metrics through a real Trainer, the hierarchical quick start through `vae fit`
and `vae evaluate` (in this process), and `vae fit --ckpt_path` continuing a checkpoint written before the latent
layers. (The model's numbers on their own: tests/unit/test_hierarchical.py.)"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import DATA, REPO, new_user, run

from vae.data.embedded import EmbeddedMNIST
from vae.models.hierarchical import HierarchicalVAE
from vae.training.guards import Guard
from vae.training.module import VAEModule
from vae.training.tracking import read_history


def test_the_module_logs_per_layer_metrics_through_a_real_trainer(trainer):
    model = HierarchicalVAE(
        image_shape=(1, 28, 28), latent_channels=(6, 4, 3), resolutions=(1, 7, 7), width=8, stem_channels=(8,)
    )
    module = VAEModule(model=model)
    guard = Guard(grad_clip=50.0, grad_skip="adaptive")
    fit = trainer(max_steps=4, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=1, callbacks=[guard])
    fit.fit(module, datamodule=EmbeddedMNIST(batch_size=64, binarize="static"))
    metrics = fit.callback_metrics
    for key in ("val/kl/z1", "val/kl/z2", "val/kl/z3", "val/active_units/z1", "train/grad_norm", "train/kl/z1"):
        assert key in metrics, key
    torch.testing.assert_close(metrics["val/kl"], sum(metrics[f"val/kl/{n}"] for n in ("z1", "z2", "z3")))
    assert int(guard.gradients.seen) == 4


def test_a_short_hierarchical_fit_through_the_command_logs_every_layer(tmp_path):
    """`vae fit --config configs/hvae_quickstart.yaml` as a new user runs it (no W&B key, no WANDB_MODE), for 4
    steps: the W&B run file holds each layer's KL (summing to the total), active units, balancing coefficients and
    the gradient norm; `vae evaluate` reports the KL of each layer."""
    args = ["fit", "--config", str(REPO / "configs" / "hvae_quickstart.yaml"), "--trainer.max_epochs", "1"]
    limits = ["--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
    limits += ["--trainer.log_every_n_steps", "2", "--trainer.enable_progress_bar", "false"]
    env = new_user(tmp_path / "home")
    result = run([*args, *limits], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = read_history(run_file)
    layers = ("z3", "z2", "z1")
    for key in ("train/grad_norm", *(f"{stage}/kl/{n}" for stage in ("train", "val") for n in layers)):
        assert history.values(key), key
    assert all(history.values(f"train/kl_balance/{n}") for n in layers)
    assert all(history.values(f"val/active_units/{n}") for n in layers)
    (val_kl,) = history.values("val/kl")
    assert val_kl == pytest.approx(sum(history.values(f"val/kl/{n}")[0] for n in layers), rel=1e-5)
    (folder,) = (tmp_path / "runs" / "vae").iterdir()
    evaluated = run(
        ["evaluate", str(folder / "checkpoints" / "last.ckpt"), "--samples", "10", "--limit", "1", "--no-wandb"],
        cwd=tmp_path,
        env=env,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "layer z1: KL, active units" in evaluated.stdout
    (written,) = (folder / "checkpoints").glob("last.test.k10*.json")
    numbers = json.loads(written.read_text())
    assert list(numbers["kl_per_layer"]) == list(layers)
    assert sum(numbers["kl_per_layer"].values()) == pytest.approx(numbers["kl"])


def test_training_resumes_from_a_checkpoint_written_before_the_latent_layers(tmp_path, offline_env):
    """`vae fit --ckpt_path` on the previous version's checkpoint (its keys upgraded as it loads, its config file
    migrated as it is read) continues it."""
    folder = tmp_path / "runs" / "old"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(DATA / "single-layer-v0.ckpt", folder / "checkpoints" / "last.ckpt")
    shutil.copy(DATA / "single-layer-v0.yaml", folder / "config.yaml")
    args = ["fit", "--config", str(folder / "config.yaml"), "--ckpt_path", str(folder / "checkpoints" / "last.ckpt")]
    args += ["--trainer.default_root_dir", str(folder)]  # the run had no logger: its folder is the root dir
    args += ["--trainer.max_steps", "5", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    result = run(args, cwd=tmp_path, env=offline_env)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5 and "model.latent.head.weight" in resumed["state_dict"]
    assert "objective.weighting.multiplier" in resumed["state_dict"]  # GECO's state carried over
    assert "grad_skip" not in result.stdout  # settings added since, at their defaults, are not reported as changes
