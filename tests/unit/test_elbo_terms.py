"""The units contract, term by term: the β-ELBO's terms per example and as batch means, and the latent statistics
(active units, the KL per dimension) against exact values. Through a real Trainer: tests/integration/test_module.py."""

import pytest
import torch

from vae.core.errors import ConfigError
from vae.metrics.likelihood import LatentStatistics
from vae.objectives.elbo import beta_elbo
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
