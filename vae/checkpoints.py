"""Checkpoints that survive a killed job and that are safe to open.

- ``AtomicCheckpointIO``: a checkpoint is written to a temporary file beside its destination, flushed to
  disk, then renamed over it; a write killed half-way leaves the previous checkpoint whole.
- ``LastCheckpoint``: ``<run>/checkpoints/last.ckpt``, the run's state at the end of every training epoch
  (after validation), with the random number generators' states, so that a resumed run draws the same
  noise an uninterrupted one would have drawn.
- ``find_checkpoint``: what ``vae fit --ckpt_path last`` (or a path) resumes, and the W&B run it continues.
- ``read_checkpoint`` / ``load_module``: open a checkpoint with ``weights_only=True``. Tensors and plain data
  load; a file that carries pickled objects is refused, so opening a checkpoint never runs code.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from vae.callbacks import last_checkpoint_path
from vae.errors import ConfigError, DataError, UserError
from vae.module import VAEModule


def one_line(error: BaseException, limit: int = 200) -> str:
    return " ".join(str(error).split())[:limit]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path.partial`` (fsynced), then renames it to ``path``: never a half-written checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage (fsspec): Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial")
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)  # atomic on POSIX: readers see the old file or the new one


def rng_states() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class LastCheckpoint(Checkpoint):
    """Writes ``<run>/checkpoints/last.ckpt`` at the end of every training epoch, after validation.

    Lightning's ``save_last`` refreshes ``last.ckpt`` only when a top-k checkpoint is saved, so after an
    epoch that did not improve it would still hold an older epoch. As a ``Checkpoint`` it runs after the
    other callbacks at an epoch's end, so the checkpoint holds their final state (the best checkpoint's
    bookkeeping included). Every checkpoint of the run also records
    the random number generators' states, restored when a run resumes; the sanity check's validation batches
    draw their noise on the side (the generators' states are put back after it). A resumed run therefore
    draws the same noise, and reaches the same metrics, as an uninterrupted one.
    """

    def __init__(self) -> None:
        self._before_sanity_check: dict[str, torch.Tensor] | None = None

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_sanity_check = rng_states()

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._before_sanity_check is not None:
            set_rng_states(self._before_sanity_check)
            self._before_sanity_check = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(last_checkpoint_path(trainer), weights_only=False)  # the whole state, to resume


def run_id_of(checkpoint: Path) -> str:
    """The run a checkpoint belongs to: ``<save_dir>/<project>/<run id>/checkpoints/<name>.ckpt``."""
    return checkpoint.resolve().parent.parent.name


@dataclass(frozen=True)
class Resume:
    """A checkpoint to resume, and the id of the W&B run it belongs to (its run folder's name)."""

    checkpoint: Path
    run_id: str


def find_checkpoint(ckpt_path: str, *, runs: Path) -> Resume:
    """``ckpt_path`` "last": the newest ``last.ckpt`` under ``runs`` (``<runs>/<run id>/checkpoints/``);
    otherwise the path itself, which must exist."""
    if ckpt_path == "last":
        found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"--ckpt_path last: no run under {runs} has a checkpoints/last.ckpt to resume; give a checkpoint "
                "path, or leave out --ckpt_path to start a new run"
            )
        path = found[-1]
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ConfigError(f"checkpoint not found: {ckpt_path} (give a .ckpt written by vae fit, or 'last')")
    return Resume(checkpoint=path, run_id=run_id_of(path))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``weights_only=True`` (tensors and plain data only)."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot load the checkpoint {path}: not a torch checkpoint (damaged, or another kind of file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors read on demand
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # not a pickle at all: a damaged or foreign file
            raise DataError(f"cannot load the checkpoint {path}: {one_line(error)}") from error
        named = re.search(r"GLOBAL (\S+)", str(error))
        what = named.group(1) if named else "object"
        raise ConfigError(
            f"refusing the checkpoint {path}: it carries a pickled {what}, not only tensors and plain data, and "
            "loading it could run code (checkpoints written by vae fit load safely)"
        ) from error
    except Exception as error:  # a damaged or foreign file: torch and zipfile raise many kinds
        raise DataError(f"cannot load the checkpoint {path}: {one_line(error)}") from error


def check_compatible(checkpoint: dict[str, Any], model: torch.nn.Module, path: str | Path) -> None:
    """A ConfigError unless the checkpoint's weights fit ``model`` (same names, same shapes)."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise DataError(f"{path} is not a vae fit checkpoint (it has no state_dict)")
    expected = model.state_dict()
    for name in sorted(set(saved) | set(expected)):
        got, want = saved.get(name), expected.get(name)
        if got is None or want is None or got.shape != want.shape:
            detail = (
                f"{name} has shape {tuple(got.shape)} there, {tuple(want.shape)} here"
                if got is not None and want is not None
                else f"{name} is {'missing' if got is None else 'unknown'} there"
            )
            raise ConfigError(
                f"the checkpoint {path} is from a different model ({detail}): resume with the config it was "
                "trained with (its run folder's config.yaml)"
            )


def load_module(path: str | Path, map_location: str = "cpu") -> VAEModule:
    """A ``VAEModule`` from a checkpoint, opened with ``weights_only=True`` (see ``read_checkpoint``)."""
    read_checkpoint(path)  # the one-line errors for a refused, damaged or foreign file
    try:
        return VAEModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except UserError:
        raise
    except Exception as error:  # a checkpoint of something else: hyperparameters that build no VAEModule
        raise DataError(f"cannot build a model from the checkpoint {path}: {one_line(error)}") from error
