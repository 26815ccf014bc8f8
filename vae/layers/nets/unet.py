"""The noise-prediction network of a diffusion model: ε̂(z_t; γ_t), the noise in a noisy image z_t = α_t x + σ_t ε,
given the image and its log-SNR −γ_t.

``Denoiser`` is what a diffusion model takes (``vae.models.diffusion.VDM``); ``UNet`` is the one this package
ships: a small U-Net with residual blocks, conditioned on γ_t through a sinusoidal embedding (on γ_t, not on t: so
that the expected continuous-time loss depends on the noise schedule only through its endpoints), and with Fourier
features of z_t (sin and cos of 2ⁿ·π·z_t) beside z_t at its input, which let it see the fine detail that decides the
likelihood of 8-bit data (VDM, Kingma et al. 2021, their section 3.3 and appendix C).

Axes: b batch, c channels, h height, w width, f frequencies, e embedding features.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from vae.core.errors import ConfigError
from vae.core.spec import Configurable

# The log-SNR range the embedding is scaled to: VDM's starting endpoints. A fixed constant, never the schedule's
# learned endpoints, so that the network sees γ_t itself.
GAMMA_RANGE = (-13.3, 5.0)


class Denoiser(Configurable, nn.Module, ABC):
    """ε̂(z_t; γ_t): noisy images z (b, c, h, w) and their γ_t (b,) → the predicted noise (b, c, h, w). The model
    calls ``bind`` once with the images' shape, before the first call."""

    image_shape: tuple[int, int, int] | None = None

    def bind(self, *, image_shape: tuple[int, int, int]) -> Denoiser:
        """Build the network for images of ``image_shape``; a one-line error for a shape it cannot take."""
        if self.image_shape is not None:
            raise ConfigError(f"this {type(self).__name__} is already part of a model: give each model its own")
        self.image_shape = tuple(image_shape)
        self.build(image_shape=self.image_shape)
        return self

    def build(self, *, image_shape: tuple[int, int, int]) -> None:
        """Make the layers for ``image_shape`` (nothing by default: a network with no layers that depend on it)."""

    @abstractmethod
    def forward(self, z: Tensor, gamma: Tensor) -> Tensor:
        """The predicted noise ε̂, shaped as z."""


def fourier_features(z: Tensor, exponents: tuple[int, ...]) -> Tensor:
    """sin(2ⁿπz) and cos(2ⁿπz) for each n of ``exponents``, (b, 2·f·c, h, w), in float32 even under autocast (at
    n = 7 a pixel step of 2/255 turns the angle by 3.2 rad: bf16 could not resolve it)."""
    with torch.autocast(z.device.type, enabled=False):
        z = z.float()
        frequencies = torch.tensor([2.0**n * math.pi for n in exponents], device=z.device)
        angles = rearrange(z, "b c h w -> b 1 c h w") * rearrange(frequencies, "f -> 1 f 1 1 1")
        return rearrange(torch.cat([angles.sin(), angles.cos()], dim=1), "b f c h w -> b (f c) h w")


def gamma_embedding(gamma: Tensor, dim: int) -> Tensor:
    """The sinusoidal embedding (b, dim) of γ_t (b,) scaled from ``GAMMA_RANGE`` to [0, 1000], float32."""
    low, high = GAMMA_RANGE
    with torch.autocast(gamma.device.type, enabled=False):
        position = (gamma.float() - low) / (high - low) * 1000
        half = dim // 2
        frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=gamma.device) / max(half - 1, 1))
        angles = rearrange(position, "b -> b 1") * rearrange(frequencies, "e -> 1 e")
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """x + conv(SiLU(norm(conv(SiLU(norm(x))) + W·e))): two 3×3 convolutions, the embedding e added between them,
    the second convolution starting at zero (the block starts as the identity)."""

    def __init__(self, c_in: int, c_out: int, *, embedding: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm_1 = nn.GroupNorm(math.gcd(groups, c_in), c_in)
        self.conv_1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.project = nn.Linear(embedding, c_out)
        self.norm_2 = nn.GroupNorm(math.gcd(groups, c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv_2.weight)
        nn.init.zeros_(self.conv_2.bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv_1(F.silu(self.norm_1(x)))
        h = h + rearrange(self.project(e), "b c -> b c 1 1")
        h = self.conv_2(self.dropout(F.silu(self.norm_2(h))))
        return self.skip(x) + h


class UNet(Denoiser):
    """A U-Net ε̂(z_t; γ_t): ``len(channels)`` resolutions, each halving the last (average pooling down, nearest
    up), ``blocks`` residual blocks at each on the way down and on the way up (with the skip from the way down), one
    between them at the lowest; the γ_t embedding enters every block. The output convolution starts at zero (ε̂ = 0).

    channels: the channels at each resolution; the height and width must be divisible by 2^(len(channels) − 1)
        ((32, 64) takes 28×28 to 14×14; (64, 128, 128) takes 28×28 to 7×7).
    blocks: residual blocks per resolution and direction.
    fourier: the exponents n of the Fourier features sin(2ⁿπz), cos(2ⁿπz) beside z_t ((7, 8) for 8-bit images, as
        VDM's; () for none, as for binarized images, whose two levels lie 1 apart).
    dropout: before each block's second convolution (VDM's 0.1 on CIFAR-10).
    groups: of each group normalization (at most; the gcd with the channels).
    """

    def __init__(
        self,
        *,
        channels: tuple[int, ...] = (32, 64),
        blocks: int = 1,
        fourier: tuple[int, ...] = (7, 8),
        dropout: float = 0.0,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if not channels or min(channels) < 1 or blocks < 1 or groups < 1:
            raise ConfigError(
                f"UNet needs positive channels, blocks and groups, got channels {channels}, blocks {blocks}, groups "
                f"{groups}"
            )
        if not 0 <= dropout < 1:
            raise ConfigError(f"UNet's dropout must lie in [0, 1), got {dropout}")
        self.channels, self.blocks, self.fourier = tuple(channels), blocks, tuple(fourier)
        self.dropout, self.groups = dropout, groups

    def build(self, *, image_shape: tuple[int, int, int]) -> None:
        c, height, width = image_shape
        factor = 2 ** (len(self.channels) - 1)
        if height % factor or width % factor:
            raise ConfigError(
                f"UNet with {len(self.channels)} resolutions halves {height}×{width} images {len(self.channels) - 1} "
                f"time(s): their height and width must be divisible by {factor}; give fewer channels (resolutions) or "
                "pad the images"
            )
        embedding = 4 * self.channels[0]
        self.embed = nn.Sequential(nn.Linear(embedding, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.conv_in = nn.Conv2d(c * (1 + 2 * len(self.fourier)), self.channels[0], 3, padding=1)
        options = {"embedding": embedding, "groups": self.groups, "dropout": self.dropout}
        down, up = nn.ModuleList(), nn.ModuleList()
        previous = self.channels[0]
        for level, width_here in enumerate(self.channels):
            down.append(nn.ModuleList(ResidualBlock(previous if i == 0 else width_here, width_here, **options)
                                      for i in range(self.blocks)))  # fmt: skip
            below = self.channels[level + 1] if level + 1 < len(self.channels) else width_here
            up.append(nn.ModuleList(ResidualBlock(below + width_here if i == 0 else width_here, width_here, **options)
                                    for i in range(self.blocks)))  # fmt: skip
            previous = width_here
        self.down, self.up = down, up
        self.middle = ResidualBlock(self.channels[-1], self.channels[-1], **options)
        self.norm_out = nn.GroupNorm(math.gcd(self.groups, self.channels[0]), self.channels[0])
        self.conv_out = nn.Conv2d(self.channels[0], c, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: Tensor, gamma: Tensor) -> Tensor:
        e = self.embed(gamma_embedding(gamma, self.embed[0].in_features))
        inputs = torch.cat([z.float(), fourier_features(z, self.fourier)], dim=1) if self.fourier else z
        h = self.conv_in(inputs)
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, e)
            skips.append(h)
            if level + 1 < len(self.down):
                h = F.avg_pool2d(h, 2)
        h = self.middle(h, e)
        for level in reversed(range(len(self.up))):
            if level + 1 < len(self.up):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = torch.cat([h, skips[level]], dim=1)
            for block in self.up[level]:
                h = block(h, e)
        return self.conv_out(F.silu(self.norm_out(h)))
