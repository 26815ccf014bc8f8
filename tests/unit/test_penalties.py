"""The disentangling penalties: β-TCVAE's weighted split, FactorVAE's discriminator (its TC estimate against a
Gaussian's exact total correlation, and which parameters each loss reaches), DIP-VAE's covariance, and what they
refuse. Through a real Trainer: tests/integration/test_penalty_training.py."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from vae.core.errors import ConfigError
from vae.core.trust import build
from vae.layers.latents import LatentSample
from vae.layers.nets import MLPNet
from vae.layers.priors import VampPrior
from vae.models import VAE
from vae.objectives.elbo import ELBO, Objective
from vae.objectives.penalties import DIPVAE, BetaTCVAE, FactorVAE, dip_covariance, permute_dims
from vae.objectives.weighting import Constant
from vae.training.module import VAEModule


def latent_sample(mean, scale, z=None) -> LatentSample:
    posterior = Independent(Normal(mean, scale), 1)
    d = mean.shape[1]
    return LatentSample(
        z=posterior.rsample() if z is None else z,
        kl=torch.zeros(len(mean)),
        kl_per_unit=None,
        posterior_mean=mean[..., None],
        posterior=posterior,
        prior=Independent(Normal(torch.zeros(d), torch.ones(d)), 1),
        estimator="analytic",
    )


def vae(latent_dim: int = 4, hidden: int = 16, **settings) -> VAE:
    return VAE(image_shape=(1, 28, 28), latent_dim=latent_dim, network=MLPNet(hidden_dims=(hidden,)), **settings)


@pytest.fixture(scope="module")
def model():
    return vae(latent_dim=5, hidden=32)


@pytest.fixture(scope="module")
def model_output(model):
    x = torch.rand(64, 1, 28, 28)
    return model(x)


@pytest.mark.parametrize("kl_weight", [1.0, 3.0])
def test_beta_tcvae_weighs_each_part_of_the_split(model, model_output, kl_weight):
    """With the Constant(1) weighting the loss is recon + α·mi + β·tc + γ·dwkl (+ the closed-form KL's difference
    from the split's one-sample sum); another weighting scales the whole KL beside the split's extra weights."""
    alpha, beta, gamma = 2.0, 6.0, 0.5
    objective = ELBO(
        weighting=Constant(beta=kl_weight),
        penalty=BetaTCVAE(alpha=alpha, beta=beta, gamma=gamma),
        kl_split="mss",
    ).bind(model)
    torch.manual_seed(0)
    result = objective(model_output, step=0, training=True, dataset_size=1000)
    split = objective.split(model_output, training=True, dataset_size=1000)
    mi, tc, dwkl = (getattr(split, n).mean() for n in ("mi", "tc", "dwkl"))
    recon, kl = -model_output.log_px.mean(), model_output.kl.mean()
    expected = recon + kl_weight * kl + (alpha - 1) * mi + (beta - 1) * tc + (gamma - 1) * dwkl
    torch.testing.assert_close(result.loss, expected)
    if kl_weight == 1.0:  # the paper's objective, up to the closed-form KL against its one-sample estimate
        paper = recon + alpha * mi + beta * tc + gamma * dwkl
        torch.testing.assert_close(result.loss, paper + (kl - split.total.mean()))
    assert result.weights["kl_split/tc_weight"] == beta and result.weights["kl_weight"] == kl_weight
    for name in ("mi", "tc", "dwkl"):  # logged raw
        torch.testing.assert_close(result.terms[f"kl_split/{name}"], getattr(split, name).mean())
    assert result.loss.requires_grad


def test_permute_dims_shuffles_each_dimension_on_its_own():
    z = torch.arange(40.0).reshape(10, 4) * torch.tensor([1.0, 100.0, 1e4, 1e6])
    permuted = permute_dims(z)
    for d in range(4):  # each column a permutation of itself
        assert sorted(permuted[:, d].tolist()) == sorted(z[:, d].tolist())
    assert not torch.equal(permuted, z)


def test_the_discriminators_tc_estimate_approaches_a_gaussians_total_correlation():
    """Samples of a 2-D Gaussian with correlation ρ = 0.8: TC = −½ log(1 − ρ²) = 0.511 nats exactly. The
    discriminator, trained on its own loss alone, estimates it within 0.1 nats."""
    torch.manual_seed(0)
    penalty = FactorVAE(gamma=0.0, hidden=32, depth=2).bind(units=2)
    optimizer = torch.optim.Adam(penalty.parameters(), lr=1e-3, betas=(0.5, 0.9))
    rho = 0.8
    covariance = torch.tensor([[1.0, rho], [rho, 1.0]])
    gaussian = torch.distributions.MultivariateNormal(torch.zeros(2), covariance)
    for _ in range(350):
        z = gaussian.sample((256,))
        result = penalty(latent_sample(z, torch.ones_like(z), z=z), None, samples=1, training=True)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
    z = gaussian.sample((20_000,))
    with torch.no_grad():
        estimate = penalty(latent_sample(z, torch.ones_like(z), z=z), None, samples=1, training=False)
    exact = -0.5 * math.log(1 - rho**2)
    assert estimate.terms["factor_vae/tc"].item() == pytest.approx(exact, abs=0.1)
    assert 0.5 < estimate.terms["factor_vae/discriminator_accuracy"].item() < 0.8


def test_each_factor_vae_loss_reaches_only_its_own_parameters():
    """γ·TC trains the encoder (through z) and never the discriminator; the discriminator's loss trains the
    discriminator and never the encoder."""
    penalty = FactorVAE(gamma=10.0, hidden=16, depth=2).bind(units=3)
    mean = torch.randn(32, 3, requires_grad=True)  # stands for the encoder's output
    result = penalty(latent_sample(mean, torch.full((32, 3), 0.5)), None, samples=1, training=True)
    tc = result.terms["factor_vae/tc"]
    assert not tc.requires_grad  # logged detached
    d_params = list(penalty.discriminator.parameters())
    grads = torch.autograd.grad(result.loss, [mean, *d_params], retain_graph=True)
    d_loss_only = torch.autograd.grad(
        result.loss - 10.0 * result.terms["factor_vae/tc"], d_params, retain_graph=True, allow_unused=True
    )
    for got, want in zip(grads[1:], d_loss_only):  # the discriminator's gradient is its own loss's alone
        torch.testing.assert_close(got, want)
    assert grads[0].abs().sum() > 0  # the encoder gets γ·∇TC
    # and the discriminator's loss alone gives the encoder nothing
    d_loss = result.terms["factor_vae/discriminator_loss"]
    assert not d_loss.requires_grad
    assert result.weights == {"factor_vae/tc_weight": 10.0}


def test_dip_covariance_and_penalty():
    torch.manual_seed(0)
    mean, variance = torch.randn(200, 4) * torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.rand(200, 4)
    torch.testing.assert_close(dip_covariance(mean, variance, "i"), torch.cov(mean.T, correction=0))
    torch.testing.assert_close(
        dip_covariance(mean, variance, "ii"), torch.cov(mean.T, correction=0) + torch.diag(variance.mean(0))
    )
    # Posterior means whose batch covariance is exactly I (a whitened batch) and zero variance: no penalty (DIP-I).
    white = torch.randn(100, 3, dtype=torch.float64)
    white = white - white.mean(0)
    white = white @ torch.linalg.inv(torch.linalg.cholesky(white.T @ white / 100)).T
    penalty = DIPVAE(kind="i", lambda_od=5.0).bind(units=3)
    result = penalty(latent_sample(white, torch.full_like(white, 1e-12)), None, samples=1, training=True)
    assert result.loss.item() == pytest.approx(0.0, abs=1e-9)
    # A hand case: C = [[2, 1], [1, 1]] → off-diagonal Σ = 1² + 1² = 2, diagonal Σ = (2 − 1)² = 1.
    base = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    mean = base @ torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64).T  # covariance A Aᵀ = [[1,1],[1,2]]
    result = DIPVAE(kind="i", lambda_od=3.0, lambda_d=7.0).bind(units=2)(
        latent_sample(mean.flip(1), torch.full_like(mean, 1e-12)), None, samples=1, training=True
    )
    assert result.terms["dip/off_diagonal"].item() == pytest.approx(2.0)
    assert result.terms["dip/diagonal"].item() == pytest.approx(1.0)
    assert result.loss.item() == pytest.approx(3.0 * 2.0 + 7.0 * 1.0)
    assert DIPVAE(kind="i", lambda_od=2.0).bind(units=2).lambda_d == 20.0  # the paper's advice
    assert DIPVAE(kind="ii", lambda_od=2.0).bind(units=2).lambda_d == 2.0


IWAE_WITH_A_PENALTY = {
    "class_path": "vae.objectives.IWAE",
    "init_args": {"samples": 4, "penalty": {"class_path": "vae.objectives.DIPVAE"}},
}


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda: VAEModule(model=vae(prior=VampPrior(num_pseudo_inputs=4)), objective=ELBO(penalty=BetaTCVAE())),
            "diagonal Gaussian prior",
        ),
        (
            lambda: VAEModule(model=vae(), objective=ELBO(penalty=BetaTCVAE(), kl_split="off")),
            "BetaTCVAE weighs the KL split: set the objective's kl_split to mss or mws",
        ),
        # The IWAE bound weighs nothing: it takes no penalty (nor a weighting), as a config spells it.
        (lambda: build(IWAE_WITH_A_PENALTY, Objective, "model.objective"), "unexpected keyword argument 'penalty'"),
    ],
    ids=["vamp-prior", "split-off", "iwae"],
)
def test_penalties_refuse_what_they_cannot_do(make, message):
    with pytest.raises(ConfigError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_a_penalty_is_bound_to_one_model_only():
    penalty = FactorVAE(hidden=8, depth=1)
    VAEModule(model=vae(), objective=ELBO(penalty=penalty))
    with pytest.raises(ConfigError, match="already bound to a model"):
        VAEModule(model=vae(), objective=ELBO(penalty=penalty))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: BetaTCVAE(beta=-1.0), "BetaTCVAE beta must be 0 or more"),
        (lambda: FactorVAE(hidden=0), "FactorVAE hidden and depth must be positive"),
        (lambda: FactorVAE(betas=(0.5, 1.0)), "betas in"),
        (lambda: DIPVAE(kind="iii"), "DIPVAE kind must be 'i' or 'ii'"),
    ],
)
def test_bad_settings_are_one_line_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
