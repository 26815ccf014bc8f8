"""Image data modules: choose one with ``data.class_path`` (see the module docstrings of ``base`` and
``standard`` and ``folder`` for splits, pixels, binarization and the in-memory fast path)."""

from vae.data.base import Batch, ImageDataModule, TensorBatches, TensorSplit
from vae.data.embedded import EmbeddedMNIST, load_embedded_mnist
from vae.data.factors import DSPRITES, SHAPES3D, DSprites, DSpritesLike, FactorSpace, Shapes3D, render_dsprites
from vae.data.folder import ImageFolder
from vae.data.standard import CIFAR10, MNIST, CelebA, FashionMNIST

__all__ = [
    "CIFAR10",
    "DSPRITES",
    "MNIST",
    "SHAPES3D",
    "Batch",
    "CelebA",
    "DSprites",
    "DSpritesLike",
    "EmbeddedMNIST",
    "FactorSpace",
    "FashionMNIST",
    "ImageDataModule",
    "ImageFolder",
    "Shapes3D",
    "TensorBatches",
    "TensorSplit",
    "load_embedded_mnist",
    "render_dsprites",
]
