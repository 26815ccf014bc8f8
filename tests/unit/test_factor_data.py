"""Data with known generative factors: the factor spaces' enumeration, the dSprites-like renderer (pixel facts
that hold exactly, and a frozen fingerprint), the rendered data module, and the dSprites and 3D Shapes readers
on small files written here in the real formats."""

import hashlib
import itertools
import math
import os
import zipfile
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange

from vae.core.errors import ConfigError, DataError
from vae.data.factors import (
    CENTRES,
    COSINES,
    DSPRITES,
    SCALES,
    SHAPES3D,
    SINES,
    DSprites,
    DSpritesLike,
    FactorSpace,
    RenderedDSprites,
    Shapes3D,
    render_dsprites,
)

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def combos(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def render(*classes) -> torch.Tensor:
    """One image (64, 64) as bool, of classes (shape, scale, orientation, x, y)."""
    return render_dsprites(combos(classes))[0, 0] > 0


# --- factor spaces -------------------------------------------------------------------------------------------


def test_factor_spaces_count_and_enumerate_row_major():
    assert DSPRITES.count == 737_280 and SHAPES3D.count == 480_000
    assert SHAPES3D.bases == (48_000, 4_800, 480, 60, 15, 1)
    assert DSPRITES.bases == (245_760, 40_960, 1_024, 32, 1)
    # dSprites' file order: posY fastest, then posX, orientation, scale, shape
    assert DSPRITES.classes(torch.tensor([0, 1, 32, 1024, 40_960, 245_760])).tolist() == [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
    ]
    assert DSPRITES.classes(torch.tensor([DSPRITES.count - 1])).tolist() == [[2, 5, 39, 31, 31]]
    small = FactorSpace(("a", "b", "c"), (2, 3, 4))
    assert small.classes(torch.arange(small.count)).tolist() == [
        list(p) for p in itertools.product(*map(range, (2, 3, 4)))
    ]


@pytest.mark.parametrize("space", [DSPRITES, SHAPES3D], ids=["dsprites", "3dshapes"])
def test_index_and_classes_are_inverse(space):
    index = torch.randint(space.count, (1000,), generator=torch.Generator().manual_seed(0))
    classes = space.classes(index)
    assert classes.shape == (1000, len(space.sizes)) and classes.dtype == torch.int64
    assert torch.equal(space.index(classes), index)
    sample = space.sample(5000, torch.Generator().manual_seed(1))
    assert torch.equal(space.classes(space.index(sample)), sample)
    for column, size in zip(sample.T, space.sizes):  # every class of every factor drawn, none outside
        assert set(column.tolist()) == set(range(size))
    assert torch.equal(sample, space.sample(5000, torch.Generator().manual_seed(1)))


def test_classes_out_of_range_are_refused_naming_the_factor():
    with pytest.raises(ValueError, match="factor orientation has classes 0 to 39, got values from 40 to 40"):
        DSPRITES.index(combos([0, 0, 40, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        DSPRITES.index(torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="0 to 737279"):
        DSPRITES.classes(torch.tensor([737_280]))


# --- the renderer --------------------------------------------------------------------------------------------


def test_trig_tables_are_exact_and_far_from_their_rounding_boundaries():
    """Cosines and sines are rounded to 10 decimals, so that no libm's last-bit differences change them: every
    unrounded value lies thousands of ulps from a rounding boundary (the worst: 25,710)."""
    step = Decimal(10) ** -10
    for k in range(40):
        for f, table in ((math.cos, COSINES), (math.sin, SINES)):
            value = f(2 * math.pi * k / 39)
            boundary = ((Decimal(value) / step).to_integral_value(ROUND_FLOOR) + Decimal("0.5")) * step
            assert abs(value) < 1e-15 or abs(Decimal(value) - boundary) > 10_000 * Decimal(math.ulp(value))
            assert table[k] == round(value, 10)
        assert COSINES[39 - k] == COSINES[k] and SINES[39 - k] == -SINES[k]  # orientation 2π − θ
    assert (COSINES[0], SINES[0]) == (COSINES[39], SINES[39]) == (1, 0)
    assert SCALES == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    np.testing.assert_allclose(CENTRES, 16 + 32 * np.linspace(0, 1, 32), rtol=0, atol=1e-12)


def reference(classes: torch.Tensor) -> np.ndarray:
    """A straightforward renderer: every pixel of the whole frame, one image at a time, in numpy."""
    pixel = np.arange(64) + 0.5
    images = np.zeros((len(classes), 64, 64), dtype=np.uint8)
    for n, (shape, scale, angle, x, y) in enumerate(classes.tolist()):
        dx = pixel[None, :] - CENTRES[x]
        dy = CENTRES[y] - pixel[:, None]
        c, s, r = COSINES[angle], SINES[angle], 10.0 * SCALES[scale]
        u, v = (c * dx + s * dy) / r, (c * dy - s * dx) / r
        if shape == 0:
            inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
        elif shape == 1:
            inside = u * u + 4 * (v * v) <= 1
        else:
            hx, hy = 1.14 * u, 1.14 * v + 0.118
            a = hx * hx + hy * hy - 1
            inside = a * a * a - (hx * hx) * (hy * hy * hy) <= 0
        images[n] = inside * 255
    return images


def test_rendering_matches_a_whole_frame_reference_bit_for_bit():
    """The renderer draws each shape in the 31×31 pixels around its centre: nothing outside is ever on."""
    extremes = torch.tensor(list(itertools.product(range(3), [5], range(0, 40, 3), [0, 31], [0, 31])))
    classes = torch.cat([DSPRITES.sample(300, torch.Generator().manual_seed(2)), extremes])
    assert np.array_equal(render_dsprites(classes)[:, 0].numpy(), reference(classes))


def test_square_at_orientation_0_is_exactly_its_side_squared():
    for scale in range(6):
        side = 10 + 2 * scale  # 20 · scale pixels: 10, 12, ..., 20
        image = render(0, scale, 0, 0, 0)  # centre (16, 16)
        expected = torch.zeros(64, 64, dtype=torch.bool)
        expected[16 - side // 2 : 16 + side // 2, 16 - side // 2 : 16 + side // 2] = True
        assert torch.equal(image, expected) and image.sum() == side**2


def test_shape_sizes_at_orientation_0():
    def extent(image):  # (rows, columns) spanned
        rows, cols = torch.nonzero(image).T
        return (rows.max() - rows.min() + 1).item(), (cols.max() - cols.min() + 1).item()

    assert extent(render(1, 5, 0, 0, 0)) == (10, 20)  # ellipse 2:1
    assert extent(render(1, 0, 0, 0, 0)) == (4, 10)  # rows 2.5 pixels from the centre touch it only at u = 0
    assert extent(render(2, 5, 0, 0, 0)) == (19, 20) and extent(render(2, 0, 0, 0, 0)) == (9, 10)  # heart: 19.6 tall
    heart = render(2, 5, 0, 0, 0)
    assert heart[25].sum() < heart[10].sum()  # the point down, the lobes up


def test_position_moves_the_shape_by_whole_pixels_at_the_ends():
    """x = 31 puts the centre exactly 32 pixels right of x = 0 (and y = 31 32 pixels down), whatever the shape."""
    for shape, scale, angle in [(0, 5, 7), (1, 3, 13), (2, 5, 22), (2, 0, 31)]:
        origin = render(shape, scale, angle, 0, 0)
        assert torch.equal(render(shape, scale, angle, 31, 0), origin.roll(32, 1))
        assert torch.equal(render(shape, scale, angle, 0, 31), origin.roll(32, 0))
        assert torch.equal(render(shape, scale, angle, 31, 31), origin.roll((32, 32), (0, 1)))


def test_the_centroid_follows_x_in_columns_and_y_in_rows():
    classes = torch.tensor([[shape, 5, 0, x, 9] for shape in (0, 1) for x in range(32)])
    images = render_dsprites(classes)[:, 0].float()
    columns = (images.sum(1) * torch.arange(64)).sum(1) / images.sum((1, 2)) + 0.5  # pixel centres
    expected = torch.tensor(CENTRES * 2, dtype=torch.float32)
    assert (columns - expected).abs().max() <= 0.5 and (columns.view(2, 32).diff(dim=1) > 0).all()
    rows = (images.sum(2) * torch.arange(64)).sum(1) / images.sum((1, 2)) + 0.5
    assert (rows - CENTRES[9]).abs().max() <= 0.5
    classes[:, 3], classes[:, 4] = 9, classes[:, 3].clone()  # now y varies
    images = render_dsprites(classes)[:, 0].float()
    rows = (images.sum(2) * torch.arange(64)).sum(1) / images.sum((1, 2)) + 0.5
    assert (rows - expected).abs().max() <= 0.5 and (rows.view(2, 32).diff(dim=1) > 0).all()


def test_orientations_0_and_2pi_are_the_same_image():
    for shape, scale, x, y in [(0, 5, 3, 7), (1, 2, 30, 1), (2, 4, 15, 16)]:
        assert torch.equal(render(shape, scale, 0, x, y), render(shape, scale, 39, x, y))


def test_orientation_minus_theta_is_the_mirror_image():
    """Every shape is symmetric left to right, so at −θ (class 39 − k) it is the mirror of θ about its centre
    column, exactly (centre column 16 at x = 0: columns j and 31 − j)."""
    for shape, scale in [(0, 5), (1, 5), (2, 5), (2, 1)]:
        images = render_dsprites(torch.tensor([[shape, scale, k, 0, 11] for k in range(40)]))[:, 0]
        assert not images[:, :, 32:].any()
        assert torch.equal(images[:, :, :32].flip(-1), images.flip(0)[:, :, :32])


def test_square_turned_a_quarter_and_ellipse_a_half_are_themselves():
    """About an integer centre, the pixel grid maps to itself under a quarter turn: the square at any
    orientation is unchanged by it, the ellipse by a half turn."""
    squares = render_dsprites(torch.tensor([[0, s, k, 0, 0] for s in (0, 5) for k in range(40)]))[:, 0, :32, :32]
    assert torch.equal(squares.rot90(1, (1, 2)), squares)
    ellipses = render_dsprites(torch.tensor([[1, s, k, 0, 0] for s in (0, 5) for k in range(40)]))[:, 0, :32, :32]
    assert torch.equal(ellipses.rot90(2, (1, 2)), ellipses)
    assert not torch.equal(ellipses.rot90(1, (1, 2)), ellipses)


def test_no_shape_touches_the_border():
    """The largest shapes at the extreme positions, at every orientation, keep off the outermost pixels."""
    classes = torch.tensor(list(itertools.product(range(3), [5], range(40), [0, 31], [0, 31])))
    images = render_dsprites(classes)[:, 0]
    assert not (images[:, [0, 63], :].any() or images[:, :, [0, 63]].any())


def test_images_are_binary_non_empty_and_deterministic():
    classes = torch.cat(
        [
            DSPRITES.sample(2000, torch.Generator().manual_seed(3)),
            torch.tensor(list(itertools.product(range(3), [0], range(40), [0, 17], [5]))),  # the smallest
        ]
    )
    images = render_dsprites(classes)
    assert images.shape == (len(classes), 1, 64, 64) and images.dtype == torch.uint8
    assert set(images.unique().tolist()) == {0, 255}
    assert ((images > 0).sum((1, 2, 3)) >= 30).all()  # the smallest ellipse, 5 × 2.5 · π ≈ 39 pixels, covers 34 to 43
    assert torch.equal(render_dsprites(classes), images)
    order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(4))
    assert torch.equal(render_dsprites(classes[order]), images[order])  # batch composition changes nothing
    assert torch.equal(render_dsprites(classes[:1]), images[:1])


def test_rendering_fingerprint_is_frozen():
    """Any change to the renderer changes these: then say so, and update them."""
    counts = [(render(shape, scale, 0, 0, 0)).sum().item() for shape in range(3) for scale in (0, 5)]
    assert counts == [100, 400, 36, 160, 72, 278]
    every_997th = render_dsprites(DSPRITES.classes(torch.arange(0, DSPRITES.count, 997)))
    assert len(every_997th) == 740
    digest = hashlib.sha256(every_997th.numpy().tobytes()).hexdigest()
    assert digest == "059bd90a60e5b84e0aa3481ad7924b13cfcd8cca0455514539fb53d0024c4797"


# --- the rendered data module ----------------------------------------------------------------------------------


def test_dsprites_like_splits_labels_and_images_for():
    data = DSpritesLike(size=600, val_size=50, test_size=100, seed=5)
    data.setup("fit")
    splits = data.splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 450, "val": 50, "test": 100}
    assert data.image_shape == (1, 64, 64) and data.factors is DSPRITES
    labels = torch.cat([s.labels for s in splits.values()])
    assert labels.shape == (600, 5) and labels.dtype == torch.int64
    assert ((labels >= 0) & (labels < torch.tensor(DSPRITES.sizes))).all()
    assert len(DSPRITES.index(labels).unique()) == 600  # drawn without replacement
    for split in splits.values():
        assert split.images.dtype == torch.uint8 and torch.equal(data.images_for(split.labels), split.images)
    again = DSpritesLike(size=600, val_size=50, test_size=100, seed=5)
    again.setup("fit")
    assert torch.equal(again.splits["val"].labels, splits["val"].labels)
    other = DSpritesLike(size=600, val_size=50, test_size=100, seed=6)
    other.setup("fit")
    assert not torch.equal(other.splits["val"].labels, splits["val"].labels)


def test_dsprites_like_default_split():
    data = DSpritesLike()
    assert (data.size, data.val_size, data.test_size) == (20_000, 1_000, 2_000)


def test_dsprites_like_rendered_per_batch_serves_the_same_images():
    lazy = DSpritesLike(size=300, val_size=40, test_size=20, in_memory=False, batch_size=16)
    lazy.setup("fit")
    assert isinstance(lazy.splits["val"], RenderedDSprites)
    images, labels = next(iter(lazy.val_dataloader()))
    held = DSpritesLike(size=300, val_size=40, test_size=20)
    held.setup("fit")
    assert torch.equal(images, held.splits["val"].images[:16]) and torch.equal(labels, held.splits["val"].labels[:16])


@pytest.mark.parametrize(
    "options,expected",
    [
        ({"size": 0}, "size must be between 1 and 737280"),
        ({"size": 737_281}, "size must be between 1 and 737280"),
        ({"size": 100, "val_size": 50, "test_size": 50}, r"val_size \(50\) \+ test_size \(50\) must be under the 100"),
        ({"val_size": 0}, "val_size must be at least 1"),
    ],
)
def test_dsprites_like_bad_sizes_are_one_line(options, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        DSpritesLike(**options)
    assert "\n" not in str(error.value)


# --- the dSprites file -------------------------------------------------------------------------------------------


def write_dsprites(folder: Path, rows: np.ndarray, **replace) -> dict:
    """The real file's format, for the given rows of the full set: imgs (n, 64, 64) uint8 0/1, latents_classes
    (n, 6) int64 with the colour column 0 first, latents_values (n, 6) float64, metadata a pickled dict."""
    classes = DSPRITES.classes(torch.from_numpy(rows))
    arrays = {
        "imgs": (render_dsprites(classes)[:, 0] // 255).numpy(),
        "latents_classes": np.concatenate([np.zeros((len(rows), 1), dtype=np.int64), classes.numpy()], 1),
        "latents_values": np.zeros((len(rows), 6)),
        "metadata": np.array({"description": "Disentanglement test Sprites dataset."}, dtype=object),
    }
    arrays.update(replace)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / DSPRITES_FILE, **arrays)
    return arrays


def sorted_rows(n: int, count: int = DSPRITES.count, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(count, n, replace=False))


def test_dsprites_reads_the_real_format(tmp_path):
    rows = sorted_rows(300)
    arrays = write_dsprites(tmp_path, rows)
    data = DSprites(root=tmp_path, val_size=20, test_size=30, seed=1)
    data.setup("fit")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 250, "val": 20, "test": 30}
    labels = torch.cat([s.labels for s in data.splits.values()])
    images = torch.cat([s.images for s in data.splits.values()])
    assert labels.dtype == torch.int64 and images.shape == (300, 1, 64, 64)
    in_file = DSPRITES.index(labels).numpy()
    assert sorted(in_file.tolist()) == rows.tolist()
    file_rows = np.searchsorted(rows, in_file)
    assert np.array_equal(images[:, 0].numpy(), arrays["imgs"][file_rows] * 255)
    assert torch.equal(data.images_for(data.splits["val"].labels), data.splits["val"].images)
    assert torch.equal(data.images_for(labels), render_dsprites(labels))


def test_dsprites_subsample_and_images_outside_it(tmp_path):
    rows = sorted_rows(200)
    write_dsprites(tmp_path / "dsprites-dataset", rows)  # a clone of the repository
    data = DSprites(root=tmp_path, size=60, val_size=10, test_size=10, seed=2)
    data.setup("fit")
    assert sum(len(s) for s in data.splits.values()) == 60
    everything = DSPRITES.classes(torch.from_numpy(rows))  # 140 of them not held: read from the file
    assert torch.equal(data.images_for(everything), render_dsprites(everything))
    with pytest.raises(DataError, match=r"holds no image with factor classes \[.*\].*200 of the 737280") as error:
        data.images_for(DSPRITES.classes(torch.tensor([int(np.setdiff1d(np.arange(300), rows)[0])])))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="size .300. is more than the 200 images"):
        DSprites(root=tmp_path, size=300, val_size=10, test_size=10).setup("fit")


def test_dsprites_never_unpickles_the_metadata(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_dsprites(tmp_path, sorted_rows(50), metadata=np.array([Exploit()], dtype=object))
    data = DSprites(root=tmp_path, val_size=5, test_size=5)
    data.setup("fit")
    assert len(data.splits["train"]) == 40 and not marker.exists()


def test_dsprites_missing_is_one_line_with_the_paths_and_the_url(tmp_path):
    with pytest.raises(DataError) as error:
        DSprites(root=tmp_path).check_files()
    message = str(error.value)
    assert "\n" not in message and message.startswith("dSprites not found: looked in ")
    assert str(tmp_path / "dsprites-dataset") in message and DSPRITES_FILE in message
    assert "https://github.com/deepmind/dsprites-dataset" in message


@pytest.mark.parametrize(
    "replace,expected",
    [
        ({"imgs": np.zeros((50, 32, 32), dtype=np.uint8)}, r"'imgs' has shape \(50, 32, 32\)"),
        ({"imgs": np.full((50, 64, 64), 255, dtype=np.uint8)}, "expected 0 and 1"),
        ({"latents_classes": np.ones((50, 6), dtype=np.int64)}, "latents_classes range from"),
        ({"latents_classes": np.zeros((50, 5), dtype=np.int64)}, r"latents_classes has shape \(50, 5\)"),
        ({"latents_classes": np.zeros((50, 6), dtype=np.int64)}, r"factor classes \[0, 0, 0, 0, 0\] more than once"),
        ({"latents_classes": np.zeros((50, 6), dtype=object)}, "not a plain C-ordered array"),
    ],
    ids=["image shape", "0/255 images", "colour", "columns", "duplicates", "pickled classes"],
)
def test_dsprites_wrong_arrays_are_one_line(tmp_path, replace, expected):
    write_dsprites(tmp_path, sorted_rows(50), **replace)
    with pytest.raises(DataError, match=expected) as error:
        DSprites(root=tmp_path, val_size=5, test_size=5).setup("fit")
    assert "\n" not in str(error.value) and DSPRITES_FILE in str(error.value)


def test_dsprites_damaged_files_are_one_line(tmp_path):
    write_dsprites(tmp_path, sorted_rows(50))
    path = tmp_path / DSPRITES_FILE
    whole = path.read_bytes()
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not an npz file"):
        DSprites(root=tmp_path, val_size=5, test_size=5).setup("fit")
    with zipfile.ZipFile(path, "w") as archive:  # a zip without the arrays
        archive.writestr("other.npy", b"")
    with pytest.raises(DataError, match="has no array 'latents_classes'"):
        DSprites(root=tmp_path, val_size=5, test_size=5).setup("fit")
    path.write_bytes(whole[: len(whole) // 2])  # cut short
    with pytest.raises(DataError, match=DSPRITES_FILE) as error:
        DSprites(root=tmp_path, val_size=5, test_size=5).setup("fit")
    assert "\n" not in str(error.value)


# --- the 3D Shapes file -------------------------------------------------------------------------------------------

GRIDS = [np.arange(10) / 10] * 3 + [np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]


def write_shapes3d(folder: Path, rows: np.ndarray, *, seed: int = 0, images=None, labels=None) -> dict:
    """The real file's format: images (n, 64, 64, 3) uint8 RGB and labels (n, 6) float64 factor values."""
    h5py = pytest.importorskip("h5py")
    classes = SHAPES3D.classes(torch.from_numpy(rows)).numpy()
    arrays = {
        "images": np.random.default_rng(seed).integers(0, 256, (len(rows), 64, 64, 3), dtype=np.uint8),
        "labels": np.stack([grid[column] for grid, column in zip(GRIDS, classes.T)], 1),
    }
    arrays.update({k: v for k, v in (("images", images), ("labels", labels)) if v is not None})
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "3dshapes.h5", "w") as file:
        for key, array in arrays.items():
            file.create_dataset(key, data=array)
    return arrays


def test_shapes3d_reads_the_real_format_by_label_values(tmp_path):
    rows = np.random.default_rng(1).permutation(sorted_rows(200, SHAPES3D.count))  # not in the standard order
    arrays = write_shapes3d(tmp_path, rows)
    data = Shapes3D(root=tmp_path, val_size=20, test_size=30, seed=3)
    data.setup("fit")
    assert data.image_shape == (3, 64, 64)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 150, "val": 20, "test": 30}
    labels = torch.cat([s.labels for s in data.splits.values()])
    images = torch.cat([s.images for s in data.splits.values()])
    assert labels.dtype == torch.int64 and images.shape == (200, 3, 64, 64)
    file_rows = np.argsort(rows)[np.searchsorted(np.sort(rows), SHAPES3D.index(labels).numpy())]
    assert np.array_equal(rows[file_rows], SHAPES3D.index(labels).numpy())
    assert np.array_equal(images.numpy(), rearrange(arrays["images"][file_rows], "n h w c -> n c h w"))
    assert torch.equal(data.images_for(data.splits["test"].labels), data.splits["test"].images)


def test_shapes3d_subsample_reads_other_rows_from_the_file(tmp_path):
    rows = sorted_rows(200, SHAPES3D.count, seed=4)
    arrays = write_shapes3d(tmp_path / "3d-shapes", rows)
    data = Shapes3D(root=tmp_path, size=20, val_size=5, test_size=5)
    data.setup("fit")
    assert sum(len(s) for s in data.splits.values()) == 20
    everything = SHAPES3D.classes(torch.from_numpy(rows))
    assert np.array_equal(data.images_for(everything).numpy(), rearrange(arrays["images"], "n h w c -> n c h w"))
    with pytest.raises(DataError, match="holds no image with factor classes"):
        data.images_for(SHAPES3D.classes(torch.tensor([int(np.setdiff1d(np.arange(300), rows)[0])])))


def test_shapes3d_missing_is_one_line_with_the_paths_and_the_url(tmp_path):
    with pytest.raises(DataError) as error:
        Shapes3D(root=tmp_path).check_files()
    message = str(error.value)
    assert "\n" not in message and message.startswith("3D Shapes not found: looked in ")
    assert str(tmp_path / "3d-shapes") in message and "3dshapes.h5" in message
    assert "https://github.com/deepmind/3d-shapes" in message


def test_shapes3d_wrong_files_are_one_line(tmp_path):
    rows = sorted_rows(30, SHAPES3D.count)
    labels = write_shapes3d(tmp_path, rows)["labels"]
    off_grid = labels.copy()
    off_grid[3, 3] = 0.8
    cases = [
        ({"labels": off_grid}, r"label scale is 0.8 in row 3, not one of its values"),
        ({"images": np.zeros((30, 64, 64, 1), dtype=np.uint8)}, r"images has shape \(30, 64, 64, 1\)"),
        ({"labels": labels[:, :5]}, r"labels has shape \(30, 5\) for 30 images"),
        ({"labels": np.concatenate([labels[:1]] * 30)}, "more than once"),
    ]
    for replace, expected in cases:
        write_shapes3d(tmp_path, rows, **replace)
        with pytest.raises(DataError, match=expected) as error:
            Shapes3D(root=tmp_path, val_size=5, test_size=5).setup("fit")
        assert "\n" not in str(error.value) and "3dshapes.h5" in str(error.value)
    (tmp_path / "3dshapes.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        Shapes3D(root=tmp_path, val_size=5, test_size=5).setup("fit")
