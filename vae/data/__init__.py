"""Image data modules: choose one with ``data.class_path`` (see the module docstrings of ``base`` and
``standard`` and ``folder`` for splits, pixels, binarization and the in-memory fast path)."""

from vae.data.base import Batch, ImageDataModule, TensorBatches, TensorSplit
from vae.data.embedded import EmbeddedMNIST, load_embedded_mnist
from vae.data.folder import ImageFolder
from vae.data.standard import CIFAR10, MNIST, CelebA, FashionMNIST

__all__ = [
    "CIFAR10",
    "MNIST",
    "Batch",
    "CelebA",
    "EmbeddedMNIST",
    "FashionMNIST",
    "ImageDataModule",
    "ImageFolder",
    "TensorBatches",
    "TensorSplit",
    "load_embedded_mnist",
]
