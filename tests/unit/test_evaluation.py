"""The estimators against a model whose log p(x) is exact: probabilistic PCA, z ~ N(0, I), x|z ~ N(Wz + b, σ²I).

With orthogonal columns in W the exact posterior is diagonal, q(z|x) = N(M⁻¹Wᵀ(x − b), σ²M⁻¹) with
M = WᵀW + σ²I, so a linear encoder can represent it exactly. Training on the IWAE bound through a real Trainer:
tests/integration/test_iwae_training.py.
"""

import math

import pytest
import torch
from einops import rearrange
from torch.distributions import MultivariateNormal

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND
from vae.core.trust import build
from vae.layers.likelihoods import Gaussian
from vae.layers.nets import LinearNet, MLPNet
from vae.metrics.likelihood import bits_per_dim, evaluate, importance_weighted_log_likelihood
from vae.models.base import log_mean_exp_chunks
from vae.models.vae import VAE
from vae.objectives.elbo import IWAE, Objective, iwae_bound

F64 = torch.float64
SHAPE = (1, 4, 4)  # D = 16
D, LATENT, SIGMA = 16, 3, 0.5


def ppca(*, exact_posterior: bool, seed: int = 0):
    """A PPCA model as a VAE (float64), its exact marginal, and 300 samples of x from it."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, dtype=F64, generator=g))
    w = q * torch.tensor([2.0, 1.5, 1.0], dtype=F64)  # orthogonal columns
    b = torch.randn(D, dtype=F64, generator=g)
    vae = VAE(image_shape=SHAPE, latent_dim=LATENT, network=LinearNet(), likelihood=Gaussian(sigma=SIGMA)).double()
    m = w.T @ w + SIGMA**2 * torch.eye(LATENT, dtype=F64)  # diagonal
    mean_weight = torch.linalg.solve(m, w.T)  # M⁻¹Wᵀ
    logvar = torch.log(SIGMA**2 / torch.diagonal(m))
    if not exact_posterior:  # a deliberately imperfect encoder: the bounds are then strict
        mean_weight = mean_weight * 0.7
        logvar = logvar + 1.0
    with torch.no_grad():
        vae.network.decoder.linear.weight.copy_(w)
        vae.network.decoder.linear.bias.copy_(b)
        head = vae.latent.head
        head.weight.zero_()
        head.weight[:LATENT] = mean_weight
        head.bias[:LATENT] = -mean_weight @ b
        head.bias[LATENT:] = LOGVAR_BOUND * torch.atanh(logvar / LOGVAR_BOUND)  # undo the soft clamp
    marginal = MultivariateNormal(b, covariance_matrix=w @ w.T + SIGMA**2 * torch.eye(D, dtype=F64))
    x = marginal.sample(torch.Size([300]))
    return vae, marginal, x.view(300, *SHAPE), marginal.log_prob(x)


def test_with_the_exact_posterior_every_importance_weight_is_p_of_x():
    """p(x, z) / q(z|x) = p(x) for every z when q is the true posterior: ELBO = IWAE_K = log p(x)."""
    vae, _, x, exact = ppca(exact_posterior=True)
    with torch.no_grad():
        log_w = vae.log_weights(x, 50)
        torch.testing.assert_close(log_w, exact.expand(50, -1), rtol=0, atol=1e-6)
        # The ELBO itself, E_q[log p(x|z)] − KL with the analytic KL, averaged over 4,000 samples of z.
        kl = vae(x).kl
        log_px = rearrange(vae(x, samples=4000).log_px, "(k b) -> k b", k=4000)
        elbo = log_px.mean(dim=0) - kl
    assert (elbo - exact).abs().mean().item() < 0.05


def test_elbo_below_iwae_below_log_p_x_and_iwae_rises_with_k():
    vae, _, x, exact = ppca(exact_posterior=False)
    torch.manual_seed(0)
    with torch.no_grad():
        means = {}
        for k in (1, 5, 50, 500):
            means[k] = iwae_bound(vae.log_weights(x, k)).mean().item()
        large = importance_weighted_log_likelihood(vae, x, num_samples=5000, chunk_size=500)
        out = vae(x)
    target = exact.mean().item()
    elbo = (out.log_px - out.kl).mean().item()
    # Gaps of 2.5, 0.5 and 0.06 nats between successive K, against a Monte-Carlo error of a 300-example
    # mean well under 0.02 at K ≥ 50 (and under 0.2 for the single-sample ELBO).
    assert target - elbo > 1.0 and target - means[1] > 1.0  # the imperfect encoder makes the ELBO loose
    assert means[1] < means[5] < means[50] < means[500] < target + 0.02
    assert large.mean().item() == pytest.approx(target, abs=0.1)  # within 0.1 nat per example at K = 5000
    assert (large <= exact + 0.5).all()


def test_chunked_log_mean_exp_is_exact():
    values = torch.randn(1000, 7, dtype=F64) * 30
    expected = torch.logsumexp(values, dim=0) - math.log(1000)
    torch.testing.assert_close(log_mean_exp_chunks(values.split(137)), expected, rtol=0, atol=1e-12)
    assert torch.isfinite(log_mean_exp_chunks([torch.full((3, 2), -1e4)])).all()  # no underflow to -inf


def test_iwae_with_one_sample_is_the_elbo():
    log_px, log_pz, log_qz = torch.randn(1, 5), torch.randn(1, 5), torch.randn(1, 5)
    bound = iwae_bound(log_px + log_pz - log_qz)  # log w = log p(x|z) + log p(z) − log q(z|x), (K=1, b)
    elbo = log_px[0] - (log_qz[0] - log_pz[0])  # log p(x|z) − the one-sample KL
    assert bound.shape == (5,)
    torch.testing.assert_close(bound, elbo)


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), (1, 28, 28)) == pytest.approx(1.0)
    assert bits_per_dim(5000.0, (3, 32, 32)) == pytest.approx(5000 / (3072 * math.log(2)))


def test_evaluate_on_the_exact_model_reports_the_exact_likelihood():
    vae, _, x, exact = ppca(exact_posterior=True)
    batches = [(x[:150], torch.zeros(150)), (x[150:], torch.zeros(150))]
    result = evaluate(vae, batches, num_samples=20, chunk_size=7, split="test")
    assert result.num_examples == 300 and result.num_samples == 20
    assert result.log_likelihood == pytest.approx(exact.mean().item(), abs=1e-6)
    assert result.elbo == pytest.approx(exact.mean().item(), abs=0.2)  # one sample of the recon term each
    assert result.elbo == pytest.approx(-result.recon - result.kl, abs=1e-9)
    assert result.bits_per_dim == pytest.approx(-exact.mean().item() / (16 * math.log(2)), abs=1e-6)
    assert result.active_units == 3 and len(result.kl_per_dim) == 3
    assert result.kl_per_layer == {"z": pytest.approx(result.kl)} and result.active_units_per_layer == {"z": 3}
    assert "log p(x), importance-weighted, K=20" in result.table()


def test_evaluate_reports_the_inference_gap_a_lower_bound_on_the_posteriors_kl():
    """log p(x) (importance-weighted) − ELBO = E_x[KL(q(z|x) ‖ p(z|x))] up to the IW estimate's own shortfall: 0 for
    the exact posterior; for the imperfect encoder, the exact gap log p(x) − ELBO (the ELBO averaged over 4,000
    draws) within 0.2 nats, and not above it beyond that tolerance."""
    torch.manual_seed(0)
    vae, _, x, exact = ppca(exact_posterior=True)
    result = evaluate(vae, [(x, torch.zeros(300))], num_samples=20)
    assert result.inference_gap == pytest.approx(result.log_likelihood - result.elbo, abs=1e-9)
    assert abs(result.inference_gap) < 0.2 and "inference gap" in result.table()
    vae, _, x, exact = ppca(exact_posterior=False)
    result = evaluate(vae, [(x, torch.zeros(300))], num_samples=2000, chunk_size=500)
    with torch.no_grad():
        out = vae(x, samples=4000)
        elbo = (rearrange(out.log_px, "(k b) -> k b", k=4000).mean(dim=0) - out.kl[:300]).mean().item()
    exact_gap = exact.mean().item() - elbo
    assert exact_gap > 1.0 and result.inference_gap == pytest.approx(exact_gap, abs=0.2)
    assert result.inference_gap <= exact_gap + 0.2


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: IWAE(samples=0), "needs at least 2 importance samples, got 0"),
        (lambda: IWAE(samples=1), "needs at least 2 importance samples, got 1"),
        # The bound weighs nothing: a config that gives it a KL weighting is refused, in one line.
        (lambda: build(IWAE_WITH_A_WEIGHTING, Objective, "model.objective"), "unexpected keyword argument 'weighting'"),
    ],
    ids=["no-samples", "one-sample", "weighting"],
)
def test_the_iwae_objective_refuses_bad_settings(make, message):
    with pytest.raises(ConfigError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


IWAE_WITH_A_WEIGHTING = {
    "class_path": "vae.objectives.IWAE",
    "init_args": {"samples": 5, "weighting": {"class_path": "vae.objectives.LinearWarmup"}},
}


def test_the_evaluation_api_runs_in_eval_mode_without_gradients_and_restores_the_callers_mode():
    """A model left in training mode, with a BatchNorm in its encoder: the importance-weighted log-likelihood is the
    eval-mode one (no batch statistics), no gradient is recorded, the running statistics are untouched, and the
    model is still in training mode afterwards; evaluate() alike, and an eval-mode model stays in eval mode."""
    from vae.layers.likelihoods import Bernoulli

    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(32,)), likelihood=Bernoulli())
    vae.network.encoder = torch.nn.Sequential(torch.nn.BatchNorm2d(1), vae.network.encoder)
    x = torch.bernoulli(torch.full((16, 1, 28, 28), 0.3))
    norm = vae.network.encoder[0]
    vae.train()
    torch.manual_seed(1)
    in_training = importance_weighted_log_likelihood(vae, x, num_samples=20)
    assert all(module.training for module in vae.modules()) and not in_training.requires_grad
    assert torch.equal(norm.running_mean, torch.zeros(1)) and int(norm.num_batches_tracked) == 0
    vae.eval()
    torch.manual_seed(1)
    torch.testing.assert_close(in_training, importance_weighted_log_likelihood(vae, x, num_samples=20))
    assert not any(module.training for module in vae.modules())
    vae.train()
    result = evaluate(vae, [(x, torch.zeros(16, dtype=torch.long))], num_samples=5)
    assert vae.training and int(norm.num_batches_tracked) == 0 and math.isfinite(result.log_likelihood)
