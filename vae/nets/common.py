"""Pieces shared by every network: the Gaussian moments and their bounded log-variance, and the base classes of
what ``model.network`` names."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from vae.config import Recorded, build
from vae.errors import ConfigError

LOGVAR_BOUND = 10.0
"""|log σ²| stays below this (σ² between 4.5e-5 and 2.2e4): exp never overflows and KL stays finite."""


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """A smooth clamp to (−bound, bound): identity near 0, with gradient everywhere."""
    return bound * torch.tanh(x / bound)


def full_precision(x: Tensor) -> Tensor:
    """float16/bfloat16 (from autocast) → float32; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass(frozen=True)
class GaussianMoments:
    """A diagonal Gaussian posterior q(z|x) = N(mean, exp(logvar)); both (b, d)."""

    mean: Tensor
    logvar: Tensor

    def distribution(self) -> Independent:
        """The diagonal Gaussian as a distribution: batch shape (b,), event shape (d,)."""
        # Float32 even under bf16 autocast (the KL and log-densities need it); no argument validation: the
        # scale is exp(·) > 0 by construction, and the checks cost a host sync per step on a GPU.
        mean, scale = full_precision(self.mean), (0.5 * full_precision(self.logvar)).exp()
        return Independent(Normal(mean, scale, validate_args=False), 1, validate_args=False)


def check_shape(*, image_shape: tuple[int, int, int], latent_dim: int) -> None:
    """Reject shapes no network can take, with a message that names the fix."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ConfigError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
    if latent_dim < 1:
        raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")


class Architecture(Recorded, ABC):
    """What ``model.network`` names: an encoder/decoder pair for the single-layer VAE (a ``Network``), or a whole
    latent structure that builds its own model (``vae.hierarchical.TopDown``)."""


class Network(Architecture):
    """An encoder/decoder pair for the single-layer VAE (``ConvNet``, ``MLPNet``, ``LinearNet``).

    Subclasses are small frozen dataclasses of hyperparameters that build the two modules for a given image
    shape: the encoder maps images to features (b, ``encoder.out_features``), which the latent layer's posterior
    head reads (``vae.latents``); the decoder maps z (b, d) to the likelihood's parameters (the VAE builds it with
    ``image_shape`` = (parameter channels, h, w), one or more values per pixel).
    """

    @abstractmethod
    def encoder(self, *, image_shape: tuple[int, int, int]) -> nn.Module: ...

    @abstractmethod
    def decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module: ...


def nested_network(value: object, where: str) -> Network:
    """An architecture's own encoder/decoder pair (``network``: a ``Network``, or its spec), or a one-line error."""
    network = build(value, Network, where)
    if not isinstance(network, Network):
        raise ConfigError(
            f"{where} must be an encoder/decoder pair such as vae.nets.ConvNet or vae.nets.MLPNet, got "
            f"{type(network).__name__}"
        )
    return network
