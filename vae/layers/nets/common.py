"""Pieces shared by every network: the Gaussian moments and their bounded log-variance, and the base classes of
what ``model.network`` names."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from vae.core.errors import ConfigError
from vae.core.spec import Recorded
from vae.core.trust import build


def check_shape(*, image_shape: tuple[int, int, int], latent_dim: int) -> None:
    """Reject shapes no network can take, with a message that names the fix."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ConfigError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
    if latent_dim < 1:
        raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")


class Architecture(Recorded, ABC):
    """What ``model.network`` names: an encoder/decoder pair for the single-layer VAE (a ``Network``), or a whole
    latent structure that builds its own model (``vae.models.hierarchical.TopDown``)."""


class Network(Architecture):
    """An encoder/decoder pair for the single-layer VAE (``ConvNet``, ``MLPNet``, ``LinearNet``).

    Subclasses are small frozen dataclasses of hyperparameters that build the two modules for a given image
    shape: the encoder maps images to features (b, ``encoder.out_features``), which the latent layer's posterior
    head reads (``vae.layers.latents``); the decoder maps z (b, d) to the likelihood's parameters (the VAE builds it
    with
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
            f"{where} must be an encoder/decoder pair such as vae.layers.nets.ConvNet or vae.layers.nets.MLPNet, got "
            f"{type(network).__name__}"
        )
    return network
