"""A model is one file: models written outside the package (tests/own_models.py: a Laplace-latent VAE and a plain
autoencoder), with no edit anywhere in vae/, train through `vae fit --config` by class path, resume, evaluate, sample,
encode and export, once their module is trusted in one setting (VAE_TRUSTED_MODULES=own_models); untrusted, a config
naming them is refused in one line."""

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import QUICKSTART, offline, run
from own_models import Autoencoder, LaplaceVAE, laplace_kl
from torch.distributions import Laplace, kl_divergence

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
SHORT += ["--trainer.log_every_n_steps", "2", "--trainer.enable_progress_bar", "false"]


def own_config(folder, class_path: str, **init_args) -> str:
    path = folder / f"{class_path.rsplit('.', 1)[1]}.yaml"
    path.write_text(yaml.safe_dump({"model": {"model": {"class_path": class_path, "init_args": init_args}}}))
    return str(path)


@pytest.fixture(scope="module")
def laplace_run(tmp_path_factory):
    """The Laplace VAE trained one short epoch, then resumed for a second, through `vae fit` in this process."""
    root = tmp_path_factory.mktemp("laplace")
    env = {**offline(root), "VAE_TRUSTED_MODULES": "own_models"}
    config = own_config(root, "own_models.LaplaceVAE", latent_dim=4)
    fit = ["fit", "--config", str(QUICKSTART), "--config", config, *SHORT]
    first = run(fit, cwd=root, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run([*fit, "--trainer.max_epochs", "2", "--ckpt_path", "last"], cwd=root, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (folder,) = (root / "runs" / "vae").iterdir()
    return root, env, folder, first, resumed


def test_the_laplace_kl_is_the_closed_form_torch_distributions_has():
    """The model's own closed form, registered in its own file (vae.core.kl.register_kl), against torch's."""
    p = Laplace(torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.5, 1.5, 0.2]))
    q = Laplace(torch.tensor([0.0, 0.4, -1.0]), torch.tensor([1.0, 0.7, 2.5]))
    torch.testing.assert_close(laplace_kl(p, q), kl_divergence(p, q), rtol=1e-6, atol=1e-6)


def test_a_model_of_ones_own_trains_resumes_and_logs_its_kl_in_closed_form(laplace_run):
    root, _, folder, first, resumed = laplace_run
    assert "KL estimator: analytic (closed form)" in first.stdout
    assert "resuming" in resumed.stdout
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["class_path"] == "own_models.LaplaceVAE"
    assert checkpoint["global_step"] == 8  # two epochs of four steps: the resumed run went on
    assert "model.latent.head.weight" in checkpoint["state_dict"]
    metrics = (folder / "metrics.csv").read_text()
    assert "val/kl_dim/03" in metrics and "val/active_units" in metrics  # its layer's statistics, as any model's


def test_a_model_of_ones_own_evaluates_samples_encodes_and_exports(laplace_run):
    root, env, folder, _, _ = laplace_run
    evaluated = run(["evaluate", str(folder), "--samples", "8", "--limit", "1", "--no-wandb"], cwd=root, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (written,) = (folder / "checkpoints").glob("*.test.k8.json")
    numbers = json.loads(written.read_text())
    assert numbers["log_likelihood"] >= numbers["elbo"] - 5.0 and len(numbers["kl_per_dim"]) == 4
    sampled = run(["sample", str(folder), "--n", "4", "--out", "grid.png"], cwd=root, env=env)
    assert sampled.returncode == 0 and (root / "grid.png").is_file(), sampled.stderr[-3000:]
    encoded = run(["encode", str(folder), "--out", "codes.npz"], cwd=root, env=env)
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    assert np.load(root / "codes.npz")["mean"].shape == (500, 4)
    exported = run(["export", str(folder), "--format", "torchscript", "--out", "exported"], cwd=root, env=env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (root / "exported" / "encoder.pt").is_file() and (root / "exported" / "decoder.pt").is_file()


def test_a_module_of_ones_own_is_refused_until_trusted(tmp_path):
    config = own_config(tmp_path, "own_models.LaplaceVAE")
    result = run(["fit", "--config", str(QUICKSTART), "--config", config, *SHORT], cwd=tmp_path, env=offline(tmp_path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "refusing own_models.LaplaceVAE" in line and "VAE_TRUSTED_MODULES=own_models" in line
    assert not (tmp_path / "runs").exists()


def test_a_plain_autoencoder_trains_with_a_zero_kl_and_says_what_it_cannot_do(tmp_path):
    """No latent layer: the KL is zero and the ELBO is the reconstruction; no posterior density, so no
    importance-weighted log-likelihood and no IWAE; no prior, so sampling is a one-line error."""
    env = {**offline(tmp_path), "VAE_TRUSTED_MODULES": "own_models"}
    config = own_config(tmp_path, "own_models.Autoencoder", code_dim=4)
    fit = run(["fit", "--config", str(QUICKSTART), "--config", config, *SHORT], cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (folder,) = (tmp_path / "runs" / "vae").iterdir()
    rows = [line.split(",") for line in (folder / "metrics.csv").read_text().splitlines()[1:]]
    kls = [float(value) for _, name, value in rows if name == "val/kl"]
    assert kls == [0.0]
    # Its own loss term, logged raw at every stage and its weight beside it at training steps.
    logged = {name: float(value) for _, name, value in rows}
    assert logged["val/code_norm"] > 0 and logged["train/code_norm"] > 0
    assert logged["train/code_norm_weight"] == pytest.approx(1e-3)  # logged as float32
    evaluated = run(["evaluate", str(folder), "--samples", "4", "--limit", "1", "--no-wandb"], cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "n/a (the model has no posterior density)" in evaluated.stdout
    sampled = run(["sample", str(folder)], cwd=tmp_path, env=env)
    assert sampled.returncode != 0
    assert sampled.stderr.strip().splitlines() == [
        "error: an Autoencoder has no prior to sample from: train a prior on its codes first (see vae sample --help)"
    ]
    iwae = run(
        ["fit", "--config", str(QUICKSTART), "--config", config, *SHORT, "--model.objective", "vae.objectives.IWAE"],
        cwd=tmp_path,
        env=env,
    )
    assert iwae.returncode != 0 and "IWAE objective needs exact log densities" in iwae.stderr


def test_a_model_of_ones_own_is_a_model_like_the_package_s():
    model = LaplaceVAE(image_shape=(1, 8, 8), latent_dim=3)
    x = torch.rand(5, 1, 8, 8).round()
    out = model(x, samples=2)
    assert out.log_px.shape == out.kl.shape == (10,)
    assert model.log_likelihood(x, samples=16).shape == (5,)
    assert model.init_args["network"].hidden_dims == (64,)  # the defaults it chose, recorded for its checkpoint
    autoencoder = Autoencoder(image_shape=(1, 8, 8), code_dim=3)
    assert torch.equal(autoencoder(x).kl, torch.zeros(5))
    assert not autoencoder.capabilities.posterior_density
