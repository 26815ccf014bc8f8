"""KL closed forms against torch.distributions, Monte Carlo against the closed form, and the regularizer."""

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae.errors import ConfigError
from vae.kl import KLRegularizer, gaussian_kl, monte_carlo_kl


def random_gaussian(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype) * 2, torch.randn(*shape, dtype=dtype) * 1.5


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_kl_to_standard_normal_matches_torch_distributions(dtype, tol):
    mean, logvar = random_gaussian(64, 10, dtype=dtype)
    ours = gaussian_kl(mean, logvar)
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros_like(mean), 1.0))
    torch.testing.assert_close(ours, reference, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_kl_between_diagonal_gaussians_matches_torch_distributions(dtype, tol):
    mean_q, logvar_q = random_gaussian(64, 10, dtype=dtype)
    mean_p, logvar_p = random_gaussian(64, 10, dtype=dtype)
    q = Normal(mean_q, (0.5 * logvar_q).exp())
    p = Normal(mean_p, (0.5 * logvar_p).exp())
    ours = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p)
    torch.testing.assert_close(ours, kl_divergence(q, p), rtol=tol, atol=tol)
    # Per example (summed over the latent dimensions) it is the KL of the diagonal Gaussian.
    torch.testing.assert_close(
        ours.sum(-1), kl_divergence(Independent(q, 1), Independent(p, 1)), rtol=tol, atol=tol * ours.shape[-1]
    )


def test_kl_is_exactly_zero_when_q_equals_p():
    mean, logvar = random_gaussian(32, 8, dtype=torch.float32)
    assert torch.equal(gaussian_kl(mean, logvar, mean, logvar), torch.zeros_like(mean))
    assert torch.equal(gaussian_kl(torch.zeros(5), torch.zeros(5)), torch.zeros(5))


def test_kl_is_non_negative():
    mean_q, logvar_q = random_gaussian(1000, 4)
    mean_p, logvar_p = random_gaussian(1000, 4)
    assert (gaussian_kl(mean_q, logvar_q, mean_p, logvar_p) >= 0).all()


def test_monte_carlo_agrees_with_closed_form_within_four_standard_errors():
    mean_q, logvar_q = random_gaussian(6, dtype=torch.float64)
    mean_p, logvar_p = random_gaussian(6, dtype=torch.float64)
    q = Normal(mean_q, (0.5 * logvar_q).exp())
    p = Normal(mean_p, (0.5 * logvar_p).exp())
    mc = monte_carlo_kl(q, p, num_samples=20_000)
    exact = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p)
    assert ((mc.estimate - exact).abs() < 4 * mc.stderr).all(), (mc.estimate, exact, mc.stderr)
    # The standard error shrinks as 1/sqrt(K): it is a real spread, not a tolerance in disguise.
    assert (mc.stderr < 0.05 * exact.clamp_min(1.0)).all()


def test_monte_carlo_is_zero_when_q_equals_p():
    q = Normal(torch.randn(4), torch.rand(4) + 0.5)
    assert torch.equal(monte_carlo_kl(q, q, num_samples=10).estimate, torch.zeros(4))


@pytest.mark.parametrize("estimator", ["auto", "analytic", "mc"])
def test_regularizer_returns_sample_and_per_example_kl(estimator):
    regularizer = KLRegularizer(estimator=estimator, num_samples=4)
    mean, logvar = random_gaussian(16, 5, dtype=torch.float32)
    out = regularizer(mean, logvar)
    assert out.z.shape == (16, 5) and out.kl.shape == (16,) and out.kl_per_dim.shape == (16, 5)
    torch.testing.assert_close(out.kl, out.kl_per_dim.sum(-1))
    assert out.estimator == ("mc" if estimator == "mc" else "analytic")


def test_regularizer_mc_estimate_converges_to_analytic():
    mean, logvar = random_gaussian(8, 3, dtype=torch.float64)
    analytic = KLRegularizer(estimator="analytic")(mean, logvar).kl
    mc = KLRegularizer(estimator="mc", num_samples=50_000)(mean, logvar).kl
    torch.testing.assert_close(mc, analytic, rtol=0.02, atol=0.05)


def test_regularizer_sample_is_reparameterised():
    mean = torch.zeros(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    KLRegularizer()(mean, logvar).z.sum().backward()
    assert mean.grad is not None and torch.equal(mean.grad, torch.ones(4, 3))
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"estimator": "exact"}, {"num_samples": 0}])
def test_regularizer_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        KLRegularizer(**kwargs)
