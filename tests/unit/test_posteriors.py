"""Posterior families against exact references: probabilistic PCA with non-orthogonal loadings, whose exact posterior
is a full-covariance Gaussian; each flow's log-determinant against autograd's full Jacobian; the full-covariance KL
against torch.distributions; the Monte-Carlo KL of a flow against an exact KL.

PPCA: z ~ N(0, I_d), x | z ~ N(Wz + b, s² I_D); p(x) = N(b, WWᵀ + s²I); p(z|x) = N(S Wᵀ(x − b)/s², S) with
S = (I + WᵀW/s²)⁻¹. All in float64.
"""

import math

import pytest
import torch
from einops import rearrange
from torch.distributions import MultivariateNormal, kl_divergence

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND
from vae.core.kl import full_gaussian_kl
from vae.layers.flows import IAF, ConvIAF, Planar, Sylvester, orthonormalise
from vae.layers.likelihoods import Gaussian
from vae.layers.nets import LinearNet
from vae.layers.posteriors import FlowDensityError, FullCovariance
from vae.layers.priors import FlowPrior, LearnedFullGaussian, VampPrior
from vae.models.hierarchical import HierarchicalVAE
from vae.models.vae import VAE

F64 = torch.float64
SHAPE = (1, 3, 3)  # D = 9
D, LATENT, SIGMA = 9, 3, 0.5


def ppca_parts(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D, LATENT, dtype=F64, generator=g)  # non-orthogonal columns: a correlated posterior
    b = torch.randn(D, dtype=F64, generator=g)
    covariance = torch.linalg.inv(torch.eye(LATENT, dtype=F64) + w.T @ w / SIGMA**2)  # S
    gain = covariance @ w.T / SIGMA**2  # E[z|x] = gain (x − b)
    marginal = MultivariateNormal(b, covariance_matrix=w @ w.T + SIGMA**2 * torch.eye(D, dtype=F64))
    x = marginal.sample(torch.Size([50]))
    return w, b, covariance, gain, x, marginal.log_prob(x)


def unclamp(logvar):
    return LOGVAR_BOUND * torch.atanh(logvar / LOGVAR_BOUND)  # undo the head's soft clamp


def ppca_vae(posterior, w, b):
    vae = VAE(
        image_shape=SHAPE, latent_dim=LATENT, network=LinearNet(), likelihood=Gaussian(sigma=SIGMA), posterior=posterior
    ).double()
    with torch.no_grad():
        vae.network.decoder.linear.weight.copy_(w)
        vae.network.decoder.linear.bias.copy_(b)
        vae.latent.head.weight.zero_()
        vae.latent.head.bias.zero_()
    return vae


def elbo_per_draw(vae, x, samples):
    """log p(x, z) − log q(z|x) at each of ``samples`` draws, (K, b): zero variance at the exact posterior."""
    return vae(x.view(-1, *SHAPE), samples=samples).log_w()


def test_the_full_covariance_posterior_set_to_the_exact_one_gives_log_p_x_at_every_draw():
    w, b, covariance, gain, x, exact = ppca_parts()
    vae = ppca_vae(FullCovariance(), w, b)
    tril = torch.linalg.cholesky(covariance)
    assert (tril.tril(-1).abs() > 0.01).any()  # the posterior is correlated: a diagonal one cannot be exact
    with torch.no_grad():
        head = vae.latent.head
        head.weight[:LATENT] = gain
        head.bias[:LATENT] = -gain @ b
        head.bias[LATENT:] = unclamp(torch.diagonal(tril).square().log())
        rows, cols = torch.tril_indices(LATENT, LATENT, offset=-1)
        vae.latent.posterior.off_diagonal.bias.copy_(tril[rows, cols])
    torch.manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(elbo_per_draw(vae, x, 20), exact.expand(20, -1), rtol=0, atol=1e-6)
        out = vae(x.view(-1, *SHAPE))
    assert out.latents["z"].estimator == "analytic" and out.latents["z"].kl_per_unit is None
    assert not vae.capabilities.kl_per_dimension and not vae.capabilities.kl_split


def test_the_best_diagonal_posterior_falls_short_by_exactly_its_kl_to_the_true_posterior():
    """E_q[log p(x|z)] in closed form for the linear decoder, minus the layer's analytic KL, is the ELBO; log p(x) −
    ELBO = KL(q_diag ‖ p(z|x)) (the seeds' full-covariance closed form), to 1e-9."""
    w, b, covariance, gain, x, exact = ppca_parts()
    vae = ppca_vae(None, w, b)
    variances = 1.0 / torch.diagonal(torch.linalg.inv(covariance))  # the diagonal q closest in KL(q ‖ p)
    with torch.no_grad():
        head = vae.latent.head
        head.weight[:LATENT] = gain
        head.bias[:LATENT] = -gain @ b
        head.bias[LATENT:] = unclamp(variances.log())
        out = vae(x.view(-1, *SHAPE))
    mean = (x - b) @ gain.T
    expected_log_px = MultivariateNormal(mean @ w.T + b, covariance_matrix=SIGMA**2 * torch.eye(D, dtype=F64)).log_prob(
        x
    ) - (w.square() * variances).sum() / (2 * SIGMA**2)
    elbo = expected_log_px - out.kl
    gap = full_gaussian_kl(
        mean, torch.diag(variances.sqrt()).expand(len(x), -1, -1), mean, torch.linalg.cholesky(covariance)
    )
    assert (gap > 0.05).all()
    torch.testing.assert_close(exact - elbo, gap, rtol=0, atol=1e-9)


def test_an_affine_iaf_step_set_to_the_exact_posterior_gives_log_p_x_at_every_draw():
    """One IAF step with a linear conditioner: z = σ ⊙ z₀ + (1 − σ) ⊙ (A z₀ + c(x)), A strictly lower triangular, σ =
    ½; with z₀ ~ N(0, diag s₀²), s₀ = L_ii/σ, A = (L diag(1/s₀))_strict/(1 − σ) and c(x) = E[z|x]/(1 − σ), z ~ N(E[z|x],
    L Lᵀ), the exact posterior."""
    w, b, covariance, gain, x, exact = ppca_parts()
    vae = ppca_vae(IAF(length=1, hidden=(), context=D), w, b)
    tril = torch.linalg.cholesky(covariance)
    gate = 0.5
    s0 = torch.diagonal(tril) / gate
    flow = vae.latent.posterior
    made = flow.steps[0]
    with torch.no_grad():
        vae.latent.head.bias[LATENT:] = unclamp((s0.square()).log())  # μ₀ = 0
        flow.amortized.weight.copy_(torch.eye(D, dtype=F64))  # the context is x itself
        flow.amortized.bias.zero_()
        made.output.layer.weight.zero_()
        made.output.layer.weight[:LATENT] = (tril / s0).tril(-1) / (1 - gate)  # m = A z₀ (masked: strictly lower)
        made.output.layer.bias.zero_()  # s = 0: σ = ½
        made.context.weight.zero_()
        made.context.weight[:LATENT] = gain / (1 - gate)
        made.context.bias.zero_()
        made.context.bias[:LATENT] = -gain @ b / (1 - gate)
    torch.manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(elbo_per_draw(vae, x, 20), exact.expand(20, -1), rtol=0, atol=1e-6)
        latent = vae(x.view(-1, *SHAPE)).latents["z"]
        # The stated posterior mean is the flow at the Gaussian's mean: here E[z|x] exactly.
        torch.testing.assert_close(vae.encode(x.view(-1, *SHAPE)).mean, (x - b) @ gain.T, rtol=0, atol=1e-9)
    assert latent.estimator == "mc" and latent.log_q is not None
    with pytest.raises(FlowDensityError, match="only at its own draws"):
        latent.posterior.log_prob(latent.z)


# --- each flow's log-determinant against autograd's Jacobian -------------------------------------------------------

FLOWS = {
    "planar": lambda: Planar(length=3),
    "sylvester-orthogonal": lambda: Sylvester(length=2, kind="orthogonal", size=3),
    "sylvester-householder": lambda: Sylvester(length=2, kind="householder", householders=3),
    "sylvester-triangular": lambda: Sylvester(length=3, kind="triangular"),
    "iaf": lambda: IAF(length=2, hidden=(16, 16), context=4),
}


def bound_flow(make, dim=5, features=7, seed=0):
    torch.manual_seed(seed)
    flow = make().bind(dim=dim, features=features).double()
    for parameter in flow.parameters():  # away from the identity-like initialisation
        torch.nn.init.normal_(parameter, std=0.5)
    return flow


@pytest.mark.parametrize("name", list(FLOWS))
def test_each_flows_log_determinant_is_that_of_its_jacobian(name):
    flow = bound_flow(FLOWS[name])
    params = flow.extra(torch.randn(4, 7, dtype=F64))
    z = torch.randn(1, 4, 5, dtype=F64)
    _, log_det = flow.transform(z, params)
    for row in range(4):

        def f(v, row=row):
            out, _ = flow.transform(v.view(1, 1, 5), params[row : row + 1])
            return out.view(5)

        jacobian = torch.autograd.functional.jacobian(f, z[0, row])
        sign, reference = torch.linalg.slogdet(jacobian)
        assert sign > 0  # orientation preserved: every step's factor is positive
        torch.testing.assert_close(log_det[0, row], reference, rtol=0, atol=1e-9)


def test_orthogonal_sylvester_q_is_orthonormal_to_1e_12():
    a = torch.randn(16, 10, 4, dtype=F64)
    q = orthonormalise(a)
    gram = rearrange(q, "b d m -> b m d") @ q
    assert (gram - torch.eye(4, dtype=F64)).abs().max() < 1e-12


def test_planar_flows_stay_invertible_for_any_raw_parameters():
    """wᵀû > −1 for any u, w (the constraint), so along w the map α ↦ α + wᵀû tanh(α + b) is strictly increasing:
    each output has exactly one preimage, found here by bisection and mapped back exactly."""
    torch.manual_seed(1)
    flow = Planar(length=1).bind(dim=4, features=1).double()
    for scale in (0.1, 1.0, 10.0, 100.0):
        params = scale * torch.randn(64, 9, dtype=F64)
        u, w, b = params[:, :4], params[:, 4:8], params[:, 8:]
        z = torch.randn(1, 64, 4, dtype=F64)
        y, log_det = flow.transform(z, params)
        assert torch.isfinite(log_det).all()
        wu = (w * u).sum(-1, keepdim=True)
        w_u_hat = torch.nn.functional.softplus(wu) - 1
        assert (w_u_hat >= -1).all()  # > −1 exactly; = −1 only where softplus underflows
        u_hat = u + (w_u_hat - wu) * w / w.square().sum(-1, keepdim=True)
        # Invert: α = wᵀz solves wᵀy = α + wᵀû tanh(α + b), a strictly increasing function of α.
        target = (y[0] * w).sum(-1, keepdim=True)
        lo, hi = target - w_u_hat.abs() - 1, target + w_u_hat.abs() + 1
        for _ in range(200):
            mid = (lo + hi) / 2
            above = mid + w_u_hat * torch.tanh(mid + b) > target
            hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
        recovered = y[0] - u_hat * torch.tanh((lo + hi) / 2 + b)
        torch.testing.assert_close(recovered, z[0], rtol=0, atol=1e-6 * max(1.0, scale))


def test_an_iaf_steps_jacobian_is_triangular():
    flow = bound_flow(lambda: IAF(length=1, hidden=(16,), context=4))
    params = flow.extra(torch.randn(1, 7, dtype=F64))
    jacobian = torch.autograd.functional.jacobian(
        lambda v: flow.transform(v.view(1, 1, 5), params)[0].view(5), torch.randn(5, dtype=F64)
    )
    assert (jacobian.triu(1) == 0).all() and (jacobian.tril(-1) != 0).any()


def test_a_convolutional_iaf_on_a_feature_map_has_the_log_determinant_of_its_jacobian_and_it_is_triangular():
    """IAF over channels with 3×3 masked convolutions (a hierarchy's layers): ordered channel first, each output
    depends on earlier channels at any position and on itself only through σ, so the Jacobian is triangular."""
    torch.manual_seed(0)
    flow = ConvIAF(channels=3, length=2, hidden=(8,), context=2, kernel_size=3).double()
    for parameter in flow.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    context = torch.randn(1, 2, 2, 2, dtype=F64)
    z = torch.randn(3, 2, 2, dtype=F64)
    _, log_det = flow.transform(z[None, None], context)
    jacobian = torch.autograd.functional.jacobian(
        lambda v: flow.transform(v.view(1, 1, 3, 2, 2), context)[0].reshape(12), z.reshape(12)
    )
    sign, reference = torch.linalg.slogdet(jacobian)
    assert sign > 0
    torch.testing.assert_close(log_det[0, 0], reference, rtol=0, atol=1e-9)
    one_step = ConvIAF(channels=3, length=1, hidden=(8,), context=2, kernel_size=3).double()
    for parameter in one_step.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    step = torch.autograd.functional.jacobian(
        lambda v: one_step.transform(v.view(1, 1, 3, 2, 2), context)[0].reshape(12), z.reshape(12)
    )  # channel-major order: (c h w)
    assert (step.triu(1) == 0).all() and (step.tril(-1) != 0).any()


def test_a_hierarchy_with_iaf_in_every_layer_carries_log_q_into_its_importance_weights():
    torch.manual_seed(0)
    model = HierarchicalVAE(
        image_shape=(1, 28, 28),
        latent_channels=(4, 3, 2),
        resolutions=(1, 1, 7),
        width=8,
        posterior=IAF(length=1, hidden=(8,), context=4),
        layer_flow=IAF(length=2, hidden=(8,), context=3),
    ).double()
    x = torch.rand(3, 1, 28, 28, dtype=F64).round()
    with torch.no_grad():
        out = model(x, samples=2)
    assert model.kl_estimator == "mc" and all(layer.log_q is not None for layer in out.latents.values())
    # Each layer's part of log w is its carried log q minus its prior's density at the draw.
    for layer in out.latents.values():
        torch.testing.assert_close(layer.log_ratio(), layer.log_q - layer.prior.log_prob(layer.flat_z()))
    expected = out.log_px - sum(layer.log_ratio() for layer in out.latents.values())
    torch.testing.assert_close(out.log_w(), rearrange(expected, "(k b) -> k b", k=2))
    assert torch.isfinite(model.log_likelihood(x, samples=4)).all()


# --- the KL ---------------------------------------------------------------------------------------------------------


def test_the_full_covariance_layers_kl_is_torch_distributions_to_1e_8():
    torch.manual_seed(0)
    for prior in (None, LearnedFullGaussian()):
        vae = VAE(
            image_shape=SHAPE, latent_dim=4, network=LinearNet(), posterior=FullCovariance(), prior=prior
        ).double()
        for parameter in vae.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
        x = torch.rand(6, *SHAPE, dtype=F64)
        with torch.no_grad():
            latent = vae(x).latents["z"]
            q = vae.latent.posterior.distribution(*vae.latent.parts(vae.network.encoder(x)))
            p = vae.latent.prior(vae.posterior)
            p = p if isinstance(p, MultivariateNormal) else MultivariateNormal(p.mean, scale_tril=torch.diag(p.stddev))
        torch.testing.assert_close(latent.kl, kl_divergence(q, p), rtol=1e-8, atol=1e-8)


def test_the_full_covariance_kl_is_exact_for_ill_conditioned_covariances():
    """KL(N(0, Σ) ‖ N(0, cΣ)) = k/2 (1/c − 1 + log c) for any Σ: here with condition number 1e6."""
    k, c = 8, 3.0
    q, _ = torch.linalg.qr(torch.randn(k, k, dtype=F64, generator=torch.Generator().manual_seed(0)))
    eigenvalues = torch.logspace(0, 6, k, dtype=F64)  # condition number 1e6
    sigma = q @ torch.diag(eigenvalues) @ q.T
    tril = torch.linalg.cholesky(sigma)
    ours = full_gaussian_kl(torch.zeros(k, dtype=F64), tril, torch.zeros(k, dtype=F64), math.sqrt(c) * tril)
    exact = k / 2 * (1 / c - 1 + math.log(c))
    assert torch.linalg.cond(sigma) == pytest.approx(1e6, rel=1e-3)
    assert ours.item() == pytest.approx(exact, rel=1e-8)


def test_a_flows_monte_carlo_kl_is_unbiased():
    """The affine IAF step makes q(z|x) an exact Gaussian N(c(1 − σ) + 0, T diag(s₀²) Tᵀ), whose KL to N(0, I) has a
    closed form: the mean of 20,000 single-draw estimates (log q carried through the flow) is within 4 standard errors
    of it. A planar flow's estimate matches a 200,000-draw reference within 4 standard errors."""
    torch.manual_seed(0)
    vae = VAE(
        image_shape=SHAPE, latent_dim=3, network=LinearNet(), posterior=IAF(length=1, hidden=(), context=2)
    ).double()
    for parameter in vae.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.rand(1, *SHAPE, dtype=F64)
    with torch.no_grad():
        kl = vae(x, samples=20_000).kl
        moments, extra = vae.latent.parts(vae.network.encoder(x))
        made, h = vae.latent.posterior.steps[0], extra
        gate = torch.sigmoid(made.output.layer.bias[3:] + made.context(h)[0, 3:])
        shift = (1 - gate) * (made.output.layer.bias[:3] + made.context(h)[0, :3])
        a = made.output.layer.weight[:3] * made.output.mask[:3]
        t = torch.diag(gate) + torch.diag(1 - gate) @ a
        mean = t @ moments.mean[0] + shift
        scale_tril = t @ torch.diag((0.5 * moments.logvar[0]).exp())
        exact = full_gaussian_kl(mean, scale_tril, torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    assert (mean.abs() > 0.01).any() and abs(kl.mean() - exact) < 4 * kl.std() / math.sqrt(len(kl))

    vae = VAE(image_shape=SHAPE, latent_dim=3, network=LinearNet(), posterior=Planar(length=2)).double()
    for parameter in vae.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    with torch.no_grad():
        reference = vae(x, samples=200_000).kl
        estimate = vae(x, samples=20_000).kl
    error = math.sqrt(estimate.var() / len(estimate) + reference.var() / len(reference))
    assert abs(estimate.mean() - reference.mean()) < 4 * error


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Planar(length=0), "length must be at least 1"),
        (lambda: IAF(length=-1), "length must be at least 1"),
        (lambda: Sylvester(kind="diagonal"), "kind must be"),
        (
            lambda: VAE(image_shape=(1, 28, 28), latent_dim=4, posterior=Sylvester(size=5)),
            "between 1 and the layer's 4",
        ),
        (lambda: VAE(image_shape=(1, 28, 28), posterior=Planar(), prior=VampPrior()), "density only at its own draws"),
        (lambda: VAE(image_shape=(1, 28, 28), posterior=IAF(), kl_estimator="analytic"), "has none"),
        (
            lambda: HierarchicalVAE(
                image_shape=(1, 28, 28), latent_channels=(4, 2), resolutions=(7, 7), posterior=IAF()
            ),
            "takes a latent vector",
        ),
    ],
)
def test_bad_posteriors_are_one_line_errors(make, message):
    with pytest.raises(ConfigError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_a_flows_log_q_and_kl_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = VAE(
        image_shape=(1, 28, 28),
        latent_dim=4,
        posterior=IAF(length=2, hidden=(16,), context=4),
        prior=FlowPrior(transforms=1, hidden=(8,)),
    )
    x = torch.rand(4, 1, 28, 28).round()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latent = model(x).latents["z"]
    assert latent.log_q.dtype == latent.kl.dtype == latent.z.dtype == torch.float32
    assert torch.isfinite(latent.kl).all()


def test_an_iafs_output_is_in_the_bases_order_whatever_its_length():
    """Steps that are the identity (m = 0, σ → 1) give back z for 1, 2 and 3 steps: the reversals between steps are
    undone at the end, so the flowed mean f(μ)_i pairs with the base's variance σ_i²."""
    for length in (1, 2, 3):
        flow = IAF(length=length, hidden=(8,), context=2).bind(dim=4, features=3).double()
        with torch.no_grad():
            for made in flow.steps:
                made.output.layer.bias[4:] = 40.0  # σ = sigmoid(40): 1 to double precision
        z = torch.randn(1, 5, 4, dtype=F64)
        out, _ = flow.transform(z, torch.randn(5, 2, dtype=F64))
        torch.testing.assert_close(out, z, rtol=0, atol=1e-12)


def test_dip_vae_is_refused_for_a_flow_posterior_before_training_and_factor_vae_trains_on_it():
    from vae.objectives import ELBO
    from vae.objectives.penalties import DIPVAE, FactorVAE

    model = VAE(image_shape=(1, 28, 28), latent_dim=4, posterior=IAF(length=1, hidden=(8,), context=2))
    with pytest.raises(ConfigError, match="needs a diagonal Gaussian posterior") as error:
        ELBO(penalty=DIPVAE()).bind(model)
    assert "\n" not in str(error.value)
    objective = ELBO(penalty=FactorVAE(hidden=8, depth=1)).bind(model)
    loss = objective(model(torch.rand(6, 1, 28, 28).round()), step=0, training=True)
    assert torch.isfinite(loss.loss) and "factor_vae/tc" in loss.terms
