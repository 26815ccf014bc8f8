"""What a config may build, and how a checkpoint records what was built: as plain data.

A config is code: each ``class_path`` in it names a class to import and build. What it may build is decided
on the object the path resolves to, never on how the path is spelt:

1. the path must start in a trusted module (checked before anything is imported): this package, torch,
   torchvision, torchmetrics and Lightning, plus the top-level modules named in the environment variable
   ``VAE_TRUSTED_MODULES`` (comma-separated), e.g. ``VAE_TRUSTED_MODULES=mylab`` to use ``mylab.nets.ResNet``;
2. the object it reaches must be *defined* in a trusted module (``torch.os.system`` starts in torch but is
   ``posix.system``: refused);
3. it must be a class, and a subclass of what the key expects (a ``LatentVariableModel`` for ``model.model``, a
   ``Network`` for a model's ``network``, an ``Optimizer`` for ``model.optimizer``, ...): functions are refused, even
   trusted ones (``torch.load``).

The same rules apply to the ``vae`` command's parser (``trust_imports`` sets jsonargparse's import policy, so
nothing outside the trusted modules is even imported), to the specs inside checkpoints, and to ``vae compare``
and ``vae evaluate``.

The model's choices (network, likelihood, prior, weighting, optimizer) are recorded as specs, plain
``{"class_path": ..., "init_args": {...}}`` dicts, in the checkpoint's hyperparameters. A checkpoint then
holds tensors and plain values only, so it loads with ``torch.load(weights_only=True)``: loading one never
runs code from the file.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import inspect
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from vae.core.errors import ConfigError
from vae.core.spec import Configurable, class_path, is_spec

T = TypeVar("T")
TRUSTED_MODULES = ("vae", "torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning", "lightning_fabric")
Spec = dict[str, Any]


def trusted_modules() -> tuple[str, ...]:
    extra = os.environ.get("VAE_TRUSTED_MODULES", "")
    names = tuple(name.strip() for name in extra.split(",") if name.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")) or name.split(".")[0] == "jsonargparse":
            raise ConfigError(f"VAE_TRUSTED_MODULES: {name!r} is not a module name (give names such as mylab,other)")
    return TRUSTED_MODULES + names


def is_trusted(path: str) -> bool:
    """Whether a dotted path lies in a trusted module (``vae.layers.nets.conv.ConvNet`` yes, ``vaex.Thing`` no)."""
    return any(path == module or path.startswith(f"{module}.") for module in trusted_modules())


def untrusted(where: str, path: str, defined: str | None = None) -> ConfigError:
    """The one-line refusal of a path outside the trusted modules (``defined``: where the object really is)."""
    root = (defined or path).split(".")[0]
    what = f"{path} is {defined}, which is" if defined and defined != path else f"{path} is"
    return ConfigError(
        f"{where}: refusing {path}: {what} not from a trusted module ({', '.join(trusted_modules())}); a config is "
        f"code: if you have read {root} and trust it, allow it with VAE_TRUSTED_MODULES={root}"
    )


def defined_at(obj: Any) -> str | None:
    """Where an object is defined (``module.qualname``), which can differ from the path that reached it: a
    function or class is its own, an instance or a partial is judged by its class or its function."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
        obj = type(obj)
    if inspect.ismodule(obj):
        return obj.__name__
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{name}" if module and name else None


def import_trusted(path: str, where: str) -> Any:
    """The object a dotted path names, imported only from trusted modules and defined in one (rules 1, 2)."""
    if not isinstance(path, str) or not path or not all(part.isidentifier() for part in path.split(".")):
        raise ConfigError(f"{where}: {path!r} is not a dotted class path such as vae.layers.nets.conv.ConvNet")
    if not is_trusted(path):
        raise untrusted(where, path)
    parts = path.split(".")
    obj: Any = None
    for depth in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:depth]))
        except ImportError:
            continue
        try:
            for part in parts[depth:]:
                obj = getattr(obj, part)
        except AttributeError as error:
            raise ConfigError(f"{where}: cannot import {path} ({error})") from error
        break
    else:
        raise ConfigError(f"{where}: cannot import {path} (no such module)")
    defined = defined_at(obj)
    if defined is not None and is_trusted(defined):
        return obj
    if inspect.isroutine(obj) or inspect.ismodule(obj):
        kind = "the module" if inspect.ismodule(obj) else "the function"
        raise ConfigError(f"{where}: refusing {path}: it is {kind} {defined}, and a config may only name classes")
    raise untrusted(where, path, defined or repr(obj))


def check_class(obj: Any, base: type | None, where: str, path: str) -> type:
    """``obj`` itself if it is a class (rule 3), and a subclass of ``base`` if one is expected."""
    if not inspect.isclass(obj):
        kind = f"the function {defined_at(obj)}" if inspect.isroutine(obj) else f"a {type(obj).__name__}"
        raise ConfigError(f"{where}: refusing {path}: it is {kind}, and a config may only name classes")
    if base is not None and not issubclass(obj, base):
        raise ConfigError(f"{where}: {path} is not a subclass of {base.__name__} ({class_path(base)})")
    return obj


def resolve_class(path: str, base: type | None, where: str) -> type:
    """The class a config's ``class_path`` names, under all three rules."""
    return check_class(import_trusted(path, where), base, where, path)


@dataclass(frozen=True)
class Sections:
    """What a config's sections build, for judging the classes it names: ``model`` (its constructor's type hints
    say what each ``model.<argument>`` may name) and ``data`` (the base every data module subclasses). The command
    line gives them (``VAEModule`` and ``ImageDataModule``): this module sits below both."""

    model: type
    data: type


def check_classes(config, sections: Sections, where: str = "") -> None:
    """Every class a parsed config names, judged on the object (``vae.core.trust``): defined in a trusted module,
    a class (functions are refused wherever they appear), and of the kind its key expects, at every depth: the
    ``model`` section's arguments by the training module's type hints, and each part's arguments by the type hints of
    the class that takes them (a model's ``network`` must be a ``Network``, its ``prior`` a ``Prior``, ...)."""
    if where or not isinstance(config, dict):
        visit(config, where or "config", None)
        return
    for key, value in config.items():
        if key == "model" and isinstance(value, dict) and "class_path" not in value:
            visit_arguments(value, "model", constructor_hints(sections.model))
        else:
            visit(value, key, sections.data if key == "data" else None)


def visit(value: Any, where: str, expected: type | None) -> None:
    """Judge the classes ``value`` names at ``where``, ``expected``: the kind its key takes (None: any class)."""
    if isinstance(value, dict):
        if isinstance(value.get("class_path"), str):
            cls = check_class(import_trusted(value["class_path"], where), expected, where, value["class_path"])
            arguments = {k: v for k, v in value.items() if k not in ("class_path", "init_args")}
            arguments |= dict(value.get("init_args") or {})
            visit_arguments(arguments, f"{where}.init_args", constructor_hints(cls))
        else:
            for key, item in value.items():
                visit(item, f"{where}.{key}", None)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            visit(item, f"{where}[{i}]", None)
    elif inspect.isclass(value) or inspect.isroutine(value) or isinstance(value, functools.partial):
        path = defined_at(value) or repr(value)
        check_class(import_trusted(path, where), expected, where, path)


def visit_arguments(arguments: dict, where: str, hints: dict[str, Any]) -> None:
    for name, item in arguments.items():
        visit(item, f"{where}.{name}", base_of(hints.get(name)))


def constructor_hints(cls: type) -> dict[str, Any]:
    """The type hints of a class's constructor ({} where they cannot be read)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # hints naming what cannot be resolved here: judge its arguments by rules 1 and 2 only
        return {}


def base_of(hint: Any) -> type | None:
    """The class an argument typed ``hint`` must name a subclass of: the class itself, X of ``X | None``, the return
    type of a callable (an optimizer); None if there is no one class."""
    if typing.get_origin(hint) is collections.abc.Callable:
        hint = typing.get_args(hint)[-1]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # an optional class: X | None
        classes = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = classes[0] if len(classes) == 1 else None
    return hint if inspect.isclass(hint) and hint is not object else None


def judge(key: str, path: str, sections: Sections) -> type:
    """The class ``path`` names, if a config may build it under ``key`` (else a one-line ConfigError)."""
    return check_class(import_trusted(path, key), expected_base(key, sections), key, path)


def expected_base(key: str, sections: Sections) -> type | None:
    """The class a top-level config key must name a subclass of: what the training module's argument is typed as
    (``model.model``, ``model.objective``, ``model.optimizer``), the data base for ``data``; None otherwise."""
    if key == "data":
        return sections.data
    section, _, name = key.partition(".")
    if section != "model" or "." in name:
        return None
    return base_of(constructor_hints(sections.model).get(name))


def trust_imports() -> None:
    """Make jsonargparse (under LightningCLI) import only from trusted modules, judging each object by where it
    is defined (rules 1 and 2, for every value it parses), and never build a class spec given to an
    argument typed ``Any``."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(
        import_path_denylist=["*"],
        import_path_allowlist=list(trusted_modules()),
        instantiate_subclass_spec_in_any=False,
    )


def build(value: T | Spec, base: type[T], where: str) -> T:
    """A spec built into an object of type ``base`` (nested specs too); an object passes unchanged."""
    if not is_spec(value):
        return value
    cls = resolve_class(value["class_path"], base, where)
    init_args = {k: build(v, Configurable, f"{where}.{k}") for k, v in (value.get("init_args") or {}).items()}
    try:
        return cls(**init_args)
    except TypeError as error:  # an unknown or missing argument
        raise ConfigError(f"{where}: {' '.join(str(error).split())}") from error


def build_optimizer(value: Any, where: str = "model.optimizer") -> Any:
    """An optimizer spec as a callable of the parameters (a partial of the class); a callable passes."""
    if not is_spec(value):
        return value
    optimizer = resolve_class(value["class_path"], torch.optim.Optimizer, where)
    return functools.partial(optimizer, **(value.get("init_args") or {}))
