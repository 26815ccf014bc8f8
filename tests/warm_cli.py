"""Imported by the fork server of ``command`` (never by the tests): builds the `vae fit` parser once, printing its
help into nothing, so that every command forked from the server starts with jsonargparse's signature and docstring
caches filled (about 0.9 s of each command's start on these 2 cores). It builds no model and runs no torch code, so
forking the server stays safe."""

import contextlib
import io

from vae.cli import main

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(["fit", "--help"])
    except SystemExit:
        pass
