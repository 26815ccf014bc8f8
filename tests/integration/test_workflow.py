"""After training: ``vae.load`` and the model's everyday methods, ``vae sample``, ``vae encode``, the run's
``metrics.csv``, ``vae plot`` and ``vae evaluate``'s quality metrics (the commands in this process), on a real
checkpoint from a real short ``vae fit`` run as a new user runs it (no W&B key: W&B offline by itself)."""

import importlib.util
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import REPO, run
from PIL import Image

import vae
from vae.core.errors import ConfigError
from vae.core.pixels import as_unit
from vae.data.embedded import EmbeddedMNIST
from vae.metrics.likelihood import importance_weighted_log_likelihood
from vae.metrics.quality import sample_quality
from vae.training.metrics_file import read_metrics
from vae.training.tracking import read_history, run_file


@pytest.fixture(scope="module")
def shared(trained_run):
    """A run folder of the quick start after 2 short epochs, and the user's folder and environment (conftest)."""
    return trained_run


@pytest.fixture(scope="module")
def digits():
    data = EmbeddedMNIST(val_size=500, test_size=500, binarize="static")
    data.setup("test")
    x, y = next(iter(data.test_dataloader()))
    return as_unit(x[:20]), y[:20]  # binarized digits, uint8 0 and 255, as floats in [0, 1]


def test_load_gives_the_trained_model_in_eval_mode_from_a_run_folder_or_a_checkpoint(shared, digits):
    folder, _, _ = shared
    (best,) = (folder / "checkpoints").glob("best-*.ckpt")
    model = vae.load(folder)
    assert isinstance(model, vae.VAE) and not model.training
    same = vae.load(best)
    for (name, a), (_, b) in zip(model.state_dict().items(), same.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    model.train()  # the everyday methods run in eval mode whatever the caller left, and leave the mode alone
    x, _ = digits
    encoding = model.encode(x)
    assert model.training and not encoding.mean.requires_grad
    moments = model.posterior(x)
    torch.testing.assert_close(encoding.mean, moments.mean, rtol=0, atol=0)
    torch.testing.assert_close(encoding.variance, moments.logvar.exp(), rtol=0, atol=0)
    torch.testing.assert_close(model.decode(encoding.mean), model.reconstruct(x), rtol=0, atol=0)
    images = model.sample(16, temperature=0.8)
    assert images.shape == (16, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_log_likelihood_is_the_log_mean_of_the_importance_weights(shared, digits):
    folder, _, _ = shared
    model = vae.load(folder)
    x = digits[0][:10]
    torch.manual_seed(1)
    log_px = model.log_likelihood(x, samples=150, chunk_size=60)
    torch.manual_seed(1)  # the same draws, in the same chunks: 60, 60, 30
    log_w = torch.cat([model.log_weights(x, k) for k in (60, 60, 30)])
    expected = torch.logsumexp(log_w, dim=0) - math.log(150)  # float32 rounding of sums near −100: rtol 1e-6
    torch.testing.assert_close(log_px, expected, rtol=1e-6, atol=0)
    torch.manual_seed(1)
    torch.testing.assert_close(
        importance_weighted_log_likelihood(model, x, num_samples=150, chunk_size=60), log_px, rtol=0, atol=0
    )  # the evaluation's estimator is the model's
    elbo = (model(x).log_px - model(x).kl).mean()
    assert log_px.mean() > elbo  # the IWAE bound with K = 150 lies above the one-sample ELBO's mean
    with pytest.raises(ConfigError, match="samples and chunk_size must be positive integers"):
        model.log_likelihood(x, samples=0)


@pytest.mark.parametrize("page", ["README.md", "docs/evaluation.md"])
def test_the_trained_model_examples_run_on_a_real_run(shared, page):
    """The README's and the evaluation page's blocks that load a run's model, pointed at a real run."""
    folder, root, _ = shared
    text = (REPO / page).read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "vae.load(" in b]
    assert "runs/vae/<run id>" in code
    namespace: dict = {}
    exec(compile(code.replace("runs/vae/<run id>", str(folder)), page, "exec"), namespace)
    assert namespace["images"].shape == (64, 1, 28, 28)


def test_the_metrics_example_reads_a_real_runs_csv(shared):
    folder, _, _ = shared
    text = (REPO / "docs" / "metrics.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "metrics.csv" in b]
    namespace: dict = {}
    exec(compile(code.replace("runs/vae/<run id>", str(folder)), "docs/metrics.md", "exec"), namespace)
    table = namespace["metrics"]
    assert {"train/kl", "val/elbo"} <= set(table.columns) and list(table.index) == sorted(table.index)


def test_vae_sample_writes_the_grid_seeded_and_refuses_to_overwrite(shared):
    folder, root, env = shared
    out = root / "grid.png"
    result = run(["sample", str(folder), "--n", "16", "--temperature", "0.8", "--out", str(out)], cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"16 samples at temperature 0.8: {out}"
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 4 * 30, 2 + 4 * 30, 3)  # 4 × 4 images of 28 pixels, 2 of padding around each
    model = vae.load(folder)
    torch.manual_seed(0)  # --seed 0
    first = model.sample(16, temperature=0.8)[0, 0]
    expected = (first * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(grid[2:30, 2:30, 0], expected)  # the first tile is the first seeded draw
    before = out.read_bytes()
    again = run(["sample", str(folder), "--out", str(out)], cwd=root, env=env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    assert out.read_bytes() == before


SAMPLE_ERRORS = [
    (["--n", "0"], "--n must be a positive integer"),
    (["--temperature", "-1"], "--temperature must be 0 or more"),
    (["--out", "grid.txt"], "give a path ending in .png"),
    (["--labels", "3"], "--labels is for a conditional model"),
    (["--temprature", "3"], "unrecognized arguments: --temprature 3 (did you mean --temperature?)"),
]


@pytest.mark.parametrize(("args", "message"), SAMPLE_ERRORS, ids=[args[0] for args, _ in SAMPLE_ERRORS])
def test_vae_sample_bad_input_is_one_line(shared, args, message):
    folder, root, env = shared
    result = run(["sample", str(folder), *args], cwd=root, env=env)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, (args, result)


def test_vae_encode_writes_the_posterior_of_every_test_image_with_its_label(shared):
    folder, root, env = shared
    out = root / "latents.npz"
    result = run(["encode", str(folder), "--split", "test", "--out", str(out)], cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    latents = np.load(out)
    assert latents["mean"].shape == latents["variance"].shape == (500, 16) and latents["labels"].shape == (500,)
    assert str(latents["split"]) == "test" and (latents["variance"] > 0).all()
    data = EmbeddedMNIST(val_size=500, test_size=500, binarize="dynamic")  # the run's data: test fixed by its seed
    data.setup("test")
    x, y = next(iter(data.test_dataloader()))
    expected = vae.load(folder).encode(x)  # uint8 pixels, read as k/255
    np.testing.assert_allclose(latents["mean"][: len(x)], expected.mean.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(latents["variance"][: len(x)], expected.variance.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(latents["labels"][: len(y)], y.numpy())
    missing = run(["encode", str(root / "nope")], cwd=root, env=env)
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr and missing.stderr.count("\n") == 1


def test_every_run_writes_its_metrics_to_a_csv_that_holds_what_wandb_holds(shared):
    folder, root, _ = shared
    series = read_metrics(folder / "metrics.csv")
    history = read_history(run_file(root / "runs", folder.name))
    for key in ("train/recon", "train/kl", "train/elbo", "train/kl_weight", "val/elbo", "val/kl"):
        steps, values = history.curve(key)
        assert len(steps) >= 2, key
        assert series[key] == [(int(s), pytest.approx(v, rel=1e-6)) for s, v in zip(steps, values)], key
    assert (folder / "curves.png").stat().st_size > 10_000  # drawn by the fit report


def test_vae_plot_draws_the_curves_from_the_csv_or_the_wandb_file(shared):
    folder, root, env = shared
    out = root / "curves.png"
    result = run(["plot", str(folder), "--out", str(out)], cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"training curves (reconstruction, KL, raw, ELBO, KL weight): {out}"
    assert Image.open(out).size[0] > 1000
    refused = run(["plot", str(folder), "--out", str(out)], cwd=root, env=env)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and refused.stderr.count("\n") == 1
    wandb_file = run_file(root / "runs", folder.name)
    from_wandb = run(["plot", str(wandb_file), "--out", str(root / "from_wandb.png")], cwd=root, env=env)
    assert from_wandb.returncode == 0, from_wandb.stderr
    missing = run(["plot", str(root)], cwd=root, env=env)
    assert missing.returncode == 2 and "has no metrics.csv" in missing.stderr and missing.stderr.count("\n") == 1


def test_vae_evaluate_adds_reconstruction_metrics_sample_quality_and_the_latent_scatter(shared, tmp_path):
    folder, root, env = shared
    (best,) = (folder / "checkpoints").glob("best-*.ckpt")
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14: TorchScript is deprecated, and still works
        torch.jit.save(torch.jit.script(features), tmp_path / "features.pt")
    args = ["evaluate", str(best), "--samples", "5", "--limit", "2", "--images", "--no-wandb", "--out", str(tmp_path)]
    quality = ["--quality", "--quality-samples", "150", "--features", str(tmp_path / "features.pt")]
    result = run([*args, *quality, "--embedding", "pca"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = tmp_path.glob("*.json")
    numbers = json.loads(written.read_text())
    model = vae.load(best)
    data = EmbeddedMNIST(val_size=500, test_size=500, binarize="dynamic")
    data.setup("test")
    x = as_unit(data.splits["test"].images[:200])  # --limit 2 batches of 100
    errors = (model.reconstruct(x) - x).square()
    assert numbers["reconstruction"]["mse"] == pytest.approx(float(errors.mean()), rel=1e-5)
    psnr = (10 * torch.log10(1 / errors.mean(dim=(1, 2, 3)))).mean()  # per image, then the mean
    assert numbers["reconstruction"]["psnr"] == pytest.approx(float(psnr), rel=1e-5)
    assert 0 < numbers["reconstruction"]["ssim"] < 1
    grey = EmbeddedMNIST(val_size=500, test_size=500, binarize="none", batch_size=100)  # real images: grey levels
    grey.setup("test")
    expected = sample_quality(model, grey.loader("test", shuffle=False), num_samples=150, features=features)
    assert numbers["quality"] == pytest.approx(expected.as_dict(), rel=1e-6)
    for line in ("reconstructions: MSE, PSNR, SSIM", "samples: fid", "samples: precision"):
        assert line in result.stdout
    (pictures,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    scatter = Image.open(pictures / "latent_scatter.png")
    assert scatter.size[0] > 400 and len(np.unique(np.asarray(scatter))) > 10
    assert not (pictures / "manifold.png").exists()  # a 16-D latent has no manifold grid


def test_bad_quality_settings_are_one_line_errors_before_any_work(shared, tmp_path):
    folder, root, env = shared
    (best,) = (folder / "checkpoints").glob("best-*.ckpt")
    base = ["evaluate", str(best), "--no-wandb", "--quality"]
    missing = run([*base, "--features", str(tmp_path / "nope.pt")], cwd=root, env=env)
    assert missing.returncode == 2 and "no such file" in missing.stderr and missing.stderr.count("\n") == 1
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    junk = run([*base, "--features", str(tmp_path / "junk.pt")], cwd=root, env=env)
    assert junk.returncode == 2 and "not a TorchScript file" in junk.stderr and junk.stderr.count("\n") == 1
    weights = run([*base, "--no-download"], cwd=root, env={**env, "TORCH_HOME": str(tmp_path / "torch")})
    advice = "--inception-weights" if importlib.util.find_spec("torch_fidelity") else "pip install torch-fidelity"
    assert weights.returncode == 2 and advice in weights.stderr and weights.stderr.count("\n") == 1
    assert not list(best.parent.glob("*.json"))  # nothing computed, nothing written
