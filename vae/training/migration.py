"""What was written before today's layout, read in today's: checkpoints' hyperparameters and run configs whose class
paths name modules that have moved (``vae.nets.ConvNet`` is ``vae.layers.nets.ConvNet`` now).

Every path read back this way is still judged by the trust rules (``vae.core.trust``) before it is imported: a
migration renames, it never trusts.
"""

from __future__ import annotations

from typing import Any

MOVED = {
    "vae.nets": "vae.layers.nets",
    "vae.likelihoods": "vae.layers.likelihoods",
    "vae.priors": "vae.layers.priors",
    "vae.latents": "vae.layers.latents",
    "vae.discrete": "vae.layers.discrete",
    "vae.model": "vae.models.vae",
    "vae.hierarchical": "vae.models.hierarchical",
    "vae.conditional": "vae.models.conditional",
    "vae.joint": "vae.models.joint",
    "vae.weighting": "vae.objectives.weighting",
    "vae.penalties": "vae.objectives.penalties",
    "vae.objectives": "vae.objectives.elbo",
}
"""The modules whose classes a config or checkpoint could name, by where they were before the layers."""


def moved_path(path: str) -> str:
    """A class path in today's layout: ``vae.nets.ConvNet`` → ``vae.layers.nets.ConvNet``; others pass."""
    module, _, name = path.rpartition(".")
    package, _, leaf = module.partition(".nets.")  # vae.nets.mlp.MLPNet: a module of the old nets package
    if module in MOVED:
        return f"{MOVED[module]}.{name}"
    if package == "vae" and leaf:
        return f"vae.layers.nets.{leaf}.{name}"
    return path


def renamed(value: Any) -> Any:
    """A config or hyperparameters (nested dicts and lists) with every ``class_path`` in today's layout."""
    if isinstance(value, dict):
        out = {key: renamed(item) for key, item in value.items()}
        if isinstance(out.get("class_path"), str):
            out["class_path"] = moved_path(out["class_path"])
        return out
    if isinstance(value, list | tuple):
        return type(value)(renamed(item) for item in value)
    return value


def migrate_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyperparameters as today's ``VAEModule`` takes them."""
    return renamed(hparams)


def migrate_config(config: Any) -> Any:
    """A config file's contents (``vae fit --config``) in today's layout."""
    return renamed(config)
