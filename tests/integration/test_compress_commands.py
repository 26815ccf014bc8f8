"""`vae compress` and `vae decompress` in this process, as a new user runs them (no W&B key), on the quick start's run
(Bernoulli, dynamically binarized digits: the test split binarized once with the data's seed): the split, a folder of
PNG files and a .npz come back bit for bit, with the numbers the command prints; damaged files, another model, images
of another shape or kind and a continuous likelihood are one-line errors that leave nothing behind."""

import json

import numpy as np
import pytest
from conftest import QUICKSTART, new_user, run
from PIL import Image

import vae
from vae.commands.compress import split_images, values_of
from vae.training.checkpoint_io import checkpoint_of


@pytest.fixture(scope="module")
def split_values(trained_run):
    folder, _, _ = trained_run
    checkpoint = checkpoint_of(folder)
    values, scale = values_of(vae.load(checkpoint), split_images(checkpoint, None, "test", 40))
    return values, scale


def refused(result, words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr[-2000:]


def test_a_split_comes_back_bit_for_bit_with_the_numbers_printed(trained_run, split_values, tmp_path):
    folder, root, env = trained_run
    out, numbers = tmp_path / "digits.vae", tmp_path / "numbers.json"
    args = ["compress", str(folder), "--split", "test", "--limit", "40", "--out", str(out), "--json", str(numbers)]
    done = run(args, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for words in ("compressed 40 images (1×28×28, 2 levels) from split test", "model −ELBO", "coded stack", "lzma"):
        assert words in done.stdout
    found = json.loads(numbers.read_text())
    bpd, per = found["bits_per_dim"], found["per_image_bits"]
    assert found["file_bytes"] == out.stat().st_size
    assert bpd["file"] == pytest.approx(8 * out.stat().st_size / (40 * 784))
    assert bpd["coded"] == pytest.approx(sum(per["coded"]) / (40 * 784))
    for i in range(40):  # each image: pixels + latents − bits back
        assert per["coded"][i] == pytest.approx(per["pixels"][i] + per["latents"][i] - per["bits_back"][i])
    # The stack is the images' coded −ELBO plus the initial bits, to within a word per batch.
    assert bpd["stack"] * 40 * 784 == pytest.approx(sum(per["coded"]) + found["initial_bits"], abs=32 * 8)
    assert set(bpd) >= {"gzip", "bz2", "lzma", "png", "neg_elbo", "initial"}
    # Against the model's own −ELBO on the same images: the stack within 2 % of it plus the initial bits.
    assert 0.98 * bpd["neg_elbo"] <= bpd["stack"] <= 1.02 * bpd["neg_elbo"] + bpd["initial"]

    decoded = run(["decompress", str(out), "--out", str(tmp_path / "digits.npz")], cwd=root, env=env)
    assert decoded.returncode == 0, decoded.stderr[-3000:]
    assert "decompressed 40 images" in decoded.stdout
    values, scale = split_values
    with np.load(tmp_path / "digits.npz") as file:
        assert np.array_equal(file["images"], (values * scale).numpy().astype(np.uint8))
    pngs = run(["decompress", str(out), "--out", str(tmp_path / "pngs")], cwd=root, env=env)
    assert pngs.returncode == 0, pngs.stderr[-3000:]
    first = np.asarray(Image.open(tmp_path / "pngs" / "00000.png").convert("L"))
    assert np.array_equal(first, values[0, 0].numpy() * 255)  # a 1-bit PNG of the binary digit


def test_a_folder_of_images_and_a_npz_come_back_as_they_were(trained_run, split_values, tmp_path):
    folder, root, env = trained_run
    values, _ = split_values
    images = tmp_path / "in"
    (images / "shirts").mkdir(parents=True)
    for i in range(3):
        Image.fromarray((values[i, 0].numpy() * 255).astype(np.uint8), mode="L").save(images / "shirts" / f"{i}.png")
    Image.fromarray((values[3, 0].numpy() * 255).astype(np.uint8)).convert("1").save(images / "one-bit.png")
    done = run(["compress", str(folder), "--images", str(images), "--out", str(tmp_path / "f.vae")], cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    back = run(["decompress", str(tmp_path / "f.vae"), "--out", str(tmp_path / "out")], cwd=root, env=env)
    assert back.returncode == 0, back.stderr[-3000:]
    for name in ("shirts/0.png", "shirts/2.png", "one-bit.png"):
        before = np.asarray(Image.open(images / name).convert("L"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / name).convert("L")), before), name

    array = values[:5, 0].numpy().astype(np.uint8)  # (n, h, w) of 0 and 1
    np.savez(tmp_path / "in.npz", images=array)
    args = ["compress", str(folder), "--images", str(tmp_path / "in.npz"), "--out", str(tmp_path / "n.vae")]
    done = run(args, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    back = run(["decompress", str(tmp_path / "n.vae"), "--out", str(tmp_path / "out.npz")], cwd=root, env=env)
    assert back.returncode == 0, back.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as file:
        assert file["images"].dtype == np.uint8 and np.array_equal(file["images"], array)


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """A quick-start run with a Gaussian likelihood (continuous): one step."""
    root = tmp_path_factory.mktemp("gaussian")
    args = [
        "fit", "--config", str(QUICKSTART), "--model.model.init_args.likelihood", "vae.layers.likelihoods.Gaussian",
        "--data.init_args.binarize", "none", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
    ]  # fmt: skip
    done = run(args, cwd=root, env=new_user(root / "home"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_bad_input_is_one_line_and_leaves_nothing(trained_run, one_epoch, gaussian_run, split_values, tmp_path):
    folder, root, env = trained_run
    out = tmp_path / "d.vae"
    assert run(["compress", str(folder), "--limit", "6", "--out", str(out)], cwd=root, env=env).returncode == 0
    data = out.read_bytes()

    def decompress(path, *more):
        target = tmp_path / "never.npz"
        result = run(["decompress", str(path), "--out", str(target), *more], cwd=root, env=env)
        assert not target.exists() and not list(tmp_path.glob(".never*"))
        return result

    (tmp_path / "cut.vae").write_bytes(data[: len(data) // 2])
    refused(decompress(tmp_path / "cut.vae"), "damaged or cut short")
    flipped = bytearray(data)
    flipped[len(data) - 40] ^= 0x01
    (tmp_path / "flipped.vae").write_bytes(bytes(flipped))
    refused(decompress(tmp_path / "flipped.vae"), "damaged or cut short")
    (other,) = (one_epoch / "runs" / "vae").iterdir()
    refused(decompress(out, "--run", str(other)), "was compressed with the model")

    def compress(*args):
        target = tmp_path / "never.vae"
        result = run(["compress", *args, "--out", str(target)], cwd=root, env=env)
        assert not target.exists() and not list(tmp_path.glob(".never*"))
        return result

    np.savez(tmp_path / "big.npz", images=np.zeros((2, 1, 32, 32), dtype=np.uint8))
    refused(compress(str(folder), "--images", str(tmp_path / "big.npz")), "the images are 1×32×32")
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 1, 28, 28), dtype=np.uint8))
    refused(compress(str(folder), "--images", str(tmp_path / "empty.npz")), "no images to compress")
    np.savez(tmp_path / "grey.npz", images=np.full((2, 1, 28, 28), 128, dtype=np.uint8))
    refused(compress(str(folder), "--images", str(tmp_path / "grey.npz")), "binarize them")
    refused(compress(str(gaussian_run / "runs")), "continuous")
    refused(run(["compress", str(folder), "--out", str(out)], cwd=root, env=env), "exists")
    assert out.read_bytes() == data  # not overwritten
