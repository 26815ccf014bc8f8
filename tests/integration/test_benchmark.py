"""`vae benchmark` end to end at a tiny size, in this process: every contender trains and is timed, the fast-config
epochs are timed through the `vae` command's machinery, and the report is written. (Speed itself is measured by
running the benchmark, never asserted by a test.)"""

import json
import re

import yaml
from conftest import QUICKSTART, run
from support import NOISE

TINY = ["--rounds", "2", "--steps", "3", "--window", "1", "--batch-size", "8", "--skip-large"]
TINY += ["--hierarchical-steps", "3", "--hierarchical-window", "1"]
IW = ["--iw-images", "3", "--iw-samples", "20", "--iw-batch-size", "2", "--iw-chunk", "7"]


def small_quickstart(folder):
    """The quick start with 500 training digits (5,000 embedded − 4,000 for validation − 500 for test) in batches of
    16: an epoch of 32 steps, enough for the benchmark's timed windows of 10 steps, at a sixteenth of the cost."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["data"]["init_args"].update(val_size=4000, test_size=500, batch_size=16)
    path = folder / "small_quickstart.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_benchmark_runs_every_contender_and_writes_its_report(tmp_path, new_user_env):
    out = tmp_path / "bench.json"
    fast = ["--fast-config", str(small_quickstart(tmp_path)), "--fast-epochs", "1", "--no-compile"]
    args = ["benchmark", *TINY, *IW, *fast]
    result = run([*args, "--out", str(out)], cwd=tmp_path, env=new_user_env)  # as a new user runs it
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    training = report["training"]
    for path in ("ours (vae fit path)", "ours, fast path", "bare PyTorch loop"):
        row = training[f"default conv VAE / {path}"]
        assert len(row["windows"]) == 2 * 2  # 2 turns × (3 steps / 1 − the warm-up window)
        assert all(rate > 0 for rate in row["windows"]) and row["images_per_s"] > 0
    assert training["default conv VAE / bare PyTorch loop"]["vs_bare"] == 1.0
    assert training["default conv VAE / bare PyTorch loop"]["vs_bare_range"] == [1.0, 1.0]
    ours = training["default conv VAE / ours (vae fit path)"]
    low, high = ours["vs_bare_range"]
    assert 0 < low <= ours["vs_bare"] <= high  # the median of the two turns' ratios lies between them
    for path in ("ours (vae fit path)", "bare PyTorch loop"):  # the hierarchy's row: no pythae to compare with
        assert len(training[f"hierarchical VAE / {path}"]["windows"]) == 2 * 2
    (eager,) = report["fast_config"]
    assert eager["images_per_epoch"] == 500 and len(eager["epoch_seconds"]) == 1  # the config's training digits
    assert report["iw_images"] == 3 and report["iw_nll_examples_per_s"] > 0
    assert "default conv VAE" in result.stdout and "importance-weighted NLL" in result.stdout
    assert re.search(r"CPU has (no )?bf16 instructions", result.stdout)  # what the fast path's bf16 measured
    said = result.stdout + result.stderr  # the quiet console of every command: no library's noise, pythae's neither
    noise = {**NOISE, "pythae's lines": r"Model passed sanity check|Training of epoch|Created .*VAE_training"}
    assert [name for name, pattern in noise.items() if re.search(pattern, said)] == []


def test_benchmark_bad_settings_are_one_line_errors(tmp_path, offline_env):
    for args, message in [
        (["--steps", "3", "--window", "2"], "at least 3 windows"),
        (["--fast-config", str(tmp_path / "nope.yaml")], "fast config not found"),
    ]:
        result = run(["benchmark", *args], cwd=tmp_path, env=offline_env)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_paired_ratios_compare_each_turn_with_the_reference_turn_beside_it():
    """Turn medians 2 and 4 against 2 and 8: ratios 1 and 0.5, so 0.75 (0.5–1); pooled medians would say 3/5."""
    from vae.commands.benchmark import Paired

    assert Paired.of([[1.0, 2.0, 3.0], [4.0, 4.0]], [[2.0, 2.0], [8.0]]) == Paired(0.75, 0.5, 1.0)
