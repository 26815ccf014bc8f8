"""Errors that are the user's to fix. The ``vae`` command prints them as one line and exits non-zero."""

import argparse
import sys
from typing import NoReturn


class UserError(Exception):
    """A problem with the user's input (config, data, paths), not a bug: its message names the fix."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (a negative β, a latent size of 0, ...)."""


class DataError(UserError, OSError):
    """Dataset files that are missing or unreadable."""


class NonFiniteError(UserError):
    """A non-finite loss, KL, reconstruction or gradient stopped training (the message names the step)."""


def exit_with_error(message: str, *, command: str = "vae") -> NoReturn:
    """Print ``error: ...`` as one line on stderr and exit with status 2."""
    print(f"error: {' '.join(message.split())} (see {command} --help)", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (``exit_with_error``) rather than a usage dump."""

    def error(self, message: str) -> NoReturn:
        exit_with_error(message, command=self.prog)
