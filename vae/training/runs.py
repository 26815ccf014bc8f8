"""A run's folder and the files written into it.

``<save_dir>/<project>/<run id>/`` (``run_dir``) holds a run's checkpoints (``checkpoints/last.ckpt``, which is
``last_checkpoint_path``, and ``checkpoints/best-epochNNN.ckpt``), pictures (``images/``) and the config of every
part of it: ``config.yaml`` for the first ``vae fit``, then ``config-resume-1.yaml``, ``config-resume-2.yaml``,
... for each resumed part and ``config-test-1.yaml`` ... for each ``vae test`` of it; none is ever overwritten.

One process at a time works in a run folder: it holds an exclusive lock on ``<run>/.lock`` (``flock``, which
the operating system releases when the process ends, however it ends), and a second ``vae fit --ckpt_path
last`` on the same run is refused, naming the process that holds it.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import pytorch_lightning as pl

from vae.core.errors import ConfigError, UserError

LOCK_NAME = ".lock"
_held: dict[Path, IO[str]] = {}  # the run folders this process holds, kept open until it ends

# What a full or read-only disk raises while writing: the user's to fix, never a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def run_dir(trainer: pl.Trainer) -> Path:
    """The run's folder: where its checkpoints/, images/ and config.yaml live.

    It is the folder Lightning's ModelCheckpoint puts ``checkpoints/`` in:
    ``{save_dir}/{logger name}/{logger version}`` with a logger, ``default_root_dir`` without one.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


def last_checkpoint_path(trainer: pl.Trainer) -> Path:
    """``<run>/checkpoints/last.ckpt``: the run's latest state (``vae.training.resume.LastCheckpoint``)."""
    return run_dir(trainer) / "checkpoints" / "last.ckpt"


class RunInUse(UserError):
    """Another process works in this run folder."""


def lock_run(folder: str | os.PathLike) -> None:
    """Hold ``folder``'s lock until the command ends (``release_locks``) or the process does, or raise ``RunInUse``
    naming the holder."""
    folder = Path(folder).absolute()
    if folder in _held:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not locked there
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")  # held open for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunInUse(
            f"the run {folder} is in use by {holder}: wait for it to finish (or stop it) before resuming or "
            "testing this run, or start a new run"
        ) from error
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held[folder] = handle


def held_locks() -> list[Path]:
    """The run folders whose locks this process holds."""
    return list(_held)


def release_locks(*, keep: set[Path] | frozenset[Path] = frozenset()) -> None:
    """Release the run folders' locks this process holds, but those in ``keep`` (a command releases what it took)."""
    for folder in [folder for folder in _held if folder not in keep]:
        _held.pop(folder).close()  # closing the file releases its flock


def is_rank_zero() -> bool:
    """Whether this process is the first of its job, before any Trainer exists (from the launchers' variables:
    torchrun and Lightning set RANK or LOCAL_RANK, SLURM sets SLURM_PROCID; other nodes set NODE_RANK)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        if os.environ.get(name, "0") != "0":
            return False
    return True


def config_path(folder: Path, part: str) -> Path:
    """Where the config of a part of a run goes: ``config.yaml`` for the first, else
    ``config-<part>-<n>.yaml`` with the first free n (``part``: resume, test, validate)."""
    first = folder / "config.yaml"
    if not first.exists():
        return first
    n = 1
    while (folder / f"config-{part}-{n}.yaml").exists():
        n += 1
    return folder / f"config-{part}-{n}.yaml"


def check_writable(key: str, folder: str | os.PathLike | None) -> None:
    """A ConfigError unless ``folder`` exists as a writable folder or can be made (nothing is made here)."""
    if folder is None or "://" in str(folder):
        return
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: cannot make {path}, since {existing} is a file: choose another folder")
    try:  # a real attempt: permissions, read-only mounts and immutable folders all say no here (root included)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"{key}: cannot write in {existing} ({error.strerror}): choose another folder") from error


def unique_path(path: Path) -> Path:
    """``path``, or ``path`` with .2, .3, ... before its suffix if it exists: nothing is overwritten."""
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_suffix(f".{n}{path.suffix}"), n + 1
    return candidate


def check_output(out: Path, *, overwrite: bool, kinds: Sequence[str], what: str) -> None:
    """A one-line ConfigError for an output path that would overwrite a file (without ``overwrite``), whose suffix
    is not one of ``kinds``, or whose folder cannot be made."""
    if out.suffix.lower() not in kinds:
        raise ConfigError(f"--out {out}: {what} is written as {' or '.join(kinds)}; give a path ending in {kinds[0]}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give a file path ending in {kinds[0]}")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists: give another path, or --overwrite to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is not a folder")


def write_failure(error: BaseException) -> OSError | None:
    """The OSError of a full, read-only or failing disk behind ``error`` (or its causes), if there is one."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def describe_write_failure(error: OSError) -> str:
    """One line for a failed write: what could not be written, why, and what to do."""
    where = f" {error.filename}" if error.filename and not isinstance(error.filename, int) else ""
    reason = error.strerror or os.strerror(error.errno or 0)
    fix = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space (the disk quota is full)",
        errno.EFBIG: "the file is larger than this system allows",
        errno.EROFS: "the file system is read-only: choose another folder",
    }.get(error.errno or 0, "check the folder's permissions and the disk")
    return f"cannot write{where}: {reason}; {fix}"
