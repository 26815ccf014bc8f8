"""Variational Diffusion Models (Kingma, Salimans, Poole & Ho 2021): diffusion as the infinitely deep VAE.

A diffusion model is a hierarchical VAE whose encoder is fixed, q(z_t | x) = N(α_t x, σ_t² I) for every t ∈ [0, 1]
(the noise schedule γ_t = −log SNR(t), ``vae.layers.schedules``), with infinitely many latent layers between the data
and z_1. Its negative ELBO, in nats per image, is three terms:

    −ELBO = KL(q(z_1|x) ‖ N(0, I))          kl/prior    closed form: the data at SNR(1) against the prior
          − E_q(z_0|x)[log p(x|z_0)]        recon       p(x_i|z_0) ∝ q(z_0,i|x_i), normalised over the pixel's values
          + L_∞                              diffusion   ½ E_{t~U(0,1), ε~N(0,I)} [γ′(t) ‖ε − ε̂(z_t; γ_t)‖²]

The diffusion term is the sum (in continuous time, the integral) of the KLs of the layers between z_0 and z_1; with
T steps it is the sum of T Gaussian KLs, each in closed form (both Gaussians share their variance):

    L_T = Σ_i KL(q(z_s|z_t, x) ‖ p(z_s|z_t)) = (T/2) E_{i, ε} [(SNR(s)/SNR(t) − 1) ‖ε − ε̂(z_t; γ_t)‖²],
    s = (i − 1)/T,  t = i/T,   p(z_s|z_t) = q(z_s | z_t, x = x̂(z_t)),   x̂ = (z_t − σ_t ε̂)/α_t

(L_2T ≤ L_T, and L_T → L_∞ as T → ∞). The images are mapped to the data space as VDM does: a pixel of value k out of
L levels to (2k + 1)/L − 1 ∈ (−1, 1). ``kl`` (prior + diffusion), ``recon`` and ``elbo`` are logged like every VAE's.

Axes: b batch, k draws per image, c channels, h height, w width, v pixel values (levels).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.core.kl import Estimator, diagonal_gaussian_kl
from vae.core.pixels import as_unit
from vae.layers.nets.unet import Denoiser, UNet
from vae.layers.schedules import LearnedSchedule, NoiseSchedule
from vae.models import pictures
from vae.models.base import Capabilities, Encoding, LatentVariableModel, ModelOutput, Term, inferring

TimeSampling = Literal["stratified", "antithetic", "uniform"]

# The reconstruction term sums p(x_i|z_0) over the pixel values within this many standard deviations of z_0 (and
# the true value): the rest weigh less than exp(−12²/2) ≈ 5e-32 each.
WINDOW_SIGMAS = 12.0


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """α_t = √sigmoid(−γ_t) and σ_t = √sigmoid(γ_t)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def step_posterior(z_t: Tensor, x: Tensor, gamma_s: Tensor, gamma_t: Tensor) -> tuple[Tensor, Tensor]:
    """q(z_s | z_t, x) for s < t: its mean and variance (each shaped as z_t; γ's broadcast over the image axes):

        mean = α_s/α_t · (z_t − c·σ_t·ε),  ε = (z_t − α_t x)/σ_t,   variance = c·σ_s²,   c = 1 − SNR(t)/SNR(s)

    With x = x̂(z_t) it is the model's p(z_s | z_t), the step ancestral sampling takes."""
    gamma_s, gamma_t = (rearrange(g, "b -> b 1 1 1") if g.dim() == 1 else g for g in (gamma_s, gamma_t))
    alpha_s, sigma_s = alpha_sigma(gamma_s)
    alpha_t, sigma_t = alpha_sigma(gamma_t)
    c = -torch.expm1(gamma_s - gamma_t)
    eps = (z_t - alpha_t * x) / sigma_t
    return alpha_s / alpha_t * (z_t - c * sigma_t * eps), c * sigma_s.square()


def step_kl(eps: Tensor, eps_hat: Tensor, gamma_s: Tensor, gamma_t: Tensor) -> Tensor:
    """KL(q(z_s | z_t, x) ‖ p(z_s | z_t)) per image (b,), nats, for z_t = α_t x + σ_t ε and the network's ε̂
    (b, c, h, w): the two Gaussians share their variance c·σ_s² (``step_posterior``) and their means differ by
    α_s·c·(x − x̂), so the closed form's variance terms cancel and

        KL = ‖α_s c (x − x̂)‖² / (2 c σ_s²) = ½ (SNR(s) − SNR(t)) ‖x − x̂‖² = ½ (SNR(s)/SNR(t) − 1) ‖ε − ε̂‖²,

    computed with expm1(γ_t − γ_s), exact where the two times are close (T = 1000)."""
    return 0.5 * torch.expm1(gamma_t - gamma_s) * (eps - eps_hat).square().sum(dim=(1, 2, 3))


def sample_times(n: int, how: TimeSampling, *, device: torch.device | str) -> Tensor:
    """n times in [0, 1): ``stratified`` (VDM's low-discrepancy sampler: (u + i/n) mod 1 from one uniform u, each
    time uniform, the n of them evenly spread), ``antithetic`` (pairs u, 1 − u) or ``uniform`` (independent)."""
    if how == "stratified":
        return torch.remainder(torch.rand((), device=device) + torch.arange(n, device=device) / n, 1.0)
    if how == "antithetic":
        u = torch.rand((n + 1) // 2, device=device)
        return torch.cat([u, 1 - u])[:n]
    return torch.rand(n, device=device)


class VDM(LatentVariableModel):
    """A variational diffusion model of images with a discrete (or, ``levels=None``, continuous) likelihood.

    schedule: the noise schedule γ(t) (``vae.layers.schedules``): ``LearnedSchedule`` (the default: endpoints on the
        ELBO, shape on the estimator's variance), or fixed ``LinearSchedule`` / ``CosineSchedule``.
    network: the noise predictor ε̂(z_t; γ_t) (``vae.layers.nets.unet``: ``UNet`` by default).
    levels: the values a pixel takes: 2 for binarized images, 256 for 8-bit; None for continuous data in [0, 1]
        (a density: p(x|z_0) = N(z_0/α_0, σ_0²/α_0²) in the data space, its log-likelihood in the images' [0, 1] units).
    timesteps: None for the continuous-time diffusion loss; T ≥ 1 for the discrete-time one with T steps.
    time_sampling: how the times of a batch are drawn: "stratified" (low-discrepancy; the default), "antithetic" or
        "uniform".
    ema_decay: the decay of the exponential moving average of the network's weights that evaluation and sampling use
        (eval mode); it starts low and rises to this (min(decay, (1 + n)/(10 + n)) after n updates); 0 turns it off.
    sampling_steps: ancestral sampling's steps by default (``vae sample --steps`` chooses).
    image_shape, context_size: from the data (``LatentVariableModel``); a VDM ignores the context.
    """

    kl_term_names = ("kl/prior", "diffusion")
    term_names = ("diffusion_variance",)

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        schedule: NoiseSchedule | None = None,
        network: Denoiser | None = None,
        levels: int | None = 256,
        timesteps: int | None = None,
        time_sampling: TimeSampling = "stratified",
        ema_decay: float = 0.9999,
        sampling_steps: int = 256,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        if levels is not None and levels < 2:
            raise ConfigError(f"levels must be 2 or more (2: binarized, 256: 8-bit) or None (continuous), got {levels}")
        if timesteps is not None and timesteps < 1:
            raise ConfigError(
                f"timesteps must be a positive number of steps T, or null for the continuous-time loss, got {timesteps}"
            )
        if time_sampling not in ("stratified", "antithetic", "uniform"):
            raise ConfigError(f"time_sampling must be stratified, antithetic or uniform, got {time_sampling!r}")
        if not 0 <= ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in [0, 1) (0: no average), got {ema_decay}")
        if sampling_steps < 1:
            raise ConfigError(f"sampling_steps must be a positive integer, got {sampling_steps}")
        schedule = LearnedSchedule() if schedule is None else schedule
        network = UNet() if network is None else network
        if not isinstance(schedule, NoiseSchedule):
            raise ConfigError(f"VDM's schedule must be a vae.layers.schedules schedule, got {type(schedule).__name__}")
        if not isinstance(network, Denoiser):
            raise ConfigError(
                f"VDM's network must be a noise predictor (vae.layers.nets.unet), got {type(network).__name__}"
            )
        self.record(schedule=schedule, network=network)
        self.schedule = schedule
        self.network = network.bind(image_shape=self.image_shape)
        self.levels, self.timesteps, self.time_sampling = levels, timesteps, time_sampling
        self.ema_decay, self.sampling_steps = ema_decay, sampling_steps
        self.average = copy.deepcopy(self.network).requires_grad_(False) if ema_decay > 0 else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_step", torch.full((), -1, dtype=torch.long))
        self.likelihood = nn.Identity()  # p(x|z_0) has no parameters: it is q(z_0|x), normalised

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            posterior_density=False, iwae_training=False, latent_code=False, likelihood_bound=True, sampling_steps=True
        )

    @property
    def kl_estimator(self) -> Estimator:
        """The prior's KL is closed-form, the diffusion term Monte Carlo over t and ε: "mc"."""
        return "mc"

    @property
    def kl_description(self) -> str:
        steps = "continuous time" if self.timesteps is None else f"{self.timesteps} steps"
        return f"kl/prior closed form, diffusion Monte Carlo over t ({self.time_sampling}) and ε, {steps}"

    def networks(self) -> list[nn.Module]:
        return [self.network] + ([self.average] if self.average is not None else [])

    def denoiser(self) -> Denoiser:
        """The network that predicts: the moving average in eval mode (where there is one), else the trained one."""
        return self.average if self.average is not None and not self.training else self.network

    @torch.no_grad()
    def update_average(self, step: int | None) -> None:
        """Move the average towards the weights once per training step (the trainer's global step, so a resumed run
        and gradient accumulation update it once per optimizer step)."""
        if self.average is None or step is None or step <= int(self.ema_step):
            return
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        for average, weight in zip(self.average.parameters(), self.network.parameters()):
            average.lerp_(weight, 1 - decay)
        for average, buffer in zip(self.average.buffers(), self.network.buffers()):
            average.copy_(buffer)
        self.ema_updates += 1
        self.ema_step.fill_(step)

    # --- the data space ---------------------------------------------------------------------------------------------

    def to_data(self, x: Tensor) -> Tensor:
        """Images (floats in [0, 1] or uint8) → the data space: a pixel of value k of L levels to (2k + 1)/L − 1
        (continuous data: 2x − 1); a one-line error for images that are not on the model's levels."""
        x = as_unit(x).float()
        if self.levels is None:
            return 2 * x - 1
        k = x * (self.levels - 1)
        if (k - k.round()).abs().amax() > 1e-3 or x.amin() < 0 or x.amax() > 1:
            kind = "binarized (0 or 1)" if self.levels == 2 else f"on {self.levels} levels (k/{self.levels - 1})"
            raise ConfigError(
                f"this VDM models pixels {kind}, and the images are not: give the data it was configured for "
                "(binarize for levels 2, 8-bit grey levels for 256), or set the model's levels"
            )
        return (2 * k.round() + 1) / self.levels - 1

    def from_data(self, v: Tensor) -> Tensor:
        """The data space back to images in [0, 1]."""
        if self.levels is None:
            return ((v + 1) / 2).clamp(0, 1)
        return (((v + 1) * self.levels - 1) / 2 / (self.levels - 1)).clamp(0, 1)

    # --- the three terms ---------------------------------------------------------------------------------------------

    def prior_kl(self, v: Tensor) -> Tensor:
        """KL(q(z_1|x) ‖ N(0, I)) per image (b,), nats, in closed form (``diagonal_gaussian_kl``)."""
        gamma_1 = self.schedule.endpoints()[1].float()
        alpha_1 = torch.sigmoid(-gamma_1).sqrt()
        logvar = F.logsigmoid(gamma_1).expand_as(v)  # log σ_1²
        return diagonal_gaussian_kl(alpha_1 * v, logvar).sum(dim=(1, 2, 3))

    def log_px(self, v: Tensor, z_0: Tensor) -> Tensor:
        """log p(x|z_0) per image (b,), nats: each pixel's value under p(x_i|z_0) ∝ q(z_0,i|x_i) = N(α_0 x_i, σ_0²),
        normalised over its levels (a softmax over the values near z_0/α_0, within ``WINDOW_SIGMAS``); for continuous
        data N(x; z_0/α_0, σ_0²/α_0²), a density on [0, 1] images."""
        gamma_0 = self.schedule.endpoints()[0].float()
        alpha_0, sigma_0 = alpha_sigma(gamma_0)
        if self.levels is None:
            scale = sigma_0 / alpha_0
            log_density = -0.5 * ((v - z_0 / alpha_0) / scale).square() - torch.log(scale) - 0.5 * math.log(2 * math.pi)
            return (log_density + math.log(2)).sum(dim=(1, 2, 3))  # data 2x − 1: a density on x has 2^D more
        levels, spacing = self.levels, 2 / self.levels
        width = min(levels, int(math.ceil(WINDOW_SIGMAS * float((sigma_0 / alpha_0).detach()) / spacing)) + 1)

        def logit(index: Tensor) -> Tensor:  # log q(z_0|x = the index's value), up to a constant
            value = (2 * index + 1) / levels - 1
            return -0.5 * ((z_0.unsqueeze(-1) - alpha_0 * value) / sigma_0).square()

        true = ((v + 1) / spacing - 0.5).round().unsqueeze(-1)  # (b, c, h, w, 1)
        nearest = ((z_0 / alpha_0 + 1) / spacing - 0.5).round().clamp(0, levels - 1).unsqueeze(-1)
        window = nearest + torch.arange(-width, width + 1, device=v.device, dtype=v.dtype)  # (b, c, h, w, v)
        others = (window >= 0) & (window <= levels - 1) & (window != true)  # the true value is added once, below
        true_logit = logit(true).squeeze(-1)
        normaliser = torch.logaddexp(logit(window).masked_fill(~others, -math.inf).logsumexp(dim=-1), true_logit)
        return (true_logit - normaliser).sum(dim=(1, 2, 3))

    def noisy(self, v: Tensor, t: Tensor, variance: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """z_t = α_t x + σ_t ε for data v (b, c, h, w) at times t (b,): (z_t, γ_t, ε), float32 even under autocast."""
        with torch.autocast(v.device.type, enabled=False):
            gamma, _ = self.schedule(t, variance=variance)
            alpha, sigma = alpha_sigma(rearrange(gamma, "b -> b 1 1 1"))
            eps = torch.randn_like(v)
            return alpha * v + sigma * eps, gamma, eps

    def diffusion_loss(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """The diffusion term per image (b,), nats, from one draw of (t, ε) each, and the network's ε̂: continuous time,
        or T steps (``timesteps``). The schedule's shape gets the gradient of the squared loss (``SquaredGradient``)."""
        variance: dict[str, Tensor] = {}
        t = sample_times(len(v), self.time_sampling, device=v.device).to(v.dtype)  # the data's precision
        T = self.timesteps
        if T is not None:
            t = (torch.floor(t * T).clamp(max=T - 1) + 1) / T  # t = i/T, i ∈ {1, …, T}
        z_t, gamma_t, eps = self.noisy(v, t, variance)
        eps_hat = full_precision(self.denoiser()(z_t, gamma_t))
        if T is None:
            slope = self.schedule(t, variance=variance)[1]
            loss = 0.5 * slope * (eps - eps_hat).square().sum(dim=(1, 2, 3))
        else:  # T · the KL of one step drawn uniformly: an unbiased estimate of the sum of the T steps' KLs
            loss = T * step_kl(eps, eps_hat, self.schedule(t - 1 / T, variance=variance)[0], gamma_t)
        variance["value"] = loss.detach()
        return loss, eps_hat

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        """``samples`` draws of (t, ε, z_0) per image, laid out "(k b)"."""
        if self.training:
            self.update_average(step)
        v = self.to_data(x)
        if samples > 1:
            v = repeat(v, "b c h w -> (k b) c h w", k=samples)
        diffusion, eps_hat = self.diffusion_loss(v)
        with torch.autocast(v.device.type, enabled=False):
            gamma_0 = self.schedule.endpoints()[0].float()
            alpha_0, sigma_0 = alpha_sigma(gamma_0)
            log_px = self.log_px(v, alpha_0 * v + sigma_0 * torch.randn_like(v))
            prior = self.prior_kl(v)
            gamma_0, gamma_1 = (float(g.detach()) for g in self.schedule.endpoints())
        n = len(diffusion)
        spread = (diffusion - diffusion.mean()).square() * (n / max(n - 1, 1))  # its mean: the sample variance
        return ModelOutput(
            log_px=log_px,
            latents={},
            params=eps_hat,
            samples=samples,
            settings={"log_snr/0": -gamma_0, "log_snr/1": -gamma_1} if self.training else {},
            terms={"diffusion_variance": Term(spread.detach(), weight=0.0)},
            kl_terms={"kl/prior": prior, "diffusion": diffusion},
        )

    # --- sampling ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def chain(
        self, n: int, *, steps: int, temperature: float = 1.0, keep: int = 0, progress: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Ancestral sampling over ``steps`` equal steps of t from z_1 ~ N(0, T²I) (T the temperature, which also
        scales each step's noise): the images E[x|z_0] (n, c, h, w), and, for ``keep`` > 0, the predictions x̂(z_t) at
        ``keep`` evenly spaced steps (the denoising trajectory)."""
        if steps < 1:
            raise ConfigError(f"sampling needs at least one step, got {steps}")
        device = self.ema_step.device
        network = self.denoiser()
        z = torch.randn(n, *self.image_shape, device=device) * temperature
        shown = set(torch.linspace(steps, 1, keep).round().long().tolist()) if keep else set()
        trajectory = []
        for i in tqdm(range(steps, 0, -1), desc="sampling", leave=False, disable=not progress or None):
            t = torch.full((n,), i / steps, device=device)
            gamma_t, gamma_s = self.schedule.gamma(t), self.schedule.gamma(t - 1 / steps)
            alpha_t, sigma_t = alpha_sigma(rearrange(gamma_t, "b -> b 1 1 1"))
            eps_hat = full_precision(network(z, gamma_t))
            x_hat = ((z - sigma_t * eps_hat) / alpha_t).clamp(-1, 1)  # inside the data's range, as DDPM's sampler
            if i in shown:
                trajectory.append(self.from_data(x_hat))
            mean, variance = step_posterior(z, x_hat, gamma_s, gamma_t)
            z = mean + variance.sqrt() * torch.randn_like(z) * temperature
        return self.expected_image(z), trajectory

    def expected_image(self, z_0: Tensor) -> Tensor:
        """E[x|z_0] in [0, 1]: the mean of p(x|z_0) over the pixel values (continuous data: z_0/α_0)."""
        gamma_0 = self.schedule.endpoints()[0].float()
        alpha_0, sigma_0 = alpha_sigma(gamma_0)
        if self.levels is None:
            return self.from_data(z_0 / alpha_0)
        values = (2 * torch.arange(self.levels, device=z_0.device) + 1) / self.levels - 1
        logits = -0.5 * ((rearrange(z_0, "... -> ... 1") - alpha_0 * values) / sigma_0).square()
        return self.from_data((logits.softmax(dim=-1) * values).sum(dim=-1))

    @inferring
    def sample(
        self, n: int, *, temperature: float = 1.0, context: Tensor | None = None, steps: int | None = None
    ) -> Tensor:
        """n images by ancestral sampling over ``steps`` steps (``sampling_steps`` by default), in eval mode with the
        averaged weights; a progress bar where the output is a terminal."""
        return self.chain(n, steps=steps or self.sampling_steps, temperature=temperature, progress=True)[0]

    # --- what a diffusion model has no meaning for -------------------------------------------------------------------

    def no_code(self) -> ConfigError:
        return ConfigError(
            "a VDM has no code of an image: its latents are noisy copies of the image under a fixed encoder "
            "(q(z_t|x) = N(α_t x, σ_t² I)); sample from it, or evaluate its ELBO"
        )

    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        raise self.no_code()

    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        raise self.no_code()

    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        raise self.no_code()

    # --- pictures ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def schedule_picture(self) -> Tensor:
        """log-SNR(t) = −γ(t) over t ∈ [0, 1], as a plot."""
        t = torch.linspace(0, 1, 201, device=self.ema_step.device)
        gamma = self.schedule.gamma(t)
        title = f"log-SNR from {-float(gamma[0]):.2f} (t = 0) to {-float(gamma[-1]):.2f} (t = 1)"
        return pictures.curves(t, {"log SNR": -gamma}, xlabel="t", ylabel="log SNR(t) = −γ(t)", title=title)

    @torch.no_grad()
    def denoising(self, x: Tensor, *, columns: int = 8) -> Tensor:
        """For each image of x (a row): z_t at ``columns`` times from 0 to 1, then the network's x̂(z_t) at each
        (the rows alternate), labelled with log-SNR."""
        v = self.to_data(x)
        t = torch.linspace(0, 1, columns, device=x.device)
        gamma = self.schedule.gamma(t)
        rows = []
        for image in v:
            batch = repeat(image, "c h w -> s c h w", s=columns)
            alpha, sigma = alpha_sigma(rearrange(gamma, "s -> s 1 1 1"))
            z = alpha * batch + sigma * torch.randn_like(batch)
            eps_hat = full_precision(self.denoiser()(z, gamma))
            rows += [((z + 1) / 2).clamp(0, 1), self.from_data(((z - sigma * eps_hat) / alpha).clamp(-1, 1))]
        picture = pictures.grid(torch.cat(rows), columns)
        labels = [f"{-float(g):.1f}" for g in gamma]
        return pictures.labelled(
            picture,
            cell=self.image_shape[1:],
            rows=["z_t", "x̂(z_t)"] * len(v),
            columns=labels,
            caption="columns: log-SNR",
        )

    @torch.no_grad()
    def sampling_pictures(
        self, n: int = 16, *, seed: int = 0, temperature: float = 1.0, step_counts: tuple[int, ...] = ()
    ) -> dict[str, Tensor]:
        """``vae sample --images``: the same n draws at several numbers of steps (rows; 16 to ``sampling_steps``
        by default), and the denoising trajectory x̂(z_t) of 8 samples over the chain (the default steps)."""
        counts = step_counts or tuple(sorted({min(s, self.sampling_steps) for s in (16, 64, self.sampling_steps)}))
        rows, side = [], min(n, 16)
        with pictures.seeded(self, seed):
            for steps in counts:
                rows.append(self.chain(side, steps=steps, temperature=temperature, progress=True)[0])
        images = pictures.labelled(
            pictures.grid(torch.cat(rows), side),
            cell=self.image_shape[1:],
            rows=[f"{s} steps" for s in counts],
            caption="the same noise, sampled with each number of steps",
        )
        with pictures.seeded(self, seed):
            _, path = self.chain(8, steps=self.sampling_steps, temperature=temperature, keep=10, progress=True)
        trajectory = pictures.labelled(
            pictures.grid(rearrange(torch.stack(path), "s b c h w -> (b s) c h w"), len(path)),
            cell=self.image_shape[1:],
            caption="x̂(z_t) along the chain, from t = 1 (left) to t = 0",
        )
        return {"steps": images, "trajectory": trajectory}

    @torch.no_grad()
    def pictures(
        self, x: Tensor, *, num_samples: int = 64, nrow: int = 8, seed: int = 0, **options
    ) -> dict[str, Tensor]:
        """Samples (``sampling_steps`` steps), the schedule, and the denoising of the first 4 images of x."""
        return {
            "samples": pictures.samples(self, num=num_samples, nrow=nrow, seed=seed),
            "schedule": self.schedule_picture(),
            "denoising": self.denoising(x[:4]),
        }
