"""How a configurable part records what it was built from: as plain data.

Every part a config builds (a model, its networks, likelihood and prior, an objective with its weighting and penalty)
is a ``Configurable``: its constructor's keyword arguments are its config, and each instance remembers them, defaults
filled in, as ``init_args``. ``to_spec`` turns a part into a spec, ``{"class_path": ..., "init_args": {...}}`` with
nested parts as specs too, which is what a checkpoint saves: tensors and plain values only, so it loads with
``torch.load(weights_only=True)``. ``vae.core.trust.build`` turns a spec back into a part, judging every class path
by the trust rules first.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


def class_path(cls: type) -> str:
    """Where a class is defined, as a config names it: ``vae.models.vae.VAE``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Configurable:
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

    def record(self, **chosen: Any) -> None:
        """Record what the constructor chose for arguments left at None (the defaults it made), so that the spec
        names the parts in use rather than None."""
        self.init_args.update(chosen)


def to_spec(value: Any) -> Any:
    """A built object (a ``Configurable`` one, an optimizer class or partial) as a spec; plain values pass."""
    if isinstance(value, Configurable):
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


def is_spec(value: Any) -> bool:
    """Whether a value is a spec (a mapping with a ``class_path``)."""
    return isinstance(value, dict) and "class_path" in value
