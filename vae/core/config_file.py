"""TODO docstring."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vae.core.errors import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader (plain data only), refusing a key given twice in one mapping: PyYAML would silently
    keep the last one, so a second ``model:`` section would drop the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str | os.PathLike) -> Any:
    """YAML text as plain data, or a one-line ConfigError naming ``source`` (a duplicate key included)."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"cannot read {source}: {where}{error.problem or error.context}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot read {source}: {' '.join(str(error).split())}") from error


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as plain data; a missing, unreadable, binary or malformed file is a one-line ConfigError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"cannot read {path}: it is not a YAML text file (not UTF-8 at byte {error.start}); give a config file"
        ) from error
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    return load_yaml(text, path)
