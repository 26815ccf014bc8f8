"""Decoder likelihoods p(x|z): each turns the decoder's output into log p(x|z) per example.

log p(x|z) is in nats, summed over every pixel and channel (units contract), shape (b,).

    Bernoulli(logits ℓ):    log p(x|z) = Σ_i [ x_i log σ(ℓ_i) + (1 − x_i) log σ(−ℓ_i) ]
    Gaussian(mean m, σ):    log p(x|z) = Σ_i [ −(x_i − m_i)² / (2σ²) − log σ − ½ log 2π ]
    DiscretizedLogistic:    P(x_i = k) = F((x'_i + 1/255 − μ_i)/s_i) − F((x'_i − 1/255 − μ_i)/s_i), F the logistic
                            CDF, x' = 2x − 1 ∈ [−1, 1], with the edge bins open to ±∞ (Salimans et al. 2017)
    DiscretizedLogisticMixture:  Σ_k π_k Π_c P(x_c | μ_kc + Σ_{j<c} α_kcj x_j, s_kc), the PixelCNN++ output

The Bernoulli is a proper likelihood for binary images; on grey levels in [0, 1] it is the usual
cross-entropy, which is not a normalised density over [0, 1] (compare likelihoods on binarized data,
or use the Gaussian). The Gaussian's σ is fixed, or one learned scalar shared by all pixels
(the σ-VAE of Rivera et al. 2021), kept above ``min_sigma``.

A discrete likelihood (``levels``: 2 for the Bernoulli, 256 for the discretized logistics) also gives the probability
of every value of every pixel, channel by channel (``value_table``): what an entropy coder codes the image under
(``vae.coding``). Channel c's table reads only the channels before it (the mixture couples them), so a decoder that has
decoded those gets the same numbers, bit for bit.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.core.spec import Configurable


class Likelihood(Configurable, nn.Module, ABC):
    """Base class: a decoder output ``params`` (b, param_channels(c), h, w) defines p(x|z).

    levels: the values each pixel takes under a discrete likelihood (the value v stands for the grey level
        v / (levels − 1)); None for a continuous one, which has no probability of a pixel's value.
    """

    levels: int | None = None

    def param_channels(self, channels: int) -> int:
        """How many decoder output channels the likelihood reads for images with ``channels`` channels."""
        return channels

    @abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) per example, (b,), summed over channels and pixels."""

    @abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """E[x|z], clamped to the image range [0, 1] for display."""

    def discrete_levels(self) -> int:
        """``levels``, or a one-line error for a continuous likelihood."""
        if self.levels is None:
            raise ConfigError(
                f"a {type(self).__name__} likelihood is continuous: it gives no probability of a pixel's value, which "
                "coding needs (use a model with a Bernoulli or discretized logistic likelihood)"
            )
        return self.levels

    def symbols(self, x: Tensor) -> Tensor:
        """Images (b, c, h, w), floats in [0, 1] or uint8, as the values this likelihood codes (integers in [0, levels),
        int64); a one-line error for images it does not model (grey levels under a Bernoulli, a continuous
        likelihood)."""
        top = self.discrete_levels() - 1
        if x.dtype == torch.uint8:  # k/255: exact grey levels for 256 values, only 0 and 255 for 2
            scaled = x.double() * top / 255.0
        else:
            scaled = x.double() * top
        values = scaled.round().long()
        fits = ((scaled - values).abs() <= 1e-3) & (values >= 0) & (values <= top)
        if not bool(fits.all()):
            raise ConfigError(
                f"a {type(self).__name__} likelihood models "
                + (
                    "binary images (0 and 1), and these have grey levels: binarize them (the data's binarize option) "
                    "or use a model trained on 8-bit images"
                    if self.levels == 2
                    else f"images of {self.levels} grey levels in [0, 1], and these are not"
                )
            )
        return values

    def value_table(self, params: Tensor, x: Tensor, channel: int) -> Tensor:
        """P(x_c = v | z, x_<c) for channel c = ``channel`` at every pixel and value v, (b, h, w, levels), float64,
        each row summing to 1 up to rounding; it reads only x's channels before c (values in [0, 1])."""
        raise ConfigError(f"a {type(self).__name__} likelihood has no table of pixel values")


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with the decoder's output as logits."""

    levels = 2

    def value_table(self, params: Tensor, x: Tensor, channel: int) -> Tensor:
        logits = params[:, channel].double()
        return torch.stack([torch.sigmoid(-logits), torch.sigmoid(logits)], dim=-1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_px = -F.binary_cross_entropy_with_logits(params, x, reduction="none")  # (b, c, h, w)
        return reduce(log_px, "b c h w -> b", "sum")

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


class Gaussian(Likelihood):
    """Independent Gaussian pixels with the decoder's output as the mean and a shared σ.

    sigma: the fixed σ, or the initial σ when ``learn_sigma`` is true.
    learn_sigma: learn one σ for all pixels by maximum likelihood, never below ``min_sigma``.
    """

    def __init__(self, *, sigma: float = 0.1, learn_sigma: bool = False, min_sigma: float = 1e-3) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"Gaussian likelihood sigma must be positive, got {sigma}")
        if not 0 < min_sigma <= sigma:
            raise ConfigError(f"Gaussian likelihood min_sigma must be in (0, sigma], got {min_sigma}")
        self.min_sigma = min_sigma
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)), requires_grad=learn_sigma)

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp().clamp_min(self.min_sigma)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        sigma = self.sigma
        log_px = -0.5 * ((x - params) / sigma).square() - sigma.log() - 0.5 * math.log(2 * math.pi)
        return reduce(log_px, "b c h w -> b", "sum")

    def mean(self, params: Tensor) -> Tensor:
        return params.clamp(0.0, 1.0)


BIN = 1.0 / 255.0  # half the width of one of the 256 bins on [−1, 1]


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) for 8-bit values x ∈ {0, 1/255, ..., 1} under a logistic(mean, exp(log_scale)) on [−1, 1],
    discretized into 256 bins whose first and last are open to −∞ and +∞ (so the probabilities sum to 1).
    Element-wise; computed in log space (log σ, softplus), with the PixelCNN++ fallback to the density times
    the bin width where the two CDFs are too close to subtract."""
    x = 2.0 * x - 1.0  # [0, 1] → [−1, 1]
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (x - mean + BIN), inv_s * (x - mean - BIN)
    log_cdf_plus = F.logsigmoid(plus)  # log F(upper edge), for the first bin
    log_one_minus_cdf_minus = -F.softplus(minus)  # log (1 − F(lower edge)), for the last bin
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * (x - mean)
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid)  # log density at the bin centre
    middle = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid + math.log(2 * BIN))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, middle))


LOG_SCALE_MIN = -7.0  # s ≥ e^−7: far below one bin (2/255), so the bound never limits the fit


def logistic_cdf_at_edges(mean: Tensor, log_scale: Tensor) -> Tensor:
    """F((e_j − μ)/s) at the 255 edges e_j = (2j + 1)/255 − 1 between the 256 bins on [−1, 1], (..., 255), float32
    (a table of 255 values per pixel and component: float32 is three times faster, and its 2⁻²⁴ resolution is the
    coder's)."""
    edges = (2.0 * torch.arange(255, dtype=torch.float32, device=mean.device) + 1.0) / 255.0 - 1.0
    inv_s = torch.exp(-log_scale.float())[..., None]
    return torch.addcmul(-mean.float()[..., None] * inv_s, edges, inv_s).sigmoid_()


def bin_masses(cdf: Tensor) -> Tensor:
    """The 256 bins' probabilities from a CDF at the 255 edges between them (the edge bins open to ±∞): (..., 256),
    float64, summing to 1."""
    padded = F.pad(cdf.double(), (1, 1))
    padded[..., -1] = 1.0
    return (padded[..., 1:] - padded[..., :-1]).clamp_min(0.0)


class DiscretizedLogistic(Likelihood):
    """Independent discretized logistic pixels over 256 values: the decoder outputs a mean and a log-scale
    per channel (2c channels). For 8-bit images: bits/dim from it are comparable with the literature."""

    def param_channels(self, channels: int) -> int:
        return 2 * channels

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = rearrange(params, "b (two c) h w -> two b c h w", two=2)
        return mean, log_scale.clamp_min(LOG_SCALE_MIN)

    levels = 256

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mean, log_scale = self.split(params)
        return reduce(discretized_logistic_log_prob(x, mean, log_scale), "b c h w -> b", "sum")

    def value_table(self, params: Tensor, x: Tensor, channel: int) -> Tensor:
        """The exact bin masses F(upper edge) − F(lower edge) (``log_prob`` uses the density times the bin width where
        they are below 10⁻⁵)."""
        mean, log_scale = (part[:, channel] for part in self.split(params))
        return bin_masses(logistic_cdf_at_edges(mean, log_scale))

    def mean(self, params: Tensor) -> Tensor:
        return ((self.split(params)[0] + 1.0) / 2.0).clamp(0.0, 1.0)


class DiscretizedLogisticMixture(Likelihood):
    """The PixelCNN++ likelihood (Salimans et al. 2017): per pixel a mixture of ``num_components``
    discretized logistics over the channels jointly, channel c's mean shifted linearly by the channels
    before it (μ_kc + Σ_{j<c} α_kcj x_j, α = tanh of the decoder output), which couples R, G and B.

    The decoder outputs K·(1 + 2c + c(c−1)/2) channels: per component a mixture logit, c means, c log-scales
    and the c(c−1)/2 coupling coefficients.
    """

    levels = 256

    def __init__(self, *, num_components: int = 10) -> None:
        super().__init__()
        if num_components < 1:
            raise ConfigError(f"DiscretizedLogisticMixture num_components must be at least 1, got {num_components}")
        self.num_components = num_components

    def param_channels(self, channels: int) -> int:
        return self.num_components * (1 + 2 * channels + channels * (channels - 1) // 2)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """logits (b, k, h, w); means and log-scales (b, k, c, h, w); coefficients (b, k, c(c−1)/2, h, w)."""
        per = rearrange(params, "b (k p) h w -> b k p h w", k=self.num_components)
        c = (math.isqrt(8 * per.shape[2] + 1) - 3) // 2  # p = 1 + 2c + c(c−1)/2 = (c + 1)(c + 2)/2
        logits = per[:, :, 0]
        means, log_scales = per[:, :, 1 : 1 + c], per[:, :, 1 + c : 1 + 2 * c].clamp_min(LOG_SCALE_MIN)
        return logits, means, log_scales, torch.tanh(per[:, :, 1 + 2 * c :])

    def coupled_means(self, means: Tensor, coeffs: Tensor, x: Tensor) -> Tensor:
        """μ_kc + Σ_{j<c} α_kcj x'_j with x' = 2x − 1: (b, k, c, h, w)."""
        x = 2.0 * x - 1.0  # (b, c, h, w)
        shifted, index = [means[:, :, 0]], 0
        for c in range(1, means.shape[2]):
            shift = sum(coeffs[:, :, index + j] * x[:, None, j] for j in range(c))
            shifted.append(means[:, :, c] + shift)
            index += c
        return torch.stack(shifted, dim=2)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits, means, log_scales, coeffs = self.split(params)
        means = self.coupled_means(means, coeffs, x)
        per_channel = discretized_logistic_log_prob(x[:, None], means, log_scales)  # (b, k, c, h, w)
        log_mix = reduce(per_channel, "b k c h w -> b k h w", "sum") + torch.log_softmax(logits, dim=1)
        return reduce(torch.logsumexp(log_mix, dim=1), "b h w -> b", "sum")

    def value_table(self, params: Tensor, x: Tensor, channel: int) -> Tensor:
        """Channel c's mixture of the components' exact bin masses, each component weighted by π_k Π_{j<c} P_k(x_j)
        (its posterior weight given the channels before c)."""
        logits, means, log_scales, coeffs = self.split(params.double())
        x = x.double()
        means = self.coupled_means(means[:, :, : channel + 1], coeffs, x[:, :channel])  # given x_<c only
        log_weights = torch.log_softmax(logits, dim=1)  # (b, k, h, w)
        for j in range(channel):
            log_p = discretized_logistic_log_prob(x[:, None, j], means[:, :, j], log_scales[:, :, j])  # (b, k, h, w)
            log_weights = log_weights + log_p
        weights = rearrange(torch.softmax(log_weights, dim=1).float(), "b k h w -> b h w 1 k")
        per_pixel = (rearrange(t[:, :, channel], "b k h w -> b h w k") for t in (means, log_scales))
        cdf = logistic_cdf_at_edges(*per_pixel)  # (b, h, w, k, 255)
        return bin_masses(rearrange(weights @ cdf, "b h w 1 e -> b h w e"))

    def mean(self, params: Tensor) -> Tensor:
        """The mixture-weighted means, without the channel coupling (for display)."""
        logits, means, _, _ = self.split(params)
        weights = torch.softmax(logits, dim=1)[:, :, None]  # (b, k, 1, h, w)
        return (((weights * means).sum(dim=1) + 1.0) / 2.0).clamp(0.0, 1.0)
