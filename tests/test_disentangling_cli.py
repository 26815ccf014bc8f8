"""Disentanglement from the real `vae` command, as a new user runs it: β-TCVAE on dSprites-like shapes, scored by
`vae evaluate --disentanglement`, and a tiny `vae compare` study of penalties whose table carries the KL split
and the metrics."""

import csv
import json

import pytest
import yaml
from conftest import QUICKSTART, REPO, new_user, run_vae

from vae.commands.compare import RunResult, load_study, sweep_config, write_tables
from vae.core.errors import ConfigError
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
    line = ["fit", "--config", str(DSPRITES), "--model.penalty", "vae.objectives.penalties.BetaTCVAE", *SMALL, *SHORT]
    result = run_vae(line, cwd=root, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (root / "runs" / "vae").iterdir()
    return root, env, run


def test_beta_tcvae_trains_from_one_line_and_logs_its_terms(tcvae_run):
    root, env, run = tcvae_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["penalty"]["class_path"] == "vae.objectives.penalties.BetaTCVAE"
    assert config["model"]["kl_split"] == "mss"  # the estimator, named in the run config


def test_evaluate_scores_disentanglement(tcvae_run):
    root, env, run = tcvae_run
    line = ["evaluate", str(run / "checkpoints" / "last.ckpt"), "--disentanglement", "--points", "30", "--images"]
    result = run_vae([*line, "--samples", "2", "--limit", "1"], cwd=root, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in METRICS:
        assert f"disentanglement: {name}" in result.stdout
    (written,) = run.glob("checkpoints/last.test.k2*.json")
    scores = json.loads(written.read_text())["disentanglement"]
    assert list(scores) == METRICS
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    summaries = [read_history(f).summary for f in (root / "runs" / "wandb").glob(f"*-{run.name}/run-*.wandb")]
    assert any(s.get("eval/test/disentanglement/mig") == pytest.approx(scores["mig"]) for s in summaries)
    # --images on data with factors: one row per factor, each sweeping the dimension that carries it best
    assert "factor traversals: shape → z" in result.stdout
    (picture,) = run.glob("checkpoints/last.test.k2*/factor_traversals.png")
    assert picture.stat().st_size > 0


def test_evaluate_refuses_disentanglement_without_factors(tcvae_run, tmp_path):
    root, env, run = tcvae_run
    line = ["evaluate", str(run / "checkpoints" / "last.ckpt"), "--disentanglement", "--config", str(QUICKSTART)]
    result = run_vae(line, cwd=root, env=env, timeout=300)
    assert result.returncode == 2
    assert "--disentanglement needs data with known factors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_shipped_study_builds_every_run():
    study = load_study(REPO / "configs" / "studies" / "disentanglement.yaml", config=None, flags=[], name=None)
    assert list(study.weightings) == ["beta-1", "beta-4", "beta-16", "capacity", "beta-tcvae", "factor-vae", "dip-vae"]
    assert set(study.penalties) == {"beta-tcvae", "factor-vae", "dip-vae"}
    assert study.config.resolve() == DSPRITES and study.points == 500
    with pytest.raises(ConfigError, match="weightings only"):
        sweep_config(study)


@pytest.mark.parametrize(
    "runs,message",
    [
        ({"a": {"penalty": {"class_path": "vae.objectives.weighting.Constant"}}}, "not a subclass of Penalty"),
        (
            {"a": {"weighting": {"class_path": "vae.objectives.weighting.Constant"}, "prior": {}}},
            "'weighting' and/or 'penalty'",
        ),
        (
            {"a": {"penalty": {"class_path": "vae.objectives.penalties.DIPVAE", "init_args": {"kind": "x"}}}},
            "DIPVAE kind",
        ),
    ],
)
def test_bad_study_runs_are_one_line_errors(tmp_path, runs, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"config": str(DSPRITES), "runs": runs}))
    with pytest.raises(ConfigError, match=message):
        load_study(path, config=None, flags=[], name=None)


def test_tables_carry_the_split_and_the_metrics(tmp_path):
    def result(name, penalty, split, scores):
        return RunResult(
            name=name,
            weighting="Constant(beta=1.0)",
            recon=10.0,
            kl=5.0,
            elbo=-15.0,
            active_units=3,
            wall_time=1.0,
            kl_per_dim=[],
            run_file=tmp_path,
            penalty=penalty,
            kl_split=split,
            disentanglement=scores,
        )

    results = [
        result("b1", "", {"mi": 1.0, "tc": 0.5, "dwkl": 3.5}, {"mig": 0.1, "sap": 0.05}),
        result("tc", "BetaTCVAE(beta=6.0)", {"mi": 1.5, "tc": 0.25, "dwkl": 3.25}, {"mig": 0.3, "sap": 0.2}),
    ]
    write_tables(results, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert rows[1]["penalty"] == "BetaTCVAE(beta=6.0)" and rows[1]["kl_split_tc"] == "0.2500"
    assert rows[0]["mig"] == "0.1000" and rows[1]["sap"] == "0.2000"
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[0].endswith("| MI | TC | DWKL | mig | sap |")
    assert table[3].startswith("| tc | `Constant(beta=1.0)` | `BetaTCVAE(beta=6.0)` |")
    assert table[3].endswith("| 1.50 | 0.25 | 3.25 | 0.300 | 0.200 |")
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_a_tiny_study_of_a_penalty_is_scored(tmp_path):
    """A one-run study (FactorVAE) through the real `vae compare`, as the README's study line runs: the table has
    the run's penalty, its KL split and its disentanglement metrics, and the plots are drawn."""
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
    result = run_vae(["compare", "--study", str(study), "--out", str(out)], cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["name"] == "factor" and row["penalty"] == "FactorVAE(hidden=32)"
    assert all(row[f"kl_split_{n}"] for n in ("mi", "tc", "dwkl"))
    assert all(0.0 <= float(row[m]) <= 1.0 for m in METRICS)
    assert (out / "kl_split.png").stat().st_size > 0 and (out / "disentanglement.png").stat().st_size > 0
