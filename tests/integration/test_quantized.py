"""VQ-VAE and its prior through the `vae` commands, in this process, on the embedded digits: the shipped configs train
(short), log their raw terms, the rate n·log K and the codebook's usage over the split (metrics.csv and the W&B run
file); the prior's config trains on the VQ run and its run samples, evaluates (bits/dim from the ELBO, exact for a
one-hot posterior), encodes integer codes and exports; a resumed run continues the EMA codebook and its restarts
exactly as an unbroken one; and a prior pointed at a missing run, a run that is not a VQ model, or a first stage whose
weights changed is refused in one line, with nothing written; and `vae compare` runs a study of quantizers."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, offline, only_run, run, study_rows, unbroken_and_resumed
from exported import ONNX_EXPORT, assert_same, run_exported

import vae
from vae.core.errors import ConfigError
from vae.core.pixels import as_unit
from vae.data.embedded import EmbeddedMNIST
from vae.training.tracking import read_history

VQ = str(REPO / "configs" / "vq_quickstart.yaml")
PRIOR = str(REPO / "configs" / "vq_prior_quickstart.yaml")
SHORT = ["--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "2"]
SMALL_PRIOR = [
    "--model.model.init_args.width",
    "32",
    "--model.model.init_args.layers",
    "1",
    "--model.optimizer.init_args.lr",
    "0.01",
]
RESTARTING = ["--model.model.init_args.quantizer.init_args.restart_after", "2"]


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """configs/vq_quickstart.yaml for two short epochs (restarting codes unused for 2 steps), logged to W&B offline."""
    root = tmp_path_factory.mktemp("vq")
    env = offline(root)
    result = run(["fit", "--config", VQ, *SHORT, *RESTARTING, "--trainer.max_epochs", "2"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, env, only_run(root), result


@pytest.fixture(scope="module")
def prior_run(vq_run, tmp_path_factory):
    """configs/vq_prior_quickstart.yaml on that run, one short epoch."""
    _, _, first_stage, _ = vq_run
    root = tmp_path_factory.mktemp("prior")
    env = offline(root)
    args = ["fit", "--config", PRIOR, "--model.model.init_args.first_stage", str(first_stage), *SMALL_PRIOR]
    result = run([*args, *SHORT, "--trainer.max_epochs", "1"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, env, only_run(root)


def metric_rows(folder) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    for line in (folder / "metrics.csv").read_text().splitlines()[1:]:
        _, name, value = line.split(",")
        rows.setdefault(name, []).append(float(value))
    return rows


def test_a_vq_run_logs_its_raw_terms_the_rate_and_the_codebook_usage(vq_run):
    root, _, folder, result = vq_run
    metrics = metric_rows(folder)
    rate = 49 * math.log(256)
    assert all(value == pytest.approx(rate, rel=1e-6) for value in metrics["val/kl"] + metrics["train/kl"])
    for recon, kl, elbo in zip(metrics["val/recon"], metrics["val/kl"], metrics["val/elbo"]):
        assert elbo == pytest.approx(-recon - kl, rel=1e-6)
    assert set(metrics["train/commitment_weight"]) == {0.25} and min(metrics["train/commitment"]) >= 0
    for usage, unused in zip(metrics["val/codebook/usage"], metrics["val/codebook/unused"]):
        assert 0 < usage <= 1 and unused == pytest.approx(256 * (1 - usage))
    assert 1 <= min(metrics["val/codebook/perplexity"]) and max(metrics["val/codebook/perplexity"]) <= 256
    assert metrics["train/codes_restarted"][-1] > 0  # codes unused for 2 steps were restarted
    (run_file,) = (root / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = read_history(run_file).series
    assert [value for _, value in history["val/codebook/usage"]] == pytest.approx(metrics["val/codebook/usage"])
    assert "train/commitment" in history and "train/commitment_weight" in history
    assert sorted(p.name for p in (folder / "images").glob("code_usage_*.png"))  # the heat map, with the pictures
    assert "closed form: −log p(codes)" in result.stdout


def test_the_prior_trains_on_the_vq_run_samples_and_evaluates_in_bits_per_dim(vq_run, prior_run):
    first_stage = vq_run[2]
    root, env, folder = prior_run
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    init = checkpoint["hyper_parameters"]["model"]["init_args"]
    assert Path(init["first_stage"]).parent.parent == first_stage  # the checkpoint file it was trained on
    assert len(init["fingerprint"]) == 16
    assert init["first_stage_model"]["class_path"] == "vae.models.quantized.VQVAE"
    # The frozen first stage is the VQ run's, weight for weight.
    vq_model, prior = vae.load(first_stage), vae.load(folder)
    for name, tensor in vq_model.state_dict().items():
        assert torch.equal(prior.first_stage.state_dict()[name], tensor), name
    metrics = metric_rows(folder)
    assert metrics["val/kl"][-1] < 49 * math.log(256)  # the learned prior's rate is below the uniform prior's

    sampled = run(["sample", str(folder), "--n", "9", "--temperature", "0.8", "--out", "grid.png"], cwd=root, env=env)
    assert sampled.returncode == 0 and (root / "grid.png").is_file(), sampled.stderr[-3000:]
    refused = run(["sample", str(first_stage), "--out", "nothing.png"], cwd=root, env=env)
    assert refused.returncode != 0 and not (root / "nothing.png").exists()
    assert refused.stderr.strip().splitlines()[-1].startswith("error: a VQ model needs a prior over its codes")

    evaluated = run(["evaluate", str(folder), "--limit", "2", "--images", "--no-wandb"], cwd=root, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (written,) = (folder / "checkpoints").glob("*.test.k5000.json")
    numbers = json.loads(written.read_text())
    assert numbers["num_samples"] == 1  # a one-hot posterior: every importance sample is the same code
    assert numbers["log_likelihood"] == pytest.approx(numbers["elbo"], rel=1e-6)
    assert numbers["inference_gap"] is None  # a deterministic encoder: its estimate is the ELBO itself
    assert numbers["bits_per_dim"] == pytest.approx(-numbers["elbo"] / (784 * math.log(2)), rel=1e-6)
    assert 0 < numbers["model_metrics"]["codebook/usage"] <= 1
    assert numbers["reconstruction"]["psnr"] > 0 and "codebook/usage" in evaluated.stdout


def test_the_codes_encode_as_integers_and_export_to_both_formats(prior_run):
    root, env, folder = prior_run
    encoded = run(["encode", str(folder), "--out", "codes.npz", "--limit", "1"], cwd=root, env=env)
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    codes = np.load(root / "codes.npz")["mean"]
    assert codes.dtype == np.int64 and codes.shape[1] == 49 and 0 <= codes.min() and codes.max() < 256
    formats = ["torchscript", "onnx"] if ONNX_EXPORT else ["torchscript"]
    exported = run(["export", str(folder), "--out", "exported", "--format", *formats], cwd=root, env=env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    manifest = json.loads((root / "exported" / "export.json").read_text())
    assert manifest["code"] == "integer indices" and manifest["code_vocabulary"] == 256
    model = vae.load(folder)
    data = EmbeddedMNIST(batch_size=7, binarize="static")
    data.setup("test")
    x = as_unit(next(iter(data.test_dataloader()))[0])
    for suffix in [".pt", ".onnx"][: len(formats)]:
        indices = run_exported(root / "exported" / f"encoder{suffix}", x)[0]
        assert torch.equal(indices, model.encode(x).mean)
        assert_same(run_exported(root / "exported" / f"decoder{suffix}", indices), (model.decode(indices),))


def test_a_resumed_vq_run_continues_its_codebook_exactly(tmp_path):
    """Two epochs straight, and one epoch then a resume to two: the same EMA statistics, codebook, unused-step
    counts, restarts and weights, bit for bit."""
    one, two = unbroken_and_resumed(["fit", "--config", VQ, *SHORT, *RESTARTING], tmp_path)
    assert one["global_step"] == two["global_step"] == 8
    assert int(one["state_dict"]["model.latent.quantizer.restarts"]) > 0  # the resumed part restarted codes too
    for name, tensor in one["state_dict"].items():
        assert torch.equal(two["state_dict"][name], tensor), name


def test_a_prior_on_a_missing_run_a_vae_run_or_a_changed_first_stage_is_refused_in_one_line(
    vq_run, prior_run, one_epoch, tmp_path
):
    env = offline(tmp_path)
    prior = ["fit", "--config", PRIOR, *SMALL_PRIOR, *SHORT, "--trainer.max_epochs", "1"]
    cases = {
        "missing": (str(tmp_path / "no-such-run"), "not found"),
        "a VAE run": (str(only_run(one_epoch)), "is not a VQ model (VAE)"),
    }
    for first_stage, says in cases.values():
        result = run([*prior, "--model.model.init_args.first_stage", first_stage], cwd=tmp_path, env=env)
        assert result.returncode != 0
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error:") and says in line, line
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "runs").exists()  # nothing written

    # The prior's run loads while its first stage is as it was trained on; once that run's weights change, no more.
    first_stage = vq_run[2]
    _, _, prior_folder = prior_run
    moved = tmp_path / "prior"
    shutil.copytree(prior_folder, moved)
    ok = run(["sample", str(moved), "--n", "4", "--out", "ok.png"], cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    prior = vae.load(moved)  # first-stage weights other than the fingerprint names never load into it
    state = prior.state_dict()
    state["first_stage.latent.quantizer.codebook"] += 1e-3
    with pytest.raises(ConfigError, match="are not the ones this prior was built on"):
        prior.load_state_dict(state)
    backup = tmp_path / "backup"
    shutil.copytree(first_stage, backup)
    try:
        for path in (first_stage / "checkpoints").glob("*.ckpt"):
            checkpoint = torch.load(path, weights_only=True)
            checkpoint["state_dict"]["model.latent.quantizer.codebook"] += 1e-3
            torch.save(checkpoint, path)
        refused = run(["sample", str(moved), "--n", "4", "--out", "no.png"], cwd=tmp_path, env=env)
        # Resumed from its own config, the prior would be built on the changed first stage: refused too.
        config, last = str(moved / "config.yaml"), str(moved / "checkpoints" / "last.ckpt")
        resume = ["fit", "--config", config, "--trainer.max_epochs", "2", "--ckpt_path", last]
        resumed = run(resume, cwd=tmp_path, env=env)
    finally:
        shutil.rmtree(first_stage)
        shutil.copytree(backup, first_stage)
    assert refused.returncode != 0 and not (tmp_path / "no.png").exists()
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the first stage at") and "has changed since this prior was trained" in line, line
    assert resumed.returncode != 0 and "Traceback" not in resumed.stderr
    line = resumed.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model.model.fingerprint cannot change when resuming"), line


@pytest.mark.slow
def test_compare_runs_a_study_of_quantizers_and_tables_their_codebook_usage(tmp_path):
    """Two runs of configs/studies/quantizers.yaml (FSQ and the fixed VQ), one short epoch each, as `vae compare`
    starts them: the table carries each run's model and its codebook usage, perplexity and unused codes (slow: the
    study machinery is in the default suite through tests/integration/test_compare.py, a model's own split metrics
    through this file's training tests)."""
    shipped = yaml.safe_load((REPO / "configs" / "studies" / "quantizers.yaml").read_text())
    fit = ["--trainer.max_epochs", "1", *SHORT]
    rows, out = study_rows(
        shipped, ["vq-256", "fsq-1000"], tmp_path, config=REPO / "configs" / "vq_quickstart.yaml", fit=fit
    )
    assert rows["fsq-1000"]["model"] == "VQVAE(quantizer=FSQ(levels=[8, 5, 5, 5]))"
    for name, codes in (("vq-256", 256), ("fsq-1000", 1000)):
        usage, unused = float(rows[name]["codebook/usage"]), float(rows[name]["codebook/unused"])
        assert 0 < usage <= 1 and unused == pytest.approx(codes * (1 - usage), abs=codes * 5e-5)  # 4 decimals
        assert float(rows[name]["kl"]) == pytest.approx(49 * math.log(codes), rel=1e-5)
    table = (out / "results.md").read_text()
    assert "| codebook/usage |" in table and (out / "model_metrics.png").is_file()


def test_a_resumed_prior_run_keeps_its_first_stage_and_goes_on(vq_run, prior_run, tmp_path):
    """The prior's run resumed for a second epoch from its own config: the frozen first stage is still the VQ run's,
    weight for weight (its EMA codebook never moved), the fingerprint is unchanged, and the steps go on."""
    first_stage = vq_run[2]
    root, env, folder = prior_run
    copy = tmp_path / "prior"
    shutil.copytree(root / "runs", copy / "runs")
    run_folder = copy / "runs" / "vae" / folder.name
    before = torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)
    args = ["fit", "--config", str(run_folder / "config.yaml"), "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    resumed = run(args, cwd=copy, env=offline(copy))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 2 * before["global_step"]
    init = after["hyper_parameters"]["model"]["init_args"]
    assert init["fingerprint"] == before["hyper_parameters"]["model"]["init_args"]["fingerprint"]
    vq_state = vae.load(first_stage).state_dict()
    for name, tensor in vq_state.items():
        assert torch.equal(after["state_dict"][f"model.first_stage.{name}"], tensor), name
    head = "model.network.head.weight"
    assert not torch.equal(after["state_dict"][head], before["state_dict"][head])  # the prior itself trained on
