"""The installed `vae` console script itself, in a process of its own, as a new user starts it (no W&B key, no
WANDB_MODE: the command logs offline by itself): a short fit of the quick start leaves its checkpoint and says how to
upload its run. (What a fit leaves, read back in detail: tests/integration/test_cli.py, in this process.)"""

from conftest import QUICKSTART, new_user
from support import run_process


def test_the_installed_script_trains_the_quick_start(tmp_path):
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    short += ["--trainer.enable_progress_bar", "false"]
    result = run_process(
        ["fit", "--config", str(QUICKSTART), *short], cwd=tmp_path, env=new_user(tmp_path / "home"), console=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "vae").iterdir()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "W&B run saved offline; upload it with: wandb sync " in result.stdout
    assert "KL estimator: analytic (closed form)" in result.stdout
