"""Encoder and decoder networks: ``ConvNet``, ``MLPNet``, ``LinearNet`` for the single-layer VAE's ``model.network``."""

from vae.nets.common import LOGVAR_BOUND, Architecture, GaussianMoments, Network
from vae.nets.conv import ConvDecoder, ConvEncoder, ConvNet
from vae.nets.mlp import LinearNet, MLPDecoder, MLPEncoder, MLPNet

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
]
