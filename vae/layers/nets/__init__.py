"""Encoder and decoder networks: ``ConvNet``, ``ResNet``, ``MLPNet``, ``LinearNet`` for the single-layer VAE's
``model.network``."""

from vae.core.gaussian import LOGVAR_BOUND, GaussianMoments
from vae.layers.nets.common import Architecture, Network
from vae.layers.nets.conv import ConvDecoder, ConvEncoder, ConvNet
from vae.layers.nets.mlp import LinearNet, MLPDecoder, MLPEncoder, MLPNet
from vae.layers.nets.resnet import ResNet, ResNetDecoder, ResNetEncoder

__all__ = [
    "LOGVAR_BOUND",
    "Architecture",
    "LinearNet",
    "ConvDecoder",
    "ConvEncoder",
    "ConvNet",
    "GaussianMoments",
    "MLPDecoder",
    "MLPEncoder",
    "MLPNet",
    "Network",
    "ResNet",
    "ResNetDecoder",
    "ResNetEncoder",
]
