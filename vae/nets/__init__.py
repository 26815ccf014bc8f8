"""Encoder and decoder networks. ``ConvNet`` and ``MLPNet`` are the choices for ``model.network``."""

from vae.nets.common import LOGVAR_BOUND, GaussianHead, GaussianMoments, Network
from vae.nets.conv import ConvDecoder, ConvEncoder, ConvNet
from vae.nets.mlp import LinearNet, MLPDecoder, MLPEncoder, MLPNet

__all__ = [
    "LOGVAR_BOUND",
    "LinearNet",
    "ConvDecoder",
    "ConvEncoder",
    "ConvNet",
    "GaussianHead",
    "GaussianMoments",
    "MLPDecoder",
    "MLPEncoder",
    "MLPNet",
    "Network",
]
