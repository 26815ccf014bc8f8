"""`vae compare`: the study's parts, and a real tiny study whose table, plots and W&B group are checked."""

import csv
import json
import os
import re

import pytest
import yaml
from conftest import QUICKSTART, REPO, new_user, run_vae

from vae.commands.compare import load_study, parse_weighting_flag, sweep_config
from vae.core.errors import ConfigError
from vae.training.tracking import read_history

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6", "--trainer.log_every_n_steps", "1"]


def test_weighting_flags():
    assert parse_weighting_flag("beta4=Constant(beta=4)") == (
        "beta4",
        {"class_path": "vae.objectives.weighting.Constant", "init_args": {"beta": 4}},
    )
    name, weighting = parse_weighting_flag(" fb = FreeBits(floor=0.25, group_size=2) ")
    assert name == "fb" and weighting["init_args"] == {"floor": 0.25, "group_size": 2}
    assert parse_weighting_flag("c=my.module.Mine()") == ("c", {"class_path": "my.module.Mine", "init_args": {}})
    for bad in ("Constant(beta=4)", "b=Constant(beta)", "b=Constant"):
        with pytest.raises(ConfigError):
            parse_weighting_flag(bad)


def test_study_file_and_flags(tmp_path):
    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "s1",
                "config": str(QUICKSTART),
                "args": ["--trainer.max_epochs", 3],
                "weightings": {"b1": {"class_path": "vae.objectives.weighting.Constant", "init_args": {"beta": 1.0}}},
            }
        )
    )
    study = load_study(study_file, config=None, flags=["warm=LinearWarmup(steps=10)"], name=None)
    assert study.name == "s1" and study.config == QUICKSTART and study.args == ["--trainer.max_epochs", "3"]
    assert list(study.weightings) == ["b1", "warm"]
    with pytest.raises(ConfigError, match="no weightings"):
        load_study(None, config=QUICKSTART, flags=[], name="x")
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(None, config=tmp_path / "nope.yaml", flags=["a=Constant()"], name="x")


def test_sweep_config_runs_the_same_study_through_wandb_agents(tmp_path):
    study = load_study(None, config=QUICKSTART, flags=["a=Constant(beta=1)", "b=Constant(beta=4)"], name="grid")
    sweep = sweep_config(study)
    assert sweep["method"] == "grid" and sweep["command"][-1] == "${args}"
    assert sweep["command"][sweep["command"].index("--trainer.logger.init_args.group") + 1] == "grid"
    values = [json.loads(v) for v in sweep["parameters"]["model.weighting"]["values"]]
    assert [v["init_args"]["beta"] for v in values] == [1, 4]
    out = tmp_path / "sweep"
    args = ["compare", "--config", str(QUICKSTART), "--weighting", "a=Constant(beta=1)", "--sweep", "--out", str(out)]
    result = run_vae(args, cwd=tmp_path, env=dict(os.environ))
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
    result = run_vae(args, cwd=out.parent, env=new_user(out.parent / "home"), timeout=600)
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
    result = run_vae(args, cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {used} already holds files: choose another --out (nothing was overwritten) (see vae compare --help)"
    ]
    assert (used / "results.csv").read_text() == "keep me"


def test_the_shipped_study_file_parses():
    study = load_study(REPO / "configs" / "studies" / "weightings.yaml", config=None, flags=[], name=None)
    assert study.name == "weightings" and len(study.weightings) == 6


def test_parallel_runs_share_the_cpu_cores(monkeypatch):
    from vae.commands.compare import cpu_threads, run_environment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert cpu_threads(1) is None  # one run at a time: torch's own default
    assert (cpu_threads(2), cpu_threads(3), cpu_threads(16)) == (4, 2, 1)
    env = run_environment(1, 4)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in run_environment(None, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is kept
    assert cpu_threads(2) is None and run_environment(None, None)["OMP_NUM_THREADS"] == "3"
