"""Every image file is read as it is: each bit depth and colour mode against an exact reference, damaged files
found before training (or, when only decoding finds them, reported in one line naming the file, also from
DataLoader workers)."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae.core.errors import DataError
from vae.data.folder import ImageFolder
from vae.data.formats import check_image, decode

H, W = 12, 20
RAMP = np.linspace(0, 1, H * W).reshape(H, W)  # every grey level from black to white


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit RGB): grey (h, w) or RGB (h, w, 3)."""
    colour = 0 if array.ndim == 2 else 2
    rows = array.reshape(array.shape[0], -1).astype(">u2").tobytes()
    stride = array.shape[1] * (1 if colour == 0 else 3) * 2
    raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(array.shape[0]))
    header = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 16, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def grey8(values01: np.ndarray) -> np.ndarray:
    return np.rint(values01 * 255).astype(np.uint8)


def rgb8() -> np.ndarray:
    return np.stack([grey8(RAMP), grey8(RAMP[::-1]), np.full((H, W), 77, np.uint8)], axis=-1)


def case_1bit(path):
    bits = RAMP > 0.5
    Image.fromarray(bits).convert("1").save(path)
    return np.where(bits, 255, 0).astype(np.uint8), None


def case_grey8(path):
    Image.fromarray(grey8(RAMP)).save(path)
    return grey8(RAMP), None


def case_grey16_pillow(path):
    values = np.rint(RAMP * 65535).astype(np.uint16)
    Image.fromarray(values).save(path)  # mode I;16
    return grey8(RAMP), None


def case_grey16(path):
    write_png16(path, np.rint(RAMP * 65535).astype(np.uint16))
    return grey8(RAMP), None


def case_rgb16(path):
    colour = np.rint(rgb8().astype(np.float64) / 255 * 65535).astype(np.uint16)
    write_png16(path, colour)
    return None, rgb8()


def case_rgb8(path):
    Image.fromarray(rgb8()).save(path)
    return None, rgb8()


def case_rgba(path):
    alpha = grey8(RAMP)[..., None]
    Image.fromarray(np.concatenate([rgb8(), alpha], axis=-1), mode="RGBA").save(path)
    return None, rgb8()  # alpha dropped, the colours as they are


def case_grey_alpha(path):
    Image.fromarray(np.stack([grey8(RAMP), grey8(RAMP[::-1])], axis=-1), mode="LA").save(path)
    return grey8(RAMP), None


def case_palette(path):
    palette = Image.fromarray(rgb8()).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    palette.save(path)
    return None, np.asarray(palette.convert("RGB"))


def case_palette_transparent(path):
    image = Image.fromarray(rgb8()).quantize(colors=64)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    return None, np.asarray(image.convert("RGB"))


def case_cmyk_jpeg(path):
    Image.fromarray(rgb8()).convert("CMYK").save(path, quality=100)
    return None, rgb8()


def case_grey_jpeg(path):
    Image.fromarray(grey8(RAMP)).save(path, quality=100)
    return grey8(RAMP), None


def case_tiff16(path):
    Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)).save(path)
    return grey8(RAMP), None


def case_bmp(path):
    Image.fromarray(rgb8()).save(path)
    return None, rgb8()


def case_webp(path):
    Image.fromarray(rgb8()).save(path, lossless=True)
    return None, rgb8()


def case_gif(path):
    Image.fromarray(grey8(RAMP)).save(path)
    return grey8(RAMP), None


CASES = {  # name: (file name, writer, tolerance in 8-bit levels)
    "1-bit grey PNG": ("a.png", case_1bit, 0),
    "8-bit grey PNG": ("a.png", case_grey8, 0),
    "16-bit grey PNG (Pillow)": ("a.png", case_grey16_pillow, 0),
    "16-bit grey PNG": ("a.png", case_grey16, 0),
    "16-bit RGB PNG": ("a.png", case_rgb16, 1),
    "8-bit RGB PNG": ("a.png", case_rgb8, 0),
    "RGBA PNG": ("a.png", case_rgba, 0),
    "grey and alpha PNG": ("a.png", case_grey_alpha, 0),
    "palette PNG": ("a.png", case_palette, 0),
    "palette PNG with transparency": ("a.png", case_palette_transparent, 0),
    "CMYK JPEG": ("a.jpg", case_cmyk_jpeg, 12),
    "grey JPEG": ("a.jpg", case_grey_jpeg, 3),
    "16-bit TIFF": ("a.tif", case_tiff16, 0),
    "BMP": ("a.bmp", case_bmp, 0),
    "lossless WebP": ("a.webp", case_webp, 0),
    "GIF": ("a.gif", case_gif, 0),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_every_mode_and_bit_depth_is_read_as_it_is(tmp_path, case):
    name, write, tolerance = CASES[case]
    path = tmp_path / name
    grey, colour = write(path)
    check_image(path)
    if colour is None:  # the grey reference, and its RGB reading (the same level on three channels)
        colour = np.repeat(grey[..., None], 3, axis=-1)
    if grey is None:  # the RGB reference, and its grey reading (ITU-R 601 luma, as Pillow converts)
        grey = np.asarray(Image.fromarray(colour).convert("L"))
    for channels, expected in ((1, grey[None]), (3, np.moveaxis(colour, -1, 0))):
        got = decode(path, channels)
        assert got.dtype == torch.uint8 and tuple(got.shape) == (channels, H, W)
        error = np.abs(got.numpy().astype(int) - expected.astype(int)).max()
        assert error <= tolerance + (1 if channels == 1 and case in ("16-bit RGB PNG", "CMYK JPEG") else 0), error


def test_a_16_bit_image_is_not_read_as_white(tmp_path):
    """The defect this guards against: 16-bit values clipped to 255 read as 99.6 % white."""
    path = tmp_path / "microscope.png"
    Image.fromarray(np.rint(RAMP * 65535).astype(np.uint16)).save(path)
    got = decode(path, 1).float()
    assert (got == 255).float().mean() < 0.01 and got.mean() == pytest.approx(127.5, abs=1)


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with an orientation tag is read as a viewer shows it."""
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(rgb8()).save(path, exif=exif, quality=100)
    assert tuple(decode(path, 3).shape) == (3, W, H)


@pytest.mark.parametrize(
    "mode, values",
    [("F", RAMP.astype(np.float32)), ("I", (RAMP * 100 - 50).astype(np.int32)), ("I", (RAMP * 1e9).astype(np.int32))],
    ids=["floating point", "negative integers", "32-bit integers"],
)
def test_values_without_a_fixed_range_are_refused_in_one_line(tmp_path, mode, values):
    path = tmp_path / "a.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(DataError, match=r"a\.tif holds .* convert it to 8- or 16-bit unsigned integers") as error:
        decode(path, 1)
    assert "\n" not in str(error.value)


DAMAGED = {
    "empty": (b"", "is an empty file"),
    "text": (b"this is not an image\n", r"is not an image \(PNG, JPEG"),
    "png cut in its header": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is cut short or damaged"),
}


@pytest.mark.parametrize("damage", DAMAGED, ids=list(DAMAGED))
def test_the_cheap_check_finds_files_that_are_no_images(tmp_path, damage):
    content, expected = DAMAGED[damage]
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        check_image(path)


def test_a_truncated_image_is_one_line_naming_it_when_decoded(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(rgb8()).save(path)
    path.write_bytes(path.read_bytes()[:60])  # the header is whole, the pixels are not
    check_image(path)  # the cheap check cannot see this
    with pytest.raises(DataError, match=r"cannot decode the image .*cut\.png") as error:
        decode(path, 3)
    assert "\n" not in str(error.value)


def folder_of_images(root: Path, n: int = 12) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.roll(rgb8(), i, axis=1)).save(root / f"{i:02d}.png")


def test_a_damaged_file_in_a_folder_is_found_before_training(tmp_path):
    folder_of_images(tmp_path / "images")
    (tmp_path / "images" / "05.png").write_text("oops")
    data = ImageFolder(path=tmp_path / "images", image_size=8, num_workers=0)
    with pytest.raises(DataError, match=r"05\.png is not an image"):
        data.setup("fit")


def test_a_decode_failure_in_a_worker_is_one_line_naming_the_file(tmp_path):
    folder_of_images(tmp_path / "images")
    cut = tmp_path / "images" / "07.png"
    cut.write_bytes(cut.read_bytes()[:60])
    data = ImageFolder(path=tmp_path / "images", image_size=8, num_workers=2, val_fraction=0.5, test_fraction=0)
    data.setup("fit")
    with pytest.raises(DataError) as error:
        for loader in (data.train_dataloader(), data.val_dataloader()):
            for _ in loader:
                pass
    message = str(error.value)
    assert message.startswith("cannot decode the image ") and "07.png" in message and "\n" not in message, message
    assert "Traceback" not in message
