"""The KL split (mutual information + total correlation + dimension-wise KL) against exact values, on data points
few enough that the aggregate posterior q(z) is a small Gaussian mixture whose density is computed exactly. What
validation logs of it: tests/integration/test_kl_split_logging.py."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae.core.errors import ConfigError
from vae.core.split import split_at, stratified_log_weights
from vae.layers.latents import LatentSample, kl_split
from vae.objectives import ELBO, IWAE

N, D = 20, 3


@pytest.fixture(scope="module")
def posteriors():
    """N diagonal Gaussian posteriors in D dimensions, the first two dimensions' means correlated (TC > 0)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(N, D, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.5, 0.5], dtype=torch.float64)
    mean[:, 1] += 0.8 * mean[:, 0]
    scale = 0.3 + 0.4 * torch.rand(N, D, generator=g, dtype=torch.float64)
    prior = Normal(torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64))
    return mean, scale, prior


def exact_log_densities(z, mean, scale):
    """log q(z) and Σ_d log q(z_d) of the aggregate posterior 1/N Σ_n q(z|x_n), exactly, for samples z (s, D)."""
    log_q = Normal(mean[None], scale[None]).log_prob(z[:, None])  # (s, N, D)
    log_qz = torch.logsumexp(log_q.sum(-1), dim=1) - math.log(len(mean))
    log_product = (torch.logsumexp(log_q, dim=1) - math.log(len(mean))).sum(-1)
    return log_qz, log_product


@pytest.fixture(scope="module")
def exact(posteriors):
    """The exact split by Monte Carlo over 200,000 draws of (n, z ~ q(z|x_n)), with the mixture densities exact:
    standard errors 0.002–0.008 nats."""
    mean, scale, prior = posteriors
    g = torch.Generator().manual_seed(1)
    n = torch.randint(N, (200_000,), generator=g)
    z = mean[n] + scale[n] * torch.randn(len(n), D, generator=g, dtype=torch.float64)
    log_qz, log_product = exact_log_densities(z, mean, scale)
    log_qz_x = Normal(mean[n], scale[n]).log_prob(z).sum(-1)
    log_pz = prior.log_prob(z).sum(-1)
    return {
        "mi": float((log_qz_x - log_qz).mean()),
        "tc": float((log_qz - log_product).mean()),
        "dwkl": float((log_product - log_pz).mean()),
    }


def test_the_exact_split_sums_to_the_average_closed_form_kl(posteriors, exact):
    mean, scale, prior = posteriors
    average_kl = float(kl_divergence(Normal(mean, scale), prior).sum(-1).mean())
    assert sum(exact.values()) == pytest.approx(average_kl, abs=0.02)  # three MC estimates' errors
    assert exact["tc"] > 0.3 and exact["mi"] > 1.0  # a case where every term matters


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_terms_telescope_to_the_one_sample_kl_for_either_estimator(posteriors, estimator):
    mean, scale, prior = posteriors
    z = mean + scale * torch.randn(N, D, dtype=torch.float64)
    split = split_at(z, mean, scale, prior, dataset_size=1000, estimator=estimator)
    one_sample_kl = Normal(mean, scale).log_prob(z).sum(-1) - prior.log_prob(z).sum(-1)
    torch.testing.assert_close(split.total, one_sample_kl, rtol=0, atol=1e-10)


def test_stratified_sampling_over_the_whole_dataset_matches_the_exact_split(posteriors, exact):
    """MSS with every example in the batch, averaged over 1,000 batches: within 0.04 nats of each exact term (its
    remaining bias is the log's concavity; the measured gaps are below 0.015)."""
    mean, scale, prior = posteriors
    totals = {"mi": 0.0, "tc": 0.0, "dwkl": 0.0}
    g = torch.Generator().manual_seed(2)
    for _ in range(1000):
        order = torch.randperm(N, generator=g)
        z = mean[order] + scale[order] * torch.randn(N, D, generator=g, dtype=torch.float64)
        split = split_at(z, mean[order], scale[order], prior, dataset_size=N, estimator="mss")
        for name in totals:
            totals[name] += float(getattr(split, name).mean()) / 1000
    for name, value in totals.items():
        assert value == pytest.approx(exact[name], abs=0.04), name


def test_minibatch_weighted_sampling_is_low_by_log_b_in_log_qz(posteriors):
    """The known bias of MWS, exactly: with the whole dataset as the batch (B = N), its log q(z) is the exact
    log q(z) − log B and each log q(z_d) the exact one − log B; so mi is high by log B, tc by (D − 1)·log B, and
    dwkl low by D·log B (documented in vae.core.split)."""
    mean, scale, prior = posteriors
    z = mean + scale * torch.randn(N, D, dtype=torch.float64)
    mws = split_at(z, mean, scale, prior, dataset_size=N, estimator="mws")
    log_qz, log_product = exact_log_densities(z, mean, scale)
    log_qz_x = Normal(mean, scale).log_prob(z).sum(-1)
    log_b = math.log(N)
    torch.testing.assert_close(mws.mi, log_qz_x - log_qz + log_b, rtol=0, atol=1e-10)
    torch.testing.assert_close(mws.tc, log_qz - log_product + (D - 1) * log_b, rtol=0, atol=1e-10)
    torch.testing.assert_close(mws.dwkl, log_product - prior.log_prob(z).sum(-1) - D * log_b, rtol=0, atol=1e-10)


def test_stratified_weights():
    w = stratified_log_weights(5, 100).exp()
    torch.testing.assert_close(w.sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(torch.diagonal(w), torch.full((5,), 0.01, dtype=torch.float64))
    m = 4
    for i in range(5):
        assert w[i, (i + 1) % 5] == pytest.approx((100 - m) / (100 * m))  # one element carries the rest of the data
        others = [j for j in range(5) if j not in (i, (i + 1) % 5)]
        torch.testing.assert_close(w[i, others], torch.full((3,), 1 / m, dtype=torch.float64))
    assert stratified_log_weights(1, 7).exp().item() == pytest.approx(1 / 7)
    with pytest.raises(ConfigError, match="batch 8 of 7"):
        stratified_log_weights(8, 7)


def test_the_split_of_a_layer_uses_the_first_draw_of_each_example(posteriors):
    mean, scale, prior = posteriors
    k = 3
    posterior = Independent(Normal(mean.repeat(k, 1), scale.repeat(k, 1)), 1)
    z = posterior.sample()
    latent = LatentSample(
        z=z,
        kl=torch.zeros(k * N),
        kl_per_unit=None,
        posterior_mean=mean.repeat(k, 1)[..., None],
        posterior=posterior,
        prior=Independent(prior, 1),
        estimator="analytic",
    )
    split = kl_split(latent, dataset_size=100, estimator="mss", samples=k)
    expected = split_at(z[:N], mean, scale, prior, dataset_size=100, estimator="mss")
    torch.testing.assert_close(split.mi, expected.mi)
    with pytest.raises(ConfigError, match="'mss'"):
        kl_split(latent, dataset_size=100, estimator="exact", samples=k)


@pytest.mark.parametrize("objective", [ELBO, IWAE])
def test_an_unknown_split_estimator_is_refused(objective):
    with pytest.raises(ConfigError, match="'mws' or 'mss'"):
        objective(kl_split="exact")


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_a_large_batch_is_split_into_chunks_with_the_same_result(posteriors, estimator, monkeypatch):
    import vae.core.split

    mean, scale, prior = posteriors
    z = mean + scale * torch.randn(N, D, dtype=torch.float64)
    whole = split_at(z, mean, scale, prior, dataset_size=500, estimator=estimator)
    monkeypatch.setattr(vae.core.split, "ELEMENTS", 7 * N * D)  # 7 samples at a time: 3 chunks, the last short
    chunked = split_at(z, mean, scale, prior, dataset_size=500, estimator=estimator)
    for name in ("mi", "tc", "dwkl"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=0, atol=1e-12)
