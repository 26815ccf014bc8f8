"""`vae compare`'s studies, without running one: the --weighting flags, study files (the shipped ones among them) and
their bad runs as one-line errors, the results tables with the KL split and the disentanglement metrics, and how
parallel runs share the CPU cores. (Real tiny studies: tests/integration/test_compare.py and
tests/integration/test_disentangling_cli.py.)"""

import csv
import os

import pytest
import yaml
from conftest import QUICKSTART, REPO

from vae.commands.compare import RunResult, load_study, parse_weighting_flag, sweep_config, write_tables
from vae.core.errors import ConfigError

DSPRITES = REPO / "configs" / "dsprites.yaml"


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
            "'weighting', 'penalty' and/or 'model'",
        ),
        ({"a": {"model": {"class_path": "vae.layers.quantizers.FSQ"}}}, "not a subclass of LatentVariableModel"),
        ({"a": {"model": {"class_path": "os.system"}}}, "os.system"),
        ({"a": {"model": "VQVAE"}}, "give class_path"),
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
