"""Discrete latents (vae.layers.discrete): the categorical and Bernoulli KLs in the model against torch.distributions
and the worked numbers, support mismatch, the Monte-Carlo estimator and its gradient, the relaxation and its
straight-through form, the temperature schedule, exact log-likelihoods by enumeration, the Capacities weighting and
the clustering accuracy. (The annealed temperature across a resumed fit:
tests/integration/test_discrete_training.py.)"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, kl_divergence

from vae.core.errors import ConfigError
from vae.layers.discrete import BernoulliLatent, CategoricalLatent, Temperature, gumbel_draws
from vae.layers.latents import KLParts
from vae.layers.likelihoods import Bernoulli as BernoulliLikelihood
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import StandardNormal
from vae.metrics.likelihood import clustering_accuracy, importance_weighted_log_likelihood
from vae.models.hierarchical import HierarchicalVAE
from vae.models.joint import JointVAE
from vae.objectives.elbo import IWAE
from vae.objectives.weighting import Capacities
from vae.training.module import VAEModule

F64 = torch.float64


def categorical(k: int = 3, *, variables: int = 1, prior: str = "learned", estimator: str = "auto", st=False):
    """A categorical layer whose posterior logits are its head's bias (the input is zeros), in float64."""
    layer = CategoricalLatent(
        name="c", in_features=2, categories=k, variables=variables, prior=prior, kl_estimator=estimator,
        straight_through=st,
    ).double()  # fmt: skip
    nn.init.zeros_(layer.head.weight)
    return layer


def bernoulli(units: int = 4, *, prior: str = "learned", estimator: str = "auto", st=False):
    layer = BernoulliLatent(
        name="b", in_features=2, units=units, prior=prior, kl_estimator=estimator, straight_through=st
    ).double()
    nn.init.zeros_(layer.head.weight)
    return layer


LAYERS = {  # a layer of each kind, and its posterior and prior logits for the tests that take either
    "categorical": (categorical, 4, [1.0, -0.5, 0.3, 2.0], [0.2, 0.1, -1.0, 0.0]),
    "bernoulli": (bernoulli, 3, [1.0, -0.5, 2.0], [0.2, -1.0, 0.0]),
}


def set_logits(layer, posterior, prior=None):
    with torch.no_grad():
        layer.head.bias.copy_(torch.as_tensor(posterior, dtype=F64).flatten())
        if prior is not None:
            layer.prior_logits.copy_(torch.as_tensor(prior, dtype=F64).flatten())


def kl_of(layer, batch: int = 1):
    return layer.eval()(torch.zeros(batch, 2, dtype=F64))


# --- The closed forms in the model ----------------------------------------------------------------


def test_categorical_kl_in_the_model_equals_torch_and_the_worked_example():
    """P = [0.7, 0.2, 0.1] against Q = softmax([1.2, 0.3, −0.8]) is 0.011200 nats (tests/test_kl.py's worked
    example); random logits against a learned prior equal torch.distributions.kl_divergence to 1e-12."""
    layer = categorical(3)
    set_logits(layer, torch.tensor([0.7, 0.2, 0.1]).log(), [1.2, 0.3, -0.8])
    assert kl_of(layer).kl.item() == pytest.approx(0.011200, abs=1e-6)
    layer = categorical(5, variables=4)
    q, p = torch.randn(4, 5, dtype=F64), torch.randn(4, 5, dtype=F64)
    set_logits(layer, q, p)
    sample = kl_of(layer)
    reference = kl_divergence(Categorical(logits=q), Categorical(logits=p))  # (4,): per variable
    torch.testing.assert_close(sample.kl_per_unit[0], reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sample.kl[0], reference.sum(), rtol=1e-12, atol=1e-12)


def test_kl_to_the_uniform_prior_is_log_k_minus_the_entropy():
    layer = categorical(7, variables=3, prior="uniform")
    q = torch.randn(3, 7, dtype=F64) * 2
    set_logits(layer, q)
    entropy = Categorical(logits=q).entropy()
    torch.testing.assert_close(kl_of(layer).kl_per_unit[0], math.log(7) - entropy, rtol=1e-12, atol=1e-12)


def test_bernoulli_kl_in_the_model_equals_torch():
    layer = bernoulli(6)
    q, p = torch.randn(6, dtype=F64) * 3, torch.randn(6, dtype=F64)
    set_logits(layer, q, p)
    reference = kl_divergence(Bernoulli(logits=q), Bernoulli(logits=p))
    torch.testing.assert_close(kl_of(layer).kl_per_unit[0], reference, rtol=1e-12, atol=1e-12)
    uniform = bernoulli(6, prior="uniform")
    set_logits(uniform, q)
    entropy = Bernoulli(logits=q).entropy()
    torch.testing.assert_close(kl_of(uniform).kl_per_unit[0], math.log(2) - entropy, rtol=1e-12, atol=1e-12)


def test_support_mismatch_gives_the_right_finite_value_or_inf_never_nan_and_finite_gradients():
    """q(k) = 0 where p(k) > 0 contributes 0 (a finite KL with finite gradients); q(k) > 0 = p(k) is +inf."""
    layer = categorical(3)
    set_logits(layer, [-math.inf, 0.0, 0.0], [0.0, 0.0, 0.0])
    x = torch.zeros(1, 2, dtype=F64)
    sample = layer.train()(x)
    assert sample.kl.item() == pytest.approx(math.log(3) - math.log(2), rel=1e-12)  # Σ ½ log(½ / ⅓)
    sample.kl.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    layer = categorical(3)
    set_logits(layer, [0.0, 0.0, 0.0], [-math.inf, 0.0, 0.0])
    kl = layer.eval()(x).kl
    assert kl.item() == math.inf and not torch.isnan(kl).any()
    for estimator in ("analytic", "mc"):  # a zero of the prior where q has mass: +inf, even at a Monte-Carlo draw
        layer = categorical(3, estimator=estimator)
        set_logits(layer, [0.0, 20.0, 0.0], [0.0, -math.inf, 0.0])
        kl = layer.train()(x.expand(50, -1)).kl
        assert (kl == math.inf).any() and not torch.isnan(kl).any()  # (an infinite loss has no useful gradient)
    layer = categorical(3, estimator="mc")  # a zero of q: never drawn, so every Monte-Carlo value is finite
    set_logits(layer, [-math.inf, 0.0, 0.0], [0.0, 0.0, 0.0])
    kl = layer.train()(x.expand(50, -1)).kl
    assert torch.isfinite(kl).all()
    kl.mean().backward()
    assert torch.isfinite(layer.head.bias.grad).all()
    layer = bernoulli(2)
    set_logits(layer, [0.0, 0.0], [math.inf, 0.0])  # p(b₀ = 1) = 1: a posterior with mass on 0 is infinitely far
    assert kl_of(layer).kl_per_unit[0, 0].item() == math.inf
    layer = bernoulli(2)  # q(b₀ = 1) = 0 where the prior has mass: log 1/p(b₀ = 0), finite, with finite gradients
    set_logits(layer, [-math.inf, 0.0], [1.0, 0.0])
    sample = layer.train()(x)
    assert sample.kl_per_unit[0, 0].item() == pytest.approx(-math.log(torch.sigmoid(torch.tensor(-1.0)).item()))
    sample.kl.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


# --- The Monte-Carlo estimate ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_monte_carlo_kl_and_its_score_function_gradient_are_unbiased(kind):
    """Over 20,000 draws the MC estimate's mean is the closed form (within 4 standard errors) and so is its
    gradient with respect to both the posterior and the learned prior logits."""
    torch.manual_seed(0)
    make, size, q, p = LAYERS[kind]
    exact, mc = make(size), make(size, estimator="mc")
    for layer in (exact, mc):
        set_logits(layer, q, p)
    n = 20_000
    x = torch.zeros(n, 2, dtype=F64)
    closed = exact.train()(x[:1]).kl
    closed.sum().backward()
    estimate = mc.train()(x).kl
    assert mc.kl_estimator == "mc" and exact.kl_estimator == "analytic"
    stderr = estimate.std().item() / math.sqrt(n)
    assert estimate.mean().item() == pytest.approx(closed.item(), abs=4 * stderr)
    (estimate.mean()).backward()
    for name in ("head.bias", "prior_logits"):
        got, want = dict(mc.named_parameters())[name].grad, dict(exact.named_parameters())[name].grad
        torch.testing.assert_close(got, want, atol=0.03, rtol=0)


# --- The relaxation -------------------------------------------------------------------------------


def test_the_hard_draw_is_an_exact_categorical_sample_and_the_relaxed_mean_approaches_it_as_tau_falls():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=F64)
    log_probs = probs.log().expand(200_000, 4)
    hard, _ = gumbel_draws(log_probs, 1.0)
    torch.testing.assert_close(hard.mean(0), probs, atol=0.005, rtol=0)  # 4 standard errors of the worst ≈ 0.0045
    gaps = []
    for tau in (5.0, 1.0, 0.3, 0.05):
        _, relaxed = gumbel_draws(log_probs, tau)
        gaps.append((relaxed.mean(0) - probs).abs().max().item())
    assert gaps == sorted(gaps, reverse=True)  # closer to the categorical probabilities as τ falls
    assert gaps[0] > 0.15 and gaps[-1] < 0.01


@pytest.mark.parametrize("kind", LAYERS)
def test_straight_through_is_one_hot_forward_with_the_relaxed_gradient(kind):
    make, size, q, _ = LAYERS[kind]
    relaxed_layer, st_layer = make(size), make(size, st=True)
    logits = torch.randn(len(q), dtype=F64)
    for layer in (relaxed_layer, st_layer):
        set_logits(layer, logits)
    weights = torch.randn(size, dtype=F64)
    x = torch.zeros(500, 2, dtype=F64)  # many draws: hard + (r − r) must be exactly one-hot, never 1 − 2⁻⁵³
    outputs = []
    for layer in (relaxed_layer, st_layer):
        torch.manual_seed(4)
        sample = layer.train()(x, temperature=0.5)
        (sample.z * weights).sum().backward()
        outputs.append(sample.z)
    soft, hard = outputs
    assert set(hard.unique().tolist()) == {0.0, 1.0} and not set(soft.unique().tolist()) <= {0.0, 1.0}
    if kind == "categorical":  # one category of the variable; the hard draw is the relaxed one's argmax
        assert torch.equal(hard.sum(-1), torch.ones(500, dtype=F64))
        assert torch.equal(hard.argmax(-1), soft.argmax(-1))
    else:  # each unit's hard value is its relaxed value rounded (the same noise)
        assert torch.equal(hard, (soft > 0.5).to(F64))
    torch.testing.assert_close(st_layer.head.bias.grad, relaxed_layer.head.bias.grad, rtol=1e-12, atol=1e-12)
    assert st_layer.head.bias.grad.abs().sum() > 0


def test_eval_mode_decodes_the_exact_one_hot_draw():
    layer = categorical(6, variables=2)
    sample = layer.eval()(torch.randn(8, 2, dtype=F64))
    assert set(sample.z.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sample.z.sum(-1), torch.full((8,), 2.0, dtype=F64))  # one category of each variable


def test_the_temperature_follows_the_global_step():
    schedule = Temperature(start=1.0, minimum=0.5, rate=1e-3)
    assert schedule.at(0) == 1.0 and schedule.at(500) == pytest.approx(math.exp(-0.5))
    assert schedule.at(10_000) == 0.5 and schedule.at(None) == 0.5
    assert Temperature(start=0.67).at(123_456) == 0.67
    model = joint(categories=3, anneal_rate=1e-3, temperature=1.0, min_temperature=0.5)
    x = torch.rand(2, 1, 4, 4, dtype=F64)
    assert model.train()(x, step=500).settings == {"temperature": pytest.approx(math.exp(-0.5))}
    assert model.eval()(x, step=500).settings == {}
    with pytest.raises(ConfigError, match="min_temperature"):
        Temperature(start=0.5, minimum=0.6, rate=1e-3)


def test_the_bits_picture_sets_a_unit_to_0_and_then_1():
    layer = bernoulli(3)
    base = torch.tensor([1.0, 0.0, 1.0], dtype=F64)
    assert layer.outcomes(1, base).tolist() == [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    assert layer.outcomes(0, base).tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]


# --- Exact log-likelihoods by enumeration ---------------------------------------------------------


def joint(**arch) -> JointVAE:
    torch.manual_seed(0)
    return JointVAE(
        image_shape=(1, 4, 4), latent_dim=2, network=MLPNet(hidden_dims=(16,)), likelihood=BernoulliLikelihood(),
        prior=StandardNormal(), kl_estimator="auto", kl_samples=1, **arch,
    ).double()  # fmt: skip


@pytest.mark.parametrize("kind", ["categorical", "bernoulli"])
def test_importance_weighted_log_likelihood_of_a_discrete_vae_equals_the_exact_sum(kind):
    """With only a discrete code, log p(x) = log Σ_c p(c) p(x | c) over all its values (4 categories, or 3 bits:
    8 codes): the importance-weighted estimate (K = 10,000) is within 0.02 nats of it (its error at K = 1,000 is
    about 0.05), and the ELBO below it."""
    arch = {"continuous": False, "discrete_prior": "learned"}
    arch |= {"categories": 4} if kind == "categorical" else {"categories": 0, "bernoulli": 3}
    model = joint(**arch).eval()
    layer = model.discrete[0]
    with torch.no_grad():
        layer.prior_logits.copy_(torch.randn_like(layer.prior_logits))
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.4, dtype=F64))
    if kind == "categorical":
        codes = torch.eye(4, dtype=F64)
    else:
        codes = torch.tensor([[(i >> j) & 1 for j in range(3)] for i in range(8)], dtype=F64)
    one_hot = torch.stack([codes, 1 - codes], dim=-1) if kind == "bernoulli" else codes[:, None, :]
    log_prior = (one_hot * layer.prior_log_probs()).sum(dim=(-2, -1))  # (codes,)
    with torch.no_grad():
        log_px = torch.stack([model.likelihood.log_prob(model.network.decoder(c.expand(5, -1)), x) for c in codes])
    exact = torch.logsumexp(log_prior[:, None] + log_px, dim=0)
    torch.manual_seed(1)
    with torch.no_grad():
        estimate = importance_weighted_log_likelihood(model, x, num_samples=10_000, chunk_size=1000)
        elbo = torch.stack([model(x).log_w()[0] for _ in range(50)]).mean(0)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
    assert (elbo <= exact + 1e-6).all()


def test_joint_vae_logs_each_layer_and_refuses_the_iwae_objective_in_training():
    model = joint(categories=5, bernoulli=3)
    assert [layer.name for layer in model.layers] == ["z", "c", "b"]
    out = model.train()(torch.rand(4, 1, 4, 4, dtype=F64), step=0)
    assert set(out.latents) == {"z", "c", "b"} and out.kl.shape == (4,)
    with pytest.raises(ConfigError, match="cannot train on the IWAE bound"):
        model(torch.rand(4, 1, 4, 4, dtype=F64), samples=2)
    assert model.eval().log_weights(torch.rand(4, 1, 4, 4, dtype=F64), 3).shape == (3, 4)
    pictures = model.pictures(torch.rand(4, 1, 4, 4, dtype=F64), nrow=4)
    assert {"samples", "reconstructions", "traversals", "categories", "bits"} <= set(pictures)


def test_joint_refuses_bad_settings_in_one_line():
    for settings, message in [
        ({"categories": 1}, "at least 2"),
        ({"continuous": False, "categories": 0}, "no latent code"),
        ({"discrete_prior": "zipf"}, "uniform"),
        ({"temperature": 0.0}, "positive"),
        ({"network": HierarchicalVAE(image_shape=(1, 28, 28))}, "JointVAE's network must be an encoder/decoder pair"),
    ]:
        with pytest.raises(ConfigError, match=message) as error:
            JointVAE(**{"image_shape": (1, 4, 4), "network": MLPNet(hidden_dims=(8,)), **settings})
        assert "\n" not in str(error.value)
    model = JointVAE(image_shape=(1, 4, 4), network=MLPNet(hidden_dims=(8,)))
    with pytest.raises(ConfigError, match="IWAE objective needs exact log densities") as error:
        VAEModule(model=model, objective=IWAE(samples=2))  # before training, not at its first step
    assert "\n" not in str(error.value)


# --- Capacities and clustering accuracy -----------------------------------------------------------


def test_capacities_push_each_layer_towards_its_own_capacity():
    weighting = Capacities(capacities={"z": 5.0, "c": 2.0}, gamma=30.0, steps=100)
    log_px = torch.tensor([-100.0, -120.0])
    kl = KLParts(
        per_layer={"z": torch.tensor([1.0, 3.0]), "c": torch.tensor([2.0, 2.0])},
        per_unit={"z": None, "c": None},
        sizes={"z": 2, "c": 10},
    )
    out = weighting(log_px, kl, step=50, training=True)
    # C_z = 2.5, C_c = 1.0 at step 50: 110 + 30·|2 − 2.5| + 30·|2 − 1|
    assert out.loss.item() == pytest.approx(110 + 15 + 30)
    assert out.extras == {"capacity/z": 2.5, "kl_weight/z": -30.0, "capacity/c": 1.0, "kl_weight/c": 30.0}
    with pytest.raises(ConfigError, match="one capacity per layer"):
        Capacities(capacities={"z": 5.0})(log_px, kl, step=0, training=True)
    # JointVAE's schedule: one rate for both, the discrete capacity stopping at its cap
    dupont = Capacities(capacities={"z": 5.0, "c": 2.3}, steps={"z": 25_000, "c": 11_500})
    assert [dupont.capacity("c", t) for t in (5_000, 11_500, 20_000)] == pytest.approx([1.0, 2.3, 2.3])
    assert dupont.capacity("z", 5_000) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="the same layers"):
        Capacities(capacities={"z": 5.0, "c": 2.3}, steps={"z": 100})


def test_clustering_accuracy_matches_clusters_to_classes_one_to_one():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    assert clustering_accuracy((labels + 1) % 3, labels) == 1.0  # a relabelling is perfect
    clusters = torch.tensor([1, 1, 0, 0, 2, 2, 0, 0])  # best matching 1→0, 0→1, 2→2: 6 of 8 agree
    assert clustering_accuracy(clusters, labels) == 0.75
    assert clustering_accuracy(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1])) == 0.5  # extra clusters
    assert clustering_accuracy(torch.zeros(8, dtype=torch.long), labels) == 3 / 8
