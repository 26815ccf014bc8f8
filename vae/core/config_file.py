"""Config files read as plain data, strictly: a key given twice, a binary file, a file too large, nested too deep or
expanding too far through YAML aliases is a one-line ``ConfigError`` naming the file, decided before the document is
built (a hostile file must neither hang the reader nor exhaust its memory or stack)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vae.core.errors import ConfigError

MAX_BYTES = 1_000_000
"""The largest config file read (1 MB); the shipped configs and a run's saved config.yaml are a few kB."""
MAX_DEPTH = 100
"""The deepest nesting of lists and mappings read (a config nests a dozen levels at most)."""
MAX_ALIASES = 100
"""The most YAML aliases (``*name``) one document may use."""
MAX_NODES = 100_000
"""The most values a document may hold once its aliases are expanded (a "billion laughs" holds 10⁹)."""


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


def check_shape(text: str, source: str | os.PathLike) -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH``, with more than ``MAX_ALIASES`` aliases, or holding more
    than ``MAX_NODES`` values once its aliases are expanded. Read as a stream of parser events (no recursion, no
    document built), before PyYAML's recursive composer could overflow the stack or an alias bomb fill the memory."""
    sizes: dict[str, int] = {}  # an anchor's expanded size
    open_nodes: list[list] = [[None, 0]]  # [anchor, expanded size so far] of each collection being read
    aliases = 0
    loader = yaml.SafeLoader(text)
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_nodes) > MAX_DEPTH:
                    mark = event.start_mark
                    raise ConfigError(
                        f"cannot read {source}: line {mark.line + 1}, column {mark.column + 1}: nested deeper than "
                        f"{MAX_DEPTH} levels, more than a config file may be"
                    )
                open_nodes.append([event.anchor, 1])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = open_nodes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise ConfigError(
                        f"cannot read {source}: it uses more than {MAX_ALIASES} YAML aliases (*name), more than a "
                        "config file may"
                    )
                anchor, size = None, sizes.get(event.anchor, 1)
            else:  # stream and document boundaries
                continue
            if anchor is not None:
                sizes[anchor] = size
            open_nodes[-1][1] += size
            if open_nodes[0][1] > MAX_NODES or size > MAX_NODES:
                raise ConfigError(
                    f"cannot read {source}: its YAML aliases expand it to more than {MAX_NODES:,} values, more than "
                    "a config file may hold"
                )
    finally:
        loader.dispose()


def load_yaml(text: str, source: str | os.PathLike) -> Any:
    """YAML text as plain data, or a one-line ConfigError naming ``source`` (a duplicate key, a document too deep
    or expanding too far included)."""
    try:
        check_shape(text, source)
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"cannot read {source}: {where}{error.problem or error.context}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot read {source}: {' '.join(str(error).split())}") from error


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as plain data; a missing, unreadable, binary, oversized or malformed file is a one-line
    ConfigError. At most ``MAX_BYTES`` are read, whatever the file (``/dev/zero`` included)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    if len(data) > MAX_BYTES:
        size = Path(path).stat().st_size if Path(path).is_file() else None
        what = f"it is {size / 1e6:,.1f} MB" if size else f"it holds more than {MAX_BYTES / 1e6:g} MB"
        raise ConfigError(
            f"cannot read {path}: {what}, larger than a config file may be ({MAX_BYTES / 1e6:g} MB); give a config file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"cannot read {path}: it is not a YAML text file (not UTF-8 at byte {error.start}); give a config file"
        ) from error
    return load_yaml(text, path)
