"""The images ``vae compress`` reads and ``vae decompress`` writes, exactly: 8-bit values in, the same values out.

Read: a folder of image files (PNG, JPEG, BMP, GIF, TIFF, WebP, recursively, in sorted order; grey (Pillow's L or
1-bit) for a one-channel model, RGB for a three-channel one), or a ``.npz`` with an ``images`` array of uint8,
(n, c, h, w) or (n, h, w) for one channel. A mode whose pixels would change on the way in (16-bit, alpha, palette,
CMYK, floats) is refused, naming the file: what comes back must be what went in.

Written: PNG files (1-bit for binary images, 8-bit grey or RGB otherwise) under the names they came with (or
``00000.png``, ...), or one ``.npz`` whose ``images`` is the array that was read (its layout and scale).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

from vae.coding.baselines import png_image
from vae.core.errors import ConfigError, DataError
from vae.data.formats import IMAGE_SUFFIXES, check_image, image_files, one_line

MODES = {1: ("1", "L"), 3: ("RGB",)}


@dataclass(frozen=True)
class Images:
    """Images as read: uint8 values (n, c, h, w), their names (relative paths) where they came from files, and the
    layout of the array they came in ("nchw" or "nhw")."""

    values: Tensor
    names: list[str] | None = None
    layout: str = "nchw"


def read_folder(folder: Path, channels: int) -> Images:
    paths = image_files(folder)
    if not paths:
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    arrays = []
    for path in paths:
        check_image(path)
        try:
            with Image.open(path) as image:
                mode = image.mode
                if mode not in MODES[channels]:
                    want = "grey (L or 1-bit)" if channels == 1 else "RGB"
                    raise DataError(
                        f"{path} is a Pillow mode {mode} image, and the model codes {want} 8-bit images exactly: "
                        "convert it first (its pixels would change on the way in)"
                    )
                array = np.asarray(image.convert("L") if mode == "1" else image, dtype=np.uint8)
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DataError(f"cannot decode the image {path} ({one_line(error)}): remove or replace it") from error
        arrays.append(array[None] if array.ndim == 2 else rearrange(array, "h w c -> c h w"))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"the images in {folder} differ in size ({sorted(shapes)[:3]}): give images of one size")
    names = [str(p.relative_to(folder)) for p in paths]
    return Images(values=torch.from_numpy(np.stack(arrays)), names=names)


def read_npz(path: Path, channels: int) -> Images:
    try:
        with np.load(path, allow_pickle=False) as file:
            if "images" not in file.files:
                raise DataError(f"{path} has no 'images' array (it has: {', '.join(file.files) or 'nothing'})")
            array = file["images"]
    except DataError:
        raise
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as a NumPy .npz ({one_line(error)})") from error
    if array.dtype != np.uint8:
        raise DataError(f"{path}: 'images' must be uint8 values, got {array.dtype}: convert it first")
    if array.ndim == 3 and channels == 1:
        return Images(values=torch.from_numpy(array[:, None].copy()), layout="nhw")
    if array.ndim != 4:
        raise DataError(f"{path}: 'images' must be (n, c, h, w) (or (n, h, w) for grey images), got {array.shape}")
    return Images(values=torch.from_numpy(array.copy()))


def read_images(path: Path, channels: int) -> Images:
    """The images at ``path`` (a folder, or a .npz), one-line errors for anything that would not come back exactly."""
    if path.is_dir():
        return read_folder(path, channels)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise DataError(f"{path} not found: give a folder of images or a .npz")
        return read_npz(path, channels)
    raise ConfigError(f"--images {path}: give a folder of images or a .npz with an 'images' array")


def check_destination(out: Path, *, overwrite: bool) -> None:
    """A one-line error for an output that would overwrite something (without ``overwrite``)."""
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists: give another path, or --overwrite to replace it")
    if out.suffix.lower() not in ("", ".npz") and not out.is_dir():
        raise ConfigError(f"--out {out}: give a folder (for PNG files) or a path ending in .npz")


def check_names(names: list[str] | None, count: int) -> None:
    """A one-line error for names that do not fit the images or would leave the output folder (absolute, or with a
    ``..`` part): a file made by hand, not by ``vae compress``."""
    if names is None:
        return
    if len(names) != count or not all(isinstance(name, str) and name for name in names):
        raise DataError(f"the file's image names do not fit its {count} images: it is damaged")
    for name in names:
        path = Path(name)
        if path.is_absolute() or ".." in path.parts or path.drive:
            raise DataError(f"the file names an image {name!r} outside the output folder: it is not from vae compress")


def write_images(out: Path, values: Tensor, *, levels: int, names: list[str] | None, layout: str, scale: int) -> None:
    """Write the images whole or not at all: a .npz of ``values · scale`` in the layout they came in, or a folder of
    PNG files."""
    check_names(names, len(values))
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
    try:
        if out.suffix.lower() == ".npz":
            array = (values * scale).to(torch.uint8).numpy()
            with open(partial, "wb") as file:
                np.savez(file, images=array[:, 0] if layout == "nhw" else array)
        else:
            partial.mkdir(parents=True)
            files = [str(Path(name).with_suffix(".png")) for name in names] if names else None
            if files and len(set(files)) < len(files):  # a.jpg beside a.png: keep the whole names
                files = [f"{name}.png" for name in names]
            for index, image in enumerate(values):
                name = Path(files[index]) if files else Path(f"{index:05d}.png")
                (partial / name).parent.mkdir(parents=True, exist_ok=True)
                png_image(image, levels).save(partial / name, format="PNG")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
