"""Everything W&B, in one place: when to log offline (``choose_wandb_mode``, ``check_wandb_mode``), a run's
loggers during training (``wandb_runs``, ``flush_wandb``, ``wandb_report``, ``finish_wandb``), adding numbers to a
finished run's summary (``add_to_summary``), and reading a run file (``run-<id>.wandb``) back, e.g. of an offline
run (``run_file``, ``read_history``).

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then records in
32 KiB blocks, each record chunk with a 7-byte header (CRC32C, little-endian length, type) and a
payload that is a ``wandb_internal_pb2.Record``. A record split across blocks comes as FIRST, MIDDLE…,
LAST chunks.
"""

from __future__ import annotations

import json
import netrc
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from vae.core.errors import ConfigError, DataError


def wandb_logged_in() -> bool:
    """Whether W&B has credentials here (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_server() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


WANDB_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")


# Seconds between wandb-core's writes of the run file (``run-<id>.wandb``); W&B's own default is 15, so a job
# killed (SIGKILL) within 15 s of an epoch's end lost that epoch's metrics. A user's own setting wins.
FLUSH_INTERVAL = "0.02"
FLUSH_ENV = "WANDB_X_TRANSACTION_LOG_FLUSH_INTERVAL"


def choose_wandb_mode() -> None:
    """Offline W&B logging unless logged in and the server answers (an explicit WANDB_MODE wins): training
    never waits on, or fails for, the network; the fit report says how to upload an offline run."""
    os.environ.setdefault(FLUSH_ENV, FLUSH_INTERVAL)
    if "WANDB_MODE" in os.environ:
        return
    if not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
        return
    host, port = wandb_server()
    if not reachable(host, port):
        os.environ["WANDB_MODE"] = "offline"
        print(f"W&B server {host}:{port} unreachable: logging offline (upload later with wandb sync)", file=sys.stderr)


def check_wandb_mode() -> None:
    """A one-line ConfigError for an explicit WANDB_MODE that cannot work: an unknown mode, or an online mode
    without credentials (W&B itself would fail later, with a traceback, once the run has started)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        return
    if mode not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={mode} is not a W&B mode: use one of {', '.join(WANDB_MODES)}, or unset it")
    if mode in ("online", "run", "shared") and not wandb_logged_in():
        raise ConfigError(
            f"WANDB_MODE={mode}, but W&B has no API key here: run `wandb login` (or set WANDB_API_KEY), or unset "
            "WANDB_MODE to log offline and upload later with wandb sync"
        )


def wandb_runs(trainer) -> list:
    """The W&B runs a trainer logs to (rank zero only: the other ranks have none)."""
    from pytorch_lightning.loggers import WandbLogger

    if not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def flush_wandb(trainer) -> None:
    """Return once everything logged to W&B so far is in the run file, so that a checkpoint written next never
    holds more than W&B does (a SIGKILL after it loses no completed epoch's metrics): a round trip to
    wandb-core (once it answers, it holds every earlier record), then two of its flush intervals. Skipped
    when the interval is over a second (a user's own, longer setting)."""
    for run in wandb_runs(trainer):
        interval = float(getattr(run.settings, "x_transaction_log_flush_interval", 15.0) or 15.0)
        if run.disabled or interval > 1.0:
            continue
        dict(run.summary)  # a request answered after every record sent before it
        time.sleep(2 * interval)


def wandb_report(trainer) -> list[str]:
    """Where a trainer's W&B runs are: the sync line of an offline run, the URL of an online one."""
    return [run_report(run) for run in wandb_runs(trainer)]


def run_report(run) -> str:
    """Where a W&B run is: how to upload it (offline), or its URL; W&B's own footer is quiet (vae.training.console)."""
    if run.offline:
        return f"W&B run saved offline; upload it with: wandb sync {Path(run.dir).parent}"
    return f"W&B run: {run.url}"


def finish_wandb(trainer) -> None:
    """Finish a trainer's W&B runs: a run left open is finished by wandb-core as the process exits, and then it
    prints its own "wandb sync" footer whatever the ``quiet`` setting says."""
    for run in wandb_runs(trainer):
        run.finish()


BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def after_its_last_part(save_dir: str | Path | None, run_id: str | None) -> None:
    """Return once the clock is past the second of the run's newest W&B part: W&B names a part's folder
    ``<mode>-run-<YYYYmmdd_HHMMSS>-<id>``, so a second part of the same run started within the same second would
    write into the first one's folder (a `vae evaluate` right after the fit, say)."""
    if not run_id:
        return
    folder = Path(save_dir or os.environ.get("WANDB_DIR") or ".") / "wandb"
    stamps = [p.name.split("-")[2] for p in folder.glob(f"*run-*-{run_id}") if p.name.count("-") >= 3]
    if not stamps:
        return
    newest = max(stamps)
    while time.strftime("%Y%m%d_%H%M%S") <= newest:
        time.sleep(0.05)


def add_to_summary(
    config: dict, run_id: str | None, numbers: dict[str, float], images: dict[str, Path], *, prefix: str
):
    """Add ``numbers`` (and ``images``) under ``prefix/`` to the summary of the W&B run ``run_id`` that a run's
    config logged to, and return that (finished) W&B run; None if its config has no W&B logger."""
    logger = config.get("trainer", {}).get("logger") or {}
    logger = logger[0] if isinstance(logger, list) else logger
    if not isinstance(logger, dict) or "WandbLogger" not in str(logger.get("class_path", "")):
        return None
    check_wandb_mode()
    import wandb

    init = logger.get("init_args") or {}
    after_its_last_part(init.get("save_dir"), run_id)
    run = wandb.init(project=init.get("project"), id=run_id, resume="allow", dir=init.get("save_dir"))
    run.summary.update({f"{prefix}/{k}": v for k, v in numbers.items()})
    if images:
        run.log({f"{prefix}/images/{name}": wandb.Image(str(path)) for name, path in images.items()})
    run.finish()
    return run


def run_file(save_dir: Path, run_id: str) -> Path:
    """The ``run-<id>.wandb`` file of run ``run_id`` under a W&B ``save_dir`` (online or offline)."""
    found = sorted(Path(save_dir, "wandb").glob(f"*run-*-{run_id}/run-{run_id}.wandb"))
    if not found:
        raise DataError(f"no W&B run file for run {run_id} under {Path(save_dir, 'wandb')}")
    return found[-1]


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
