"""A variational diffusion model through the `vae` commands, in this process, on the embedded digits, as a new user
runs them (no W&B key: the run logs offline by itself, read back from its W&B run file): configs/vdm_quickstart.yaml
trains and logs its three terms like every VAE's terms; `vae evaluate` reports its ELBO averaged over draws with its
standard errors and says, in a word, what a diffusion model has no meaning for; `vae sample` draws with a chosen
number of steps and writes the chain's pictures; `vae encode` refuses in one line; `vae.load` gives the model back;
a resumed run equals an unbroken one and `vae compare` runs the schedules' study (slow)."""

import json
import math
import re

import pytest
import torch
import yaml
from conftest import REPO, new_user, only_run, run, study_rows, unbroken_and_resumed

import vae
from vae.layers.schedules import LearnedSchedule
from vae.models import VDM
from vae.training.metrics_file import read_metrics
from vae.training.tracking import read_history

CONFIG = REPO / "configs" / "vdm_quickstart.yaml"
SHORT = [
    "--trainer.limit_train_batches", "4",
    "--trainer.limit_val_batches", "2",
    "--trainer.log_every_n_steps", "2",
    "--model.model.init_args.sampling_steps", "4",  # the epoch's sample grid: 4 steps, a few images
    "--images.num_samples", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def vdm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vdm")
    env = new_user(root / "home")
    result = run(["fit", "--config", str(CONFIG), *SHORT, "--trainer.max_epochs", "2"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, env, only_run(root), result


def test_a_vdm_logs_its_three_terms_raw_like_every_vae(vdm_run):
    root, _, folder, fitted = vdm_run
    assert "KL estimator: mc (kl/prior closed form, diffusion Monte Carlo over t (stratified) and ε" in fitted.stdout
    (run_file,) = (root / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = read_history(run_file)
    for key in ("val/recon", "val/kl/prior", "val/diffusion", "val/kl", "val/elbo", "val/bits_per_dim"):
        assert len(history.values(key)) == 2, key
    for key in ("train/log_snr/0", "train/log_snr/1", "val/diffusion_variance", "train/diffusion"):
        assert history.values(key), key
    assert not history.values("val/active_units")  # no latent layers: nothing to count
    columns = zip(
        *(history.values(f"val/{k}") for k in ("recon", "kl/prior", "diffusion", "kl", "elbo", "bits_per_dim"))
    )
    for recon, prior, diffusion, kl, elbo, bits in columns:
        assert kl == pytest.approx(prior + diffusion, rel=1e-5) and elbo == pytest.approx(-recon - kl, rel=1e-5)
        assert bits == pytest.approx(-elbo / (784 * math.log(2)), rel=1e-5)
        assert prior > 0 and diffusion > 0 and recon >= 0
    low, high = history.values("train/log_snr/0")[-1], history.values("train/log_snr/1")[-1]
    assert low > high  # the log-SNR falls from t = 0 to t = 1
    for name in ("samples", "schedule", "denoising"):
        assert (folder / "images" / f"{name}_epoch001.png").stat().st_size > 1000
    plotted = run(["plot", str(folder), "--out", str(root / "curves.png")], cwd=root, env=new_user(root / "home"))
    assert "KL per layer or term" in plotted.stdout  # the curves draw kl/prior and diffusion in one panel
    model = vae.load(folder)
    assert isinstance(model, VDM) and isinstance(model.schedule, LearnedSchedule)
    assert int(model.ema_updates) == 8  # one update of the average per training step


def test_vae_evaluate_reports_the_elbo_over_draws_with_its_standard_errors(vdm_run):
    root, env, folder, _ = vdm_run
    evaluated = run(["evaluate", str(folder), "--samples", "3", "--limit", "1", "--images"], cwd=root, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (written,) = (folder / "checkpoints").glob("*.test.k3.json")
    numbers = json.loads(written.read_text())
    assert numbers["likelihood_estimator"] == "elbo" and numbers["inference_gap"] is None
    assert numbers["estimator_se"] > 0 and numbers["bits_per_dim_se"] > 0
    assert set(numbers["kl_terms"]) == {"kl/prior", "diffusion"}
    assert numbers["kl"] == pytest.approx(sum(numbers["kl_terms"].values()), rel=1e-6)
    assert numbers["bits_per_dim"] == pytest.approx(-numbers["log_likelihood"] / (784 * math.log(2)), rel=1e-6)
    out = evaluated.stdout
    assert "log p(x) ≥ ELBO, averaged over K=3 draws" in out and "Monte-Carlo standard error" in out
    assert re.search(r"active units \(Cov_x E_q\[z_d\] > 0\.01\) +n/a \(no latent layers", out)
    assert "reconstructions" in out and "latent scatter skipped: the model has no code of each image" in out


def test_vae_sample_takes_a_number_of_steps_and_draws_the_chain(vdm_run):
    root, env, folder, _ = vdm_run
    drawn = run(["sample", str(folder), "--steps", "3", "--n", "4", "--images", "--out", "grid.png"], cwd=root, env=env)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert "4 samples at temperature 1, 3 steps: " in drawn.stdout
    for name in ("grid.png", "grid.steps.png", "grid.trajectory.png"):
        assert (root / name).stat().st_size > 500, name
    again = run(["sample", str(folder), "--steps", "3", "--n", "4", "--out", "again.png"], cwd=root, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (root / "again.png").read_bytes() == (root / "grid.png").read_bytes()  # seeded: the same draws
    encoded = run(["encode", str(folder), "--out", "codes.npz"], cwd=root, env=env)
    assert encoded.returncode != 0 and not (root / "codes.npz").exists()
    assert "a VDM has no code of an image" in encoded.stderr.strip().splitlines()[-1]
    exported = run(["export", str(folder), "--out", "exported", "--format", "torchscript"], cwd=root, env=env)
    assert exported.returncode != 0 and not (root / "exported").exists()
    assert "no encoder or decoder to export" in exported.stderr.strip().splitlines()[-1]


def test_bad_diffusion_settings_are_one_line_errors(tmp_path):
    env = new_user(tmp_path / "home")
    base = ["fit", "--config", str(CONFIG), *SHORT, "--trainer.max_epochs", "1"]
    cases = {
        "timesteps": (["--model.model.init_args.timesteps", "0"], "timesteps must be a positive number of steps"),
        "grey levels": (["--data.init_args.binarize", "none"], "this VDM models pixels binarized (0 or 1)"),
        "image size": (["--model.model.init_args.network.init_args.channels", "[8, 8, 8, 8]"], "divisible by 8"),
    }
    for name, (args, message) in cases.items():
        result = run([*base, *args], cwd=tmp_path, env=env)
        assert result.returncode != 0, name
        assert message in result.stderr.strip().splitlines()[-1], (name, result.stderr[-2000:])
    vae_run = REPO / "tests" / "data" / "single-v1.ckpt"
    steps = run(["sample", str(vae_run), "--steps", "4", "--out", str(tmp_path / "no.png")], cwd=tmp_path, env=env)
    assert steps.returncode != 0 and "--steps is for a model that samples by a chain" in steps.stderr


@pytest.mark.slow
def test_a_resumed_vdm_run_continues_exactly(tmp_path):
    """Two epochs, stopped after the first and resumed, equal two unbroken epochs, weight for weight, the moving
    average and its step count included (slow: three fits)."""
    fit = ["fit", "--config", str(CONFIG), *SHORT, "--trainer.deterministic", "true"]
    a, b = unbroken_and_resumed(fit, tmp_path)
    assert any(name.startswith("model.average.") for name in a["state_dict"])
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name


@pytest.mark.slow
def test_compare_runs_the_study_of_schedules(tmp_path):
    """Two runs of configs/studies/diffusion.yaml (the learned and the cosine schedule), one short epoch each: the
    table carries their ELBO's terms and bits/dim, and says they have no active units (slow: two fits)."""
    shipped = yaml.safe_load((REPO / "configs" / "studies" / "diffusion.yaml").read_text())
    assert set(shipped["runs"]) == {"learned", "linear", "cosine", "discrete-10"}
    fit = ["--trainer.max_epochs", "1", *SHORT]
    rows, out = study_rows(shipped, ["learned", "cosine"], tmp_path, config=CONFIG, fit=fit)
    assert rows["cosine"]["model"].startswith("VDM(") and "CosineSchedule" in rows["cosine"]["model"]
    for row in rows.values():
        assert float(row["elbo"]) == pytest.approx(-float(row["recon"]) - float(row["kl"]), abs=1e-3)
        assert row["active_units"] == "" and float(row["bits_per_dim"]) > 0
    assert "| n/a |" in (out / "results.md").read_text()


@pytest.mark.slow
def test_a_vdm_trains_under_bf16_mixed_precision(tmp_path):
    """The bf16 path through `vae fit` (the network's layers in bf16, the latents, schedule and terms in float32):
    finite terms that add up as in float32 (slow: bf16 is emulated on a CPU without bf16 instructions)."""
    args = ["fit", "--config", str(CONFIG), *SHORT, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed"]
    result = run(args, cwd=tmp_path, env=new_user(tmp_path / "home"))
    assert result.returncode == 0, result.stderr[-3000:]
    series = read_metrics(only_run(tmp_path) / "metrics.csv")
    (prior,), (diffusion,), (kl,) = ([v for _, v in series[f"val/{k}"]] for k in ("kl/prior", "diffusion", "kl"))
    assert all(math.isfinite(v) for v in (prior, diffusion, kl)) and kl == pytest.approx(prior + diffusion, rel=1e-5)
