"""One epoch of real training for each prior on the embedded MNIST digits: finite logged KLs, the estimator in the
logged hyperparameters, and the learned priors' parameters trained."""

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import GaussianMixture, LearnedGaussian, StandardNormal, VampPrior
from vae.models.vae import VAE
from vae.training.module import VAEModule

PRIORS = {  # a fresh prior each time: a prior belongs to one model
    "standard": lambda: StandardNormal(),
    "learned": lambda: LearnedGaussian(),
    "mixture": lambda: GaussianMixture(num_components=5),
    "vamp": lambda: VampPrior(num_pseudo_inputs=20),
}
ESTIMATORS = {"standard": "analytic", "learned": "analytic", "mixture": "mc", "vamp": "mc"}


@pytest.fixture(scope="module")
def data():
    return EmbeddedMNIST(batch_size=256)


@pytest.mark.parametrize("name", PRIORS)
def test_each_prior_trains_for_an_epoch_with_finite_logged_kl(name, data, tmp_path, trainer):
    model = VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(64,)), prior=PRIORS[name]())
    module = VAEModule(model=model)
    before = {k: v.clone() for k, v in module.model.latent.prior.state_dict().items()}
    fit = trainer(max_epochs=1, log_every_n_steps=4, logger=CSVLogger(tmp_path, name="run"))
    fit.fit(module, datamodule=data)

    metrics = fit.callback_metrics
    for key in ("train/kl", "val/kl", "val/elbo", "val/active_units"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert metrics["val/kl"] > 0  # MC estimates of a KL averaged over 500 images are positive too
    assert ("val/kl_dim/00" in metrics) == (ESTIMATORS[name] == "analytic")  # mixtures have no per-dim KL
    hparams = (tmp_path / "run" / "version_0" / "hparams.yaml").read_text().splitlines()
    assert f"kl_estimator: {ESTIMATORS[name]}" in hparams
    logged = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/kl" in logged and "val/kl" in logged
    after = module.model.latent.prior.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ([] if name == "standard" else list(before)), changed  # learned priors are trained
