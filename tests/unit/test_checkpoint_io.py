"""Checkpoints written whole or not at all (``AtomicCheckpointIO``): a write that fails for want of space removes
its partial file, says so in one line, and leaves the previous checkpoint as it was."""

import os

import pytest
import torch

from vae.core.errors import DataError
from vae.training.checkpoint_io import AtomicCheckpointIO


def test_a_checkpoint_write_on_a_full_device_removes_the_partial_file(tmp_path):
    """A real ENOSPC: the partial file is /dev/full, where every write fails."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(10)}, path)
    before = path.read_bytes()
    (tmp_path / "last.ckpt.partial").symlink_to("/dev/full")
    with pytest.raises(DataError, match=r"cannot write: No space left on device; free some space .* the last good"):
        AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(1_000_000)}, path)
    assert not os.path.lexists(tmp_path / "last.ckpt.partial") and path.read_bytes() == before
