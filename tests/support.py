"""Running the `vae` command in tests: in this process (``run``), or, where only a real process will do (signals, a
killed job, a full disk, DDP, the installed console script, the README as a new user runs it), in its own
(``run_process``, ``start_process``).

``run`` calls ``vae.commands.main`` as the console script does, in the given folder and environment, and captures
everything it writes (its own lines, Lightning's and W&B's logging, warnings), as a process's stdout and stderr
would hold them. The command leaves the process as it found it (``vae.commands.process``); ``run`` also puts back
the working folder. Its exit status is what the process would have exited with.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# 3 epochs of 6 steps on the embedded digits (dynamically binarized: the data draw noise too), deterministic: the
# run that the fault tests interrupt, resume and compare with an uninterrupted one.
SHORT = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "6", "--trainer.log_every_n_steps", "1"]
SHORT += ["--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false"]
FIT = ["fit", "--config", str(QUICKSTART), *SHORT]
NOISE = {  # what each library used to print, by the words it used: a quiet console prints none of it
    "Lightning's advert": r"💡|Tip:|litlogger|LitLogger|litmodels",
    "W&B's anonymous warning": r"anonymous setting",
    "W&B's git root warning": r"git root",
    "a pytree deprecation": r"pytree|treespec|LeafSpec",
    "W&B's own sync footer": r"You can sync this run",
    "W&B's version line": r"Tracking run with wandb version",
    "Lightning's SIGTERM notice": r"Received SIGTERM",
    "a progress bar redraw": r"\r|\x1b\[",
    "a traceback": r"Traceback",
}


@dataclass(frozen=True)
class Result:
    """What a command left: its exit status, and what it wrote to stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


def new_user(home: Path) -> dict[str, str]:
    """A new user's environment: no W&B key and no WANDB_* setting (so the command itself decides to log offline),
    and a home folder of their own (no ~/.netrc, no W&B settings)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def offline(folder: Path) -> dict[str, str]:
    """W&B offline, its files in ``folder``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(folder), WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return env


@contextmanager
def captured():
    """stdout and stderr, at the file descriptors and in Python (logging handlers that hold the old streams are
    pointed at the new ones): a buffer each, read when the block ends."""
    out, err = tempfile.TemporaryFile(mode="w+b"), tempfile.TemporaryFile(mode="w+b")
    saved_fds = os.dup(1), os.dup(2)
    old = sys.stdout, sys.stderr
    sys.stdout.flush()
    sys.stderr.flush()
    new = io.TextIOWrapper(out, encoding="utf-8", write_through=True), io.TextIOWrapper(err, encoding="utf-8")
    new[1].reconfigure(write_through=True)
    streams = [h for h in logging_handlers() if isinstance(h, logging.StreamHandler)]
    pointed = [(h, h.stream) for h in streams if h.stream in old or h.stream in (sys.__stdout__, sys.__stderr__)]
    texts = {"out": "", "err": ""}
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = new
        for handler, stream in pointed:
            handler.setStream(new[1] if stream in (old[1], sys.__stderr__) else new[0])
        yield texts
    finally:
        for stream in new:
            stream.flush()
        sys.stdout, sys.stderr = old
        for handler, stream in pointed:
            handler.setStream(stream)
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        for key, handle in (("out", out), ("err", err)):
            handle.seek(0)
            texts[key] = handle.read().decode("utf-8", errors="replace")
            handle.close()


def logging_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    return [handler for logger in loggers if isinstance(logger, logging.Logger) for handler in logger.handlers]


def shown_as_by_a_process() -> None:
    """Warnings as a fresh interpreter shows them, on stderr (pytest records them instead, and shows deprecations):
    the interpreter's default filters, and the standard format."""
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show


def run(args: list[str], *, cwd: Path, env: dict[str, str]) -> Result:
    """`vae <args>` in this process, in ``cwd`` with the environment ``env``: its exit status, stdout and stderr."""
    import vae.commands.fit  # noqa: F401 (Lightning's loggers made here, on the real streams, not the captured ones)
    from vae.commands import main

    here, environ, argv = os.getcwd(), dict(os.environ), sys.argv
    code = 0
    try:
        sys.argv = ["vae"]  # the program as the console script names it; its arguments go to main, not pytest's
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        with captured() as texts, warnings.catch_warnings():
            shown_as_by_a_process()
            try:
                main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if not isinstance(stop.code, int | None):
                    print(stop.code, file=sys.stderr)
            except BaseException:  # a bug: the traceback, as the interpreter would print it
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
    return Result(code, texts["out"], texts["err"])


def only_run(root: Path) -> Path:
    """The one run folder a fit in ``root`` left (``root/runs/vae/<run id>``)."""
    (folder,) = (root / "runs" / "vae").iterdir()
    return folder


def unbroken_and_resumed(fit: list[str], root: Path, *, epochs: int = 2) -> tuple[dict, dict]:
    """`vae <fit> --trainer.max_epochs <epochs>` straight, and to ``epochs`` − 1 then resumed (``--ckpt_path last``)
    to ``epochs``, each in a folder of its own under ``root``, W&B offline: the two last checkpoints, as loaded."""
    straight, broken = root / "unbroken", root / "broken"
    for folder in (straight, broken):
        folder.mkdir()
    steps = [(straight, [str(epochs)]), (broken, [str(epochs - 1)]), (broken, [str(epochs), "--ckpt_path", "last"])]
    for folder, tail in steps:
        result = run([*fit, "--trainer.max_epochs", *tail], cwd=folder, env=offline(folder))
        assert result.returncode == 0, result.stderr[-3000:]
    return tuple(torch.load(next(f.rglob("last.ckpt")), weights_only=True) for f in (straight, broken))


def study_rows(study: dict, runs: list[str], root: Path, *, config: Path, fit: list[str]) -> tuple[dict, Path]:
    """A shipped study cut to ``runs`` over ``config``, through `vae compare` with ``fit``'s arguments for every run
    (two at a time), W&B offline: its results.csv rows by run name, and its output folder."""
    cut = {**study, "config": str(config), "args": [], "runs": {name: study["runs"][name] for name in runs}}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(cut))
    out = root / "out"
    result = run(
        ["compare", "--study", str(path), "--out", str(out), "--jobs", "2", "--", *fit], cwd=root, env=offline(root)
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(out / "results.csv", newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}, out


def copy_of(folder: Path, target: Path) -> Path:
    """A copy of a finished run's working folder ``folder`` in ``target``; returns the copy's run folder."""
    shutil.copytree(folder, target, dirs_exist_ok=True)
    (run_folder,) = (target / "runs" / "vae").iterdir()
    return run_folder


def vae_command(console: bool = True) -> list[str]:
    """The installed `vae` console script beside this interpreter (else ``python -m vae``)."""
    script = Path(sys.executable).with_name("vae")
    return [str(script)] if console and script.exists() else [sys.executable, "-m", "vae"]


def run_process(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300, console: bool = False
) -> Result:
    """`vae <args>` in a process of its own (``console``: the installed console script, as a user starts it)."""
    done = subprocess.run(
        [*vae_command(console), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Result(done.returncode, done.stdout, done.stderr)


def start_process(args: list[str], *, cwd: Path, env: dict[str, str], **popen) -> subprocess.Popen:
    """`vae <args>` started in a process of its own, returned at once (to signal it, or kill it)."""
    return subprocess.Popen(
        [*vae_command(console=False), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **popen,
    )  # fmt: skip


def finished(process: subprocess.Popen, timeout: float = 300) -> Result:
    out, err = process.communicate(timeout=timeout)
    return Result(process.returncode, out, err)
