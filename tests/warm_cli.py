"""Imported by the fork server of ``command`` (never by the tests): builds the `vae fit` parser once, printing its
help into nothing, so that every command forked from the server starts with jsonargparse's signature and docstring
caches filled (about 0.9 s of each command's start on these 2 cores). It also imports matplotlib's Agg backend, the
part of W&B that every run imports when it starts, and the modules of the commands beside Lightning's. It builds no
model, runs no torch code and starts no thread, so forking the server stays safe."""

import contextlib
import importlib
import io

import matplotlib

matplotlib.use("Agg")  # the pictures (latent scatter, training curves) draw with it: imported once, 1.4 s a command
import matplotlib.pyplot  # noqa: E402, F401
import wandb.sdk.launch  # noqa: E402, F401 (wandb.init imports it for every run: pydantic models, 1.9 s a command)

from vae.commands import COMMANDS as TOOLS  # noqa: E402
from vae.commands import main  # noqa: E402

for module in TOOLS.values():  # the commands beside Lightning's (vae evaluate imports scikit-learn: 1.0 s)
    importlib.import_module(module)

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(["fit", "--help"])
    except SystemExit:
        pass
