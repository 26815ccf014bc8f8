"""The priors: their densities against formulas written out, the estimator each one gets, the gradients the KL gives
their parameters, and one-line errors. (One epoch of real training for each:
tests/integration/test_priors_training.py.)"""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND
from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import GaussianMixture, LearnedGaussian, StandardNormal, VampPrior
from vae.models.vae import VAE

LATENT_DIM = 4
IMAGE_SHAPE = (1, 28, 28)
PRIORS = {  # a fresh prior each time: a prior belongs to one model
    "standard": lambda: StandardNormal(),
    "learned": lambda: LearnedGaussian(),
    "mixture": lambda: GaussianMixture(num_components=5),
    "vamp": lambda: VampPrior(num_pseudo_inputs=20),
}
ESTIMATORS = {"standard": "analytic", "learned": "analytic", "mixture": "mc", "vamp": "mc"}


def small_vae(prior, **kwargs) -> VAE:
    network = MLPNet(hidden_dims=(32,))
    return VAE(
        image_shape=IMAGE_SHAPE, latent_dim=LATENT_DIM, network=network, likelihood=Bernoulli(), prior=prior, **kwargs
    )


def log_normal(z, mean, var):
    """log N(z; mean, diag var), written out."""
    return (-0.5 * (math.log(2 * math.pi) + var.log() + (z - mean).square() / var)).sum(-1)


@pytest.mark.parametrize("name", PRIORS)
def test_each_prior_is_a_density_over_the_latent_space(name):
    vae = small_vae(PRIORS[name]())
    prior = vae.prior_distribution()
    assert prior.batch_shape == () and prior.event_shape == (LATENT_DIM,)
    z = prior.sample(torch.Size([7]))
    assert z.shape == (7, LATENT_DIM) and torch.isfinite(prior.log_prob(z)).all()
    assert vae.kl_estimator == ESTIMATORS[name]


def test_mixture_log_density_is_the_log_of_the_weighted_sum():
    vae = small_vae(GaussianMixture(num_components=3))
    module = vae.latent.prior
    z = torch.randn(10, LATENT_DIM)
    weights = module.logits.softmax(0)
    variances = module.logvars.exp()
    by_hand = torch.stack([log_normal(z, module.means[k], variances[k]) for k in range(3)], dim=-1)
    expected = (by_hand + weights.log()).logsumexp(-1)
    torch.testing.assert_close(vae.prior_distribution().log_prob(z), expected, rtol=1e-5, atol=1e-5)


def test_vampprior_is_the_mean_of_the_encoder_posteriors_at_the_pseudo_inputs():
    vae = small_vae(VampPrior(num_pseudo_inputs=6))
    moments = vae.posterior(vae.latent.prior.pseudo_inputs())
    z = torch.randn(9, LATENT_DIM)
    components = Independent(Normal(moments.mean, (0.5 * moments.logvar).exp()), 1)
    expected = components.log_prob(z[:, None, :]).logsumexp(-1) - math.log(6)
    torch.testing.assert_close(vae.prior_distribution().log_prob(z), expected, rtol=1e-5, atol=1e-5)
    pseudo = vae.latent.prior.pseudo_inputs()
    assert pseudo.shape == (6, *IMAGE_SHAPE) and (pseudo > 0).all() and (pseudo < 1).all()


def test_learned_priors_get_gradients_from_the_kl():
    for prior in (LearnedGaussian(), GaussianMixture(num_components=3), VampPrior(num_pseudo_inputs=4)):
        vae = small_vae(prior)
        vae(torch.rand(8, *IMAGE_SHAPE)).kl.sum().backward()
        grads = [p.grad for p in vae.latent.prior.parameters()]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), type(prior).__name__


def test_learned_gaussian_kl_is_the_closed_form_to_its_parameters():
    vae = small_vae(LearnedGaussian())
    with torch.no_grad():
        vae.latent.prior.mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        vae.latent.prior.logvar.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    torch.manual_seed(0)
    x = torch.rand(5, *IMAGE_SHAPE)
    out = vae(x)
    moments = vae.posterior(x)  # the posterior the forward pass used (deterministic given x)
    q = Normal(moments.mean, (0.5 * moments.logvar).exp())
    logvar = LOGVAR_BOUND * torch.tanh(vae.latent.prior.logvar / LOGVAR_BOUND)  # soft-clamped, like the posterior's
    p = Normal(vae.latent.prior.mean, (0.5 * logvar).exp())
    torch.testing.assert_close(out.latents["z"].kl_per_unit, torch.distributions.kl_divergence(q, p))


@pytest.mark.parametrize("prior", [GaussianMixture, VampPrior])
def test_analytic_kl_to_a_prior_without_closed_form_is_a_clear_error(prior):
    with pytest.raises(ConfigError, match="needs a closed-form KL.*use 'auto' or 'mc'"):
        small_vae(prior(), kl_estimator="analytic")


@pytest.mark.parametrize("bad", [lambda: GaussianMixture(num_components=0), lambda: VampPrior(num_pseudo_inputs=0)])
def test_prior_sizes_are_checked(bad):
    with pytest.raises(ConfigError, match="at least 1"):
        bad()


@pytest.mark.parametrize("name", PRIORS)
def test_a_prior_belongs_to_one_model(name):
    """A prior binds once, to its layer's size; given to a second model it is a one-line error, not shared weights."""
    prior = PRIORS[name]()
    small_vae(prior)
    assert prior.latent_dim == LATENT_DIM
    with pytest.raises(ConfigError, match="already part of a layer of 4 dimensions: give each model") as error:
        small_vae(prior)
    assert "\n" not in str(error.value)
