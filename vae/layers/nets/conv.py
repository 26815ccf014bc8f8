"""Convolutional encoder and decoder: each stage halves (encoder) or doubles (decoder) the resolution.

With ``channels=(32, 64)`` a 28×28 image goes 28 → 14 → 7 and back; the height and width must be
divisible by 2 ** len(channels) (by 4 for the default: 28×28, 32×32, 64×64 all work).

Axes: b batch, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from vae.core.errors import ConfigError
from vae.layers.nets.common import Network, check_shape


class Conv(nn.Conv2d):
    """``nn.Conv2d``, computed as the dense layer it is where an unpadded kernel covers the whole map (a 1×1
    convolution on a vector, a 7×7 one on a 7×7 map): the same weights and numbers, several times faster on CPU,
    whose convolution kernels are slow for these shapes."""

    def forward(self, h: Tensor) -> Tensor:
        if tuple(h.shape[-2:]) != self.kernel_size or self.padding != (0, 0) or self.groups != 1:
            return super().forward(h)
        weight = rearrange(self.weight, "o c h w -> o (c h w)")
        return rearrange(F.linear(rearrange(h, "b c h w -> b (c h w)"), weight, self.bias), "b o -> b o 1 1")


class ConvTranspose(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d``, computed as the dense layer it is from a 1×1 map with an unpadded kernel (a vector
    spread over an f×f map), as ``Conv``."""

    def forward(self, h: Tensor, output_size: list[int] | None = None) -> Tensor:
        plain = self.padding == self.output_padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1
        if tuple(h.shape[-2:]) != (1, 1) or output_size is not None or not plain:
            return super().forward(h, output_size)
        weight = rearrange(self.weight, "i o h w -> (o h w) i")
        flat = F.linear(rearrange(h, "b i 1 1 -> b i"), weight)
        spread = rearrange(flat, "b (o h w) -> b o h w", h=self.kernel_size[0], w=self.kernel_size[1])
        return spread if self.bias is None else spread + rearrange(self.bias, "o -> o 1 1")


def down(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)  # exactly halves an even size


def up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)  # exactly doubles


def bottom_shape(image_shape: tuple[int, int, int], channels: tuple[int, ...]) -> tuple[int, int, int]:
    """The feature map's (c, h, w) after all downsampling stages, or a clear error if sizes don't divide."""
    _, height, width = image_shape
    factor = 2 ** len(channels)
    if height % factor or width % factor:
        raise ConfigError(
            f"ConvNet with {len(channels)} stages needs height and width divisible by {factor}, "
            f"got {height}x{width}: resize the images or change the network's channels"
        )
    return channels[-1], height // factor, width // factor


class ConvEncoder(nn.Module):
    def __init__(self, *, image_shape: tuple[int, int, int], channels: tuple[int, ...], hidden_dim: int) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=1)
        sizes = [image_shape[0], *channels]
        stages = [layer for c_in, c_out in zip(sizes[:-1], sizes[1:]) for layer in (down(c_in, c_out), nn.SiLU())]
        self.body = nn.Sequential(*stages)
        self.fc = nn.Sequential(nn.Linear(math.prod(bottom_shape(image_shape, channels)), hidden_dim), nn.SiLU())
        self.out_features = hidden_dim

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)  # (b, c_last, h/f, w/f)
        return self.fc(rearrange(h, "b c h w -> b (c h w)"))  # (b, hidden_dim)


class ConvDecoder(nn.Module):
    def __init__(
        self, *, image_shape: tuple[int, int, int], latent_dim: int, channels: tuple[int, ...], hidden_dim: int
    ) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=latent_dim)
        self.bottom = bottom_shape(image_shape, channels)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, math.prod(self.bottom)), nn.SiLU()
        )
        sizes = [image_shape[0], *channels][::-1]
        stages: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            stages.append(up(c_in, c_out))
            if i < len(sizes) - 2:
                stages.append(nn.SiLU())
        self.body = nn.Sequential(*stages)

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.bottom
        return self.body(rearrange(self.fc(z), "b (c h w) -> b c h w", c=c, h=h, w=w))


class ConvNet(Network):
    """A convolutional encoder/decoder pair; the decoder mirrors the encoder's channels."""

    def __init__(self, *, channels: tuple[int, ...] = (32, 64), hidden_dim: int = 256) -> None:
        super().__init__()
        if not channels or min(channels) < 1:
            raise ConfigError(f"ConvNet channels must be one or more positive sizes, got {channels}")
        if hidden_dim < 1:
            raise ConfigError(f"ConvNet hidden_dim must be positive, got {hidden_dim}")
        self.channels, self.hidden_dim = tuple(channels), hidden_dim

    def make_encoder(self, *, image_shape: tuple[int, int, int]) -> ConvEncoder:
        return ConvEncoder(image_shape=image_shape, channels=self.channels, hidden_dim=self.hidden_dim)

    def make_decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> ConvDecoder:
        return ConvDecoder(
            image_shape=image_shape, latent_dim=latent_dim, channels=self.channels, hidden_dim=self.hidden_dim
        )
