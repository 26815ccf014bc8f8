"""What a config may build, and how a checkpoint records what was built: as plain data.

A config is code: each ``class_path`` in it names a class to import and build. The ``vae`` commands build
only classes from trusted modules: this package, torch, torchvision, torchmetrics and Lightning, plus the
top-level modules named in the environment variable ``VAE_TRUSTED_MODULES`` (comma-separated), e.g.
``VAE_TRUSTED_MODULES=mylab`` to use ``mylab.nets.ResNet`` as the network.

The model's choices (network, likelihood, prior, weighting, optimizer) are recorded as specs, plain
``{"class_path": ..., "init_args": {...}}`` dicts, in the checkpoint's hyperparameters. A checkpoint then
holds tensors and plain values only, so it loads with ``torch.load(weights_only=True)``: loading one never
runs code from the file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import Any, TypeVar

import torch

from vae.errors import ConfigError

T = TypeVar("T")
TRUSTED_MODULES = ("vae", "torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning", "lightning_fabric")
Spec = dict[str, Any]


def trusted_modules() -> tuple[str, ...]:
    extra = os.environ.get("VAE_TRUSTED_MODULES", "")
    return TRUSTED_MODULES + tuple(name.strip() for name in extra.split(",") if name.strip())


def check_trusted(class_path: str, where: str) -> None:
    """A one-line ConfigError unless ``class_path`` lies in a trusted module."""
    if not any(class_path.startswith(f"{module}.") for module in trusted_modules()):
        root = class_path.split(".")[0]
        raise ConfigError(
            f"{where}: {class_path} is not from a trusted module ({', '.join(trusted_modules())}); a config is "
            f"code: if you trust {root}, allow it with VAE_TRUSTED_MODULES={root}"
        )


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Recorded:
    """Mixin for the objects a config builds: remembers the keyword arguments each was built with, defaults
    filled in, as ``init_args``, so that ``to_spec`` can record it as plain data."""

    init_args: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any):
        self = super().__new__(cls)
        signature = inspect.signature(cls)
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        init_args = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                init_args |= value
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                init_args[name] = value
        object.__setattr__(self, "init_args", init_args)  # also on frozen dataclasses
        return self


def to_spec(value: Any) -> Any:
    """A built object (a ``Recorded`` one, an optimizer class or partial) as a spec; plain values pass."""
    if isinstance(value, Recorded):
        return {"class_path": class_path(type(value)), "init_args": {k: to_spec(v) for k, v in value.init_args.items()}}
    if isinstance(value, type):
        return {"class_path": class_path(value), "init_args": {}}
    if isinstance(value, functools.partial):  # partial(cls, **kw), or jsonargparse's partial(call, ..., cls, **kw)
        classes = [part for part in (value.func, *value.args) if isinstance(part, type)]
        if classes:
            init_args = {k: to_spec(v) for k, v in value.keywords.items()}
            return {"class_path": class_path(classes[-1]), "init_args": init_args}
    if isinstance(value, list | tuple):
        return type(value)(to_spec(v) for v in value)
    return value


def resolve(spec: Spec, base: type, where: str) -> type:
    """The class a spec names: from a trusted module, and a subclass of ``base``."""
    path = spec["class_path"]
    check_trusted(path, where)
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"{where}: cannot import {path} ({error})") from error
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{where}: {path} is not a {base.__name__}")
    return cls


def is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


def build(value: T | Spec, base: type[T], where: str) -> T:
    """A spec built into an object of type ``base`` (nested specs too); an object passes unchanged."""
    if not is_spec(value):
        return value
    init_args = {k: build(v, Recorded, f"{where}.{k}") for k, v in (value.get("init_args") or {}).items()}
    cls = resolve(value, base, where)
    try:
        return cls(**init_args)
    except TypeError as error:  # an unknown or missing argument
        raise ConfigError(f"{where}: {' '.join(str(error).split())}") from error


def build_optimizer(value: Any, where: str = "model.optimizer") -> Any:
    """An optimizer spec as a callable of the parameters (a partial of the class); a callable passes."""
    if not is_spec(value):
        return value
    return functools.partial(resolve(value, torch.optim.Optimizer, where), **(value.get("init_args") or {}))
