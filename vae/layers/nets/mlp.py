"""Fully connected encoder and decoder for images of any size.

Axes: b batch, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.layers.nets.common import Network, check_shape


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given sizes with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, *, image_shape: tuple[int, int, int], hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=1)
        self.body = nn.Sequential(mlp([math.prod(image_shape), *hidden_dims]), nn.SiLU())
        self.out_features = hidden_dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(rearrange(x, "b c h w -> b (c h w)"))  # (b, hidden_dims[-1])


class MLPDecoder(nn.Module):
    def __init__(self, *, image_shape: tuple[int, int, int], latent_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=latent_dim)
        self.image_shape = image_shape
        self.body = mlp([latent_dim, *reversed(hidden_dims), math.prod(image_shape)])

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.image_shape
        return rearrange(self.body(z), "b (c h w) -> b c h w", c=c, h=h, w=w)


class MLPNet(Network):
    """A fully connected encoder/decoder pair; the decoder mirrors the encoder's hidden sizes."""

    def __init__(self, *, hidden_dims: tuple[int, ...] = (512, 256)) -> None:
        super().__init__()
        if not hidden_dims or min(hidden_dims) < 1:
            raise ConfigError(f"MLPNet hidden_dims must be one or more positive sizes, got {hidden_dims}")
        self.hidden_dims = tuple(hidden_dims)

    def make_encoder(self, *, image_shape: tuple[int, int, int]) -> MLPEncoder:
        return MLPEncoder(image_shape=image_shape, hidden_dims=self.hidden_dims)

    def make_decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> MLPDecoder:
        return MLPDecoder(image_shape=image_shape, latent_dim=latent_dim, hidden_dims=self.hidden_dims)


class LinearEncoder(nn.Module):
    """The pixels themselves as the features: the latent layer's linear head makes the posterior linear in x."""

    def __init__(self, *, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=1)
        self.out_features = math.prod(image_shape)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(x, "b c h w -> b (c h w)")


class LinearDecoder(nn.Module):
    def __init__(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> None:
        super().__init__()
        check_shape(image_shape=image_shape, latent_dim=latent_dim)
        self.image_shape = image_shape
        self.linear = nn.Linear(latent_dim, math.prod(image_shape))  # x = W z + b

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.image_shape
        return rearrange(self.linear(z), "b (c h w) -> b c h w", c=c, h=h, w=w)


class LinearNet(Network):
    """A linear encoder and decoder. With the Gaussian likelihood (fixed σ) and the N(0, I) prior the model
    is probabilistic PCA, x ~ N(b, W Wᵀ + σ² I): its log p(x) is exact, a reference for the estimators."""

    def make_encoder(self, *, image_shape: tuple[int, int, int]) -> LinearEncoder:
        return LinearEncoder(image_shape=image_shape)

    def make_decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> LinearDecoder:
        return LinearDecoder(image_shape=image_shape, latent_dim=latent_dim)
