"""Reading checkpoints safely, and naming a model's exact weights.

- ``read_checkpoint``: a checkpoint's contents, opened with ``torch.load(weights_only=True)``: tensors and plain data
  load; a file that carries pickled objects is refused, so opening a checkpoint never runs code.
- ``checkpoint_of``: the checkpoint a path names (a file, or a run folder's best checkpoint).
- ``fingerprint``: a hash of a model's config and weights, which a model trained on another's outputs (a prior over
  a VQ model's codes) records, so that it refuses to be paired with any other.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vae.core.errors import ConfigError, DataError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``weights_only=True`` (tensors and plain data only)."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot load the checkpoint {path}: not a torch checkpoint (damaged, or another kind of file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors read on demand
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL (\S+)", str(error))
        if named is None and "global" not in str(error).lower():  # not a pickle at all: a damaged or foreign file
            raise DataError(f"cannot load the checkpoint {path}: {reason(error)}") from error
        what = named.group(1) if named else "object"
        raise ConfigError(
            f"refusing the checkpoint {path}: it carries a pickled {what}, not only tensors and plain data, and "
            "loading it could run code (checkpoints written by vae fit load safely)"
        ) from error
    except Exception as error:  # a damaged or foreign file: torch and zipfile raise many kinds
        raise DataError(f"cannot load the checkpoint {path}: {reason(error)}") from error


def reason(error: BaseException) -> str:
    """Why torch could not read a file, in a few words: the unpickler's own reason if it gave one, else the first
    sentence of its message, never torch's advice to load it with weights_only=False (that would run code)."""
    text = " ".join(str(error).split())
    named = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    first = named.group(1) if named else re.split(r"(?<=[.!?]) ", text)[0]
    if "weights_only" in first or not first:
        first = type(error).__name__
    return f"damaged, or not written by vae fit ({first[:150].rstrip('.')})"


def checkpoint_of(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's (``<run>/checkpoints/``) newest best checkpoint, else its
    ``last.ckpt``; a one-line ConfigError if there is none."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        found = best[-1] if best else folder / "last.ckpt"
        if found.is_file():
            return found
        raise ConfigError(f"{path} holds no checkpoint (best-*.ckpt or last.ckpt): give a run folder or a .ckpt file")
    raise ConfigError(f"checkpoint not found: {path} (give a .ckpt written by vae fit, or its run folder)")


def fingerprint(spec: Any, state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex, first 16 digits) of a model's spec (as JSON, keys sorted) and of every tensor of its state dict
    (names, dtypes, shapes and bytes, in name order): equal exactly when the config and the weights are."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
