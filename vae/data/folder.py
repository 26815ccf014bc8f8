"""Images from files: ``ImageFiles`` (decoded per item) and ``ImageFolder`` (any tree of image files)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vae.core.errors import ConfigError, DataError
from vae.data.base import Batch, ImageDataModule, Split, Stage
from vae.data.formats import check_image, decode, image_files


class ImageFiles(Dataset):
    """Image files decoded on access into uint8 (channels, size, size) by a torchvision transform."""

    def __init__(self, paths: list[Path], labels: Tensor, *, channels: int, transform: v2.Transform) -> None:
        self.paths = paths
        self.labels = labels
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Batch:
        return self.transform(decode(self.paths[index], self.channels)), self.labels[index]


class ImageFolder(ImageDataModule):
    """Every image file (PNG, JPEG, BMP, GIF, TIFF, WebP) under ``path`` (recursively), resized (shorter side)
    and center-cropped to ``image_size``×``image_size``, as grey (``channels: 1``) or RGB (``channels: 3``)
    images, at any bit depth (``vae.data.formats.decode``: 16-bit files keep their full range).

    Labels are the index of each file's top-level subfolder in sorted order (as torchvision's
    ImageFolder); files directly in ``path`` get their own class. The split into train / val / test is
    random (``seed``), by ``val_fraction`` and ``test_fraction``.
    """

    in_memory_default = False  # files are decoded per item, by DataLoader workers
    num_workers_default = 4

    def __init__(
        self,
        *,
        path: str | Path,
        image_size: int = 64,
        channels: int = 3,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        **options,
    ) -> None:
        super().__init__(**options)
        if channels not in (1, 3):
            raise ConfigError(f"ImageFolder channels must be 1 (grey) or 3 (RGB), got {channels}")
        if image_size < 1:
            raise ConfigError(f"ImageFolder image_size must be positive, got {image_size}")
        if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"ImageFolder needs 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1, "
                f"got {val_fraction} and {test_fraction}"
            )
        self.path = Path(path)
        self.image_size = image_size
        self.channels = channels
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.image_shape = (channels, image_size, image_size)
        self.classes: list[str] = []

    @property
    def context_size(self) -> int | None:
        """The number of classes (top-level subfolders, and the folder itself for files directly in it), read from
        the folder; None for a folder that is not there (``check_files`` says so)."""
        if not self.classes and self.path.is_dir():
            self.classes = sorted({group_of(p, self.path) for p in image_files(self.path)})
        return len(self.classes) or None

    def check_files(self) -> None:
        if not self.path.is_dir():
            raise DataError(f"image folder {self.path} does not exist: set data.path to a folder of image files")

    def load_splits(self) -> dict[Stage, Split]:
        self.check_files()
        paths = image_files(self.path)
        if len(paths) < 3:
            raise DataError(f"image folder {self.path} holds {len(paths)} image files; it needs at least 3")
        for path in paths:  # cheap: the first bytes of each, so a damaged file stops nothing mid-training
            check_image(path)
        groups = [group_of(p, self.path) for p in paths]
        self.classes = sorted(set(groups))
        labels = torch.tensor([self.classes.index(g) for g in groups])
        order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, round(self.val_fraction * len(paths)))
        n_test = round(self.test_fraction * len(paths))
        if n_val + n_test >= len(paths):
            raise DataError(f"image folder {self.path}: {len(paths)} files leave no training images after the split")
        parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        transform = v2.Compose([v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)])
        return {
            name: ImageFiles([paths[i] for i in index], labels[index], channels=self.channels, transform=transform)
            for name, index in parts.items()
        }


def group_of(path: Path, root: Path) -> str:
    """The class of an image file: its top-level subfolder under ``root``, or "." for a file directly in it."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "."
