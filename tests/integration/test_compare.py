"""`vae compare`, in this process (it starts each run of a study as a `vae fit` process of its own, as it does for its
users): a W&B sweep written without training, a real tiny study whose table, plots and W&B group are checked, and a
used output folder refused. (The study's parts: tests/unit/test_studies.py.)"""

import csv
import json
import os
import re

import pytest
import yaml
from conftest import QUICKSTART, new_user, run

from vae.commands.compare import load_study, sweep_config
from vae.training.tracking import read_history

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6", "--trainer.log_every_n_steps", "1"]


def test_sweep_config_runs_the_same_study_through_wandb_agents(tmp_path):
    study = load_study(None, config=QUICKSTART, flags=["a=Constant(beta=1)", "b=Constant(beta=4)"], name="grid")
    sweep = sweep_config(study)
    assert sweep["method"] == "grid" and sweep["command"][-1] == "${args}"
    assert sweep["command"][sweep["command"].index("--trainer.logger.init_args.group") + 1] == "grid"
    values = [json.loads(v) for v in sweep["parameters"]["model.objective.weighting"]["values"]]
    assert [v["init_args"]["beta"] for v in values] == [1, 4]
    out = tmp_path / "sweep"
    args = ["compare", "--config", str(QUICKSTART), "--weighting", "a=Constant(beta=1)", "--sweep", "--out", str(out)]
    result = run(args, cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert (
        yaml.safe_load((out / "sweep.yaml").read_text())["parameters"]
        == sweep_config(load_study(None, config=QUICKSTART, flags=["a=Constant(beta=1)"], name="sweep"))["parameters"]
    )
    assert not (out / "runs").exists()  # nothing trained


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two weightings, both at once, each 1 epoch of 6 steps on the embedded digits, as a new user runs
    it (no W&B key or WANDB_MODE: every run logs offline by itself)."""
    out = tmp_path_factory.mktemp("compare") / "study"
    flags = ["b1=Constant(beta=1)", "warm=LinearWarmup(steps=8)"]
    args = ["compare", "--config", str(QUICKSTART), "--name", "tiny-study", "--out", str(out)]
    args += [arg for flag in flags for arg in ("--weighting", flag)] + ["--jobs", "2", "--", *TINY]
    result = run(args, cwd=out.parent, env=new_user(out.parent / "home"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result


def test_compare_writes_the_table_and_the_plots(study):
    out, result = study
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in rows] == ["b1", "warm"]
    assert rows[1]["weighting"] == "LinearWarmup(steps=8)"
    for row in rows:
        recon, kl, elbo = float(row["recon"]), float(row["kl"]), float(row["elbo"])
        assert kl > 0 and recon > 0 and elbo == pytest.approx(-recon - kl, abs=2e-3)
        assert float(row["wall_time"]) > 0 and 0 <= float(row["active_units"]) <= 16
    assert (out / "results.md").read_text().count("\n") == 4
    for name in ("rate_distortion.png", "kl_per_dimension.png", "training_curves.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    assert "W&B group 'tiny-study'" in result.stdout
    if "OMP_NUM_THREADS" not in os.environ:  # two runs at once share the cores
        assert re.search(r"^2 runs at a time, \d+ CPU threads? each$", result.stdout, flags=re.M), result.stdout


def test_compare_runs_share_a_wandb_group_and_log_their_weighting(study):
    out, _ = study
    histories = [read_history(f) for f in sorted((out / "runs" / "wandb").glob("*run-*/run-*.wandb"))]
    assert len(histories) == 2
    assert {h.group for h in histories} == {"tiny-study"}
    assert sorted(h.name for h in histories) == ["b1", "warm"]
    warm = next(h for h in histories if h.name == "warm")
    steps, weights = warm.curve("train/kl_weight")
    assert weights == pytest.approx([min(s, 8) / 8 for s in steps])  # the warm-up, step by step
    rows = {r["name"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows["warm"]["elbo"]) == pytest.approx(warm.values("val/elbo")[-1], abs=1e-3)


def test_compare_never_writes_into_a_used_folder(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "results.csv").write_text("keep me")
    args = ["compare", "--config", str(QUICKSTART), "--weighting", "a=Constant()", "--out", str(used)]
    result = run(args, cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {used} already holds files: choose another --out (nothing was overwritten) (see vae compare --help)"
    ]
    assert (used / "results.csv").read_text() == "keep me"
