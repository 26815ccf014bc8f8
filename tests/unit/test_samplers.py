"""The flow prior and the post-hoc samplers against exact references: a flow's density integrates to 1; a sampler fitted
to Gaussian codes scores held-out codes at the Gaussian's own expected log-density, E log N(z; μ, Σ) = −d/2 (1 + log 2π)
− ½ log det Σ; a mixture's fitted weights and means are the true ones; a sampler file is refused for another model."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vae.core.errors import ConfigError, DataError
from vae.layers.priors import FlowPrior
from vae.models.hierarchical import HierarchicalVAE
from vae.models.samplers import FlowSampler, fit_sampler, load_sampler, make_sampler, save_sampler
from vae.models.vae import VAE


@pytest.mark.parametrize("kind", ["maf", "nsf"])
def test_a_flow_priors_density_integrates_to_one(kind):
    torch.manual_seed(0)
    prior = FlowPrior(kind=kind, transforms=2, hidden=(16,)).bind(latent_dim=2, image_shape=(1, 4, 4)).double()
    for parameter in prior.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    axis = torch.linspace(-12, 12, 961, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = prior(None).log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_a_flow_prior_trains_with_a_monte_carlo_kl_and_samples_at_a_temperature():
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 28, 28), latent_dim=4, prior=FlowPrior(transforms=2, hidden=(16,)))
    assert vae.latent.kl_estimator == "mc" and not vae.capabilities.kl_per_dimension
    x = torch.rand(6, 1, 28, 28)
    out = vae(x)
    latent = out.latents["z"]
    torch.testing.assert_close(latent.kl, latent.posterior.log_prob(latent.z) - latent.prior.log_prob(latent.z))
    (-(out.log_px - out.kl).mean()).backward()
    assert vae.latent.prior.flow.transform.transforms[0].hyper[0].weight.grad.abs().sum() > 0
    cold = vae.latent.sample_prior(5, encode=vae.posterior, temperature=0.0)
    assert torch.allclose(cold, cold[:1].expand(5, -1)) and vae.sample(3).shape == (3, 1, 28, 28)


def test_a_flow_prior_on_a_hierarchys_top_layer():
    torch.manual_seed(0)
    model = HierarchicalVAE(
        image_shape=(1, 28, 28), latent_channels=(8, 4), resolutions=(1, 7), width=16, prior=FlowPrior(hidden=(16,))
    )
    x = torch.rand(3, 1, 28, 28).round()
    top = model(x).latents["z2"]
    assert model.top.kl_estimator == top.estimator == "mc"
    torch.testing.assert_close(top.kl, top.posterior.log_prob(top.flat_z()) - top.prior.log_prob(top.flat_z()))
    assert model.sample(2, temperature=0.5).shape == (2, 1, 28, 28)


def gaussian_codes(n=20_000, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    covariance = a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)
    codes = MultivariateNormal(mean, covariance_matrix=covariance).sample(torch.Size([n]))
    expected = -d / 2 * (1 + math.log(2 * math.pi)) - 0.5 * torch.logdet(covariance).item()
    return codes.float(), expected


def test_a_one_component_mixture_scores_held_out_gaussian_codes_at_their_expected_log_density():
    codes, expected = gaussian_codes()
    sampler = make_sampler("gmm", dim=3, components=1)
    sampler.fit(codes[2000:])
    scores = sampler.log_prob(codes[:2000])
    assert abs(scores.mean().item() - expected) < 4 * scores.std().item() / math.sqrt(len(scores))


def test_the_flow_sampler_scores_held_out_gaussian_codes_near_their_expected_log_density():
    """An affine MAF can represent the Gaussian exactly; early-stopped, it is within 0.05 nats of it."""
    codes, expected = gaussian_codes()
    torch.manual_seed(0)
    sampler = FlowSampler(dim=3, transforms=2, hidden=(32,), steps=1500)
    sampler.fit(codes[2000:], progress=False)
    with torch.no_grad():
        score = sampler.log_prob(codes[:2000]).mean().item()
        draws = sampler.sample(4000)
    assert score == pytest.approx(expected, abs=0.05)
    torch.testing.assert_close(draws.mean(0), codes.mean(0), atol=0.15, rtol=0)


def test_a_mixture_sampler_recovers_the_weights_and_means_of_a_mixture():
    g = torch.Generator().manual_seed(1)
    means = torch.tensor([[-4.0, 0.0], [4.0, 1.0]])
    which = (torch.rand(8000, generator=g) < 0.3).long()
    codes = means[which] + 0.5 * torch.randn(8000, 2, generator=g)
    sampler = make_sampler("gmm", dim=2, components=2)
    sampler.fit(codes)
    order = sampler.means[:, 0].argsort()
    torch.testing.assert_close(sampler.weights[order], torch.tensor([0.7, 0.3]), atol=0.02, rtol=0)
    torch.testing.assert_close(sampler.means[order], means, atol=0.05, rtol=0)
    cold = sampler.sample(100, temperature=0.0)
    assert all(min((c - m).norm() for m in sampler.means) < 1e-4 for c in cold)


def test_a_saved_sampler_is_refused_for_another_model_or_code_size(tmp_path):
    codes, _ = gaussian_codes(n=500)
    sampler = make_sampler("gmm", dim=3, components=2)
    sampler.fit(codes)
    path = tmp_path / "run.sampler-gmm.pt"
    save_sampler(path, sampler, fingerprint="abc")
    again = load_sampler(path, fingerprint="abc", dim=3)
    torch.testing.assert_close(again.means, sampler.means)
    with pytest.raises(ConfigError, match="codes of 3 dimensions, and this model's have 32") as error:
        load_sampler(path, fingerprint="abc", dim=32)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="fitted to another model"):
        load_sampler(path, fingerprint="def", dim=3)
    for damaged in (path.read_bytes()[:100], b"", b"not a torch file at all\n" * 10):
        path.write_bytes(damaged)
        with pytest.raises(DataError, match="not a sampler file") as error:
            load_sampler(path, fingerprint="abc", dim=3)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: make_sampler("kde", dim=2), "unknown sampler 'kde'"),
        (lambda: make_sampler("gmm", dim=2, components=0), "at least 1 component"),
        (lambda: FlowPrior(kind="realnvp"), "'maf' or 'nsf'"),
        (lambda: FlowPrior(transforms=0), "at least 1 transform"),
        (lambda: fit_sampler("gmm", torch.zeros(5, 2)), "at least 10 codes"),
    ],
)
def test_bad_samplers_and_flow_priors_are_one_line_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
