"""`vae fit` with a precision this CPU runs slowly says so in one line before training, naming the faster setting."""

from conftest import QUICKSTART, run

from vae.training import hardware

ARGS = ["fit", "--config", str(QUICKSTART), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
ARGS += ["--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]


def test_bf16_on_a_cpu_without_bf16_instructions_is_a_warning_line(tmp_path, offline_env, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_features", lambda: {"avx2", "fma"})  # an AMD EPYC, as it reports itself
    result = run([*ARGS, "--trainer.precision", "bf16-mixed"], cwd=tmp_path, env=offline_env)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: trainer.precision")]
    assert warnings == [
        "warning: trainer.precision bf16-mixed on a CPU without bf16 instructions is emulated, many times slower "
        "than float32 (0.07x on an AMD EPYC): use --trainer.precision 32 here"
    ]
    quiet = run([*ARGS, "--trainer.precision", "32-true"], cwd=tmp_path, env=offline_env)
    assert quiet.returncode == 0 and "warning: trainer.precision" not in quiet.stderr
