"""Read back a W&B run file (``run-<id>.wandb``), e.g. of an offline run, without a W&B server.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then records in
32 KiB blocks, each record chunk with a 7-byte header (CRC32C, little-endian length, type) and a
payload that is a ``wandb_internal_pb2.Record``. A record split across blocks comes as FIRST, MIDDLE…,
LAST chunks.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vae.errors import DataError

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> Iterator:
    """Every ``Record`` in the run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise DataError(f"{path} is not a W&B run file (it does not start with ':W&B')")
    position, pending = HEADER_SIZE, b""
    while position + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # the block's tail is padding
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + HEADER_SIZE])
        if kind == 0:  # zero padding up to the end of the block
            position += left_in_block
            continue
        chunk = data[position + HEADER_SIZE : position + HEADER_SIZE + length]
        position += HEADER_SIZE + length
        if kind in (FIRST, MIDDLE):
            pending = (pending if kind == MIDDLE else b"") + chunk
            continue
        payload = pending + chunk if kind == LAST else chunk
        pending = b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


@dataclass
class RunHistory:
    """A run's logged history: for each key, the values in logging order (with the history row's
    ``_step``), and the run's config."""

    series: dict[str, list[tuple[int, object]]] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)
    group: str = ""  # the W&B run group
    name: str = ""  # the W&B run's display name

    def values(self, key: str) -> list:
        return [value for _, value in self.series.get(key, [])]

    def curve(self, key: str, x: str = "trainer/global_step") -> tuple[list[float], list[float]]:
        """(x, value) pairs of ``key`` for the rows that logged both, e.g. a metric against the global step."""
        xs = dict(self.series.get(x, []))
        pairs = [(xs[row], value) for row, value in self.series.get(key, []) if row in xs]
        return [float(a) for a, _ in pairs], [float(b) for _, b in pairs]


def read_history(path: str | Path) -> RunHistory:
    """The history series and config of a W&B run file."""
    history = RunHistory()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = nested_items(record.history.item)
            step = int(row.get("_step", -1))
            for key, value in row.items():
                if not key.startswith("_"):
                    history.series.setdefault(key, []).append((step, value))
        elif kind == "config":
            history.config.update(nested_items(record.config.update))
        elif kind == "summary":
            history.summary.update(nested_items(record.summary.update))
        elif kind == "run":
            history.group = record.run.run_group or history.group
            history.name = record.run.display_name or history.name
    return history


def nested_items(items) -> dict[str, object]:
    """A record's items as a dict; an item with a nested key ("val/images/samples", "_type") becomes a
    nested dict entry."""
    row: dict[str, object] = {}
    for item in items:
        *parents, leaf = [item.key] if item.key else list(item.nested_key)
        target = row
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = json.loads(item.value_json)
    return row
