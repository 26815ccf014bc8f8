"""The ``vae fit`` parser's words: every bad input is one line naming the problem and the fix (``Parser``,
``one_line``), a misspelt option names the nearest one and an old key its new name (``suggest``), and a config file is
read strictly first, in today's layout where it was written by an earlier version (``Parser.parse_path``)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import NoReturn

import yaml
from pytorch_lightning.cli import LightningArgumentParser

from vae.core.config_file import read_yaml
from vae.core.errors import (
    ConfigError,
    exit_with_error,
    nearest,
    option_strings,
    with_suggestion,
)
from vae.core.trust import Sections, judge, resolve_class
from vae.data.base import ImageDataModule
from vae.training.migration import OLD_KEYS, migrate_config
from vae.training.module import VAEModule

SECTIONS = Sections(model=VAEModule, data=ImageDataModule)  # what a config's model and data sections may name


class Parser(LightningArgumentParser):
    """Reports bad input as one line (no usage dump), exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: a mistyped --model.lat must not silently set --model.latent_dim.
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def parse_path(self, path, *args, **kwargs):
        """A config file, read first as strict YAML: a binary file or a key given twice is a one-line error."""
        try:
            config = read_yaml(path)
        except ConfigError as error:
            self.error(str(error))
        migrated = migrate_config(config)
        if migrated == config:
            return super().parse_path(path, *args, **kwargs)
        print(f"note: {path} is in an earlier layout; read in today's (docs/config.md)", file=sys.stderr)
        text = yaml.safe_dump(migrated, sort_keys=False)
        return super().parse_string(text, os.path.basename(path), *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        exit_with_error(suggest(one_line(message), self))


def all_options(parser) -> list[str]:
    """Every ``--option`` of a parser and of its subcommands' parsers."""
    options = option_strings(parser)
    for action in parser._actions:
        for sub in (getattr(action, "choices", None) or {}).values() if hasattr(action, "_name_parser_map") else []:
            options += all_options(sub)
    return options


def suggest(message: str, parser) -> str:
    """A parser's message, with the nearest valid option named for a misspelt one: an unknown ``--key``, or an
    unknown argument of a class (``Option 'bta' is not accepted`` by vae.objectives.weighting.Constant)."""
    moved = re.search(r"unrecognized arguments: --(model\.\w+)((?:\.\w+)*)", message)
    if moved is not None and moved.group(1) in OLD_KEYS:
        old, rest = moved.groups()
        new = OLD_KEYS[old] + (rest if " " not in OLD_KEYS[old] else "")
        return (
            f"--{old}{rest} is now {'--' if ' ' not in new else ''}{new}: the model's and the objective's settings "
            "are their own (docs/config.md)"
        )
    option = re.search(r"class_path '([\w.]+)': Option '(\w+)' is not accepted", message)
    if option is None:
        return with_suggestion(message, all_options(parser))
    try:
        path, name = option.groups()
        module, _, attribute = path.rpartition(".")
        accepted = inspect.signature(getattr(importlib.import_module(module), attribute).__init__).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return message
    match = nearest(name, [p for p in accepted if p not in ("self", "args", "kwargs")])
    return f"{message} (did you mean {match}?)" if match else message


DOTTED = r"([A-Za-z_]\w*(?:\.\w+)+)"  # a dotted path (vae.models.VAE), never a word of jsonargparse's prose


def one_line(message: str) -> str:
    """Fold a parser message into one line, naming the key where the problem is (``model.model.network`` for a
    part inside the model) and, for a class path, judging it by the trust rules in their words; of a union's errors
    keep only the informative ones."""
    text = " ".join(message.split())
    keys = re.findall(r'Parser key "([^"]+)"', text)
    where = ".".join(dict.fromkeys(keys))  # the outer key, then the part's keys inside it
    inner = text[text.rfind("Parser key") :] if keys else text  # what the innermost parser said
    patterns = (  # the path as given, in jsonargparse's words; the resolved one only as the last resort
        rf"Got value: (?:Namespace\(class_path=')?{DOTTED}",
        rf"Expected a path but {DOTTED}",
        rf"class_path '{DOTTED}'",
        rf"Importing '{DOTTED}'",
        rf"Import path {DOTTED} does not correspond",
    )
    path = next((found.group(1) for pattern in patterns if (found := re.search(pattern, inner))), "")
    if keys and path:  # a class path: judged by vae.core.trust's rules, in their words
        try:
            if len(keys) == 1:
                judge(where, path, SECTIONS)
            else:
                resolve_class(path, None, where)
        except ConfigError as error:
            return str(error)
        kind = re.search(r"does not correspond to a subclass of (\w+)", inner)
        if kind is not None:
            return f"{where}: {path} is not a subclass of {kind.group(1)}"
    if keys:  # the class paths of the parts inside it (model.model's network, ...): trusted, and classes
        for found in re.finditer(rf"class_path '{DOTTED}'|Import(?:ing| path) '?{DOTTED}", text):
            named = next(group for group in found.groups() if group)
            part = re.findall(r'Parser key "([^"]+)"', text[: found.start()])
            try:
                resolve_class(named, None, ".".join(dict.fromkeys(part)) or where)
            except ConfigError as error:
                return str(error)
    union = re.search(r'Parser key "([^"]+)":.*?Does not validate .*? Errors: - (.*?) Given value type:', inner)
    if union is None:
        return text
    key, errors = union.groups()
    useful = [e for e in errors.split(" - ") if "NoneType" not in e]
    return f"{where or key}: " + "; ".join(useful)
