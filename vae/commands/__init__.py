"""The ``vae`` command: Lightning's ``fit``, ``validate`` and ``test`` (``vae.commands.fit``) and the commands beside
them, one module each, imported only when used.

    vae fit --config configs/quickstart.yaml --model.model.latent_dim 32
    vae evaluate runs/vae/<id>/checkpoints/last.ckpt --images
    vae compare --study configs/studies/weightings.yaml
    vae kl-demo --out runs/kl_demo
    vae benchmark
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from vae.commands.process import restored
from vae.training.console import quiet_console

COMMANDS = {
    "kl-demo": "vae.commands.kl_demo",
    "evaluate": "vae.commands.evaluate",
    "compare": "vae.commands.compare",
    "benchmark": "vae.commands.benchmark",
    "sample": "vae.commands.sample",
    "encode": "vae.commands.encode",
    "export": "vae.commands.export",
    "plot": "vae.commands.plot",
    "compress": "vae.commands.compress",
    "decompress": "vae.commands.decompress",
}


def main(argv: Sequence[str] | None = None) -> None:
    """The console command; ``argv`` defaults to the command line. It leaves the process as it found it (environment,
    warning and logging filters, parser settings, signal handlers, torch's threads, flags and random state, W&B's
    run, run-folder locks), so it can be called from Python as often as needed."""
    args = list(sys.argv[1:] if argv is None else argv)
    with restored():  # a command leaves the process as it found it (vae.commands.process)
        quiet_console()  # every command: no library adverts or deprecation notices (vae.training.console)
        if args and args[0] in COMMANDS:
            importlib.import_module(COMMANDS[args[0]]).main(args[1:])
        else:  # Lightning's subcommands, which read the command line themselves when not given one
            importlib.import_module("vae.commands.fit").main(None if argv is None else args)
