"""Encoder/decoder pairs for models with one latent vector: ``ConvNet``, ``ResNet``, ``MLPNet``, ``LinearNet``."""

from vae.layers.nets.common import Network
from vae.layers.nets.conv import ConvNet
from vae.layers.nets.mlp import LinearNet, MLPNet
from vae.layers.nets.resnet import ResNet

__all__ = ["ConvNet", "LinearNet", "MLPNet", "Network", "ResNet"]
