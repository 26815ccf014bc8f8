"""Conditional and discrete latents from the real `vae` command (in this process), as a new user runs them (no W&B key
or setting):
the conditional VAE's quick start and JointVAE on MNIST-5k, trained, their terms read back from the W&B run file,
and `vae evaluate` reporting log p(x | y) and the clustering accuracy, with the models' own pictures."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, new_user, run
from PIL import Image
from scipy.optimize import linear_sum_assignment

import vae
from vae.data.embedded import EmbeddedMNIST
from vae.training.checkpoint_io import load_module
from vae.training.tracking import read_history

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "1"]
SHORT += ["--trainer.enable_progress_bar", "false"]
SHORT += ["--trainer.log_every_n_steps", "2"]
FASHION = Path("/usr/share/datasets/fashion-mnist").is_dir() or os.environ.get("VAE_REQUIRE_FASHION_MNIST")


def fit(root, config: str):
    env = new_user(root / "home")
    result = run(["fit", "--config", str(REPO / "configs" / config), *SHORT], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = (root / "runs" / "vae").iterdir()
    (run_file,) = (root / "runs" / "wandb").glob(f"offline-run-*-{folder.name}/run-*.wandb")
    return env, folder, read_history(run_file), result.stdout


def evaluate(root, env, folder) -> tuple[str, dict]:
    line = ["evaluate", str(folder / "checkpoints" / "last.ckpt"), "--samples", "5", "--limit", "1", "--images"]
    result = run(line, cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = folder.glob("checkpoints/last.test.k5.json")
    return result.stdout, json.loads(written.read_text())


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint")
    return root, *fit(root, "jointvae_mnist.yaml")


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvae")
    return root, *fit(root, "cvae_quickstart.yaml")


def test_joint_vae_logs_each_kl_with_its_capacity_and_the_temperature(joint_run):
    _, _, folder, history, stdout = joint_run
    assert "KL estimator: analytic (closed form)" in stdout
    for key in ("train/kl/z", "train/kl/c", "train/capacity/z", "train/capacity/c", "train/temperature"):
        assert len(history.values(key)) >= 2, key
    for key in ("val/kl/z", "val/kl/c", "val/active_units/c", "val/elbo"):
        assert len(history.values(key)) == 1, key
    assert history.values("train/temperature") == pytest.approx([0.67] * len(history.values("train/temperature")))
    assert history.values("train/capacity/c")[-1] == pytest.approx(2.3 * 5 / 920)  # 2.3 nats over 920 steps
    for recon, kl, elbo in zip(history.values("val/recon"), history.values("val/kl"), history.values("val/elbo")):
        assert elbo == pytest.approx(-recon - kl, rel=1e-5)
    kl_z, kl_c = history.values("val/kl/z")[0], history.values("val/kl/c")[0]
    assert history.values("val/kl")[0] == pytest.approx(kl_z + kl_c, rel=1e-5)
    for name in ("samples", "reconstructions", "traversals", "categories"):
        assert (folder / "images" / f"{name}_epoch000.png").stat().st_size > 1000


def test_evaluate_reports_the_clustering_accuracy_of_the_categorical_code(joint_run):
    root, env, folder, _, _ = joint_run
    stdout, numbers = evaluate(root, env, folder)
    assert "clustering accuracy of c (Hungarian matching)" in stdout
    accuracy = numbers["clustering_accuracy"]["c"]
    # Recomputed independently from the checkpoint on the same 100 test digits: the best one-to-one matching of
    # categories to digits, by scipy's assignment solver on the confusion matrix.
    module = load_module(folder / "checkpoints" / "last.ckpt")
    data = EmbeddedMNIST(val_size=500, test_size=500, binarize="dynamic", batch_size=100)
    data.setup("test")
    x, y = next(iter(data.test_dataloader()))
    with torch.no_grad():
        clusters = module.model.eval()(x).latents["c"].posterior_mean[:, 0].argmax(dim=-1)
    confusion = np.zeros((10, 10))
    np.add.at(confusion, (clusters.numpy(), y.numpy()), 1)
    rows, columns = linear_sum_assignment(-confusion)
    assert accuracy == pytest.approx(confusion[rows, columns].sum() / 100)
    assert numbers["kl_per_layer"].keys() == {"z", "c"}
    for name in ("traversals", "categories"):
        assert (folder / "checkpoints" / "last.test.k5" / f"{name}.png").stat().st_size > 1000


def test_conditional_quickstart_trains_and_evaluate_reports_log_p_of_x_given_y(cvae_run):
    root, env, folder, history, _ = cvae_run
    assert len(history.values("val/elbo")) == 1
    assert (folder / "images" / "class_samples_epoch000.png").stat().st_size > 1000
    assert history.values("val/images/class_samples")[0]["_type"] == "images/separated"
    stdout, numbers = evaluate(root, env, folder)
    assert "log p(x | y), importance-weighted, K=5" in stdout
    assert numbers["conditional"] is True and numbers["log_likelihood"] < 0
    assert (folder / "checkpoints" / "last.test.k5" / "class_samples.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_other_configs_train_from_the_command(tmp_path):
    """The Fashion-MNIST and CIFAR-10 configs of both models train two steps from the real command (CIFAR-10 on
    files written in its real format), one after the other."""
    from unit.test_datasets import write_cifar

    write_cifar(tmp_path / "data" / "cifar-10" / "cifar-10-batches-py")
    cifar = ["--data.init_args.root", str(tmp_path / "data"), "--data.init_args.val_size", "6"]
    cifar += ["--data.init_args.batch_size", "6"]
    lines = {"cvae_cifar10.yaml": cifar}
    if FASHION:  # JointVAE here with the Monte-Carlo estimator for both codes
        lines |= {"cvae_fashion_mnist.yaml": [], "jointvae_fashion_mnist.yaml": ["--model.model.kl_estimator", "mc"]}
    short = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    env = new_user(tmp_path / "home")
    for config, extra in lines.items():
        folder = tmp_path / config.removesuffix(".yaml")
        folder.mkdir()
        result = run(["fit", "--config", str(REPO / "configs" / config), *extra, *short], cwd=folder, env=env)
        assert result.returncode == 0, f"{config}\n{result.stderr[-2000:]}"
        assert list(folder.glob("runs/vae/*/checkpoints/last.ckpt")), config
        if config.startswith("jointvae"):
            estimators = "KL estimators: z mc (Monte Carlo, 1 sample(s)), c mc (Monte Carlo, 1 sample, score"
            assert estimators in result.stdout, result.stdout[-2000:]


def test_vae_sample_draws_a_row_per_class_of_a_conditional_model(cvae_run):
    root, env, folder, _, _ = cvae_run
    out = root / "classes.png"
    result = run(["sample", str(folder), "--n", "4", "--labels", "3", "7", "--out", str(out)], cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"2 classes × 4 samples at temperature 1: {out}"
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 2 * 30, 2 + 4 * 30, 3)  # a row per class, 4 columns
    model = vae.load(folder)
    torch.manual_seed(0)  # --seed 0
    images = model.sample(8, context=torch.tensor([3, 3, 3, 3, 7, 7, 7, 7]))
    for row, column in [(0, 0), (1, 3)]:
        tile = grid[2 + 30 * row : 30 * (row + 1), 2 + 30 * column : 30 * (column + 1), 0]
        expected = (images[4 * row + column, 0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        np.testing.assert_array_equal(tile, expected)
    every = run(["sample", str(folder), "--out", str(root / "all.png")], cwd=root, env=env)
    assert every.returncode == 0 and Image.open(root / "all.png").size == (2 + 8 * 30, 2 + 10 * 30)  # 10 × 8
    bad = run(["sample", str(folder), "--labels", "12", "--out", str(root / "bad.png")], cwd=root, env=env)
    assert bad.returncode == 2 and "--labels 12 is not a class of this model (0 to 9)" in bad.stderr


def test_vae_encode_gives_each_kind_of_code(cvae_run, joint_run):
    for root, env, folder, _, _ in (cvae_run, joint_run):
        out = root / "latents.npz"
        result = run(
            ["encode", str(folder), "--limit", "1", "--batch-size", "50", "--out", str(out)], cwd=root, env=env
        )
        assert result.returncode == 0, result.stderr
        latents = np.load(out)
        assert latents["mean"].shape[0] == latents["labels"].shape[0] == 50
    codes = np.load(joint_run[0] / "latents.npz")["mean"]  # JointVAE: z (10), then the categorical's 10 probabilities
    assert codes.shape == (50, 20)
    np.testing.assert_allclose(codes[:, 10:].sum(axis=1), 1.0, rtol=0, atol=1e-5)
