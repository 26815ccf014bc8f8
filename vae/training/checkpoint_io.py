"""Checkpoints that survive a killed job and that are safe to open.

- ``AtomicCheckpointIO``: a checkpoint is written to a temporary file beside its destination, flushed to
  disk, then renamed over it; a write killed half-way leaves the previous checkpoint whole.
- ``load_module``: a checkpoint's ``VAEModule``, opened with ``weights_only=True`` (``vae.core.checkpoints``): tensors
  and plain data load; a file that carries pickled objects is refused, so opening a checkpoint never runs code.
- ``load`` (``vae.load``): the trained model of a checkpoint or a run folder, ready to use.

Checkpoints written by earlier versions load in today's layout (``vae.training.migration``); resuming is
``vae.training.resume``, stopping on a signal ``vae.training.signals``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from vae.core.checkpoints import checkpoint_of, read_checkpoint, reason
from vae.core.errors import DataError, UserError
from vae.models.base import LatentVariableModel
from vae.training.migration import migrate_hparams
from vae.training.module import VAEModule
from vae.training.runs import describe_write_failure, write_failure

__all__ = ["AtomicCheckpointIO", "checkpoint_of", "load", "load_module", "read_checkpoint", "reason"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path.partial`` (fsynced), then renames it to ``path``: never a half-written checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage (fsspec): Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
        except Exception as error:  # a full disk (torch's writer may raise first, the OSError is its context)
            partial.unlink(missing_ok=True)  # a partial file would only keep the disk full
            failure = write_failure(error)
            if failure is None:
                raise
            last = path.parent / "last.ckpt"
            kept = f"the last good checkpoint {last} is intact" if last.is_file() else "no checkpoint was written yet"
            raise DataError(f"{describe_write_failure(failure)} ({partial}); removed it, {kept}") from error
        os.replace(partial, path)  # atomic on POSIX: readers see the old file or the new one


def load_module(path: str | Path, map_location: str = "cpu") -> VAEModule:
    """A ``VAEModule`` from a checkpoint, opened with ``weights_only=True`` (see ``read_checkpoint``)."""
    checkpoint = read_checkpoint(path)  # the one-line errors for a refused, damaged or foreign file
    missing = [key for key in ("state_dict", "hyper_parameters") if not isinstance(checkpoint.get(key), dict)]
    if missing:
        raise DataError(f"{path} is not a vae fit checkpoint (it has no {' and no '.join(missing)})")
    try:
        hparams = migrate_hparams(checkpoint["hyper_parameters"])  # an earlier layout's, in today's
        return VAEModule.load_from_checkpoint(path, map_location=map_location, weights_only=True, **hparams)
    except UserError:
        raise
    except Exception as error:  # a checkpoint of something else: hyperparameters that build no VAEModule
        raise DataError(f"cannot build a model from the checkpoint {path}: {reason(error)}") from error


def load(path: str | Path, *, device: str | torch.device = "cpu") -> LatentVariableModel:
    """The trained model of a checkpoint written by ``vae fit`` (or of a run folder: its best checkpoint), in eval
    mode on ``device``. It is opened with ``weights_only=True``: a file carrying pickled objects is refused.

        model = vae.load("runs/vae/<id>")               # or .../checkpoints/best-epoch029.ckpt
        images = model.sample(64, temperature=0.8)      # (64, c, h, w) in [0, 1]
        code = model.encode(x).mean                     # posterior means (b, d)
        log_px = model.log_likelihood(x, samples=1000)  # nats per image
    """
    return load_module(checkpoint_of(path), map_location=str(device)).model.eval().to(device)
