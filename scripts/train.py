"""Train a VAE: a thin wrapper over the `vae` command, for running from a checkout.

python scripts/train.py fit --config configs/quickstart.yaml --model.objective.weighting.beta 4
"""

from vae.commands import main

if __name__ == "__main__":
    main()
