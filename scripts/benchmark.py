"""Training and evaluation speed, side by side: the same as ``vae benchmark`` (see vae/commands/benchmark.py).

python scripts/benchmark.py [--rounds 3] [--out runs/benchmark.json] [--help]
"""

from vae.commands.benchmark import main

if __name__ == "__main__":
    main()
