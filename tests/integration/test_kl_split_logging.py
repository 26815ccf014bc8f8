"""The KL split (mutual information + total correlation + dimension-wise KL) as validation logs it, through a real
Trainer: against the split computed here on the same images and sample, not for a prior that does not factorise,
and for a hierarchy's top layer. The estimators against exact values: tests/unit/test_kl_split.py."""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.distributions import Normal

from vae.core.split import split_at
from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.layers.priors import GaussianMixture
from vae.models import VAE, HierarchicalVAE
from vae.objectives import ELBO
from vae.training.module import VAEModule


class SeedEachBatch(pl.Callback):
    def on_validation_batch_start(self, *args, **kwargs) -> None:
        torch.manual_seed(5)


def validate(trainer, module):
    data = EmbeddedMNIST(batch_size=500)
    run = trainer(callbacks=[SeedEachBatch()])
    run.validate(module, datamodule=data, verbose=False)
    return data, {k: float(v) for k, v in run.callback_metrics.items()}


def vae(latent_dim: int, hidden: int, **settings) -> VAE:
    return VAE(image_shape=(1, 28, 28), latent_dim=latent_dim, network=MLPNet(hidden_dims=(hidden,)), **settings)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_validation_logs_the_split_of_the_validation_set(estimator, trainer):
    """val/kl_split/* through a real Trainer equals the split computed here on the same 500 images and sample,
    with N = 500 (the validation split), and sums to the sample's KL."""
    module = VAEModule(model=vae(6, 32), objective=ELBO(kl_split=estimator))
    data, metrics = validate(trainer, module)
    x = data.splits["val"].images.float() / 255.0
    with torch.no_grad():
        moments = module.model.posterior(x)
        scale = (0.5 * moments.logvar).exp()
        torch.manual_seed(5)
        z = Normal(moments.mean, scale).rsample()
        prior = Normal(torch.zeros(6), torch.ones(6))
        expected = split_at(z, moments.mean, scale, prior, dataset_size=500, estimator=estimator)
    for name in ("mi", "tc", "dwkl"):
        assert metrics[f"val/kl_split/{name}"] == pytest.approx(float(getattr(expected, name).mean()), rel=1e-5)
    assert module.hparams.objective["init_args"]["kl_split"] == estimator


def test_no_split_where_the_prior_does_not_factorise_or_it_is_off(trainer):
    _, metrics = validate(trainer, VAEModule(model=vae(4, 16, prior=GaussianMixture())))
    assert "val/kl" in metrics and not any("kl_split" in k for k in metrics)
    _, metrics = validate(trainer, VAEModule(model=vae(4, 16), objective=ELBO(kl_split="off")))
    assert "val/kl" in metrics and not any("kl_split" in k for k in metrics)


def test_a_hierarchy_logs_the_split_of_its_top_layer(trainer):
    """The top of a hierarchy has the unconditional prior, so its KL splits; the layers below, with priors
    conditioned on the layers above, do not (only one split is logged)."""
    model = HierarchicalVAE(
        image_shape=(1, 28, 28), latent_channels=(4, 2), resolutions=(1, 7), width=8, stem_channels=(8,)
    )
    module = VAEModule(model=model)
    assert [layer.kl_splits for layer in module.model.layers] == [True, False]
    _, metrics = validate(trainer, module)
    split = [metrics[f"val/kl_split/{name}"] for name in ("mi", "tc", "dwkl")]
    assert all(math.isfinite(value) for value in split)
    assert sum(split) == pytest.approx(metrics["val/kl/z2"], abs=2.0)  # a one-sample estimate of the top KL
