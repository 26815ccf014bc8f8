"""Residual encoder and decoder (pre-activation ResNet blocks, as in pythae's and NVAE's image VAEs).

The encoder is ``ConvNet``'s (a stride-2 4×4 convolution per stage) with ``blocks`` residual blocks after each
downsampling; the decoder mirrors it, residual blocks before each stride-2 transposed convolution. With
``channels=(64, 128, 256)`` a 32×32 image goes 32 → 16 → 8 → 4 and back; the height and width must be divisible by
2 ** len(channels): 32×32 and 64×64 for three stages, 28×28 only with two (28 → 14 → 7).

Every convolution after the first sees a normalised, activated input (GroupNorm → SiLU → conv, He et al. 2016's
pre-activation order); the residual stream between them is never normalised.

Axes: b batch, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.layers.nets.common import Network, check_shape
from vae.layers.nets.conv import Conv, down, up


def norm_act(channels: int, groups: int) -> nn.Sequential:
    """GroupNorm then SiLU: the pre-activation in front of every convolution but the first."""
    return nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU())


class ResBlock(nn.Module):
    """h + conv(act(norm(conv(act(norm(h)))))), two 3×3 convolutions at a fixed width and resolution.

    The last convolution's initial weights are scaled by ``scale`` (1/√(blocks in the network), as VDVAE), so the
    stream's variance stays bounded at initialisation while every parameter still gets a gradient at the first step
    (a zero initialisation would leave the first convolution without one).
    """

    def __init__(self, width: int, *, groups: int, scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm_act(width, groups),
            Conv(width, width, kernel_size=3, padding=1),
            norm_act(width, groups),
            Conv(width, width, kernel_size=3, padding=1),
        )
        with torch.no_grad():
            self.body[-1].weight.mul_(scale)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)  # (b, width, h, w)


def bottom_shape(image_shape: tuple[int, int, int], channels: tuple[int, ...]) -> tuple[int, int, int]:
    """The feature map's (c, h, w) after all downsampling stages, or a one-line error naming the sizes that work."""
    _, height, width = image_shape
    factor = 2 ** len(channels)
    if height % factor or width % factor:
        common = math.gcd(height, width)
        most = (common & -common).bit_length() - 1  # the most stages that fit: the power of 2 dividing both sizes
        sizes = " and ".join(f"{s}x{s}" for s in (28, 32, 64) if s % factor == 0) or f"multiples of {factor}"
        fix = f"resize the images or give the network's channels at most {most} stages" if most else "resize the images"
        raise ConfigError(
            f"ResNet with {len(channels)} stages needs height and width divisible by {factor} ({sizes} work), "
            f"got {height}x{width}: {fix}"
        )
    return channels[-1], height // factor, width // factor


class ResNetEncoder(nn.Module):
    """Images (b, c, h, w) in [0, 1] → features (b, hidden_dim)."""

    def __init__(
        self, *, image_shape: tuple[int, int, int], channels: tuple[int, ...], blocks: int, hidden_dim: int, groups: int
    ) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=1)
        bottom = bottom_shape(image_shape, channels)
        scale = 1 / math.sqrt(max(1, blocks * len(channels)))
        sizes = [image_shape[0], *channels]
        stages: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            stages += [] if i == 0 else [norm_act(c_in, groups)]  # the image itself is not normalised
            stages += [down(c_in, c_out), *(ResBlock(c_out, groups=groups, scale=scale) for _ in range(blocks))]
        self.body = nn.Sequential(*stages, norm_act(channels[-1], groups))
        self.fc = nn.Sequential(nn.Linear(math.prod(bottom), hidden_dim), nn.SiLU())
        self.out_features = hidden_dim

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)  # (b, c_last, h/f, w/f)
        return self.fc(rearrange(h, "b c h w -> b (c h w)"))  # (b, hidden_dim)


class ResNetDecoder(nn.Module):
    """Latents (b, d) → the likelihood's parameters (b, image_shape[0], h, w), the encoder's stages in reverse."""

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        channels: tuple[int, ...],
        blocks: int,
        hidden_dim: int,
        groups: int,
    ) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=latent_dim)
        self.bottom = bottom_shape(image_shape, channels)
        scale = 1 / math.sqrt(max(1, blocks * len(channels)))
        # No activation after the last dense layer: its output is the residual stream, pre-activated by each block.
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, math.prod(self.bottom))
        )
        sizes = [image_shape[0], *channels][::-1]
        stages: list[nn.Module] = []
        for c_in, c_out in zip(sizes[:-1], sizes[1:]):
            stages += [*(ResBlock(c_in, groups=groups, scale=scale) for _ in range(blocks)), norm_act(c_in, groups)]
            stages.append(up(c_in, c_out))  # the last one outputs the parameters, unbounded
        self.body = nn.Sequential(*stages)

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.bottom
        return self.body(rearrange(self.fc(z), "b (c h w) -> b c h w", c=c, h=h, w=w))  # (b, param channels, H, W)


class ResNet(Network):
    """A residual encoder/decoder pair; the decoder mirrors the encoder's channels.

    channels: the width of each stage, each stage halving (encoder) or doubling (decoder) the resolution.
    blocks: residual blocks per stage (0 gives ``ConvNet`` with normalisation).
    hidden_dim: the dense layer between the last feature map and the latent layer, in both directions.
    groups: GroupNorm's groups; it must divide every entry of ``channels``.

    GroupNorm rather than BatchNorm: it normalises each example on its own, so an example's ELBO never depends on
    the rest of its batch (nor on the K copies of it an importance-weighted bound draws), it trains at batch size 1,
    and it behaves the same in train and eval mode and on every device count (no running statistics to drift or to
    synchronise under DDP, where BatchNorm would need SyncBatchNorm to match a single-device run).
    """

    def __init__(
        self, *, channels: tuple[int, ...] = (64, 128, 256), blocks: int = 2, hidden_dim: int = 512, groups: int = 32
    ) -> None:
        super().__init__()
        if not channels or min(channels) < 1:
            raise ConfigError(f"ResNet channels must be one or more positive sizes, got {channels}")
        if blocks < 0:
            raise ConfigError(f"ResNet blocks must be 0 or more, got {blocks}")
        if hidden_dim < 1:
            raise ConfigError(f"ResNet hidden_dim must be positive, got {hidden_dim}")
        if groups < 1 or any(c % groups for c in channels):
            raise ConfigError(
                f"ResNet groups must divide every channel count, got groups={groups} for channels {list(channels)}: "
                f"set the network's groups to a divisor of {math.gcd(*channels)}"
            )
        self.channels, self.blocks, self.hidden_dim, self.groups = tuple(channels), blocks, hidden_dim, groups

    def make_encoder(self, *, image_shape: tuple[int, int, int]) -> ResNetEncoder:
        return ResNetEncoder(
            image_shape=image_shape,
            channels=self.channels,
            blocks=self.blocks,
            hidden_dim=self.hidden_dim,
            groups=self.groups,
        )

    def make_decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> ResNetDecoder:
        return ResNetDecoder(
            image_shape=image_shape,
            latent_dim=latent_dim,
            channels=self.channels,
            blocks=self.blocks,
            hidden_dim=self.hidden_dim,
            groups=self.groups,
        )
