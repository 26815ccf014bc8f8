"""What several commands share: a run's config read back (``read_run_config``, ``run_config_of``), its data module
built from it under the trust rules (``load_data``), and ``--device`` checked (``check_device``)."""

from __future__ import annotations

from pathlib import Path

import torch

from vae.core.config_file import read_yaml
from vae.core.errors import ConfigError, user_error_in
from vae.core.trust import resolve_class, trust_imports
from vae.data.base import ImageDataModule


def read_run_config(path: Path) -> dict:
    """A run's config.yaml as a mapping (one-line errors for a missing, binary or malformed file)."""
    config = read_yaml(path)
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        raise ConfigError(f"{path} has no data section: give the config the run was trained with, --config")
    return config


def run_config_of(checkpoint: Path, given: Path | None = None) -> tuple[Path, dict]:
    """The config a checkpoint's run was trained with (``given``, or ``<run>/config.yaml``) and its contents; a
    one-line error where there is none."""
    path = given or checkpoint.resolve().parent.parent / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"no run config at {path}: give the config the run was trained with, --config")
    return path, read_run_config(path)


def load_data(config: dict, source: Path, *, batch_size: int) -> ImageDataModule:
    """The data module of a run's config (its ``data`` section), with the evaluation's batch size; its class is
    judged by ``vae.core.trust``'s rules before anything is built."""
    from jsonargparse import ArgumentParser as ConfigParser

    section = dict(config["data"])
    resolve_class(str(section.get("class_path")), ImageDataModule, f"{source}: data")
    trust_imports()
    section["init_args"] = {**dict(section.get("init_args") or {}), "batch_size": batch_size}
    parser = ConfigParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageDataModule, "data", required=True)
    try:
        return parser.instantiate(parser.parse_object({"data": section})).data
    except (TypeError, ValueError) as error:  # jsonargparse's message for a bad value
        cause = user_error_in(error)
        raise cause or ConfigError(f"{source}: data: {' '.join(str(error).split())}") from error


def check_device(name: str) -> torch.device:
    """``--device`` as a torch device that exists here (one-line errors otherwise)."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"--device {name} is not a device (give cpu, cuda or cuda:N)") from error
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {name}: there is no such CUDA device here; use --device cpu")
    return device
