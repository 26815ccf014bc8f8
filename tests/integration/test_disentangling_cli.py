"""Disentanglement from the real `vae` command (in this process), as a new user runs it: β-TCVAE on dSprites-like
shapes, scored by `vae evaluate --disentanglement`, and a tiny `vae compare` study of penalties (its run a `vae fit`
process of its own, as compare starts them) whose table carries the KL split and the metrics."""

import csv
import json

import pytest
import yaml
from conftest import QUICKSTART, REPO, new_user, run

from vae.training.tracking import read_history

DSPRITES = REPO / "configs" / "dsprites.yaml"
SMALL = [
    "--data.init_args.size",
    "1500",
    "--data.init_args.val_size",
    "100",
    "--data.init_args.test_size",
    "100",
]
SHORT = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
METRICS = ["beta_vae", "factor_vae", "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness"]


@pytest.fixture(scope="module")
def tcvae_run(tmp_path_factory):
    """The README's β-TCVAE line, shortened, in a new user's environment (no W&B key or setting)."""
    root = tmp_path_factory.mktemp("tcvae")
    env = new_user(root / "home")
    penalty = ["--model.objective.penalty", "vae.objectives.penalties.BetaTCVAE"]
    result = run(["fit", "--config", str(DSPRITES), *penalty, *SMALL, *SHORT], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = (root / "runs" / "vae").iterdir()
    return root, env, folder


def test_beta_tcvae_trains_from_one_line_and_logs_its_terms(tcvae_run):
    root, env, folder = tcvae_run
    objective = yaml.safe_load((folder / "config.yaml").read_text())["model"]["objective"]["init_args"]
    assert objective["penalty"]["class_path"] == "vae.objectives.penalties.BetaTCVAE"
    assert objective["kl_split"] == "mss"  # the estimator, named in the run config


def test_evaluate_scores_disentanglement(tcvae_run):
    root, env, folder = tcvae_run
    line = ["evaluate", str(folder / "checkpoints" / "last.ckpt"), "--disentanglement", "--points", "30", "--images"]
    result = run([*line, "--samples", "2", "--limit", "1"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in METRICS:
        assert f"disentanglement: {name}" in result.stdout
    (written,) = folder.glob("checkpoints/last.test.k2*.json")
    scores = json.loads(written.read_text())["disentanglement"]
    assert list(scores) == METRICS
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    summaries = [read_history(f).summary for f in (root / "runs" / "wandb").glob(f"*-{folder.name}/run-*.wandb")]
    assert any(s.get("eval/test/disentanglement/mig") == pytest.approx(scores["mig"]) for s in summaries)
    # --images on data with factors: one row per factor, each sweeping the dimension that carries it best
    assert "factor traversals: shape → z" in result.stdout
    (picture,) = folder.glob("checkpoints/last.test.k2*/factor_traversals.png")
    assert picture.stat().st_size > 0


def test_evaluate_refuses_disentanglement_without_factors(tcvae_run, tmp_path):
    root, env, folder = tcvae_run
    line = ["evaluate", str(folder / "checkpoints" / "last.ckpt"), "--disentanglement", "--config", str(QUICKSTART)]
    result = run(line, cwd=root, env=env)
    assert result.returncode == 2
    assert "--disentanglement needs data with known factors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_tiny_study_of_a_penalty_is_scored(tmp_path):
    """A one-run study (FactorVAE) through the real `vae compare`, as the README's study line runs: the table has
    the run's penalty, its KL split and its disentanglement metrics, and the plots are drawn (slow: the study
    machinery is in the default suite through tests/integration/test_compare.py, the disentanglement scores through
    this file's `vae evaluate --disentanglement`)."""
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "tiny-disentanglement",
                "config": str(DSPRITES),
                "points": 20,
                "args": [*SMALL, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"],
                "runs": {
                    "factor": {
                        "penalty": {"class_path": "vae.objectives.penalties.FactorVAE", "init_args": {"hidden": 32}}
                    }
                },
            }
        )
    )
    env = new_user(tmp_path / "home")
    out = tmp_path / "out"
    result = run(["compare", "--study", str(study), "--out", str(out)], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["name"] == "factor" and row["penalty"] == "FactorVAE(hidden=32)"
    assert all(row[f"kl_split_{n}"] for n in ("mi", "tc", "dwkl"))
    assert all(0.0 <= float(row[m]) <= 1.0 for m in METRICS)
    assert (out / "kl_split.png").stat().st_size > 0 and (out / "disentanglement.png").stat().st_size > 0
