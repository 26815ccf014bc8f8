"""The variational diffusion model against exact references.

Gaussian data x ~ N(μ, s² I) in d dimensions has a known optimal noise predictor, E[ε | z_t] = σ_t (z_t − α_t μ) /
(α_t² s² + σ_t²), linear in z_t, and with it everything is in closed form:

    continuous-time diffusion loss   (d/2) · log((1 + s²·SNR_max) / (1 + s²·SNR_min))
    T-step diffusion loss            Σ_i (d/2) (SNR(s_i) − SNR(t_i)) · s² / (1 + s²·SNR(t_i))
    the ELBO                         → log N(x; μ, s²) as the schedule's endpoints widen

(the per-step KL is ½ (SNR(s) − SNR(t)) E‖x − E[x|z_t]‖², and Var(x | z_t) = s²/(1 + s²·SNR(t)) per dimension).
Monte-Carlo estimates are compared within 4 standard errors; closed forms (each step's KL against
torch.distributions, the reconstruction's window against the full softmax) to float tolerance.
"""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae.core.errors import ConfigError
from vae.layers.nets.unet import Denoiser, UNet, fourier_features
from vae.layers.schedules import CosineSchedule, LearnedSchedule, LinearSchedule
from vae.models.diffusion import VDM, alpha_sigma, sample_times, step_kl, step_posterior

D, MEAN, STD = 16, 0.3, 0.5  # Gaussian data: 16 dimensions (1×4×4 images), mean 0.3, standard deviation 0.5


class OptimalGaussian(Denoiser):
    """E[ε | z_t] for data N(mean, std² I): the best noise predictor there is, for the continuous and the discrete loss
    alike (each step's KL is minimised by the posterior mean of x)."""

    def __init__(self, *, mean: float = MEAN, std: float = STD) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (g.reshape(-1, 1, 1, 1) for g in alpha_sigma(gamma.to(z.dtype)))
        return sigma * (z - alpha * self.mean) / (alpha.square() * self.std**2 + sigma.square())


def gaussian_vdm(schedule, *, timesteps=None, time_sampling="stratified") -> VDM:
    return VDM(
        image_shape=(1, 4, 4),
        schedule=schedule,
        network=OptimalGaussian(),
        levels=None,
        timesteps=timesteps,
        time_sampling=time_sampling,
        ema_decay=0.0,
    )


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return MEAN + STD * torch.randn(n, 1, 4, 4, generator=generator)


def exact_continuous(gamma_min: float, gamma_max: float) -> float:
    return D / 2 * math.log((1 + STD**2 * math.exp(-gamma_min)) / (1 + STD**2 * math.exp(-gamma_max)))


def exact_discrete(gamma_min: float, gamma_max: float, steps: int) -> float:
    snr = [math.exp(-(gamma_min + (gamma_max - gamma_min) * i / steps)) for i in range(steps + 1)]
    return sum(D / 2 * (snr[i - 1] - snr[i]) * STD**2 / (1 + STD**2 * snr[i]) for i in range(1, steps + 1))


def within(estimates: torch.Tensor, exact: float, sigmas: float = 4.0) -> bool:
    se = float(estimates.double().std() / math.sqrt(len(estimates)))
    return abs(float(estimates.double().mean()) - exact) < sigmas * se


def test_the_continuous_diffusion_loss_with_the_optimal_predictor_is_its_closed_form():
    torch.manual_seed(0)
    for how in ("stratified", "antithetic", "uniform"):
        model = gaussian_vdm(LinearSchedule(gamma_min=-6.0, gamma_max=4.0), time_sampling=how)
        loss, _ = model.diffusion_loss(gaussian_data(40_000))
        assert within(loss, exact_continuous(-6.0, 4.0)), how


def test_the_expected_loss_depends_on_the_schedule_only_through_its_endpoints_not_its_variance():
    torch.manual_seed(1)
    v = gaussian_data(60_000, seed=1)
    losses = {}
    for schedule in (LinearSchedule(gamma_min=-8.0, gamma_max=5.0), CosineSchedule(gamma_min=-8.0, gamma_max=5.0)):
        losses[type(schedule).__name__], _ = gaussian_vdm(schedule, time_sampling="uniform").diffusion_loss(v)
    linear, cosine = losses["LinearSchedule"], losses["CosineSchedule"]
    assert within(linear, exact_continuous(-8.0, 5.0)) and within(cosine, exact_continuous(-8.0, 5.0))
    se = math.sqrt(linear.var() / len(linear) + cosine.var() / len(cosine))
    assert abs(float(linear.mean() - cosine.mean())) < 4 * se
    ratio = float(linear.var() / cosine.var())
    assert not 0.8 < ratio < 1.25  # the same expectation, estimators of different variance (ratio's SE ≈ 0.01)


def expected_terms(gamma_min: float, gamma_max: float) -> dict[str, float]:
    """The expectations of the three terms over the data and the draws, for images x = (v + 1)/2 in [0, 1]:
    E log p(x|z_0) = −(d/2)(1 + log 2π σ_0²/α_0²) + d log 2 (z_0/α_0 = v + (σ_0/α_0) ε), the prior's Gaussian KL
    averaged over v, and the diffusion loss."""
    alpha_0, sigma_0 = (math.sqrt(1 / (1 + math.exp(g))) for g in (gamma_min, -gamma_min))
    alpha_1_sq, sigma_1_sq = 1 / (1 + math.exp(gamma_max)), 1 / (1 + math.exp(-gamma_max))
    return {
        "log_px": -D / 2 * (1 + math.log(2 * math.pi * (sigma_0 / alpha_0) ** 2)) + D * math.log(2),
        "kl/prior": D / 2 * (sigma_1_sq + alpha_1_sq * (MEAN**2 + STD**2) - 1 - math.log(sigma_1_sq)),
        "diffusion": exact_continuous(gamma_min, gamma_max),
    }


def test_the_elbo_rises_to_the_exact_log_likelihood_as_the_endpoints_widen():
    """Each term's Monte-Carlo estimate is its expectation (within 4 SE); the expected ELBO rises as the endpoints
    widen and reaches E log p(x) = −(d/2)(1 + log 2π s²) + d log 2 (the images' density on [0, 1]: data 2x − 1)."""
    torch.manual_seed(2)
    v = gaussian_data(40_000, seed=2)
    exact = -D / 2 * (1 + math.log(2 * math.pi * STD**2)) + D * math.log(2)
    elbos = []
    for low, high in ((-1.0, 1.0), (-3.0, 3.0), (-6.0, 6.0), (-13.0, 9.0)):
        out = gaussian_vdm(LinearSchedule(gamma_min=low, gamma_max=high))((v + 1) / 2)
        expected = expected_terms(low, high)
        assert within(out.log_px, expected["log_px"]) and torch.equal(out.kl, sum(out.kl_terms.values()))
        assert all(within(out.kl_terms[name], expected[name]) for name in ("kl/prior", "diffusion"))
        elbos.append(expected["log_px"] - expected["kl/prior"] - expected["diffusion"])
    assert all(earlier < later < exact for earlier, later in zip(elbos, elbos[1:]))
    assert elbos[-1] == pytest.approx(exact, abs=0.02)


def test_each_discrete_step_is_the_closed_form_kl_of_torch_distributions():
    torch.manual_seed(3)
    schedule, steps = LearnedSchedule(hidden=16).double(), 8
    x = torch.randn(5, 2, 3, 3, dtype=torch.float64) * 0.6
    for i in range(1, steps + 1):
        s, t = torch.full((5,), (i - 1) / steps, dtype=torch.float64), torch.full((5,), i / steps, dtype=torch.float64)
        gamma_s, gamma_t = schedule.gamma(s), schedule.gamma(t)
        alpha_t, sigma_t = (g.reshape(-1, 1, 1, 1) for g in alpha_sigma(gamma_t))
        eps, eps_hat = torch.randn_like(x), torch.randn_like(x)  # any prediction at all
        z_t = alpha_t * x + sigma_t * eps
        x_hat = (z_t - sigma_t * eps_hat) / alpha_t
        q = Normal(*(m if j == 0 else m.sqrt() for j, m in enumerate(step_posterior(z_t, x, gamma_s, gamma_t))))
        p = Normal(*(m if j == 0 else m.sqrt() for j, m in enumerate(step_posterior(z_t, x_hat, gamma_s, gamma_t))))
        reference = kl_divergence(q, p).sum(dim=(1, 2, 3))
        assert torch.allclose(step_kl(eps, eps_hat, gamma_s, gamma_t), reference, rtol=1e-8, atol=0)
        # and q(z_s | z_t, x) is Bayes' rule for z_s ~ N(α_s x, σ_s²), z_t | z_s ~ N(α_t|s z_s, σ_t|s²)
        alpha_s, sigma_s = (g.reshape(-1, 1, 1, 1) for g in alpha_sigma(gamma_s))
        alpha_ts = alpha_t / alpha_s
        var_ts = sigma_t.square() - alpha_ts.square() * sigma_s.square()
        precision = 1 / sigma_s.square() + alpha_ts.square() / var_ts
        mean = (alpha_s * x / sigma_s.square() + alpha_ts * z_t / var_ts) / precision
        assert torch.allclose(q.mean, mean, rtol=1e-9) and torch.allclose(q.variance, (1 / precision).expand_as(x))


def test_the_discrete_loss_never_rises_as_steps_double_and_approaches_the_continuous_one():
    torch.manual_seed(4)
    low, high = -6.0, 4.0
    exact = [exact_discrete(low, high, 2**k) for k in range(15)]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(exact, exact[1:]))  # L_2T ≤ L_T
    assert exact[-1] == pytest.approx(exact_continuous(low, high), rel=1e-3)
    v = gaussian_data(40_000, seed=4)
    for steps in (1, 2, 4, 8, 1000):
        loss, _ = gaussian_vdm(LinearSchedule(gamma_min=low, gamma_max=high), timesteps=steps).diffusion_loss(v)
        assert within(loss, exact_discrete(low, high, steps)), steps


def test_a_learned_schedule_increases_for_any_parameters_with_its_exact_derivative():
    torch.manual_seed(5)
    for _ in range(5):
        schedule = LearnedSchedule(hidden=32).double()
        with torch.no_grad():
            for parameter in schedule.parameters():
                parameter.copy_(torch.randn_like(parameter) * 5)
        t = torch.linspace(0, 1, 2001, dtype=torch.float64, requires_grad=True)
        gamma, slope = schedule(t)
        gamma_0, gamma_1 = (g.detach() for g in schedule.endpoints())
        assert (gamma.diff() > 0).all() and (slope > 0).all()
        assert float(gamma[0].detach()) == pytest.approx(float(gamma_0), abs=1e-9)
        assert float(gamma[-1].detach()) == pytest.approx(float(gamma_1), abs=1e-9)
        (autograd,) = torch.autograd.grad(gamma.sum(), t)
        assert torch.allclose(slope, autograd, rtol=1e-9, atol=1e-12)


def test_a_fixed_schedules_endpoints_follow_the_model_to_its_device_and_dtype():
    for schedule in (LinearSchedule(gamma_min=-7.0, gamma_max=3.0), CosineSchedule(gamma_min=-7.0, gamma_max=3.0)):
        schedule.to(torch.float64)
        assert all(end.dtype == torch.float64 for end in schedule.endpoints())  # buffers: where the model goes
        assert not schedule.state_dict()  # computed from the config, never saved


def test_fixed_schedules_have_their_endpoints_and_exact_derivatives():
    t = torch.linspace(0, 1, 101, dtype=torch.float64, requires_grad=True)
    for schedule in (LinearSchedule(gamma_min=-7.0, gamma_max=3.0), CosineSchedule(gamma_min=-7.0, gamma_max=3.0)):
        gamma, slope = schedule(t)
        assert float(gamma[0].detach()) == pytest.approx(-7.0) and float(gamma[-1].detach()) == pytest.approx(3.0)
        (autograd,) = torch.autograd.grad(gamma.sum(), t)
        assert torch.allclose(slope, autograd, rtol=1e-9)


def test_the_learned_shape_gets_the_gradient_of_the_squared_loss_and_the_endpoints_that_of_the_loss():
    """The shape's gradient is ∇ mean(L²) / mean(L): the squared loss's direction at the loss's own scale."""
    v = gaussian_data(64, seed=6).double()

    def gradients(squared: bool, trick: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(6)
        model = gaussian_vdm(LearnedSchedule(hidden=8)).double()
        model.schedule.learns_shape = trick
        loss, _ = model.diffusion_loss(v)
        (loss.square() / loss.detach().mean() if squared else loss).mean().backward()
        return {name: p.grad.clone() for name, p in model.schedule.named_parameters()}

    trained, plain, of_square = gradients(False, True), gradients(False, False), gradients(True, False)
    for name in ("gamma_0", "width"):
        assert torch.allclose(trained[name], plain[name], rtol=1e-10)
    for name in ("w1", "b1", "w2", "b2", "w3"):
        assert torch.allclose(trained[name], of_square[name], rtol=1e-8)


@pytest.mark.parametrize(("levels", "gamma_0"), [(256, -13.3), (256, -2.0), (2, -5.0), (2, 1.0)])
def test_the_reconstruction_term_is_the_normalised_posterior_over_every_pixel_value(levels, gamma_0):
    torch.manual_seed(7)
    schedule = LinearSchedule(gamma_min=gamma_0, gamma_max=gamma_0 + 10)
    model = VDM(image_shape=(1, 4, 4), schedule=schedule, network=UNet(channels=(8,)), levels=levels, ema_decay=0)
    k = torch.randint(0, levels, (6, 1, 4, 4))
    k[0], k[1] = 0, levels - 1  # images at the extreme values
    v = model.to_data(k.float() / (levels - 1))
    alpha_0, sigma_0 = alpha_sigma(torch.tensor(gamma_0))
    z_0 = alpha_0 * v + sigma_0 * torch.randn_like(v)
    values = (2 * torch.arange(levels) + 1) / levels - 1
    logits = -0.5 * ((z_0.unsqueeze(-1).double() - alpha_0 * values) / sigma_0).square()
    reference = logits.log_softmax(dim=-1).gather(-1, k.unsqueeze(-1)).squeeze(-1).sum(dim=(1, 2, 3))
    assert torch.allclose(model.log_px(v, z_0).double(), reference, rtol=1e-5, atol=1e-4)


def test_the_prior_term_is_the_closed_form_kl_of_torch_distributions():
    schedule = LinearSchedule(gamma_min=-10.0, gamma_max=2.0)
    model = VDM(image_shape=(1, 4, 4), schedule=schedule, network=UNet(channels=(8,)), ema_decay=0)
    v = model.to_data(torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8))
    alpha_1, sigma_1 = alpha_sigma(torch.tensor(2.0))
    reference = kl_divergence(Normal(alpha_1 * v, sigma_1), Normal(0.0, 1.0)).sum(dim=(1, 2, 3))
    assert torch.allclose(model.prior_kl(v), reference, rtol=1e-5)


def test_ancestral_sampling_with_the_optimal_predictor_draws_the_data_distribution():
    torch.manual_seed(8)
    mean, std = 0.1, 0.25  # data well inside (−1, 1), the images' range, which sampling keeps to
    model = VDM(
        image_shape=(1, 4, 4),
        schedule=LinearSchedule(gamma_min=-9.0, gamma_max=7.0),
        network=OptimalGaussian(mean=mean, std=std),
        levels=None,
        ema_decay=0,
    )
    images, trajectory = model.chain(4000, steps=200, keep=5)
    v = 2 * images - 1
    assert abs(float(v.mean()) - mean) < 4 * std / math.sqrt(len(v))
    assert float(v.std()) == pytest.approx(std, rel=0.03)
    assert len(trajectory) == 5 and trajectory[0].shape == images.shape


def test_stratified_times_spread_evenly_and_antithetic_times_pair():
    t = sample_times(100, "stratified", device="cpu")
    assert sorted((t * 100).floor().long().tolist()) == list(range(100))  # one time in each hundredth
    u = sample_times(10, "antithetic", device="cpu")
    assert torch.allclose(u[:5] + u[5:], torch.ones(5))


def test_the_average_of_the_weights_moves_once_per_training_step_and_predicts_in_eval_mode():
    torch.manual_seed(9)
    model = VDM(image_shape=(1, 8, 8), network=UNet(channels=(8,)), levels=2, ema_decay=0.99)
    x = torch.rand(4, 1, 8, 8).round()
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.average.parameters()]
    model.train()
    model(x, step=0)
    model(x, step=0)  # the same step again (gradient accumulation, say): no second update
    assert int(model.ema_updates) == 1
    for average, old, weight in zip(model.average.parameters(), before, model.network.parameters()):
        assert torch.allclose(average, 0.1 * old + 0.9 * weight)  # the first update's decay: (1 + 0)/(10 + 0)
    model.eval()
    model(x, step=5)
    assert int(model.ema_updates) == 1 and model.denoiser() is model.average
    model.train()
    assert model.denoiser() is model.network


def test_under_bf16_autocast_the_latents_features_schedule_and_loss_stay_float32():
    torch.manual_seed(10)
    model = VDM(image_shape=(1, 8, 8), network=UNet(channels=(8, 16)), levels=256, ema_decay=0)
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    v = model.to_data(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_t, gamma, _ = model.noisy(v, torch.rand(6))
        features = fourier_features(z_t, (7, 8))
        torch.manual_seed(11)
        low = model(x)
    assert z_t.dtype == gamma.dtype == features.dtype == torch.float32
    assert all(term.dtype == torch.float32 for term in (low.log_px, *low.kl_terms.values()))
    torch.manual_seed(11)
    full = model(x)
    assert torch.equal(low.log_px, full.log_px) and torch.equal(low.kl_terms["kl/prior"], full.kl_terms["kl/prior"])
    assert torch.allclose(low.kl_terms["diffusion"], full.kl_terms["diffusion"], rtol=0.05)


def test_bad_settings_are_one_line_errors():
    cases = [
        (lambda: LinearSchedule(gamma_min=2.0, gamma_max=-3.0), "must increase"),
        (lambda: CosineSchedule(gamma_min=1.0, gamma_max=1.0), "must increase"),
        (lambda: LearnedSchedule(gamma_min=5.0, gamma_max=-13.3), "must increase"),
        (lambda: VDM(image_shape=(1, 8, 8), network=UNet(channels=(8,)), timesteps=0), "timesteps must be a positive"),
        (lambda: VDM(image_shape=(1, 28, 28), network=UNet(channels=(8, 8, 8, 8))), "divisible by 8"),
        (lambda: VDM(image_shape=(1, 8, 8), network=UNet(channels=(8,)), levels=1), "levels must be 2 or more"),
    ]
    for make, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            make()
        assert "\n" not in str(error.value)
    binary = VDM(image_shape=(1, 8, 8), network=UNet(channels=(8,)), levels=2)
    with pytest.raises(ConfigError, match="models pixels binarized"):
        binary(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    with pytest.raises(ConfigError, match="no code of an image"):
        binary.encode(torch.zeros(2, 1, 8, 8))
