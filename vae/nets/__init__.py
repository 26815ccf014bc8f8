"""Encoder and decoder networks: ``ConvNet``, ``ResNet``, ``MLPNet``, ``LinearNet`` for the single-layer VAE's
``model.network``."""

from vae.nets.common import LOGVAR_BOUND, Architecture, GaussianMoments, Network
from vae.nets.conv import ConvDecoder, ConvEncoder, ConvNet
from vae.nets.mlp import LinearNet, MLPDecoder, MLPEncoder, MLPNet
from vae.nets.resnet import ResNet, ResNetDecoder, ResNetEncoder

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
