"""A VAE framework on torch, Lightning, W&B and einops, built on the theory of KL divergence.

The package is in floors, each importing only from those below it:

    vae.commands     the ``vae`` command: fit, evaluate, sample, encode, export, plot, compare, kl-demo, benchmark
    vae.training     the Lightning module, callbacks, checkpoints, run folders, W&B, the console
    vae.objectives   the ELBO with its KL weightings and penalties, the IWAE bound
    vae.metrics      importance-weighted log-likelihood, sample quality, disentanglement
    vae.models       one file per model
    vae.layers       likelihoods, priors, latent layers, networks          vae.data   the data modules
    vae.core         KL divergences, the KL split, the trust rules

The names below load their module when first used: ``import vae.core.kl`` loads neither Lightning nor W&B.

    model = vae.load("runs/vae/<run id>")     # a trained model, in eval mode
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "vae.training.checkpoint_io",
    "VAEModule": "vae.training.module",
    "VAE": "vae.models",
    "HierarchicalVAE": "vae.models",
    "ConditionalVAE": "vae.models",
    "JointVAE": "vae.models",
    "LatentVariableModel": "vae.models",
    "ModelOutput": "vae.models",
    "Encoding": "vae.models",
    "Capabilities": "vae.models",
    "Term": "vae.models",
    "ELBO": "vae.objectives",
    "IWAE": "vae.objectives",
    "Objective": "vae.objectives",
    "kl_divergence": "vae.core.kl",
    "diagonal_gaussian_kl": "vae.core.kl",
    "full_gaussian_kl": "vae.core.kl",
    "categorical_kl": "vae.core.kl",
    "bernoulli_kl": "vae.core.kl",
    "monte_carlo_kl": "vae.core.kl",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
