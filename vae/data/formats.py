"""Reading the real on-disk formats, with errors that name the file and the fix.

idx (MNIST, Fashion-MNIST)   big-endian header (magic 0x0000 08 NN, NN dimension sizes), then uint8
                             data; plain or .gz
CIFAR-10 python batches      pickled dicts with b"data" (n, 3072) uint8 and b"labels"; read with an
                             unpickler that only builds numpy arrays (a pickle can run code)
image files                  PNG/JPEG, decoded by torchvision.io to uint8 (c, h, w)
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from vae.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def locate(dataset: str, folders: Sequence[Path], names: Sequence[str], how_to_get: str) -> Path:
    """The first folder that holds every file in ``names`` (each plain or as .gz), or a one-line DataError
    naming the dataset, every folder looked in, and how to get the files."""
    for folder in folders:
        if all(find(folder, name) is not None for name in names):
            return folder
    looked = ", ".join(str(f) for f in folders)
    raise DataError(f"{dataset} not found: looked in {looked} for {', '.join(names)}; {how_to_get}")


def find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped if it ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path} ({error}): the file is damaged; delete it and get it again") from error


def read_idx(folder: Path, name: str, *, ndim: int) -> Tensor:
    """An idx file of uint8 values with ``ndim`` dimensions (3 for images, 1 for labels)."""
    path = find(folder, name)
    if path is None:
        raise DataError(f"{folder / name} is missing")
    data = read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DataError(
            f"{path} is not an idx file of uint8 with {ndim} dimension(s) (header {data[:4].hex() or 'empty'}): "
            "the file is damaged or not the right one; get it again"
        )
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = math.prod(shape)  # Python ints: a damaged header must not overflow
    if len(data) - header != size:
        raise DataError(
            f"{path} holds {len(data) - header} bytes of data for shape {tuple(shape)} ({size} expected): "
            "the file is truncated or damaged; get it again"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*shape)  # the shape the header gives


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses every other class (no code runs)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One CIFAR-10 python batch: uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    try:
        batch = NumpyOnlyUnpickler(io.BytesIO(read_bytes(path)), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(
            f"cannot read the CIFAR-10 batch {path} ({error}): the file is damaged or not a CIFAR-10 python "
            "batch; get it again"
        ) from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{path} holds data of shape {data.shape} and {len(labels)} labels, expected (n, 3072) and n: "
            "the file is damaged; get it again"
        )
    images = rearrange(torch.from_numpy(data.copy()), "n (c h w) -> n c h w", c=3, h=32, w=32)
    return images, torch.from_numpy(labels)


def image_files(folder: Path) -> list[Path]:
    """Every PNG/JPEG file under ``folder``, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def decode(path: Path, channels: int) -> Tensor:
    """An image file as uint8 (channels, h, w): grey for 1 channel, RGB for 3 (decoded by Pillow)."""
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot decode the image {path} ({error}): remove or replace the file") from error
