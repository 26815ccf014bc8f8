"""Every KL closed form against torch.distributions and a high-sample Monte-Carlo estimate; support, sign,
direction, estimator selection, and the regularizer."""

import math

import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Exponential,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)
from torch.distributions import kl_divergence as torch_kl

from vae.core.errors import ConfigError
from vae.core.kl import (
    CLOSED_FORMS,
    KLRegularizer,
    analytic_kl,
    bernoulli_kl,
    categorical_kl,
    diagonal_gaussian_kl,
    full_gaussian_kl,
    kl_divergence,
    monte_carlo_kl,
    register_kl,
)

F64 = torch.float64


def random_gaussian(*shape, dtype=F64):
    return torch.randn(*shape, dtype=dtype) * 2, torch.randn(*shape, dtype=dtype) * 1.5


def random_scale_tril(*batch, k, dtype=F64):
    """Cholesky factors of random SPD matrices A Aᵀ / k + I/2 (well conditioned at any k)."""
    a = torch.randn(*batch, k, k, dtype=dtype)
    return torch.linalg.cholesky(a @ a.mT / k + 0.5 * torch.eye(k, dtype=dtype))


def normal(mean, logvar):
    return Normal(mean, (0.5 * logvar).exp())


# --- Gaussian closed forms -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 1e-6)])
def test_kl_to_standard_normal_matches_torch_distributions(dtype, tol):
    mean, logvar = random_gaussian(64, 10, dtype=dtype)
    reference = torch_kl(normal(mean, logvar), Normal(torch.zeros_like(mean), 1.0))
    torch.testing.assert_close(diagonal_gaussian_kl(mean, logvar), reference, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 1e-6)])
def test_kl_between_diagonal_gaussians_matches_torch_distributions(dtype, tol):
    mean_p, logvar_p = random_gaussian(64, 10, dtype=dtype)
    mean_q, logvar_q = random_gaussian(64, 10, dtype=dtype)
    p, q = normal(mean_p, logvar_p), normal(mean_q, logvar_q)
    ours = diagonal_gaussian_kl(mean_p, logvar_p, mean_q, logvar_q)
    torch.testing.assert_close(ours, torch_kl(p, q), rtol=tol, atol=tol)
    # Per example (summed over the dimensions) it is the KL of the diagonal Gaussian.
    torch.testing.assert_close(ours.sum(-1), torch_kl(Independent(p, 1), Independent(q, 1)), rtol=tol, atol=10 * tol)


def test_diagonal_kl_is_exactly_zero_when_p_equals_q():
    mean, logvar = random_gaussian(32, 8, dtype=torch.float32)
    assert torch.equal(diagonal_gaussian_kl(mean, logvar, mean, logvar), torch.zeros_like(mean))
    assert torch.equal(diagonal_gaussian_kl(torch.zeros(5), torch.zeros(5)), torch.zeros(5))


def test_diagonal_kl_needs_both_moments_of_q():
    with pytest.raises(ValueError, match="both mean_q and logvar_q"):
        diagonal_gaussian_kl(torch.zeros(2), torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("k", [1, 3, 20, 300])
def test_full_covariance_kl_matches_multivariate_normal(k):
    """float64, up to k = 300; relative error 1e-9 (the two implementations differ only in rounding)."""
    mean_p, mean_q = torch.randn(4, k, dtype=F64), torch.randn(4, k, dtype=F64)
    tril_p, tril_q = random_scale_tril(4, k=k), random_scale_tril(4, k=k)
    ours = full_gaussian_kl(mean_p, tril_p, mean_q, tril_q)
    reference = torch_kl(MultivariateNormal(mean_p, scale_tril=tril_p), MultivariateNormal(mean_q, scale_tril=tril_q))
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)
    assert (ours > 0).all()


def test_full_covariance_kl_in_float32_at_k_100():
    mean_p, mean_q = torch.randn(3, 100, dtype=F64), torch.randn(3, 100, dtype=F64)
    tril_p, tril_q = random_scale_tril(3, k=100), random_scale_tril(3, k=100)
    exact = full_gaussian_kl(mean_p, tril_p, mean_q, tril_q)
    single = full_gaussian_kl(*(t.float() for t in (mean_p, tril_p, mean_q, tril_q)))
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-4)


def test_full_covariance_kl_reduces_to_the_diagonal_form_and_broadcasts():
    mean_p, logvar_p = random_gaussian(5, 6)
    mean_q, logvar_q = random_gaussian(6)  # one Q for the whole batch of P
    full = full_gaussian_kl(
        mean_p, torch.diag_embed((0.5 * logvar_p).exp()), mean_q, torch.diag((0.5 * logvar_q).exp())
    )
    torch.testing.assert_close(full, diagonal_gaussian_kl(mean_p, logvar_p, mean_q, logvar_q).sum(-1))


# --- Discrete closed forms -------------------------------------------------------------------------


def test_categorical_kl_from_probabilities_and_from_logits_match_torch():
    p_logits, q_logits = torch.randn(50, 7, dtype=F64), torch.randn(50, 7, dtype=F64)
    reference = torch_kl(Categorical(logits=p_logits), Categorical(logits=q_logits))
    torch.testing.assert_close(categorical_kl(p_logits, q_logits, logits=True), reference, rtol=1e-12, atol=1e-12)
    probs = categorical_kl(p_logits.softmax(-1), q_logits.softmax(-1))
    torch.testing.assert_close(probs, reference, rtol=1e-12, atol=1e-12)


def test_categorical_kl_of_the_worked_example():
    """P = [0.7, 0.2, 0.1], Q = softmax([1.2, 0.3, −0.8]): each direction against the sum written out."""
    p = torch.tensor([0.7, 0.2, 0.1], dtype=F64)
    q_logits = torch.tensor([1.2, 0.3, -0.8], dtype=F64)
    q = q_logits.softmax(-1)
    p_list, q_list = p.tolist(), q.tolist()
    forward = sum(pi * math.log(pi / qi) for pi, qi in zip(p_list, q_list))
    reverse = sum(qi * math.log(qi / pi) for pi, qi in zip(p_list, q_list))
    assert categorical_kl(p, q).item() == pytest.approx(forward, rel=1e-12)
    assert categorical_kl(p.log(), q_logits, logits=True).item() == pytest.approx(forward, rel=1e-12)
    assert categorical_kl(q, p).item() == pytest.approx(reverse, rel=1e-12)
    assert forward == pytest.approx(0.011200, abs=1e-6) and reverse == pytest.approx(0.011925, abs=1e-6)


def test_support_mismatch_is_inf_and_zero_mass_contributes_nothing():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    q = torch.tensor([[0.0, 0.5, 0.5], [0.25, 0.75, 0.0]])
    kl = categorical_kl(p, q)
    assert kl[0].item() == math.inf  # Q(x=0) = 0 < P(x=0): infinite, not nan
    # P(x=2) = 0 adds 0 even though Q(x=2) = 0 too (0·log 0/0 = 0).
    assert kl[1].item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75), rel=1e-6)
    # The reverse direction: Q's zero is now the first argument's, and P(x=2) = 0 < Q(x=2) makes it infinite.
    assert categorical_kl(q[0], p[0]).item() == math.inf
    # Same answer from logits with −inf entries, and from torch.distributions objects through the registry.
    torch.testing.assert_close(categorical_kl(p.log(), q.log(), logits=True), kl)
    via_registry = kl_divergence(Categorical(probs=p), Categorical(probs=q))
    assert via_registry.kl.tolist() == kl.tolist() == torch_kl(Categorical(probs=p), Categorical(probs=q)).tolist()


def test_gradients_are_finite_where_the_kl_is():
    p_logits = torch.tensor([0.0, 1.0, -math.inf], requires_grad=True)  # P(x=2) = 0
    q_logits = torch.tensor([0.5, -0.5, -math.inf], requires_grad=True)
    categorical_kl(p_logits, q_logits, logits=True).backward()
    assert torch.isfinite(p_logits.grad).all() and torch.isfinite(q_logits.grad).all()
    # The same from probabilities with zeros (d log p / dp is inf at p = 0: it must not reach the gradient as nan),
    # and through torch.distributions objects built from them.
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64, requires_grad=True)
    kl = categorical_kl(p, q)
    kl.backward()
    assert kl.item() == pytest.approx(0.5 * math.log(2.0), rel=1e-12)
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()
    # ∂/∂p_k = log(p_k/q_k) + 1 where p_k > 0, and ∂/∂q_k = −p_k/q_k: 0 where p_k = 0.
    torch.testing.assert_close(p.grad[:2], torch.tensor([math.log(2.0) + 1, 1.0], dtype=torch.float64))
    torch.testing.assert_close(q.grad, torch.tensor([-2.0, -1.0, 0.0], dtype=torch.float64))
    for make in (Categorical, lambda probs: Bernoulli(probs=probs[..., 0])):
        p_probs = torch.tensor([[1.0, 0.0], [0.3, 0.7]], requires_grad=True)
        q_probs = torch.tensor([[0.6, 0.4], [0.5, 0.5]], requires_grad=True)
        kl = kl_divergence(make(probs=p_probs), make(probs=q_probs)).kl
        kl.sum().backward()
        assert torch.isfinite(kl).all() and torch.isfinite(p_probs.grad).all() and torch.isfinite(q_probs.grad).all()


def test_a_posterior_mass_too_small_for_float32_is_still_infinitely_far_from_a_prior_zero():
    """exp(−200) underflows to 0 in float32, but P(x) > 0 = Q(x) makes the KL +inf in every precision."""
    for dtype in (torch.float32, torch.float64):
        log_p = torch.tensor([-200.0, 0.0], dtype=dtype)
        log_q = torch.tensor([-math.inf, math.log(0.5)], dtype=dtype)
        assert categorical_kl(log_p, log_q, logits=True).item() == math.inf
        assert categorical_kl(log_q, log_p, logits=True).item() == pytest.approx(0.0, abs=1e-7)  # −log(1 − e⁻²⁰⁰)


def test_empirical_eps_makes_an_empty_bin_finite_and_is_off_by_default():
    counts_p = torch.tensor([3.0, 5.0, 2.0, 0.0])
    counts_q = torch.tensor([4.0, 4.0, 0.0, 2.0])
    p, q = counts_p / counts_p.sum(), counts_q / counts_q.sum()
    assert categorical_kl(p, q).item() == math.inf
    smoothed = categorical_kl(p, q, empirical_eps=1e-3).item()
    assert math.isfinite(smoothed) and smoothed > 1.0  # the empty bin dominates, as it should
    p_eps, q_eps = (torch.clamp(x, min=1e-3) / torch.clamp(x, min=1e-3).sum() for x in (p, q))
    assert smoothed == pytest.approx((p_eps * (p_eps / q_eps).log()).sum().item(), rel=1e-5)


@pytest.mark.parametrize(
    "p,match",
    [(torch.tensor([0.5, 0.6]), "summing to 1"), (torch.tensor([1.5, -0.5]), "non-negative")],
)
def test_categorical_rejects_non_distributions(p, match):
    with pytest.raises(ValueError, match=match):
        categorical_kl(p, torch.tensor([0.5, 0.5]))


def test_bernoulli_kl_matches_torch_and_stays_exact_at_extreme_logits():
    p_logits, q_logits = 3 * torch.randn(200, dtype=F64), 3 * torch.randn(200, dtype=F64)
    torch.testing.assert_close(
        bernoulli_kl(p_logits, q_logits), torch_kl(Bernoulli(logits=p_logits), Bernoulli(logits=q_logits))
    )
    # σ(30) rounds to 1 in float32; in log space the KL is still right (reference in float64).
    extreme_p, extreme_q = torch.tensor([30.0, -40.0]), torch.tensor([25.0, -20.0])
    reference = bernoulli_kl(extreme_p.double(), extreme_q.double())
    torch.testing.assert_close(bernoulli_kl(extreme_p, extreme_q).double(), reference, rtol=1e-5, atol=0.0)
    # With a = e^−30 and b = e^−25 (the two probabilities of 0), the KL is b − 6a to relative order 1e−11.
    assert reference[0].item() == pytest.approx(math.exp(-25) - 6 * math.exp(-30), rel=1e-9)


def test_bernoulli_support_mismatch_through_probabilities():
    p, q = Bernoulli(probs=torch.tensor([0.3, 0.0])), Bernoulli(probs=torch.tensor([1.0, 0.2]))
    ours = kl_divergence(p, q).kl
    assert ours[0].item() == math.inf and ours[1].item() == pytest.approx(-math.log(0.8), rel=1e-6)
    assert ours.tolist() == pytest.approx(torch_kl(p, q).tolist())


# --- Gibbs' inequality and the Monte-Carlo check of every closed form -------------------------------


def random_pairs(batch: int) -> dict[str, tuple[Distribution, Distribution]]:
    mean_p, logvar_p = random_gaussian(batch, 3)
    mean_q, logvar_q = random_gaussian(batch, 3)
    return {
        "normal": (Independent(normal(mean_p, logvar_p), 1), Independent(normal(mean_q, logvar_q), 1)),
        "full": (
            MultivariateNormal(mean_p, scale_tril=random_scale_tril(batch, k=3)),
            MultivariateNormal(mean_q, scale_tril=random_scale_tril(batch, k=3)),
        ),
        "categorical": (
            Categorical(logits=torch.randn(batch, 5, dtype=F64)),
            Categorical(logits=torch.randn(batch, 5, dtype=F64)),
        ),
        "bernoulli": (
            Independent(Bernoulli(logits=torch.randn(batch, 4, dtype=F64)), 1),
            Independent(Bernoulli(logits=torch.randn(batch, 4, dtype=F64)), 1),
        ),
    }


@pytest.mark.parametrize("family", ["normal", "full", "categorical", "bernoulli"])
def test_kl_is_non_negative_and_zero_only_for_equal_distributions(family):
    p, q = random_pairs(2000)[family]
    kl = kl_divergence(p, q)
    assert kl.estimator == "analytic" and (kl.kl > 0).all()
    torch.testing.assert_close(kl_divergence(p, p).kl, torch.zeros(2000, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("family", ["normal", "full", "categorical", "bernoulli"])
def test_every_closed_form_agrees_with_a_high_sample_monte_carlo_estimate(family):
    """Within 5 standard errors of a 100,000-sample estimate, for each of 6 random pairs."""
    p, q = random_pairs(6)[family]
    exact = kl_divergence(p, q, estimator="analytic")
    mc = kl_divergence(p, q, estimator="mc", num_samples=100_000)
    assert mc.estimator == "mc"
    assert ((mc.kl - exact.kl).abs() < 5 * mc.stderr).all(), (mc.kl, exact.kl, mc.stderr)
    torch.testing.assert_close(exact.kl, torch_kl(p, q), rtol=1e-10, atol=1e-10)


# --- The entry point ---------------------------------------------------------------------------------


def test_forward_and_reverse_kl_of_two_gaussians():
    """D_KL(N(0,1) ‖ N(1,0.5²)) = log 0.5 + (1 + 1)/(2·0.25) − ½ and the reverse, log 2 + (0.25 + 1)/2 − ½."""
    p = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    q = Normal(torch.tensor(1.0, dtype=F64), torch.tensor(0.5, dtype=F64))
    assert kl_divergence(p, q).kl.item() == pytest.approx(math.log(0.5) + 4.0 - 0.5, rel=1e-12)  # 2.8069
    assert kl_divergence(q, p).kl.item() == pytest.approx(math.log(2.0) + 0.625 - 0.5, rel=1e-12)  # 0.8181


def test_per_dimension_values_sum_to_the_per_example_kl_for_both_estimators():
    mean_p, logvar_p = random_gaussian(8, 5)
    p = Independent(normal(mean_p, logvar_p), 1)
    q = Independent(Normal(torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64)), 1)
    for estimator in ("analytic", "mc"):
        result = kl_divergence(p, q, estimator=estimator, num_samples=3)
        assert result.kl.shape == (8,) and result.per_dim.shape == (8, 5)
        torch.testing.assert_close(result.per_dim.sum(-1), result.kl)
    torch.testing.assert_close(kl_divergence(p, q).per_dim, diagonal_gaussian_kl(mean_p, logvar_p))


def mixture(k: int = 3, d: int = 2) -> MixtureSameFamily:
    return MixtureSameFamily(
        Categorical(logits=torch.randn(k, dtype=F64)), Independent(Normal(torch.randn(k, d, dtype=F64), 1.0), 1)
    )


def test_auto_uses_monte_carlo_for_a_mixture_and_analytic_is_an_error():
    posterior = Independent(Normal(torch.randn(4, 2, dtype=F64), 0.5), 1)
    result = kl_divergence(posterior, mixture(), num_samples=10)
    assert result.estimator == "mc" and result.kl.shape == (4,) and result.per_dim is None
    with pytest.raises(ConfigError, match="no closed form|none exists"):
        kl_divergence(posterior, mixture(), estimator="analytic")
    with pytest.raises(ConfigError, match="no closed-form KL is registered"):
        analytic_kl(posterior, mixture())
    with pytest.raises(ConfigError, match="'auto', 'analytic' or 'mc'"):
        kl_divergence(posterior, mixture(), estimator="exact")


def test_monte_carlo_kl_to_a_one_component_mixture_matches_the_closed_form():
    """A mixture with one component is that Gaussian: the MC estimate must find the closed form."""
    mean_p, logvar_p = random_gaussian(6, 3)
    p = Independent(normal(mean_p, logvar_p), 1)
    component = Independent(Normal(torch.randn(1, 3, dtype=F64), torch.rand(1, 3, dtype=F64) + 0.5), 1)
    one = MixtureSameFamily(Categorical(logits=torch.zeros(1, dtype=F64)), component)
    mc = monte_carlo_kl(p, one, num_samples=50_000)
    exact = analytic_kl(p, Independent(Normal(component.base_dist.loc[0], component.base_dist.scale[0]), 1))
    assert ((mc.kl - exact.kl).abs() < 5 * mc.stderr).all()


def test_monte_carlo_is_exactly_zero_for_identical_distributions_and_has_no_stderr_with_one_sample():
    q = Normal(torch.randn(4), torch.rand(4) + 0.5)
    assert torch.equal(monte_carlo_kl(q, q, num_samples=10).kl, torch.zeros(4))
    assert monte_carlo_kl(q, q, num_samples=1).stderr is None


def test_monte_carlo_stderr_shrinks_as_one_over_root_k():
    p, q = Normal(torch.tensor(0.0, dtype=F64), 1.0), Normal(torch.tensor(1.0, dtype=F64), 0.5)
    small, large = (monte_carlo_kl(p, q, num_samples=k).stderr.item() for k in (1_000, 100_000))
    assert small / large == pytest.approx(10.0, rel=0.15)


def test_registered_closed_forms_are_used_by_auto():
    @register_kl(Exponential, Exponential)
    def exponential(p, q):  # log(λp/λq) + λq/λp − 1
        return (p.rate / q.rate).log() + q.rate / p.rate - 1

    try:
        p, q = Exponential(torch.tensor([1.0, 2.0], dtype=F64)), Exponential(torch.tensor([3.0, 0.5], dtype=F64))
        result = kl_divergence(p, q)
        assert result.estimator == "analytic"
        torch.testing.assert_close(result.kl, torch_kl(p, q))
    finally:
        del CLOSED_FORMS[(Exponential, Exponential)]
    assert kl_divergence(p, q, num_samples=5).estimator == "mc"


# --- The regularizer ---------------------------------------------------------------------------------


def standard_normal(d: int, dtype=torch.float32) -> Independent:
    return Independent(Normal(torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)), 1)


@pytest.mark.parametrize("estimator", ["auto", "analytic", "mc"])
def test_regularizer_returns_sample_and_per_example_kl(estimator):
    mean, logvar = random_gaussian(16, 5, dtype=torch.float32)
    out = KLRegularizer(estimator=estimator, num_samples=4)(Independent(normal(mean, logvar), 1), standard_normal(5))
    assert out.z.shape == (16, 5) and out.kl.shape == (16,) and out.kl_per_dim.shape == (16, 5)
    torch.testing.assert_close(out.kl, out.kl_per_dim.sum(-1))
    assert out.estimator == ("mc" if estimator == "mc" else "analytic")


def test_regularizer_mc_with_one_sample_is_log_q_minus_log_p_at_the_decoded_z():
    mean, logvar = random_gaussian(8, 3)
    posterior, prior = Independent(normal(mean, logvar), 1), standard_normal(3, F64)
    out = KLRegularizer(estimator="mc")(posterior, prior)
    torch.testing.assert_close(out.kl, posterior.log_prob(out.z) - prior.log_prob(out.z))


def test_regularizer_mc_estimate_converges_to_analytic():
    mean, logvar = random_gaussian(8, 3)
    posterior, prior = Independent(normal(mean, logvar), 1), standard_normal(3, F64)
    analytic = KLRegularizer(estimator="analytic")(posterior, prior).kl
    mc = KLRegularizer(estimator="mc", num_samples=50_000)(posterior, prior).kl
    torch.testing.assert_close(mc, analytic, rtol=0.02, atol=0.05)


def test_regularizer_sample_is_reparameterised():
    mean = torch.zeros(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    KLRegularizer()(Independent(normal(mean, logvar), 1), standard_normal(3)).z.sum().backward()
    assert mean.grad is not None and torch.equal(mean.grad, torch.ones(4, 3))
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"estimator": "exact"}, {"num_samples": 0}])
def test_regularizer_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        KLRegularizer(**kwargs)
