"""Resuming a run exactly: ``LastCheckpoint`` (the run's state, random generators included, at every epoch's end),
``find_checkpoint`` (what ``--ckpt_path last`` means), ``resume_changes`` (what a resumed run may change, and what it
may not), ``ConfigOverCheckpoint`` (a resumed run takes the optimizer settings its config gives)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from vae.core.errors import ConfigError, DataError
from vae.training.migration import migrate_hparams, upgraded_state
from vae.training.module import VAEModule
from vae.training.runs import last_checkpoint_path
from vae.training.tracking import flush_wandb


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
    """What the config changes in the module's settings against the checkpoint's (the objective's weighting, the
    optimizer's learning rate, ...). The model's settings (``model.model``) define what the weights mean and cannot
    change: a one-line ConfigError names the first that does. Settings that one side does not have (an argument a
    class gained since, at its default) are no change."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict):
        raise DataError(f"{path} is not a vae fit checkpoint (it has no hyper_parameters)")
    before, after = flatten(migrate_hparams(saved), "model"), flatten(dict(module.hparams), "model")
    changed = changes({k: v for k, v in before.items() if k in after}, {k: v for k, v in after.items() if k in before})
    for key, (old, new) in changed.items():
        if key.startswith("model.model.") or key == "model.model":
            raise ConfigError(
                f"{key} cannot change when resuming (the checkpoint {path} has {old}, the config {new}): it defines "
                "the model; resume with the run's config, or start a new run"
            )
    check_compatible(checkpoint, module, path)
    return changed


def check_compatible(checkpoint: dict[str, Any], model: torch.nn.Module, path: str | Path) -> None:
    """A ConfigError unless the checkpoint's weights fit ``model`` (same names, same shapes)."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        raise DataError(f"{path} is not a vae fit checkpoint (it has no state_dict)")
    if isinstance(model, VAEModule):  # a checkpoint of an earlier layout, as it will load
        saved = upgraded_state(saved, model)
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
