"""Checkpoints that survive a killed job and that are safe to open.

- ``AtomicCheckpointIO``: a checkpoint is written to a temporary file beside its destination, flushed to
  disk, then renamed over it; a write killed half-way leaves the previous checkpoint whole.
- ``LastCheckpoint``: ``<run>/checkpoints/last.ckpt``, the run's state at the end of every training epoch
  (after validation), with the random number generators' states, so that a resumed run draws the same
  noise an uninterrupted one would have drawn.
- ``find_checkpoint``: what ``vae fit --ckpt_path last`` (or a path) resumes, and the W&B run it continues.
- ``read_checkpoint`` / ``load_module``: open a checkpoint with ``weights_only=True``. Tensors and plain data
  load; a file that carries pickled objects is refused, so opening a checkpoint never runs code.
- ``load`` (``vae.load``): the trained model of a checkpoint or a run folder, ready to use.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import signal
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vae.core.errors import ConfigError, DataError, UserError
from vae.models.base import LatentVariableModel
from vae.training.migration import migrate_hparams
from vae.training.module import VAEModule
from vae.training.runs import describe_write_failure, last_checkpoint_path, write_failure
from vae.training.tracking import flush_wandb, wandb_report, wandb_runs


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


def rng_states() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class ConfigOverCheckpoint(pl.Callback):
    """When a run resumes, the optimizer's hyperparameters come from the config, not from the checkpoint.

    Lightning restores the optimizer's whole state, its param groups' learning rate and other hyperparameters
    included, so a new ``--model.optimizer.init_args.lr`` would be silently ignored. Once the state is restored
    (``on_train_start``), every hyperparameter of every param group is set to what a freshly configured
    optimizer has; the optimizer's running state (Adam's moments, its step) stays as restored.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        fresh = pl_module.configure_optimizers()
        fresh = fresh if isinstance(fresh, list | tuple) else [fresh]
        for restored, configured in zip(trainer.optimizers, fresh):
            for group, new in zip(restored.param_groups, configured.param_groups):
                group.update({key: value for key, value in new.items() if key != "params"})


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
        flush_wandb(trainer)  # W&B holds at least what the checkpoint holds, whatever kills the job next
        trainer.save_checkpoint(last_checkpoint_path(trainer), weights_only=False)  # the whole state, to resume


class StopOnSignal(pl.Callback):
    """Stops training cleanly when the job is told to stop, and says so.

    SIGTERM (what SLURM, Kubernetes and most schedulers send before a kill), SIGINT (Ctrl-C), SIGHUP (the
    terminal closed; left alone under nohup) and SIGUSR1/SIGUSR2 (SLURM's ``--signal``) all stop training at the
    next batch: the run's ``last.ckpt`` is written there, mid-epoch (a resumed run continues from that very
    batch), the resume line is printed, the W&B run is marked preempted and finished with the exit code, and
    the process exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the shell's convention
    for a job ended by a signal. A signal during validation ends the run without a new checkpoint (the last one
    is from the end of the previous epoch). A second Ctrl-C stops at once, without a checkpoint.

    Lightning itself catches SIGTERM (under DDP it stops every process at the same step; with one process it
    would wait for the epoch's end); the other signals are passed on to it as a SIGTERM.
    """

    SIGNALS = ("SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue
            self.previous[signum] = signal.signal(signum, self.request_stop)

    def request_stop(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping after this step (Ctrl-C again to stop at once)", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's stop: sets trainer.received_sigterm, tells the others

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if trainer.received_sigterm and trainer.world_size == 1:  # under DDP Lightning stops all ranks together
            raise SIGTERMException

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        last = last_checkpoint_path(trainer)
        if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C, or a first one before training started
            name, code = "a second Ctrl-C" if self.signum is not None else "Ctrl-C", 128 + signal.SIGINT
        else:
            signum = self.signum or signal.SIGTERM
            name, code = signal.Signals(signum).name, 128 + signum
            exception.code = code
        where = f"step {trainer.global_step}, epoch {trainer.current_epoch}"
        if isinstance(exception, SIGTERMException) and trainer.state.stage == RunningStage.TRAINING:
            flush_wandb(trainer)
            trainer.save_checkpoint(last, weights_only=False)
            saved = f"saved {last}"
        else:
            saved = f"the last checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        if trainer.is_global_zero:
            resume = "resume with --ckpt_path last" if last.is_file() else "start it again"
            print("\n".join([f"stopped by {name} at {where}: {saved}; {resume}", *wandb_report(trainer)]), flush=True)
        for run in wandb_runs(trainer):
            run.mark_preempting()
            run.finish(exit_code=code)


def run_id_of(checkpoint: Path) -> str:
    """The run a checkpoint belongs to: ``<save_dir>/<project>/<run id>/checkpoints/<name>.ckpt``."""
    return checkpoint.resolve().parent.parent.name


@dataclass(frozen=True)
class Resume:
    """A checkpoint that a command continues (``vae fit``) or tests (``vae test``), and its run: the run folder
    and the id of its W&B run (the folder's name)."""

    checkpoint: Path
    run_id: str

    @property
    def folder(self) -> Path:
        return self.checkpoint.resolve().parent.parent


def find_checkpoint(ckpt_path: str, *, runs: Path) -> Resume:
    """``ckpt_path`` "last" (or "best"): the newest run's ``last.ckpt`` (or best checkpoint) under ``runs``
    (``<runs>/<run id>/checkpoints/``); otherwise the path itself, which must exist."""
    if ckpt_path in ("last", "best"):
        pattern = "last.ckpt" if ckpt_path == "last" else "best-*.ckpt"
        found = sorted(runs.glob(f"*/checkpoints/{pattern}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: no run under {runs} has a checkpoints/{pattern}; give a checkpoint path"
                + (", or leave out --ckpt_path to start a new run" if ckpt_path == "last" else "")
            )
        path = found[-1]
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ConfigError(f"checkpoint not found: {ckpt_path} (give a .ckpt written by vae fit, or 'last')")
    return Resume(checkpoint=path, run_id=run_id_of(path))


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """A nested config as ``{"a.b.c": value}`` (tuples as lists; ``init_args`` left out of the keys)."""
    if isinstance(value, dict):
        items: dict[str, Any] = {}
        for key, item in value.items():
            items |= flatten(item, prefix if key == "init_args" else f"{prefix}.{key}")
        return items
    return {prefix: as_lists(value)}


def as_lists(value: Any) -> Any:
    return [as_lists(v) for v in value] if isinstance(value, tuple | list) else value


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ between two flattened configs: key → (before, after)."""
    keys = sorted(set(before) | set(after))
    return {key: (before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)}


def describe(changed: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key} {old} → {new}" for key, (old, new) in changed.items())


def resume_changes(checkpoint: dict[str, Any], module: VAEModule, path: str | Path) -> dict[str, tuple[Any, Any]]:
    """What the config changes in the model's settings against the checkpoint's (the optimizer's learning rate,
    the weighting, ...). Settings that define what the weights mean (``VAEModule.ARCHITECTURE``: the network,
    the latent size, the likelihood, ...) cannot change: a one-line ConfigError names the first that does."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict):
        raise DataError(f"{path} is not a vae fit checkpoint (it has no hyper_parameters)")
    saved = migrate_hparams(saved)
    # Settings added since the checkpoint was written, at their defaults, are what it trained with: no change.
    defaults = {name: p.default for name, p in inspect.signature(VAEModule.__init__).parameters.items()}
    current = {k: v for k, v in module.hparams.items() if k in saved or v != defaults.get(k)}
    changed = changes(flatten(saved, "model"), flatten(current, "model"))
    for key, (old, new) in changed.items():
        if key.split(".")[1] in VAEModule.ARCHITECTURE and old is not None:
            raise ConfigError(
                f"{key} cannot change when resuming (the checkpoint {path} has {old}, the config {new}): it defines "
                "what the weights mean; resume with the run's config, or start a new run"
            )
    check_compatible(checkpoint, module, path)
    return changed


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


def check_compatible(checkpoint: dict[str, Any], model: torch.nn.Module, path: str | Path) -> None:
    """A ConfigError unless the checkpoint's weights fit ``model`` (same names, same shapes)."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise DataError(f"{path} is not a vae fit checkpoint (it has no state_dict)")
    if isinstance(model, VAEModule):  # a checkpoint of an earlier layout, as it will load
        saved = model.upgrade(saved)
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


def load(path: str | Path, *, device: str | torch.device = "cpu") -> LatentVariableModel:
    """The trained model of a checkpoint written by ``vae fit`` (or of a run folder: its best checkpoint), in eval
    mode on ``device``. It is opened with ``weights_only=True``: a file carrying pickled objects is refused.

        model = vae.load("runs/vae/<id>")               # or .../checkpoints/best-epoch029.ckpt
        images = model.sample(64, temperature=0.8)      # (64, c, h, w) in [0, 1]
        code = model.encode(x).mean                     # posterior means (b, d)
        log_px = model.log_likelihood(x, samples=1000)  # nats per image
    """
    return load_module(checkpoint_of(path), map_location=str(device)).vae.eval().to(device)
