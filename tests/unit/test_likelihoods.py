"""Likelihoods against torch.distributions: per example, summed over every pixel."""

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent, Normal

from vae.core.errors import ConfigError
from vae.layers.likelihoods import Bernoulli, Gaussian


def test_bernoulli_matches_torch_distributions_on_binary_images():
    logits = torch.randn(8, 1, 28, 28, dtype=torch.float64) * 3
    x = (torch.rand(8, 1, 28, 28, dtype=torch.float64) > 0.5).double()
    reference = Independent(TorchBernoulli(logits=logits), 3).log_prob(x)
    torch.testing.assert_close(Bernoulli().log_prob(logits, x), reference, rtol=1e-12, atol=1e-9)


def test_bernoulli_on_grey_levels_is_the_cross_entropy():
    logits = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    p = torch.sigmoid(logits)
    reference = (x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    torch.testing.assert_close(Bernoulli().log_prob(logits, x), reference)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 1.0])
def test_gaussian_matches_torch_distributions(sigma):
    mean = torch.rand(8, 3, 32, 32, dtype=torch.float64)
    x = torch.rand(8, 3, 32, 32, dtype=torch.float64)
    likelihood = Gaussian(sigma=sigma).double()
    reference = Independent(Normal(mean, sigma), 3).log_prob(x)
    # log σ is a float32 parameter: σ itself carries float32 rounding (relative 6e-8).
    torch.testing.assert_close(likelihood.log_prob(mean, x), reference, rtol=1e-6, atol=0)


def test_gaussian_sigma_is_fixed_unless_learned():
    assert not Gaussian(sigma=0.1).log_sigma.requires_grad
    learned = Gaussian(sigma=0.1, learn_sigma=True)
    assert learned.log_sigma.requires_grad
    x, mean = torch.rand(16, 1, 4, 4), torch.rand(16, 1, 4, 4)
    learned.log_prob(mean, x).mean().backward()
    assert learned.log_sigma.grad is not None


def test_learned_sigma_reaches_the_maximum_likelihood_value():
    """Maximising over σ gives σ² = the mean squared error, the closed-form MLE."""
    torch.manual_seed(1)
    x, mean = torch.rand(64, 1, 6, 6), torch.rand(64, 1, 6, 6)
    likelihood = Gaussian(sigma=1.0, learn_sigma=True)
    optimizer = torch.optim.Adam(likelihood.parameters(), lr=0.05)
    for _ in range(500):
        optimizer.zero_grad()
        (-likelihood.log_prob(mean, x).mean()).backward()
        optimizer.step()
    mle = (x - mean).square().mean().sqrt()
    assert math.isclose(likelihood.sigma.item(), mle.item(), rel_tol=1e-3)


def test_the_log_likelihood_is_summed_over_pixels_not_averaged():
    """Doubling the image's pixels doubles log p(x|z): the units contract."""
    x = torch.rand(2, 1, 4, 4)
    params = torch.randn(2, 1, 4, 4)
    for likelihood in (Bernoulli(), Gaussian(sigma=0.3)):
        once = likelihood.log_prob(params, x)
        twice = likelihood.log_prob(torch.cat([params, params], dim=-1), torch.cat([x, x], dim=-1))
        torch.testing.assert_close(twice, 2 * once)


@pytest.mark.parametrize("kwargs", [{"sigma": 0.0}, {"sigma": -1.0}, {"sigma": 0.1, "min_sigma": 0.5}])
def test_gaussian_rejects_bad_sigma(kwargs):
    with pytest.raises(ConfigError):
        Gaussian(**kwargs)
