"""``python -m vae``: the ``vae`` command."""

from vae.commands import main

main()
