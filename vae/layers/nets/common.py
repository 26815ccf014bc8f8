"""What every encoder/decoder pair is: the ``Network`` base class, and the check of the shapes it is given."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from vae.core.errors import ConfigError
from vae.core.spec import Configurable


def check_shape(*, image_shape: tuple[int, int, int], latent_dim: int) -> None:
    """Reject shapes no network can take, with a message that names the fix."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ConfigError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
    if latent_dim < 1:
        raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")


def check_network(network: object, owner: str) -> None:
    """Refuse, in one line, a ``network`` that is no encoder/decoder pair (a whole model, say)."""
    if not isinstance(network, Network):
        raise ConfigError(
            f"{owner}'s network must be an encoder/decoder pair (vae.layers.nets: ConvNet, ResNet, MLPNet, LinearNet), "
            f"got {type(network).__name__}"
        )


class Network(Configurable, nn.Module, ABC):
    """An encoder/decoder pair (``ConvNet``, ``ResNet``, ``MLPNet``, ``LinearNet``): a module whose constructor takes
    its hyperparameters, and whose two halves the model makes with ``bind``, once it knows the shapes:

        encoder   images (b, c, h, w) in [0, 1] → features (b, ``features``), which a latent layer's head reads
        decoder   codes (b, code_dim) → the likelihood's parameters (b, out_channels, h, w)

    Subclasses say how to make each half (``make_encoder``, ``make_decoder``).
    """

    features: int = 0  # set by bind

    def bind(self, *, image_shape: tuple[int, int, int], code_dim: int, out_channels: int) -> Network:
        """Make the encoder for images of ``image_shape`` and the decoder from codes of ``code_dim`` features to
        ``out_channels`` channels at the images' resolution; once."""
        if self.features:
            raise ConfigError(
                f"this {type(self).__name__} is already part of a model: give each model a network of its own"
            )
        check_shape(image_shape=image_shape, latent_dim=code_dim)
        _, height, width = image_shape
        self.encoder = self.make_encoder(image_shape=tuple(image_shape))
        self.decoder = self.make_decoder(image_shape=(out_channels, height, width), latent_dim=code_dim)
        self.features = self.encoder.out_features
        return self

    @abstractmethod
    def make_encoder(self, *, image_shape: tuple[int, int, int]) -> nn.Module:
        """Images of ``image_shape`` → features (b, its ``out_features``)."""

    @abstractmethod
    def make_decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
        """Codes (b, ``latent_dim``) → (b, *``image_shape``): the likelihood's parameters at every pixel."""
