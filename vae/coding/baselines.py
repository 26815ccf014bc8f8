"""The standard lossless compressors, on the same images, for comparison: gzip, bz2 and lzma of one concatenated raw
array of the values (bit-packed, 8 pixels a byte, for binary images), each at its strongest setting, and PNG per image
(1-bit for binary grey images, 8-bit grey or RGB otherwise, Pillow's ``optimize``), headers included.

    sizes = baseline_bits(values, levels=2)       # {"gzip": bits, "bz2": ..., "lzma": ..., "png": ...}
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma

import numpy as np
from einops import rearrange
from PIL import Image
from torch import Tensor


def raw_bytes(values: Tensor, levels: int) -> bytes:
    """The values (n, c, h, w) as one raw array: bit-packed for 2 levels, one byte per value otherwise."""
    array = values.cpu().numpy().astype(np.uint8)
    return np.packbits(array.reshape(-1)).tobytes() if levels == 2 else array.tobytes()


def png_image(values: Tensor, levels: int) -> Image.Image:
    """One image's values (c, h, w) as a Pillow image: 1-bit for binary grey images, 8-bit grey or RGB otherwise (binary
    colour images at 0 and 255)."""
    array = rearrange(values.cpu().numpy().astype(np.uint8), "c h w -> h w c")
    if levels == 2:
        array = array * 255
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return image.convert("1") if levels == 2 and array.shape[-1] == 1 else image


def png_bytes(values: Tensor, levels: int) -> bytes:
    buffer = io.BytesIO()
    png_image(values, levels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def baseline_bits(values: Tensor, *, levels: int) -> dict[str, int]:
    """The size in bits of the values (n, c, h, w) under each standard compressor."""
    raw = raw_bytes(values, levels)
    return {
        "gzip": 8 * len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "bz2": 8 * len(bz2.compress(raw, compresslevel=9)),
        "lzma": 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
        "png": 8 * sum(len(png_bytes(image, levels)) for image in values),
    }
