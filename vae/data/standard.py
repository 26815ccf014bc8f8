"""The standard image datasets, each a data module chosen with ``data.class_path``.

    MNIST, FashionMNIST  idx files (plain or .gz); train 60,000 → train + val (``val_size``), test 10,000
    CIFAR10              python pickle batches; train 50,000 → train + val, test 10,000
    CelebA               img_align_celeba/*.jpg + list_eval_partition.txt; the official train/valid/test;
                         center crop 148 then resize to 64×64

Files are looked for in ``<root>/<name>/`` (root ``data`` by default), in the layout torchvision downloads
to, and in known system locations (Debian's ``dataset-fashion-mnist`` package). ``download: true`` lets
torchvision fetch what is missing; without it, missing files are a one-line error naming the paths.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
import torchvision
from einops import rearrange
from torch import Tensor
from torchvision.transforms import v2

from vae.core.errors import ConfigError, DataError
from vae.data.base import ImageDataModule, Split, Stage, TensorSplit, carve
from vae.data.folder import ImageFiles
from vae.data.formats import check_image, locate, read_cifar_batch, read_idx


class DownloadableDataModule(ImageDataModule):
    """A dataset with a home folder under ``root``, system folders, and a torchvision downloader.

    root: the folder its files are looked for under (``<root>/<folder>``), and downloaded to.
    download: let torchvision fetch missing files; without it, missing files are a one-line error.
    """

    name: ClassVar[str]  # for messages: "Fashion-MNIST"
    folder: ClassVar[str]  # under root: "fashion-mnist"
    files: ClassVar[tuple[str, ...]]  # what must be there
    system_folders: ClassVar[tuple[Path, ...]] = ()

    def __init__(self, *, root: str | Path = "data", download: bool = False, **options) -> None:
        super().__init__(**options)
        self.root = Path(root)
        self.download = download

    @property
    def home(self) -> Path:
        return self.root / self.folder

    @abstractmethod
    def folders(self) -> list[Path]:
        """Where the files are looked for, in order."""

    @abstractmethod
    def fetch(self) -> None:
        """Download into ``home`` through torchvision."""

    def how_to_get(self) -> str:
        return f"put the files in {self.home}, or set data.download true to download them"

    def located(self) -> Path:
        return locate(self.name, self.folders(), self.files, self.how_to_get())

    def check_files(self) -> None:
        if not self.download:
            self.located()

    def prepare_data(self) -> None:
        """Download (once, on the first process) when allowed and the files are not found."""
        if not self.download:
            self.check_files()
            return
        try:
            self.located()
            return
        except DataError:
            pass
        try:
            self.fetch()
        except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ... when offline
            reason = " ".join(str(error).split()) or type(error).__name__
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            raise DataError(
                f"could not download {self.name} into {self.home} ({reason}); "
                f"without a connection, put the files in {self.home} yourself"
            ) from error

    def setup(self, stage: str) -> None:
        if self.download and not self.splits:
            self.prepare_data()  # a no-op once the files are there; covers use without a Trainer
        super().setup(stage)


class HeldOutValidation(DownloadableDataModule):
    """A dataset with an official train/test split: ``val_size`` training images become the validation
    split, chosen at random with ``seed``."""

    def __init__(self, *, val_size: int = 5000, **options) -> None:
        super().__init__(**options)
        self.val_size = val_size


class IdxDataModule(HeldOutValidation):
    """MNIST-format data: 28×28 grey images in idx files; a validation split carved from train."""

    image_shape = (1, 28, 28)
    context_size = 10  # the classes
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    torchvision_class: ClassVar[type]

    def folders(self) -> list[Path]:
        return [self.home, self.home / self.torchvision_class.__name__ / "raw", *self.system_folders]

    def fetch(self) -> None:
        self.torchvision_class(root=str(self.home), train=True, download=True)
        self.torchvision_class(root=str(self.home), train=False, download=True)

    def read(self, folder: Path, prefix: str) -> TensorSplit:
        images = read_idx(folder, f"{prefix}-images-idx3-ubyte", ndim=3)
        labels = read_idx(folder, f"{prefix}-labels-idx1-ubyte", ndim=1)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DataError(
                f"{self.name} in {folder}: {prefix} images of shape {tuple(images.shape)} with {len(labels)} labels, "
                "expected (n, 28, 28) and n labels; get the files again"
            )
        return TensorSplit(rearrange(images, "n h w -> n 1 h w"), labels.long())

    def load_splits(self) -> dict[Stage, Split]:
        folder = self.located()
        train = self.read(folder, "train")
        train_index, val_index = carve(len(train), self.val_size, self.seed)
        return {"train": train.subset(train_index), "val": train.subset(val_index), "test": self.read(folder, "t10k")}


class MNIST(IdxDataModule):
    """The 70,000 MNIST digits: 55,000 / 5,000 / 10,000 by default."""

    name = "MNIST"
    folder = "mnist"
    torchvision_class = torchvision.datasets.MNIST


class FashionMNIST(IdxDataModule):
    """The 70,000 Fashion-MNIST images: 55,000 / 5,000 / 10,000 by default. Also found where Debian's
    ``dataset-fashion-mnist`` package puts them."""

    name = "Fashion-MNIST"
    folder = "fashion-mnist"
    torchvision_class = torchvision.datasets.FashionMNIST
    system_folders = (Path("/usr/share/datasets/fashion-mnist"),)

    def how_to_get(self) -> str:
        return f"on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist; or {super().how_to_get()}"


class CIFAR10(HeldOutValidation):
    """The 60,000 CIFAR-10 images, 32×32 RGB: 45,000 / 5,000 / 10,000 by default."""

    name = "CIFAR-10"
    folder = "cifar-10"
    files = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
    image_shape = (3, 32, 32)
    context_size = 10  # the classes

    def folders(self) -> list[Path]:
        return [self.home / "cifar-10-batches-py", self.home]

    def fetch(self) -> None:
        torchvision.datasets.CIFAR10(root=str(self.home), train=True, download=True)

    def load_splits(self) -> dict[Stage, Split]:
        folder = self.located()
        batches = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
        train = TensorSplit(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
        train_index, val_index = carve(len(train), self.val_size, self.seed)
        test = TensorSplit(*read_cifar_batch(folder / "test_batch"))
        return {"train": train.subset(train_index), "val": train.subset(val_index), "test": test}


class CelebA(DownloadableDataModule):
    """The 202,599 aligned CelebA faces, center-cropped to ``crop``×``crop`` and resized to
    ``image_size``×``image_size`` (148 → 64 by default, the usual VAE setting), with the official
    train / valid / test partition (162,770 / 19,867 / 19,962).

    attributes: give each face its 40 binary attributes (``list_attr_celeba.txt``: smiling, eyeglasses, ...) as its
        label, a float vector (40,) of 0s and 1s: the context a conditional model takes (``context_size`` 40). Without
        them the labels are 0 (faces have no class) and the data gives no context.
    """

    name = "CelebA"
    folder = "celeba"
    files = ("list_eval_partition.txt",)
    in_memory_default = False  # files are decoded per item, by DataLoader workers
    num_workers_default = 4

    def __init__(self, *, image_size: int = 64, crop: int = 148, attributes: bool = False, **options) -> None:
        super().__init__(**options)
        if not 0 < image_size <= crop:
            raise ConfigError(f"CelebA needs 0 < image_size <= crop, got image_size {image_size} and crop {crop}")
        self.image_size = image_size
        self.crop = crop
        self.attributes = attributes
        self.image_shape = (3, image_size, image_size)
        self.context_size = ATTRIBUTES if attributes else None

    def folders(self) -> list[Path]:
        return [self.home / "celeba", self.home]

    def fetch(self) -> None:
        torchvision.datasets.CelebA(root=str(self.home), split="all", target_type=[], download=True)

    def how_to_get(self) -> str:
        return (
            f"download img_align_celeba.zip and list_eval_partition.txt from the CelebA site and unpack them "
            f"in {self.home}, or set data.download true (Google Drive often refuses automated downloads)"
        )

    def load_splits(self) -> dict[Stage, Split]:
        folder = self.located()
        images = folder / "img_align_celeba"
        if not images.is_dir():
            raise DataError(
                f"CelebA: {folder} has list_eval_partition.txt but no img_align_celeba/ folder; {self.how_to_get()}"
            )
        partition = read_partition(folder / "list_eval_partition.txt")
        labels = read_attributes(folder / "list_attr_celeba.txt") if self.attributes else {}
        transform = v2.Compose([v2.CenterCrop(self.crop), v2.Resize(self.image_size, antialias=True)])
        splits: dict[Stage, Split] = {}
        for name, code in (("train", 0), ("val", 1), ("test", 2)):
            paths = [images / file for file, c in partition if c == code]
            if not paths:
                raise DataError(f"CelebA: {folder / 'list_eval_partition.txt'} lists no {name} images (code {code})")
            missing = next((p for p in paths if not p.is_file()), None)
            if missing is not None:
                raise DataError(
                    f"CelebA: {missing} is listed in list_eval_partition.txt but missing; unpack the images again"
                )
            for path in paths:  # the first bytes of each: a damaged file is found now, not mid-training
                check_image(path)
            if self.attributes:
                missing = next((file for file, c in partition if c == code and file not in labels), None)
                if missing is not None:
                    raise DataError(f"CelebA: {missing} has no line in list_attr_celeba.txt; get the file again")
                target = torch.stack([labels[file] for file, c in partition if c == code])  # (n, 40) floats
            else:
                target = torch.zeros(len(paths), dtype=torch.long)
            splits[name] = ImageFiles(paths, target, channels=3, transform=transform)
        return splits


ATTRIBUTES = 40
"""CelebA's binary attributes per face (list_attr_celeba.txt)."""


def read_attributes(path: Path) -> dict[str, Tensor]:
    """CelebA's list_attr_celeba.txt: a count, the 40 attribute names, then "000001.jpg -1 1 ..." per face; each
    face's attributes as a float vector (40,) of 0s and 1s."""
    if not path.is_file():
        raise DataError(
            f"CelebA: attributes: true needs {path.name} beside list_eval_partition.txt ({path} is missing): download "
            "it from the CelebA site, or set data.init_args.attributes false"
        )
    lines = path.read_text().splitlines()
    found = {}
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != ATTRIBUTES + 1 or any(value not in ("1", "-1") for value in parts[1:]):
            raise DataError(f"{path} line {number} is not '<file> and 40 values of 1 or -1': get the file again")
        found[parts[0]] = torch.tensor([value == "1" for value in parts[1:]], dtype=torch.float32)
    return found


def read_partition(path: Path) -> list[tuple[str, int]]:
    """CelebA's list_eval_partition.txt: lines "000001.jpg 0" (0 train, 1 valid, 2 test)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path} line {number} is {line!r}, expected '<file> <0|1|2>': get the file again")
        rows.append((parts[0], int(parts[1])))
    return rows
