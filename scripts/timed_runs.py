"""What the benchmark scripts share: a ``vae fit`` run for a fixed wall time, the first test images of a run's data,
and a checkpoint's step count."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from vae.commands.common import load_data
from vae.core.config_file import read_yaml

REPO = Path(__file__).resolve().parent.parent


def train(name: str, args: list[str], *, minutes: float, out: Path) -> tuple[Path, float]:
    """``vae fit`` with ``args`` for ``minutes`` of wall time (``trainer.max_time``) in ``out/name``, emptied first;
    the best checkpoint by validation ELBO (the last if none) and the seconds the run took."""
    folder = out / name.replace(" ", "-")
    if folder.exists():
        shutil.rmtree(folder)
    hours, rest = divmod(int(minutes * 60), 3600)
    command = [
        sys.executable, "-m", "vae", "fit", *args,
        "--trainer.max_epochs", "1000",
        "--trainer.max_time", f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(folder),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    best = sorted((folder / "checkpoints").glob("best*.ckpt"))
    return (best[-1] if best else folder / "checkpoints" / "last.ckpt"), wall


def test_batches(checkpoint: Path, limit: int | None = None, batch_size: int = 200) -> list:
    """The run's test split as (images, labels) batches, from the first, until ``limit`` images are in (all by
    default)."""
    config = checkpoint.parent.parent / "config.yaml"
    data = load_data(read_yaml(config), config, batch_size=batch_size)
    data.setup("test")
    batches, seen = [], 0
    for images, labels in data.test_dataloader():
        batches.append((images, labels))
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    return batches


def steps_of(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
