"""Posterior families and samplers through the `vae` commands, in this process, on the embedded digits, as a new user
runs them (no W&B key): the shipped posterior configs train; a flow posterior's run reports its KL estimator (Monte
Carlo, log q carried), evaluates with its inference gap and says why it has no KL per dimension, encodes its stated
posterior mean, exports, loads with ``vae.load`` and resumes; `vae sample --sampler gmm|flow` fits a sampler to the
training codes once, saves it and reuses it; and `vae compare` runs a study across posteriors."""

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import QUICKSTART, REPO, new_user, only_run, run, study_rows, unbroken_and_resumed
from exported import assert_same, run_exported

import vae
from vae.data.embedded import EmbeddedMNIST
from vae.layers.flows import IAF

POSTERIORS = REPO / "configs" / "posteriors"
SHORT = ["--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "2"]


@pytest.fixture(scope="module")
def iaf_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("iaf")
    env = new_user(root / "home")
    config = ["--config", str(QUICKSTART), "--config", str(POSTERIORS / "iaf.yaml")]
    result = run(["fit", *config, *SHORT, "--trainer.max_epochs", "2"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, env, only_run(root), result


def test_a_flow_posterior_trains_evaluates_with_its_inference_gap_and_encodes_its_stated_mean(iaf_run):
    root, env, folder, fitted = iaf_run
    assert "KL estimator: mc (Monte Carlo, 1 sample(s), log q(z|x) carried through the flow)" in fitted.stdout
    model = vae.load(folder)
    assert isinstance(model.latent.posterior, IAF)
    evaluated = run(["evaluate", str(folder), "--samples", "50", "--limit", "1"], cwd=root, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (written,) = (folder / "checkpoints").glob("*.test.k50.json")
    numbers = json.loads(written.read_text())
    assert numbers["inference_gap"] == pytest.approx(numbers["log_likelihood"] - numbers["elbo"], abs=1e-6)
    assert numbers["kl_per_dim"] is None
    assert "n/a (undefined for a correlated posterior (IAF of 2 step(s)))" in evaluated.stdout
    assert "inference gap" in evaluated.stdout

    encoded = run(["encode", str(folder), "--out", "codes.npz", "--limit", "1"], cwd=root, env=env)
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    codes = np.load(root / "codes.npz")
    data = EmbeddedMNIST(val_size=500, test_size=500, binarize="dynamic", batch_size=len(codes["mean"]))
    data.setup("test")
    images, _ = next(iter(data.loader("test", shuffle=False)))
    expected = model.encode(images).mean  # the flow at the Gaussian's mean
    assert np.allclose(codes["mean"], expected.numpy(), atol=1e-5)


def test_a_flow_posteriors_encoder_and_decoder_export(iaf_run, tmp_path):
    root, env, folder, _ = iaf_run
    exported = run(
        ["export", str(folder), "--out", str(tmp_path / "export"), "--format", "torchscript"], cwd=root, env=env
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    model = vae.load(folder)
    x = torch.rand(3, 1, 28, 28)
    (mean, *_) = run_exported(tmp_path / "export" / "encoder.pt", x)
    assert_same((mean,), (model.encode(x).mean,))  # the flow at the Gaussian's mean, as eager


def test_vae_sample_fits_a_sampler_to_the_training_codes_once_and_reuses_it(iaf_run):
    root, env, folder, _ = iaf_run
    first = run(["sample", str(folder), "--sampler", "gmm", "--n", "9", "--out", "gmm.png"], cwd=root, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "fitted the gmm sampler to" in first.stdout and "from the gmm sampler" in first.stdout
    (saved,) = (folder / "checkpoints").glob("*.sampler-gmm.pt")
    again = run(["sample", str(folder), "--sampler", "gmm", "--n", "9", "--out", "again.png"], cwd=root, env=env)
    assert again.returncode == 0 and "fitted" not in again.stdout
    assert (root / "gmm.png").read_bytes() == (root / "again.png").read_bytes()  # the same sampler, the same seed
    flow = run(["sample", str(folder), "--sampler", "flow", "--n", "4", "--out", "flow.png"], cwd=root, env=env)
    assert flow.returncode == 0 and (root / "flow.png").is_file(), flow.stderr[-3000:]
    # A sampler saved for another model (here: this one's, beside a checkpoint of other weights) is refused.
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name] + 0.01
    stranger = folder / "checkpoints" / "other.ckpt"
    torch.save(checkpoint, stranger)
    stranger.with_suffix(".sampler-gmm.pt").write_bytes(saved.read_bytes())
    refused = run(["sample", str(stranger), "--sampler", "gmm", "--out", "no.png"], cwd=root, env=env)
    assert refused.returncode != 0 and not (root / "no.png").exists()
    assert "was fitted to another model" in refused.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("posterior", ["full_covariance", "planar", "sylvester"])
def test_the_shipped_posterior_configs_train(posterior, tmp_path):
    config = ["--config", str(QUICKSTART), "--config", str(POSTERIORS / f"{posterior}.yaml")]
    result = run(["fit", *config, *SHORT, "--trainer.max_epochs", "1"], cwd=tmp_path, env=new_user(tmp_path / "home"))
    assert result.returncode == 0, result.stderr[-3000:]
    estimator = "analytic (closed form)" if posterior == "full_covariance" else "mc (Monte Carlo"
    assert f"KL estimator: {estimator}" in result.stdout
    model = vae.load(only_run(tmp_path))
    x = torch.rand(4, 1, 28, 28)
    assert torch.isfinite(model.log_likelihood(x, samples=8)).all()


@pytest.mark.slow
def test_a_resumed_flow_run_continues_exactly(tmp_path):
    """Two epochs, stopped after the first and resumed, equal two unbroken epochs, weight for weight (slow: three
    fits; a flow keeps no state beyond its weights, which the default suite's resume tests cover)."""
    fit = ["fit", "--config", str(QUICKSTART), "--config", str(POSTERIORS / "sylvester.yaml"), *SHORT]
    a, b = unbroken_and_resumed([*fit, "--trainer.deterministic", "true"], tmp_path)
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name


@pytest.mark.slow
def test_compare_runs_a_study_of_posteriors(tmp_path):
    """Two runs of configs/studies/posteriors.yaml (the diagonal Gaussian and IAF), one short epoch each, as `vae
    compare` starts them: the table names each run's model and carries its terms (slow: the study machinery is in the
    default suite through tests/integration/test_compare.py; studies of models, here and in the quantizers' and the
    diffusion schedules' slow tests)."""
    shipped = yaml.safe_load((REPO / "configs" / "studies" / "posteriors.yaml").read_text())
    assert set(shipped["runs"]) == {"diagonal", "full-covariance", "planar-8", "sylvester-4", "iaf-2"}
    rows, _ = study_rows(
        shipped, ["diagonal", "iaf-2"], tmp_path, config=QUICKSTART, fit=["--trainer.max_epochs", "1", *SHORT]
    )
    assert rows["iaf-2"]["model"].startswith("VAE(posterior=IAF(") and "DiagonalGaussian" in rows["diagonal"]["model"]
    for row in rows.values():
        assert float(row["elbo"]) == pytest.approx(-float(row["recon"]) - float(row["kl"]), abs=1e-3)


def test_a_hierarchy_with_iaf_in_every_layer_trains_from_yaml(tmp_path):
    """docs/posteriors.md's YAML: an IAF on the top layer (`posterior`) and on every layer below it (`layer_flow`)."""
    overlay = {
        "model": {
            "model": {
                "init_args": {
                    "posterior": {"class_path": "vae.layers.flows.IAF", "init_args": {"length": 2, "context": 16}},
                    "layer_flow": {"class_path": "vae.layers.flows.IAF", "init_args": {"hidden": [16], "context": 8}},
                }
            }
        }
    }
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    config = ["--config", str(REPO / "configs" / "hvae_quickstart.yaml"), "--config", str(path), *SHORT]
    result = run(["fit", *config, "--trainer.max_epochs", "1"], cwd=tmp_path, env=new_user(tmp_path / "home"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "KL estimator: mc (Monte Carlo, 1 sample(s), log q(z|x) carried through the flow)" in result.stdout
    model = vae.load(only_run(tmp_path))
    assert all(layer.flow is not None for layer in model.below) and isinstance(model.top.posterior, IAF)
