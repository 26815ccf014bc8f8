"""Errors that are the user's to fix. The ``vae`` command prints them as one line and exits non-zero."""

import argparse
import difflib
import re
import sys
from collections.abc import Iterable
from typing import NoReturn


class UserError(Exception):
    """A problem with the user's input (config, data, paths), not a bug: its message names the fix."""

    def __init__(self, message: str = "") -> None:
        super().__init__(worker_message(str(message)))


def worker_message(message: str) -> str:
    """A UserError raised in a DataLoader worker reaches the main process re-raised, with the worker's whole
    traceback as its message ("Caught DataError in DataLoader worker process 0. Original Traceback ...
    vae.core.errors.DataError: <message>"): keep the message itself."""
    if "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (a negative β, a latent size of 0, ...)."""


class DataError(UserError, OSError):
    """Dataset files that are missing or unreadable."""


class NonFiniteError(UserError):
    """A non-finite loss, KL, reconstruction or gradient stopped training (the message names the step)."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError that caused ``error``, if any (jsonargparse wraps errors raised in constructors)."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
    return None


def exit_with_error(message: str, *, command: str = "vae") -> NoReturn:
    """Print ``error: ...`` as one line on stderr and exit with status 2."""
    print(f"error: {' '.join(message.split())} (see {command} --help)", file=sys.stderr)
    sys.exit(2)


def nearest(word: str, options: Iterable[str]) -> str | None:
    """The option closest to a misspelt ``word`` (difflib's ratio ≥ 0.6, dots and dashes alike), if any."""
    options = sorted(set(options))
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None


def with_suggestion(message: str, options: Iterable[str]) -> str:
    """``message`` with "did you mean --x?" for each option it names as unrecognized that is close to a known one."""
    options = list(options)
    unknown = re.search(r"unrecognized arguments: (.*)", message)
    words = [w.split("=")[0] for w in unknown.group(1).split() if w.startswith("--")] if unknown else []
    hints = [match for word in words if (match := nearest(word, options))]
    return f"{message} (did you mean {', '.join(hints)}?)" if hints else message


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--option`` a parser takes."""
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (``exit_with_error``) rather than a usage dump, and names the
    nearest option to a misspelt one."""

    def error(self, message: str) -> NoReturn:
        exit_with_error(with_suggestion(message, option_strings(self)), command=self.prog)
