"""Data with known generative factors, for the disentanglement scores: dSprites (read, or rendered here) and
3D Shapes.

Batches are ``(images, labels)`` as everywhere, but the labels are the factor CLASS indices, int64 (n, F), one
column per factor (``factors.names``), not a class label. Each module also answers ``images_for(classes)``:
the images with given factors, the oracle the β-VAE and FactorVAE scores sample from.

    DSpritesLike  dSprites-like images rendered here (no download): a seeded subsample of the 737,280
                  factor combinations, 20,000 by default; ``size: 737280`` is the whole set (3 GB in memory,
                  or rendered batch by batch with ``in_memory: false``)
    DSprites      the real dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (https://github.com/deepmind/dsprites-dataset)
    Shapes3D      the real 3dshapes.h5 (https://github.com/deepmind/3d-shapes), read with h5py

The file readers take each image's factors from the file's own labels (dSprites' ``latents_classes``, 3D
Shapes' label values snapped to their known grids), not from its row number, and look the rows of
``images_for`` up by factor index: a file in another order, or a part of one, reads the same.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from abc import abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torch.utils.data import Dataset

from vae.core.errors import ConfigError, DataError
from vae.data.base import Batch, ImageDataModule, Split, Stage, TensorSplit, seeded_generator
from vae.data.formats import find, locate, one_line


@dataclass(frozen=True)
class FactorSpace:
    """Independent discrete factors: ``names`` and ``sizes`` (classes per factor), enumerated row-major (the
    last factor fastest), as dSprites and 3D Shapes store their images."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.sizes) or not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"a FactorSpace needs one positive size per name, got {self.names} and {self.sizes}")

    @property
    def count(self) -> int:
        """The number of factor combinations."""
        return math.prod(self.sizes)

    @property
    def bases(self) -> tuple[int, ...]:
        """What one class of each factor adds to the index: (48000, 4800, 480, 60, 15, 1) for 3D Shapes."""
        return tuple(math.prod(self.sizes[i + 1 :]) for i in range(len(self.sizes)))

    def check(self, classes: Tensor) -> Tensor:
        """``classes`` as int64 (n, F), or a ValueError naming the factor out of range."""
        if classes.ndim != 2 or classes.shape[1] != len(self.sizes):
            raise ValueError(f"factor classes must have shape (n, {len(self.sizes)}), got {tuple(classes.shape)}")
        if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
            raise ValueError(f"factor classes must be integers, got {classes.dtype}")
        classes = classes.long()
        if len(classes):
            low, high = classes.min(0).values.tolist(), classes.max(0).values.tolist()
            for name, size, lo, hi in zip(self.names, self.sizes, low, high):
                if lo < 0 or hi >= size:
                    raise ValueError(f"factor {name} has classes 0 to {size - 1}, got values from {lo} to {hi}")
        return classes

    def index(self, classes: Tensor) -> Tensor:
        """The row-major index (n,) of factor classes (n, F), the last factor fastest."""
        classes = self.check(classes)
        return (classes * torch.tensor(self.bases, device=classes.device)).sum(1)

    def classes(self, index: Tensor) -> Tensor:
        """The factor classes (n, F) of indices (n,): the inverse of ``index``."""
        index = torch.as_tensor(index).long()
        if index.ndim != 1:
            raise ValueError(f"factor indices must have shape (n,), got {tuple(index.shape)}")
        if len(index) and not (0 <= index.min().item() and index.max().item() < self.count):
            raise ValueError(f"factor indices must lie in 0 to {self.count - 1}")
        bases = torch.tensor(self.bases, device=index.device)
        return index[:, None] // bases % torch.tensor(self.sizes, device=index.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` combinations drawn uniformly: each factor's class independently, (n, F) int64."""
        return torch.stack([torch.randint(size, (n,), generator=generator) for size in self.sizes], 1)


# dSprites without its constant colour factor, in the file's order (posY fastest, then posX, orientation, ...).
DSPRITES = FactorSpace(("shape", "scale", "orientation", "x", "y"), (3, 6, 40, 32, 32))
SHAPES3D = FactorSpace(("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"), (10, 10, 10, 8, 4, 15))


# --- the dSprites-like renderer ----------------------------------------------------------------------------

SIZE = 64  # pixels a side
RADIUS = 10.0  # pixels from the centre to a side of the square at scale 1: the largest shapes span 20 pixels
HEART_SCALE = 1.14  # unit coordinates → the heart curve's: its width (±1.139) spans the unit square's
HEART_SHIFT = 0.118  # the middle of the heart curve's height (−1 to 1.236), moved to the shape's centre
WINDOW = 31  # pixels a side of the square around a centre that is drawn: centre ± 15 pixels hold every shape
CHUNK = 512  # images rendered at a time: a few (512, 31, 31) float64 temporaries, 4 MB each

# Every factor's values in float64, computed from integers with one correctly rounded operation each, and the
# cosines and sines rounded to 10 decimals (each over 25,000 ulps from a rounding boundary: tested), so that no
# platform's libm, nor any vector unit, changes a single pixel.
SCALES = [(5 + k) / 10 for k in range(6)]  # 0.5, 0.6, ..., 1: np.linspace(0.5, 1, 6)
ANGLES = [2 * math.pi * k / 39 for k in range(40)]  # np.linspace(0, 2π, 40): 0 and 2π both included
COSINES = [round(math.cos(a), 10) for a in ANGLES]
SINES = [round(math.sin(a), 10) for a in ANGLES]
CENTRES = [16 + 32 * k / 31 for k in range(32)]  # pixels: 16 + 32 · np.linspace(0, 1, 32)


def render_dsprites(classes: Tensor) -> Tensor:
    """dSprites-like images (n, 1, 64, 64), uint8 0 or 255, of factor classes (n, 5) (``DSPRITES``): exactly
    the same bytes on every machine.

    dSprites' own renderer is unpublished, so these pixels are not the real file's; what is chosen here:

    - coordinates: pixel (row i, column j) has its centre at (i + ½, j + ½); the shape's centre is at column
      16 + 32·x and row 16 + 32·y for x, y in linspace(0, 1, 32) (x the column, y the row, as in dSprites),
      so posX 0 is the left and posY 0 the top.
    - a pixel is on (255) when its centre, taken relative to the shape's centre with the rows pointing up,
      rotated by −orientation and divided by 10·scale pixels, falls inside the unit shape (no antialiasing):
        square   |u| ≤ 1 and |v| ≤ 1: 20 × 20 pixels at scale 1, 10 × 10 at scale 0.5
        ellipse  u² + 4v² ≤ 1: 20 × 10 pixels at scale 1, the long axis horizontal at orientation 0
        heart    (X² + Y² − 1)³ − X²Y³ ≤ 0 with X = 1.14u, Y = 1.14v + 0.118: 20 × 19.6 pixels at scale 1,
                 the point down at orientation 0
    - scale in linspace(0.5, 1, 6); orientation in linspace(0, 2π, 40) counter-clockwise (as the image is
      shown): both ends included, so orientations 0 and 39 are the same image, as in the real file.

    No shape reaches the outermost pixels: the square's corners at scale 1 lie within 14.15 pixels of a
    centre that stays within 16 to 48. Each shape is drawn in the 31 × 31 pixels around its centre (which
    hold it whole), ``CHUNK`` images at a time, vectorised, in float64 on the CPU: 20,000 images take about
    half a second on one core.
    """
    classes = DSPRITES.check(classes).cpu()
    images = torch.zeros(len(classes), 1, SIZE, SIZE, dtype=torch.uint8)
    scales, cosines, sines, centres = (torch.tensor(t, dtype=torch.float64) for t in (SCALES, COSINES, SINES, CENTRES))
    flat, span = images.view(-1), torch.arange(WINDOW)
    for shape in range(3):
        for rows in torch.nonzero(classes[:, 0] == shape)[:, 0].split(CHUNK):
            c = classes[rows]
            column, row = centres[c[:, 3]], centres[c[:, 4]]
            left, top = column.floor().long() - WINDOW // 2, row.floor().long() - WINDOW // 2  # 1 to 33
            inside = draw(shape, scales[c[:, 1]], cosines[c[:, 2]], sines[c[:, 2]], column, row, left, top)
            at = (
                rows[:, None, None] * SIZE * SIZE
                + (top[:, None] + span)[:, :, None] * SIZE
                + (left[:, None] + span)[:, None, :]
            )
            flat[at.flatten()] = inside.flatten().to(torch.uint8) * 255
    return images


def draw(
    shape: int, scale: Tensor, cos: Tensor, sin: Tensor, column: Tensor, row: Tensor, left: Tensor, top: Tensor
) -> Tensor:
    """Which pixels of a ``WINDOW``-pixel square (b, 31, 31) each of b shapes covers, from its float64 scale,
    the cosine and sine of its orientation, the column and row of its centre, and the first column and row of
    the square (integers), each (b,)."""
    span = torch.arange(WINDOW, dtype=torch.float64) + 0.5
    dx = (left.double()[:, None] + span)[:, None, :] - column[:, None, None]  # (b, 1, 31): right of the centre
    dy = row[:, None, None] - (top.double()[:, None] + span)[:, :, None]  # (b, 31, 1): above the centre
    c, s, r = cos[:, None, None], sin[:, None, None], RADIUS * scale[:, None, None]
    u = (c * dx + s * dy) / r  # (b, 31, 31): rotated back by the orientation, in units of 10·scale pixels
    v = (c * dy - s * dx) / r
    if shape == 0:
        return (u.abs() <= 1) & (v.abs() <= 1)
    if shape == 1:
        return u * u + 4 * (v * v) <= 1
    x, y = HEART_SCALE * u, HEART_SCALE * v + HEART_SHIFT
    a = x * x + y * y - 1
    return a * a * a - (x * x) * (y * y * y) <= 0


class RenderedDSprites(Dataset):
    """dSprites-like images of given factor classes (n, 5), rendered when they are read: the per-item path
    (batches are rendered whole, through ``__getitems__``), for sets too large to hold in memory."""

    def __init__(self, classes: Tensor) -> None:
        self.classes = DSPRITES.check(classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> Batch:
        return render_dsprites(self.classes[index : index + 1])[0], self.classes[index]

    def __getitems__(self, indices: list[int]) -> list[Batch]:
        classes = self.classes[torch.as_tensor(indices, dtype=torch.long)]
        return list(zip(render_dsprites(classes), classes))


# --- data modules --------------------------------------------------------------------------------------------


class FactorDataModule(ImageDataModule):
    """Images with known factors: labels are factor classes (n, F) int64 (``factors``), and
    ``images_for(classes)`` gives the images of any factor classes.

    size: how many images to use, drawn at random (``seed``) from all; None for all.
    val_size, test_size: how many of them are the validation and test splits; the rest are training images.
    """

    factors: ClassVar[FactorSpace]
    image_shape = (1, 64, 64)

    def __init__(self, *, size: int | None, val_size: int = 1_000, test_size: int = 2_000, **options) -> None:
        super().__init__(**options)
        name = type(self).__name__
        if size is not None and not 1 <= size <= self.factors.count:
            raise ConfigError(f"{name} size must be between 1 and {self.factors.count} (all), got {size}")
        if val_size < 1 or test_size < 0:
            raise ConfigError(
                f"{name} val_size must be at least 1 and test_size at least 0, got {val_size}, {test_size}"
            )
        self.size = size
        self.val_size = val_size
        self.test_size = test_size
        if size is not None:
            self.check_split(size)

    def check_split(self, size: int) -> None:
        if self.val_size + self.test_size >= size:
            raise ConfigError(
                f"{type(self).__name__} val_size ({self.val_size}) + test_size ({self.test_size}) must be under "
                f"the {size} images used, leaving some to train on: lower them or raise size"
            )

    def split(self, images: Tensor | RenderedDSprites, labels: Tensor) -> dict[Stage, Split]:
        """Train, val and test: consecutive parts of images (already in a random order) and their labels."""
        n = len(labels)
        self.check_split(n)
        train, val = n - self.val_size - self.test_size, self.val_size
        parts = {"train": slice(0, train), "val": slice(train, train + val), "test": slice(train + val, n)}
        if isinstance(images, RenderedDSprites):
            return {name: RenderedDSprites(labels[part]) for name, part in parts.items()}
        return {name: TensorSplit(images[part], labels[part]) for name, part in parts.items()}

    @abstractmethod
    def images_for(self, classes: Tensor) -> Tensor:
        """The uint8 images (n, c, 64, 64) with factor classes (n, F), on ``classes``' device: the dataset's
        own pixels, before any binarization."""


class DSpritesLike(FactorDataModule):
    """dSprites-like images rendered here (``render_dsprites``, no download): ``size`` of the 737,280 factor
    combinations, drawn without replacement (``seed``), split into train / val / test (17,000 / 1,000 /
    2,000 by default).

    ``size: 737280`` is the whole set: 3 GB of images in memory, or none with ``in_memory: false``, which
    renders every batch when it is served (the per-item path; workers with ``num_workers``). The images are
    already 0 or 255, so binarization changes nothing (``binarize: none``, the default).
    """

    factors = DSPRITES

    def __init__(self, *, size: int = 20_000, val_size: int = 1_000, test_size: int = 2_000, **options) -> None:
        super().__init__(size=size, val_size=val_size, test_size=test_size, **options)

    def load_splits(self) -> dict[Stage, Split]:
        count = self.factors.count
        index = torch.randperm(count, generator=seeded_generator(self.seed, count))[: self.size]
        classes = self.factors.classes(index)
        images = render_dsprites(classes) if self.in_memory else RenderedDSprites(classes)
        return self.split(images, classes)

    def images_for(self, classes: Tensor) -> Tensor:
        return render_dsprites(classes).to(classes.device)


class FactorFile(FactorDataModule):
    """A dataset file read whole or in part: the images' factors come from the file's own labels, and
    ``images_for`` looks rows up by factor index (those held in memory first, then the file).

    root: the folder the file is looked for in (also in ``<root>/<clone>``, the repository's clone).
    """

    dataset: ClassVar[str]  # for messages: "dSprites"
    file: ClassVar[str]
    clone: ClassVar[str]  # the folder a git clone of the dataset's repository makes
    url: ClassVar[str]

    def __init__(self, *, root: str | Path, size: int | None = None, **options) -> None:
        super().__init__(size=size, **options)
        self.root = Path(root)
        self.held: Tensor | None = None  # the images in memory, in the splits' order
        self.position: np.ndarray | None = None  # each file row's position in ``held``, or −1

    def how_to_get(self) -> str:
        return f"download {self.file} from {self.url} into {self.root}"

    def located(self) -> Path:
        folder = locate(self.dataset, [self.root, self.root / self.clone], [self.file], self.how_to_get())
        path = find(folder, self.file)
        assert path is not None
        if path.suffix == ".gz":
            raise DataError(f"{path} is gzipped: unpack it with gunzip {path}")
        return path

    def check_files(self) -> None:
        self.located()

    @abstractmethod
    def read_classes(self, path: Path) -> np.ndarray:
        """Every row's factor classes (N, F) int64, checked to be in range (``table`` checks each is there once)."""

    @abstractmethod
    def read_images(self, path: Path, rows: np.ndarray) -> np.ndarray:
        """The uint8 images (len(rows), c, 64, 64) of the given file rows (any order), as the dataset shows
        them (0..255)."""

    @cached_property
    def table(self) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
        """The file, its rows' classes (N, F), their factor indices in increasing order, and the rows in that
        order."""
        path = self.located()
        classes = self.read_classes(path)
        index = self.factors.index(torch.from_numpy(classes)).numpy()
        order = np.argsort(index, kind="stable")
        index = index[order]
        if len(index) > 1 and (index[1:] == index[:-1]).any():
            twice = self.factors.classes(torch.from_numpy(index[1:][index[1:] == index[:-1]][:1]))[0].tolist()
            raise DataError(
                f"{path} holds the factor classes {twice} more than once: the file is damaged; get it again"
            )
        return path, classes, index, order

    def rows(self, classes: Tensor) -> np.ndarray:
        """The file rows of factor classes (n, F), or a DataError naming the first combination not in the file."""
        path, _, index, order = self.table
        wanted = self.factors.index(classes.cpu()).numpy()
        at = np.minimum(np.searchsorted(index, wanted), len(index) - 1)
        missing = index[at] != wanted
        if missing.any():
            first = classes.cpu()[int(np.argmax(missing))].tolist()
            raise DataError(
                f"{path} holds no image with factor classes {first} ({', '.join(self.factors.names)}): "
                f"the file holds {len(index)} of the {self.factors.count} combinations; get the whole file"
            )
        return order[at]

    def load_splits(self) -> dict[Stage, Split]:
        path, classes, _, _ = self.table
        n = len(classes)
        if self.size is not None and self.size > n:
            raise ConfigError(f"{type(self).__name__} size ({self.size}) is more than the {n} images in {path}")
        rows = torch.randperm(n, generator=seeded_generator(self.seed, n))[: self.size or n].numpy()
        images = torch.from_numpy(self.read_images(path, rows))
        self.held, self.position = images, np.full(n, -1, dtype=np.int64)
        self.position[rows] = np.arange(len(rows))
        return self.split(images, torch.from_numpy(classes[rows]))

    def images_for(self, classes: Tensor) -> Tensor:
        rows = self.rows(self.factors.check(classes))
        images = torch.empty(len(rows), *self.image_shape, dtype=torch.uint8)
        at = self.position[rows] if self.position is not None else np.full(len(rows), -1)
        held = at >= 0
        if held.any():
            assert self.held is not None
            images[torch.from_numpy(held)] = self.held[torch.from_numpy(at[held])]
        if not held.all():
            images[torch.from_numpy(~held)] = torch.from_numpy(self.images_at(rows[~held]))
        return images.to(classes.device)

    def images_at(self, rows: np.ndarray) -> np.ndarray:
        """The images of file rows not held in memory."""
        return self.read_images(self.located(), rows)


class DSprites(FactorFile):
    """The real dSprites (https://github.com/deepmind/dsprites-dataset): 737,280 binary 64×64 images of a
    square, an ellipse or a heart, every combination of 3 shapes × 6 scales × 40 orientations × 32 × 32
    positions once, from ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

    Labels are the file's ``latents_classes`` without the constant colour column: (shape, scale,
    orientation, x, y). The file is a compressed npz: its arrays are read as streams (never unpickled:
    ``metadata`` is a pickle and is not read), keeping only the rows used, so ``size`` images take
    size × 4 kB (all: 3 GB). ``images_for`` of combinations outside them reads the whole file once (3 GB).
    """

    factors = DSPRITES
    dataset = "dSprites"
    file = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    clone = "dsprites-dataset"
    url = "https://github.com/deepmind/dsprites-dataset"

    def __init__(self, *, root: str | Path = "data/dsprites", size: int | None = None, **options) -> None:
        super().__init__(root=root, size=size, **options)
        self.everything: np.ndarray | None = None

    def read_classes(self, path: Path) -> np.ndarray:
        classes = read_npz_rows(path, "latents_classes", None)
        if classes.ndim != 2 or classes.shape[1] != 6 or classes.dtype.kind not in "iu" or not len(classes):
            raise DataError(
                f"{path}: latents_classes has shape {classes.shape} and dtype {classes.dtype}, expected (N, 6) "
                "integers; get the file again"
            )
        classes = classes.astype(np.int64)
        low, high = classes.min(0), classes.max(0)
        if low[0] != 0 or high[0] != 0 or (low[1:] < 0).any() or (high[1:] >= DSPRITES.sizes).any():
            raise DataError(
                f"{path}: latents_classes range from {low.tolist()} to {high.tolist()}, expected 0 to "
                f"{[0, *(s - 1 for s in DSPRITES.sizes)]} (colour, shape, scale, orientation, x, y); get the file again"
            )
        return classes[:, 1:]

    def read_images(self, path: Path, rows: np.ndarray) -> np.ndarray:
        count = len(self.table[1])
        images = read_npz_rows(path, "imgs", rows, shape=(count, SIZE, SIZE))
        if images.size and images.max() > 1:
            raise DataError(f"{path}: imgs holds values up to {images.max()}, expected 0 and 1; get the file again")
        images *= 255  # in place: 0/1 → 0/255
        return rearrange(images, "n h w -> n 1 h w")

    def images_at(self, rows: np.ndarray) -> np.ndarray:
        if self.everything is None:  # a compressed npz cannot be read at random: hold all of it, once
            self.everything = self.read_images(self.located(), np.arange(len(self.table[1])))
        return self.everything[rows]


class Shapes3D(FactorFile):
    """The real 3D Shapes (https://github.com/deepmind/3d-shapes): 480,000 RGB 64×64 images of an object in a
    room, every combination of floor, wall and object hue (10 each), scale (8), shape (4) and orientation
    (15) once, from ``3dshapes.h5`` (read with h5py: pip install 'vae-framework[shapes3d]').

    Labels are factor classes (floor_hue, wall_hue, object_hue, scale, shape, orientation), found from the
    file's label VALUES by the nearest point of each factor's grid (hues 0, 0.1, ..., 0.9; scale
    linspace(0.75, 1.25, 8); shape 0 to 3; orientation linspace(−30, 30, 15)), as tensorflow-datasets ranks
    them, not from the row number: a value off its grid is an error. Only the rows used are read (``size``
    images take size × 12 kB; all: 5.9 GB), and ``images_for`` of other combinations reads just those rows.
    """

    factors = SHAPES3D
    image_shape = (3, 64, 64)
    dataset = "3D Shapes"
    file = "3dshapes.h5"
    clone = "3d-shapes"
    url = "https://github.com/deepmind/3d-shapes"
    GRIDS: ClassVar[tuple[np.ndarray, ...]] = (
        *(np.arange(10) / 10,) * 3,
        np.linspace(0.75, 1.25, 8),
        np.arange(4.0),
        np.linspace(-30, 30, 15),
    )
    BLOCK: ClassVar[int] = 4096  # file rows read at a time

    def __init__(self, *, root: str | Path = "data/3dshapes", size: int | None = None, **options) -> None:
        super().__init__(root=root, size=size, **options)

    def check_files(self) -> None:
        h5py_module()
        super().check_files()

    def read_classes(self, path: Path) -> np.ndarray:
        with open_h5(path) as file:
            images, labels = dataset_in(file, "images", path), dataset_in(file, "labels", path)
            if images.shape[1:] != (SIZE, SIZE, 3) or images.dtype != np.uint8:
                raise DataError(
                    f"{path}: images has shape {images.shape} and dtype {images.dtype}, expected (N, 64, 64, 3) "
                    "uint8; get the file again"
                )
            if labels.shape != (images.shape[0], 6) or images.shape[0] == 0:
                raise DataError(
                    f"{path}: labels has shape {labels.shape} for {images.shape[0]} images, expected (N, 6) with "
                    "N >= 1; get the file again"
                )
            values = read_h5(labels, path, slice(None)).astype(np.float64)
        columns = []
        for name, grid, column in zip(self.factors.names, self.GRIDS, values.T):
            nearest = np.abs(column[:, None] - grid[None, :]).argmin(1)
            off = np.abs(column - grid[nearest]) > 1e-6 * (1 + np.abs(grid[nearest]))
            if off.any():
                raise DataError(
                    f"{path}: label {name} is {column[np.argmax(off)]} in row {np.argmax(off)}, not one of its "
                    f"values {grid.round(4).tolist()}; get the file again"
                )
            columns.append(nearest)
        return np.stack(columns, 1).astype(np.int64)

    def read_images(self, path: Path, rows: np.ndarray) -> np.ndarray:
        images = np.empty((len(rows), 3, SIZE, SIZE), dtype=np.uint8)
        order = np.argsort(rows)  # h5py reads increasing rows
        ordered = rows[order]
        with open_h5(path) as file:
            data = dataset_in(file, "images", path)
            for start in range(0, len(ordered), self.BLOCK):
                block = ordered[start : start + self.BLOCK]
                first, last = int(block[0]), int(block[-1]) + 1
                if 2 * len(block) >= last - first:  # dense: one slab, then pick
                    pixels = read_h5(data, path, slice(first, last))[block - first]
                else:
                    pixels = read_h5(data, path, block)
                images[order[start : start + len(block)]] = rearrange(pixels, "n h w c -> n c h w")
        return images


# --- reading the files ------------------------------------------------------------------------------------


def open_npy(archive: zipfile.ZipFile, key: str, path: Path) -> tuple[IO[bytes], tuple[int, ...], np.dtype]:
    """A stream of one array of an npz file, after its header: the stream, the array's shape and dtype."""
    try:
        stream = archive.open(f"{key}.npy")
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except KeyError as error:
        raise DataError(f"{path} has no array {key!r}: it is not the dSprites file; get it again") from error
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"cannot read {key!r} in {path} ({one_line(error)}): the file is damaged; get it again"
        ) from error
    if fortran_order or dtype.hasobject:
        raise DataError(f"{path}: {key!r} is not a plain C-ordered array ({dtype}): the file is damaged; get it again")
    return stream, shape, dtype


def read_npz_rows(
    path: Path, key: str, rows: np.ndarray | None, *, shape: tuple[int, ...] | None = None, block: int = 8192
) -> np.ndarray:
    """Rows of one array of an npz file (compressed or not), in the order of ``rows`` (None: all), reading it as a
    stream: the rows not asked for are never held, and nothing is unpickled. ``shape``: the array's expected
    shape (and then uint8), else any."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot open {path} ({one_line(error)}): it is not an npz file; get it again") from error
    with archive:
        stream, found, dtype = open_npy(archive, key, path)
        if shape is not None and (found != shape or dtype != np.uint8):
            raise DataError(
                f"{path}: {key!r} has shape {found} and dtype {dtype}, expected {shape} uint8; get it again"
            )
        if not found:
            raise DataError(f"{path}: {key!r} is a single value, not an array of rows; get the file again")
        count, row_bytes = found[0], math.prod(found[1:]) * dtype.itemsize
        rows = np.arange(count) if rows is None else np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows), *found[1:]), dtype=dtype)
        try:
            with stream:
                for start in range(0, count, block):
                    stop = min(count, start + block)
                    low, high = np.searchsorted(ordered, [start, stop])
                    if low == len(ordered):
                        break
                    data = stream.read((stop - start) * row_bytes)
                    if len(data) != (stop - start) * row_bytes:
                        raise DataError(
                            f"{path}: {key!r} ends before its {count} rows: the file is truncated; get it again"
                        )
                    if high > low:
                        chunk = np.frombuffer(data, dtype=dtype).reshape(stop - start, *found[1:])
                        out[order[low:high]] = chunk[ordered[low:high] - start]
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(
                f"cannot read {key!r} in {path} ({one_line(error)}): the file is damaged; get it again"
            ) from error
    return out


def h5py_module():
    try:
        import h5py
    except ImportError as error:
        raise DataError("3D Shapes needs h5py: pip install 'vae-framework[shapes3d]'") from error
    return h5py


def open_h5(path: Path):
    try:
        return h5py_module().File(path, "r")
    except OSError as error:
        raise DataError(f"cannot open {path} ({one_line(error)}): it is not an HDF5 file; get it again") from error


def dataset_in(file, key: str, path: Path):
    data = file.get(key)
    if data is None or not hasattr(data, "shape"):
        raise DataError(f"{path} has no dataset {key!r}: it is not the 3D Shapes file; get it again")
    return data


def read_h5(data, path: Path, where) -> np.ndarray:
    try:
        return data[where]
    except (OSError, ValueError, TypeError) as error:
        raise DataError(
            f"cannot read {data.name!r} in {path} ({one_line(error)}): the file is damaged; get it again"
        ) from error
