"""A command leaves the process as it found it: ``restored`` wraps every ``vae`` command, so that a command run from
Python (``vae.commands.main(["fit", ...])``, a notebook, a test) changes nothing that outlives it.

What a command may change, and what ``restored`` puts back when it returns or raises: environment variables (W&B's
mode, Lightning's seed), warning filters, the logging configuration (levels, handlers, filters), jsonargparse's
parsing settings (the trust rules' import policy), signal handlers, torch's thread count and global flags
(deterministic algorithms, cuDNN, float32 matmul precision, the default dtype), the random generators' states
(torch, CUDA, NumPy, ``random``), W&B's run (finished if one is still open) and the run folders' locks it took.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")


def logging_state() -> dict[str, tuple]:
    """Every logger's level, handlers, filters, propagation and whether it is disabled."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    return {
        logger.name: (
            logger,
            logger.level,
            list(logger.handlers),
            list(logger.filters),
            logger.propagate,
            logger.disabled,
        )
        for logger in loggers
        if isinstance(logger, logging.Logger)
    }


def restore_logging(state: dict[str, tuple]) -> None:
    for logger, level, handlers, filters, propagate, disabled in state.values():
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.filters[:] = filters
        logger.propagate, logger.disabled = propagate, disabled


def torch_state() -> dict[str, Any]:
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "default_dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
    }


def restore_torch(state: dict[str, Any]) -> None:
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["deterministic_warn_only"])
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    torch.set_float32_matmul_precision(state["matmul_precision"])
    torch.set_default_dtype(state["default_dtype"])
    torch.set_grad_enabled(state["grad"])


def random_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def parsing_settings() -> dict[str, Any]:
    """jsonargparse's global parsing settings: what ``set_parsing_settings`` changes (the import policy of the trust
    rules among them). jsonargparse keeps them in one module-level dict."""
    from jsonargparse import _common

    return _common.parsing_settings


def restore_parsing_settings(saved: dict[str, Any]) -> None:
    settings = parsing_settings()
    settings.clear()
    settings.update(saved)


def wandb_service() -> Any:
    """W&B's session in this process (its settings, read from the environment once, and its service process), if
    one is set up."""
    return getattr(sys.modules.get("wandb.sdk.wandb_setup"), "_singleton", None)


def finish_wandb(service: Any = None) -> None:
    """A W&B run still open (a command that failed after W&B started) is finished, quietly; a W&B session the
    command set up (``service`` is the one there was before) is let go: W&B reads its settings from the environment
    only when the session starts, and its service resolves run folders against the folder it started in, so the
    next command (another folder, another environment) must start its own."""
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()  # quiet as the command set W&B (WANDB_QUIET); wandb.finish takes no quiet argument
        except Exception:  # a run that cannot finish cleanly is W&B's to report; the process state is ours
            pass
    if wandb_service() is not None and wandb_service() is not service:
        try:
            wandb.teardown()
        except Exception:
            pass


@contextmanager
def restored() -> Iterator[None]:
    """Inside: anything goes; afterwards the process is as it was (see the module's notes)."""
    from vae.training import runs

    environ = dict(os.environ)
    loggers = logging_state()
    torch_flags, generators = torch_state(), random_state()
    settings = copy.deepcopy(parsing_settings())
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {}
    if main_thread:
        for name in SIGNALS:
            if hasattr(signal, name):
                handlers[getattr(signal, name)] = signal.getsignal(getattr(signal, name))
    locks = set(runs.held_locks())
    service = wandb_service()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        finish_wandb(service)
        runs.release_locks(keep=locks)
        os.environ.clear()
        os.environ.update(environ)
        restore_logging(loggers)
        restore_torch(torch_flags)
        restore_random(generators)
        restore_parsing_settings(settings)
        for signum, handler in handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
