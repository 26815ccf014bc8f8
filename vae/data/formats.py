"""Reading the real on-disk formats, with errors that name the file and the fix.

idx (MNIST, Fashion-MNIST)   big-endian header (magic 0x0000 08 NN, NN dimension sizes), then uint8
                             data; plain or .gz
CIFAR-10 python batches      pickled dicts with b"data" (n, 3072) uint8 and b"labels"; read with an
                             unpickler that only builds numpy arrays (a pickle can run code)
image files                  PNG, JPEG, BMP, GIF, TIFF, WebP, decoded by Pillow to uint8 (c, h, w) at any bit
                             depth (1-, 8-, 16-bit, palette, CMYK, with or without alpha)
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
from einops import rearrange, repeat
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from vae.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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
    """Every image file under ``folder`` (PNG, JPEG, BMP, GIF, TIFF, WebP), recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# The first bytes of each image format read here (PNG, JPEG, GIF, BMP, TIFF little/big-endian and BigTIFF, WebP).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00")


def check_image(path: Path) -> None:
    """The cheap check of an image file, before any training: its first bytes (14 µs a file in the page cache,
    94 µs cold). An empty file, a file that is not an image of a known format, or a PNG whose header gives no
    pixels is a one-line DataError naming it. (A file damaged further in is found when it is decoded, also in
    one line.)"""
    try:
        with open(path, "rb") as file:
            head = file.read(32)
    except OSError as error:
        raise DataError(f"cannot read the image {path} ({error.strerror}): check the file") from error
    if not head:
        raise DataError(f"the image {path} is an empty file: remove or replace it")
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if not (webp or head.startswith(SIGNATURES)):
        raise DataError(f"{path} is not an image (PNG, JPEG, BMP, GIF, TIFF or WebP): remove or replace the file")
    if head.startswith(SIGNATURES[0]):  # the IHDR chunk: width and height, big-endian, at bytes 16 to 24
        size = (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) if len(head) >= 24 else (0, 0)
        if 0 in size:
            raise DataError(f"the PNG {path} is cut short or damaged (no image size in its header): replace it")


def unsupported(path: Path, mode: str) -> DataError:
    kind = "floating-point values" if mode == "F" else "32-bit or signed integers"
    return DataError(
        f"the image {path} holds {kind} (Pillow mode {mode}), which have no fixed range to scale to [0, 1]: "
        "convert it to 8- or 16-bit unsigned integers"
    )


def decode(path: Path, channels: int) -> Tensor:
    """An image file as uint8 (channels, h, w), as a viewer shows it: turned by its EXIF orientation, grey for 1
    channel or RGB for 3 (alpha is dropped, as torchvision does), with the full range of its bit depth mapped to
    0..255: 1-bit images to 0 and 255, 16-bit ones (PNG, TIFF) by 255 / 65535."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I") or image.mode == "F":
                grey = high_depth_to_uint8(image, path)
                return grey if channels == 1 else repeat(grey, "1 h w -> c h w", c=3)
            return pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot decode the image {path} ({one_line(error)}): remove or replace the file") from error


def high_depth_to_uint8(image: Image.Image, path: Path) -> Tensor:
    """A 16-bit grey image (Pillow's modes I;16*, and I for a PNG) as uint8 (1, h, w): each value scaled by
    255 / 65535 and rounded, so that white stays white. 32-bit integers and floats have no range to scale from
    (Pillow reads 32-bit integers as signed): refused, naming the file."""
    unsigned_16 = image.mode.startswith("I;16") and "S" not in image.mode
    if not (unsigned_16 or (image.mode == "I" and image.format == "PNG")):  # PNG stores at most 16 bits
        raise unsupported(path, image.mode)
    values = np.asarray(image).astype(np.float64)
    if values.size and values.min() < 0:
        raise unsupported(path, image.mode)
    scaled = np.rint(values * (255.0 / 65535)).clip(0, 255).astype(np.uint8)
    return torch.from_numpy(scaled)[None]


def one_line(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
