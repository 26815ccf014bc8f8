"""Every command in the README's command-line block runs as written, as a new user runs it: the installed `vae`
console script (or ``python scripts/...``) in a process of its own, no W&B key, no WANDB_MODE (the command logs
offline by itself), a home folder of their own, from a folder with the repository's configs/ and scripts/. Training
lines keep their own settings and get a short suffix (2 steps, 1 validation batch); the lines that stand for long
jobs are run at full scale elsewhere, named in ELSEWHERE."""

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, new_user
from PIL import Image
from support import Result, run_process

SHORT = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
SHORT += ["--trainer.log_every_n_steps", "1"]  # metrics.csv for `vae plot` after two steps
ELSEWHERE = {  # lines run elsewhere: a tiny run could not stand for them here
    "vae compare --study": "tests/integration/test_compare.py runs tiny studies (these are 6 runs × 20 epochs and "
    "7 runs × 5 epochs)",
    "vae benchmark": "tests/integration/test_benchmark.py runs every contender at a tiny size",
    "vae fit --config configs/cvae_quickstart.yaml": "the conditional model's tests train and evaluate it",
    "vae fit --config configs/jointvae_mnist.yaml": "the discrete models' tests train and evaluate it",
    "vae kl-demo": "tests/integration/test_kl_demo.py runs the whole playground",
}
FASHION = Path("/usr/share/datasets/fashion-mnist").is_dir() or os.environ.get("VAE_REQUIRE_FASHION_MNIST")


def readme_commands() -> list[str]:
    """The command lines of the README's block under "## The command line", comments removed."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## The command line\n.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


COMMANDS = readme_commands()


def needs(line: str) -> str | None:
    """Why a line cannot run here, if it cannot."""
    if "--trainer.devices 4" in line and torch.cuda.device_count() < 4:
        return "needs 4 GPUs"
    if "fashion_mnist" in line and not FASHION:
        return "needs Debian's dataset-fashion-mnist"
    return next((why for start, why in ELSEWHERE.items() if line.startswith(start)), None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A user's folder: the repository's configs/ and scripts/, a home with ~/my_images."""
    root = tmp_path_factory.mktemp("user")
    for name in ("configs", "scripts"):
        (root / name).symlink_to(REPO / name)
    env = new_user(root / "home")
    images = root / "home" / "my_images"
    images.mkdir()
    for i in range(12):
        Image.fromarray((np.random.default_rng(i).random((70, 80, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    return root, env


def run_line(line: str, cwd: Path, env: dict, extra: list[str]) -> Result:
    """A README line as a shell would run it (``~`` is the user's home), with ``extra`` arguments after it, in a
    process of its own: `vae` is the installed console script."""
    words = [word.replace("~", env["HOME"], 1) if word.startswith("~") else word for word in shlex.split(line)]
    if words[0] == "python":
        command = [sys.executable, *words[1:], *extra]
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        return Result(done.returncode, done.stdout, done.stderr)
    assert words[0] == "vae"
    return run_process([*words[1:], *extra], cwd=cwd, env=env, timeout=600, console=True)


def suffix(line: str) -> list[str]:
    if "--help" in line or "--print_config" in line:
        return []
    return SHORT if " fit" in line else []


def test_the_readme_lists_the_commands_this_test_knows():
    assert COMMANDS[0].startswith("vae fit --config configs/quickstart.yaml")
    assert sum(line.startswith(("vae ", "python ")) for line in COMMANDS) == len(COMMANDS) >= 12


def test_every_readme_command_runs_as_a_new_user_runs_it(workspace):
    root, env = workspace
    continues = ("<run id>", "--ckpt_path last", "vae decompress")  # lines that need the first run (or a file of it)
    first = [line for line in COMMANDS if not any(word in line for word in continues)]
    runnable = [line for line in first if needs(line) is None]

    def attempt(line: str):
        folder = root / f"line{first.index(line):02d}"
        folder.mkdir()
        for name in ("configs", "scripts"):
            (folder / name).symlink_to(REPO / name)
        return folder, run_line(line, folder, env, suffix(line))

    with ThreadPoolExecutor(max_workers=3) as pool:  # processes side by side: most of each is starting Python
        results = dict(zip(runnable, pool.map(attempt, runnable)))
    for line, (_, result) in results.items():
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
        if " fit --config" in line and "--print_config" not in line and "--help" not in line:
            assert "W&B run saved offline; upload it with: wandb sync" in result.stdout, line

    # The lines that continue the first run: test it, evaluate it, sample, encode, export, plot and compress it (and
    # decompress the file), resume it twice (the second with a new lr).
    folder, _ = results[COMMANDS[0]]
    (run,) = (folder / "runs" / "vae").iterdir()
    later = [line.replace("<run id>", run.name) for line in COMMANDS if line not in first]
    steps = iter(range(4, 100, 2))

    def extra_for(line: str) -> list[str]:
        if line.startswith("vae evaluate"):
            return ["--samples", "10", "--limit", "1"]
        if line.startswith("vae export"):  # ONNX takes seconds a file: tests/test_export.py exports it, and checks it
            return ["--format", "torchscript"]
        if line.startswith("vae compress"):  # the first 40 test digits (test_compress_commands.py codes more)
            return ["--limit", "40"]
        if "--ckpt_path last" in line:
            return ["--trainer.max_steps", str(next(steps)), "--trainer.limit_val_batches", "1"]
        return ["--trainer.limit_test_batches", "1"] if line.startswith("vae test") else []

    later = [line for line in later if needs(line) is None]
    readers = [line for line in later if line.startswith(("vae sample", "vae encode", "vae export"))]
    with ThreadPoolExecutor(max_workers=3) as pool:  # the lines that only read the run, side by side
        done = dict(zip(readers, pool.map(lambda line: run_line(line, folder, env, extra_for(line)), readers)))
    for line in later:  # then the ones that write into it, in the README's order
        result = done[line] if line in done else run_line(line, folder, env, extra_for(line))
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
    resumes = sum("--ckpt_path last" in line for line in later)
    tests = sum(line.startswith("vae test") for line in later)
    assert resumes >= 1  # every part of the run keeps its config, none overwritten
    assert sorted(p.name for p in run.glob("config*.yaml")) == sorted(
        ["config.yaml", *(f"config-resume-{i}.yaml" for i in range(1, resumes + 1))]
        + [f"config-test-{i}.yaml" for i in range(1, tests + 1)]
    )
    assert [p.name for p in (folder / "runs" / "vae").iterdir()] == [run.name]  # test and resumes: the same run
