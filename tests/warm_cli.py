"""Imported by the fork server of ``command`` (never by the tests): builds the `vae fit` parser once, printing its
help into nothing, so that every command forked from the server starts with jsonargparse's signature and docstring
caches filled (about 0.9 s of each command's start on these 2 cores), and imports matplotlib's Agg backend. It builds
no model and runs no torch code, and Agg starts no thread, so forking the server stays safe."""

import contextlib
import io

import matplotlib

matplotlib.use("Agg")  # the pictures (latent scatter, training curves) draw with it: imported once, 1.4 s a command
import matplotlib.pyplot  # noqa: E402, F401

from vae.cli import main  # noqa: E402

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(["fit", "--help"])
    except SystemExit:
        pass
