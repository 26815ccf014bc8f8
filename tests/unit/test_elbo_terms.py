"""The units contract, term by term: the β-ELBO's terms per example and as batch means, and the latent statistics
(active units, the KL per dimension) against exact values. Through a real Trainer: tests/integration/test_module.py."""

import dataclasses

import pytest
import torch
from own_models import Autoencoder

from vae.core.errors import ConfigError
from vae.layers.nets import MLPNet
from vae.metrics.likelihood import LatentStatistics
from vae.models import VAE, Term
from vae.objectives.elbo import ELBO, IWAE, beta_elbo, iwae_bound
from vae.objectives.weighting import Constant


def test_beta_elbo_terms_and_means():
    log_px = torch.tensor([-100.0, -80.0])
    kl = torch.tensor([10.0, 20.0])
    terms = beta_elbo(log_px, kl, beta=2.0)
    torch.testing.assert_close(terms.elbo, torch.tensor([-110.0, -100.0]))
    torch.testing.assert_close(terms.loss, torch.tensor([120.0, 120.0]))
    means = terms.mean()
    assert means.log_px.item() == -90.0 and means.kl.item() == 15.0 and means.elbo.item() == -105.0


def test_negative_beta_is_rejected():
    with pytest.raises(ConfigError, match="beta"):
        Constant(beta=-1.0)


def test_latent_statistics_against_exact_values():
    """Batches of posterior means with known variances: exact active units and mean KL per dimension."""
    stats = LatentStatistics(latent_dim=3)
    means = torch.stack([torch.zeros(100), torch.linspace(-1, 1, 100), 0.05 * torch.linspace(-1, 1, 100)], dim=1)
    kl = torch.rand(100, 3)
    for chunk in range(4):  # in uneven batches: the reduction must not depend on batching
        rows = slice(chunk * 30, min(100, (chunk + 1) * 30))
        stats.update(means[rows], kl[rows])
    summary = stats.compute()
    torch.testing.assert_close(summary.mean_variance, means.var(dim=0))
    torch.testing.assert_close(summary.kl_per_dim, kl.mean(dim=0))
    assert summary.active_units == 1  # variances 0, 0.34 and 0.00085 against the 0.01 threshold


def test_latent_statistics_without_per_dimension_kl():
    """A mixture prior has no per-dimension KL: active units are still counted, the KL split is None."""
    stats = LatentStatistics(latent_dim=2)
    stats.update(torch.stack([torch.linspace(-1, 1, 50), torch.zeros(50)], dim=1), None)
    summary = stats.compute()
    assert summary.kl_per_dim is None and summary.active_units == 1


def test_a_models_own_terms_enter_the_loss_with_their_weight_and_are_logged_raw():
    """ModelOutput.terms: each term's batch mean is logged under its name, its weight beside it, and weight × mean is
    added to the loss of either objective; the ELBO itself does not change."""
    autoencoder = Autoencoder(image_shape=(1, 8, 8), code_dim=3, code_weight=0.5)  # a model with a term of its own
    x = torch.rand(6, 1, 8, 8).round()
    out = autoencoder(x)
    norm = out.terms["code_norm"].value
    loss = ELBO().bind(autoencoder)(out, step=0, training=True)
    torch.testing.assert_close(loss.terms["code_norm"], norm.mean())
    torch.testing.assert_close(loss.loss, -out.log_px.mean() + 0.5 * norm.mean())
    torch.testing.assert_close(loss.terms["elbo"], out.log_px.mean())  # a zero KL: the ELBO is the reconstruction
    assert loss.weights["code_norm_weight"] == 0.5
    assert ELBO().bind(autoencoder).term_names()[-1] == "code_norm"  # declared up front: every stage logs it

    vae = VAE(image_shape=(1, 8, 8), latent_dim=2, network=MLPNet(hidden_dims=(8,)))
    sampled = vae(x, samples=3)
    extra = torch.arange(18.0)  # a term per example and sample, laid out "(k b)"
    with_term = dataclasses.replace(sampled, terms={"extra": Term(extra, weight=2.0)})
    iwae = IWAE(samples=3).bind(vae)(with_term, step=0, training=True)
    torch.testing.assert_close(iwae.loss, -iwae_bound(sampled.log_w()).mean() + 2.0 * extra.mean())
    torch.testing.assert_close(iwae.terms["extra"], extra.mean())
    assert iwae.weights["extra_weight"] == 2.0
