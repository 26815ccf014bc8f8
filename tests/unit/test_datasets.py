"""Every dataset read from small files written here in the real on-disk formats; missing and damaged
files; splits, binarization, pixels, and the in-memory fast path against the per-item path."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from vae.core.errors import DataError
from vae.data.base import TensorBatches, TensorSplit, carve
from vae.data.folder import ImageFolder
from vae.data.standard import CIFAR10, MNIST, CelebA, FashionMNIST
from vae.models import ConditionalVAE

FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# --- writing the real formats ------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    """The idx format: 0x00 0x00, type 0x08 (uint8), the number of dimensions, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist(folder: Path, *, n_train: int = 60, n_test: int = 20, compress: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress=compress)
    return arrays


def write_cifar(folder: Path, *, per_batch: int = 12, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        batches[name] = batch
    return batches


# --- MNIST and Fashion-MNIST -------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reads_idx_files_and_carves_a_seeded_validation_split(tmp_path, compress):
    arrays = write_mnist(tmp_path / "mnist", compress=compress)
    data = MNIST(root=tmp_path, val_size=10, seed=3)
    data.setup("fit")
    train, val, test = (data.splits[name] for name in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (50, 10, 20)
    assert train.images.shape == (50, 1, 28, 28) and train.images.dtype == torch.uint8
    torch.testing.assert_close(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"].astype(np.uint8))
    torch.testing.assert_close(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    train_index, val_index = carve(60, 10, 3)
    torch.testing.assert_close(
        val.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"][val_index.numpy()].astype(np.uint8)
    )
    assert set(train_index.tolist()).isdisjoint(val_index.tolist())


def test_mnist_finds_the_layout_torchvision_downloads_to(tmp_path):
    write_mnist(tmp_path / "mnist" / "MNIST" / "raw", compress=False)
    data = MNIST(root=tmp_path, val_size=5)
    data.setup("fit")
    assert len(data.splits["test"]) == 20


def test_missing_files_name_the_dataset_the_paths_and_the_fix(tmp_path):
    with pytest.raises(DataError) as error:
        MNIST(root=tmp_path).setup("fit")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("MNIST not found: looked in ")
    assert str(tmp_path / "mnist") in message and str(tmp_path / "mnist" / "MNIST" / "raw") in message
    assert "set data.download true" in message


def test_fashion_mnist_names_debians_package_when_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNIST, "system_folders", (tmp_path / "usr-share",))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as error:
        FashionMNIST(root=tmp_path).setup("fit")
    assert str(tmp_path / "usr-share") in str(error.value)


def test_download_without_a_connection_is_one_clear_line(tmp_path):
    with pytest.raises(DataError) as error:
        MNIST(root=tmp_path, download=True).setup("fit")
    message = str(error.value)
    assert message.startswith(f"could not download MNIST into {tmp_path / 'mnist'}") and "\n" not in message


@pytest.mark.parametrize(
    "damage,expected",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "damaged"),  # a truncated .gz stream
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"xx")), "truncated"),
        (lambda p: p.write_bytes(gzip.compress(b"PK\x03\x04 this is a zip file")), "not an idx file"),
        (lambda p: p.write_bytes(b"not gzip at all"), "damaged"),
    ],
    ids=["truncated gzip", "short data", "wrong magic", "not gzip"],
)
def test_damaged_idx_files_give_a_clear_error(tmp_path, damage, expected):
    write_mnist(tmp_path / "mnist")
    damage(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=expected) as error:
        MNIST(root=tmp_path, val_size=5).setup("fit")
    assert "train-images-idx3-ubyte.gz" in str(error.value)


@pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM.is_dir() and not os.environ.get("VAE_REQUIRE_FASHION_MNIST"),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debians_package():
    data = FashionMNIST(root="no-such-root")  # found in the system folder
    data.setup("fit")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 55_000, "val": 5_000, "test": 10_000}
    counts = torch.bincount(torch.cat([data.splits["train"].labels, data.splits["val"].labels]))
    assert torch.equal(counts, torch.full((10,), 6000))
    assert 0.25 < data.splits["test"].images.float().mean().item() / 255 < 0.35  # real clothing: ~29 % grey


# --- CIFAR-10 ----------------------------------------------------------------------------------------


def test_cifar10_reads_pickle_batches_channels_first(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10" / "cifar-10-batches-py")
    data = CIFAR10(root=tmp_path, val_size=6)
    data.setup("fit")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 54, "val": 6, "test": 12}
    test = data.splits["test"]
    assert test.images.shape == (12, 3, 32, 32)
    row = batches["test_batch"][b"data"][0]  # 1024 red, then 1024 green, then 1024 blue values, row-major
    torch.testing.assert_close(test.images[0, 1, 2, 3].item(), int(row[1024 + 2 * 32 + 3]))
    assert test.labels.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    write_cifar(tmp_path / "cifar-10")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10" / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DataError, match="data_batch_3.*refusing to load"):
        CIFAR10(root=tmp_path).setup("fit")
    assert not marker.exists()


def test_cifar10_with_wrong_shapes_is_a_clear_error(tmp_path):
    write_cifar(tmp_path / "cifar-10")
    (tmp_path / "cifar-10" / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0] * 4})
    )
    with pytest.raises(DataError, match="test_batch holds data of shape"):
        CIFAR10(root=tmp_path, val_size=6).setup("fit")


# --- CelebA and image folders ------------------------------------------------------------------------


def save(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (c, h, w) tensor as PNG or JPEG, by the file's suffix."""
    array = rearrange(image, "c h w -> h w c").numpy()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path, quality=95)


def face(color_inside: tuple[int, int, int], color_border=(255, 0, 0)) -> torch.Tensor:
    """A 218×178 'aligned face' whose central 148×148 square is one color and the rest another."""
    image = torch.tensor(color_border, dtype=torch.uint8).view(3, 1, 1).repeat(1, 218, 178)
    top, left = (218 - 148) // 2, (178 - 148) // 2
    image[:, top : top + 148, left : left + 148] = torch.tensor(color_inside, dtype=torch.uint8).view(3, 1, 1)
    return image


def write_celeba(home: Path, partition: list[int]) -> Path:
    folder = home / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, code in enumerate(partition, start=1):
        save(face((0, 0, 255)), folder / "img_align_celeba" / f"{i:06d}.jpg")
        lines.append(f"{i:06d}.jpg {code}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_celeba_uses_the_official_partition_and_the_center_crop(tmp_path):
    write_celeba(tmp_path / "celeba", [0, 0, 0, 1, 2, 0, 1])
    data = CelebA(root=tmp_path, num_workers=0)
    data.setup("fit")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4, "val": 2, "test": 1}
    image, label = data.splits["train"][0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8 and label == 0
    # The crop keeps the central 148×148 square (blue) and drops the red border.
    mean = image.float().mean(dim=(1, 2))
    assert mean[2] > 240 and mean[0] < 15, mean
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 64, 64)


def test_celeba_missing_images_and_bad_partition_lines(tmp_path):
    folder = write_celeba(tmp_path / "celeba", [0, 1, 2])
    (folder / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="000002.jpg is listed in list_eval_partition.txt but missing"):
        CelebA(root=tmp_path).setup("fit")
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n000003.jpg train\n")
    with pytest.raises(DataError, match="line 2 is '000003.jpg train'"):
        CelebA(root=tmp_path).setup("fit")


def test_celeba_missing_everywhere(tmp_path):
    with pytest.raises(DataError, match=r"CelebA not found: looked in .*img_align_celeba.zip"):
        CelebA(root=tmp_path).setup("fit")


def write_folder(root: Path, classes: dict[str, int], *, sizes=((40, 30), (25, 50))) -> None:
    """PNG and JPEG files of several sizes, grey and color, in class subfolders ("." = the root)."""
    for name, count in classes.items():
        folder = root if name == "." else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = sizes[i % len(sizes)]
            if i % 2:
                save(torch.randint(0, 256, (1, h, w), dtype=torch.uint8), folder / f"{i}.png")
            else:
                save(torch.randint(0, 256, (3, h, w), dtype=torch.uint8), folder / f"{i}.JPG")


def test_image_folder_with_class_subfolders(tmp_path):
    write_folder(tmp_path / "pets", {"cats": 6, "dogs": 4})
    (tmp_path / "pets" / "notes.txt").write_text("not an image")
    data = ImageFolder(path=tmp_path / "pets", image_size=16, channels=3, val_fraction=0.2, test_fraction=0.1)
    data.setup("fit")
    assert data.classes == ["cats", "dogs"] and data.image_shape == (3, 16, 16)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7, "val": 2, "test": 1}
    labels = torch.cat([torch.stack([data.splits[k][i][1] for i in range(len(data.splits[k]))]) for k in data.splits])
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 4
    image, _ = data.splits["train"][0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8


def test_image_folder_without_subfolders_in_grey(tmp_path):
    write_folder(tmp_path / "flat", {".": 5})
    data = ImageFolder(path=tmp_path / "flat", image_size=8, channels=1, val_fraction=0.2, test_fraction=0.0)
    data.setup("fit")
    assert data.classes == ["."] and data.splits["train"][0][0].shape == (1, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(path=tmp_path / "nowhere").setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds 0 image files"):
        ImageFolder(path=tmp_path / "empty").setup("fit")
    write_folder(tmp_path / "broken", {".": 4})
    (tmp_path / "broken" / "0.JPG").write_bytes(b"\xff\xd8\xff garbage")
    data = ImageFolder(path=tmp_path / "broken", image_size=8, val_fraction=0.25, num_workers=0, in_memory=True)
    with pytest.raises(DataError, match=r"cannot decode the image .*0.JPG"):
        data.setup("fit")


def test_decoding_once_in_memory_matches_the_per_item_path(tmp_path):
    write_folder(tmp_path / "pets", {"cats": 5, "dogs": 5})
    per_item = ImageFolder(path=tmp_path / "pets", image_size=12, num_workers=0)
    in_memory = ImageFolder(path=tmp_path / "pets", image_size=12, num_workers=2, in_memory=True)
    per_item.setup("fit")
    in_memory.setup("fit")
    for name in ("train", "val", "test"):
        split = in_memory.splits[name]
        assert isinstance(split, TensorSplit)
        items = [per_item.splits[name][i] for i in range(len(split))]
        assert torch.equal(split.images, torch.stack([x for x, _ in items]))
        assert torch.equal(split.labels, torch.stack([y for _, y in items]))


# --- pixels, binarization, the fast path -------------------------------------------------------------


def mnist(tmp_path, **kwargs) -> MNIST:
    write_mnist(tmp_path / "mnist", n_train=200, n_test=50)
    data = MNIST(root=tmp_path, val_size=50, batch_size=32, **kwargs)
    data.setup("fit")
    return data


def test_static_binarization_is_a_fixed_bernoulli_sample_of_the_grey_levels(tmp_path):
    grey = mnist(tmp_path / "a")
    binary = mnist(tmp_path / "b", binarize="static")
    again = mnist(tmp_path / "c", binarize="static")
    for name in ("train", "val", "test"):
        images = binary.splits[name].images
        assert set(images.unique().tolist()) <= {0, 255}
        assert torch.equal(images, again.splits[name].images)  # seeded: the same sample every time
    # A Bernoulli sample: its mean matches the grey levels' mean (±4 standard errors over 150·784 pixels).
    p = grey.splits["train"].images.float() / 255
    ones = binary.splits["train"].images.float() / 255
    assert abs(ones.mean() - p.mean()) < 4 * (p * (1 - p)).mean().sqrt() / p.numel() ** 0.5
    # Black stays black and white stays white.
    assert (ones[p == 0] == 0).all() and (ones[p == 1] == 1).all()


def test_dynamic_binarization_resamples_training_batches_and_fixes_validation(tmp_path):
    data = mnist(tmp_path, binarize="dynamic", in_memory=True)
    epoch = {"n": 0}
    split = data.splits["train"]
    train = TensorBatches(split, batch_size=10, shuffle=False, seed=0, epoch=lambda: epoch["n"], dynamic_binarize=True)
    first = next(iter(train))[0]
    assert set(first.unique().tolist()) <= {0, 255}
    assert torch.equal(first, next(iter(train))[0])  # the same epoch and batch: the same draw (a resumed epoch)
    epoch["n"] = 1
    assert not torch.equal(first, next(iter(train))[0])  # the next epoch, the same images: a fresh sample
    draws = []
    for n in range(2, 202):  # each pixel is 1 with its grey level's probability, drawn afresh every epoch
        epoch["n"] = n
        draws.append(next(iter(train))[0].float() / 255)
    grey, frequency = split.images[:10].float() / 255, torch.stack(draws).mean(0)
    assert (frequency.mean() - grey.mean()).abs() < 0.004  # 1.6 million draws: standard error 0.0004
    assert torch.corrcoef(torch.stack([frequency.flatten(), grey.flatten()]))[0, 1] > 0.95  # pixel by pixel
    val = data.splits["val"].images
    assert set(val.unique().tolist()) <= {0, 255}
    assert torch.equal(next(iter(data.val_dataloader()))[0], next(iter(data.val_dataloader()))[0])


def test_pixels_unit_and_uint8(tmp_path):
    unit = mnist(tmp_path / "a")
    images, labels = next(iter(unit.train_dataloader()))
    x, _ = unit.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x * 255, images.float())
    raw = mnist(tmp_path / "b", pixels="uint8")
    images, labels = next(iter(raw.train_dataloader()))
    assert raw.on_after_batch_transfer((images, labels), 0)[0].dtype == torch.uint8


def test_fast_path_serves_every_image_once_per_epoch_in_a_seeded_order():
    split = TensorSplit(torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1), torch.arange(103))
    epoch = {"n": 0}
    loader = TensorBatches(split, batch_size=10, shuffle=True, seed=0, epoch=lambda: epoch["n"])
    first = torch.cat([y for _, y in loader])
    assert len(loader) == 11 and sorted(first.tolist()) == list(range(103))
    assert torch.equal(first, torch.cat([y for _, y in loader]))  # same epoch, same order (resumable)
    epoch["n"] = 1
    assert not torch.equal(first, torch.cat([y for _, y in loader]))
    ordered = TensorBatches(split, batch_size=10, shuffle=False, seed=0, epoch=lambda: 0)
    assert torch.equal(torch.cat([y for _, y in ordered]), torch.arange(103))


def test_fast_path_shards_across_processes():
    split = TensorSplit(torch.zeros(103, 1, 1, 1, dtype=torch.uint8), torch.arange(103))
    shards = [
        torch.cat(
            [
                y
                for _, y in TensorBatches(
                    split, batch_size=8, shuffle=True, seed=0, epoch=lambda: 0, rank=r, world_size=2
                )
            ]
        )
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 51  # equal shares: every process runs as many steps
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    val = [
        TensorBatches(split, batch_size=8, shuffle=False, seed=0, epoch=lambda: 0, rank=r, world_size=2) for r in (0, 1)
    ]
    assert sorted(torch.cat([y for v in val for _, y in v]).tolist()) == list(range(103))  # nothing left out


def test_celeba_attributes_are_each_faces_context_for_a_conditional_model(tmp_path):
    """attributes: true reads list_attr_celeba.txt: each face's 40 attributes as a float vector of 0s and 1s (the
    context of a conditional model: context_size 40); without the file, one line says what is missing."""
    folder = write_celeba(tmp_path / "celeba", [0, 0, 1, 2])
    names = " ".join(f"attribute_{k}" for k in range(40))
    rows = [f"{i:06d}.jpg " + " ".join("1" if (i + k) % 3 == 0 else "-1" for k in range(40)) for i in range(1, 5)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(["4", names, *rows]) + "\n")
    data = CelebA(root=tmp_path, num_workers=0, attributes=True, image_size=16, crop=148)
    assert data.context_size == 40 and CelebA(root=tmp_path).context_size is None
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert labels.shape == (2, 40) and labels.dtype == torch.float32
    expected = torch.tensor([[1.0 if (i + k) % 3 == 0 else 0.0 for k in range(40)] for i in (1, 2)])
    assert torch.equal(labels[labels[:, 2].argsort()], expected[expected[:, 2].argsort()])  # the order is shuffled
    model = ConditionalVAE(image_shape=data.image_shape, context_size=data.context_size, latent_dim=2)
    assert model(images, context=labels).log_px.shape == (2,)  # a conditional model takes them as its y
    (folder / "list_attr_celeba.txt").unlink()
    with pytest.raises(DataError, match="attributes: true needs list_attr_celeba.txt"):
        CelebA(root=tmp_path, attributes=True).setup("fit")
