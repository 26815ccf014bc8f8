"""What earlier versions wrote, read in today's layout: checkpoints (their hyperparameters, weights, optimizer state
and guard state) and config files (``vae fit --config`` of a run's config.yaml or an old config).

Two layouts came before today's:

- before the package had floors, class paths named flat modules (``vae.nets.ConvNet``, ``vae.weighting.GECO``):
  they are renamed to where those classes live now (``vae.layers.nets.ConvNet``, ``vae.objectives.weighting.GECO``);
- before models and objectives were their own objects, the training module took every setting itself
  (``model.latent_dim``, ``model.network``, ``model.weighting``, ``model.grad_clip``, ...), and whole models were
  chosen as ``model.network`` (``TopDown``, ``Conditional``, ``Joint``). Those settings become the model's own
  (``model.model``: ``VAE``, ``HierarchicalVAE``, ``ConditionalVAE``, ``JointVAE``), the objective's
  (``model.objective``: ``ELBO`` or ``IWAE``) and the guards' (the ``guard`` section); the weights under ``vae.``
  move to ``model.``, and each model renames its own keys (``upgrade_state_dict``).

Every class path read back this way is still judged by the trust rules (``vae.core.trust``) before it is imported:
a migration renames, it never trusts. On the command line the old keys are one-line errors naming the new ones
(``OLD_KEYS``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

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
}
"""The modules whose classes a config or checkpoint could name, by where they were before the floors."""

TOP_LEVEL = {
    **{name: "vae.layers.likelihoods" for name in ("Bernoulli", "Gaussian")},
    **{name: "vae.layers.nets" for name in ("ConvNet", "MLPNet")},
    **{name: "vae.layers.priors" for name in ("StandardNormal", "LearnedGaussian", "GaussianMixture", "VampPrior")},
    "TopDown": "vae.models.hierarchical",
    "Conditional": "vae.models.conditional",
    "Joint": "vae.models.joint",
    **{name: "vae.data" for name in ("CIFAR10", "CelebA", "EmbeddedMNIST", "FashionMNIST", "ImageFolder", "MNIST")},
}
"""The classes the package once exported at its top (``vae.Bernoulli``), as a run's saved config may name them."""

WHOLE_MODELS = {
    "vae.models.hierarchical.TopDown": "vae.models.hierarchical.HierarchicalVAE",
    "vae.models.conditional.Conditional": "vae.models.conditional.ConditionalVAE",
    "vae.models.joint.Joint": "vae.models.joint.JointVAE",
}
"""What the training module's ``network`` once named that was a whole model, and that model's class today."""

MODEL_KEYS = ("image_shape", "latent_dim", "likelihood", "prior", "kl_estimator", "kl_samples")
OBJECTIVE_KEYS = ("weighting", "penalty", "kl_balancing_steps", "kl_split")
GUARD_KEYS = ("grad_clip", "grad_skip", "nonfinite")

OLD_KEYS = {
    "model.latent_dim": "model.model.latent_dim",
    "model.network": "model.model.network",
    "model.likelihood": "model.model.likelihood",
    "model.prior": "model.model.prior",
    "model.kl_estimator": "model.model.kl_estimator",
    "model.kl_samples": "model.model.kl_samples",
    "model.image_shape": "set from the data (its image_shape, linked to the model's)",
    "model.weighting": "model.objective.weighting",
    "model.penalty": "model.objective.penalty",
    "model.kl_balancing_steps": "model.objective.kl_balancing_steps",
    "model.kl_split": "model.objective.kl_split",
    "model.importance_samples": "--model.objective vae.objectives.IWAE --model.objective.samples K",
    "model.grad_clip": "guard.grad_clip",
    "model.grad_skip": "guard.grad_skip",
    "model.nonfinite": "guard.nonfinite",
}
"""The command-line keys of the training module before models and objectives were their own objects, and where each
setting is now."""


def moved_path(path: str) -> str:
    """A class path in today's layout: ``vae.nets.ConvNet`` → ``vae.layers.nets.ConvNet``; others pass."""
    module, _, name = path.rpartition(".")
    if module == "vae" and name in TOP_LEVEL:
        return f"{TOP_LEVEL[name]}.{name}"
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


def is_old_module_section(section: Any) -> bool:
    """Whether a training module's settings (a config's ``model`` section, a checkpoint's hyperparameters) are in the
    layout before models and objectives were their own objects."""
    if not isinstance(section, dict) or "model" in section or "objective" in section:
        return False
    return any(key in section for key in (*MODEL_KEYS, "network", *OBJECTIVE_KEYS, "importance_samples", *GUARD_KEYS))


def spec_parts(value: Any) -> tuple[str | None, dict[str, Any]]:
    """(class_path, init_args) of a spec; (None, {}) for anything else."""
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        return value["class_path"], dict(value.get("init_args") or {})
    return None, {}


def split_module_section(section: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An old training module's settings as today's (``model``, ``objective`` and the rest), and its guard settings.
    Keys the old section left out stay out (their defaults are today's defaults)."""
    section = renamed(section)
    network_path, network_args = spec_parts(section.get("network"))
    model_args = {key: section[key] for key in MODEL_KEYS if key in section}
    if network_path in WHOLE_MODELS:  # a whole model: its own arguments, and its network (if any) nested
        model_path = WHOLE_MODELS[network_path]
        classes = network_args.pop("classes", None)  # the conditional model's classes: the data's context_size now
        if classes is not None and "image_shape" in model_args:  # a checkpoint: the size it was built with
            model_args["context_size"] = classes
        if model_path.endswith("HierarchicalVAE"):
            model_args.pop("latent_dim", None)  # never applied to a hierarchy
        model_args |= network_args
    else:
        model_path = "vae.models.vae.VAE"
        if "network" in section:
            model_args["network"] = section["network"]
    samples = section.get("importance_samples", 1)
    if isinstance(samples, int) and samples > 1:
        objective = {"class_path": "vae.objectives.elbo.IWAE", "init_args": {"samples": samples}}
        if "kl_split" in section:
            objective["init_args"]["kl_split"] = section["kl_split"]
    else:
        init = {key: section[key] for key in OBJECTIVE_KEYS if key in section}
        objective = {"class_path": "vae.objectives.elbo.ELBO", "init_args": init}
    module = {"model": {"class_path": model_path, "init_args": model_args}, "objective": objective}
    module |= {key: section[key] for key in ("optimizer", "channels_last", "compile") if key in section}
    guard = {key: section[key] for key in GUARD_KEYS if key in section}
    return module, guard


def migrate_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyperparameters as today's ``VAEModule`` takes them."""
    if not is_old_module_section(hparams):
        return renamed(hparams)
    module, _ = split_module_section(hparams)
    return module


def migrate_config(config: Any) -> Any:
    """A config file's contents (``vae fit --config``) in today's layout: the old ``model`` section split into the
    model, the objective and the ``guard`` section; class paths renamed."""
    if not isinstance(config, dict):
        return config
    config = renamed(config)
    if not is_old_module_section(config.get("model")):
        return config
    module, guard = split_module_section(config["model"])
    config = {**config, "model": module}
    if guard:
        config["guard"] = {**guard, **(config.get("guard") or {})}
    return config


def upgraded_state(state: dict[str, Tensor], module: Any) -> dict[str, Tensor]:
    """A state dict of an earlier layout in today's: ``vae.`` → ``model.`` (then the model's own renames), the
    weighting's state inside the objective; the gradient guard's state is the ``Guard`` callback's now."""
    state = {("model." + key[4:] if key.startswith("vae.") else key): value for key, value in state.items()}
    state = module.model.upgrade_state_dict(state, prefix="model.")
    state = {("objective." + k if k.startswith("weighting.") else k): v for k, v in state.items()}
    return {key: value for key, value in state.items() if not key.startswith("guard.")}


def upgrade_checkpoint(checkpoint: dict[str, Any], module: Any) -> None:
    """A checkpoint of an earlier layout, in place, as ``module`` (a ``VAEModule``) loads it: its hyperparameters,
    its weights' keys, the guard's state moved to its callback, and the optimizer's state, kept by parameter position,
    following the parameters to their new positions and shapes (a parameter added since starts without state, as at
    the first step)."""
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict):
        checkpoint["hyper_parameters"] = migrate_hparams(hparams)
    old = checkpoint["state_dict"]
    guard = {key[len("guard.") :]: value for key, value in old.items() if key.startswith("guard.")}
    callbacks = checkpoint.setdefault("callbacks", {})
    if guard and "Guard" not in callbacks:
        callbacks["Guard"] = guard
    saved = list(old)
    checkpoint["state_dict"] = upgraded_state(old, module)
    names = [name for name, _ in module.named_parameters()]
    renamed_saved = list(upgraded_state(dict.fromkeys(saved), module))  # the saved keys under today's names
    kept = [key for key in saved if not key.startswith("guard.")]
    before = [key for key in renamed_saved[: len(kept)] if key in names]  # the parameters in the checkpoint's order
    if before != names and set(before) <= set(names):
        position = {name: i for i, name in enumerate(before)}
        for state in checkpoint.get("optimizer_states", []):
            previous = state["state"]
            state["state"] = {
                new: previous[position[name]]
                for new, name in enumerate(names)
                if name in position and position[name] in previous
            }
            if len(state["param_groups"]) == 1:
                state["param_groups"][0]["params"] = list(range(len(names)))
    for state in checkpoint.get("optimizer_states", []):  # each moment changes as its parameter did
        entries = {names[i]: entry for i, entry in state["state"].items() if i < len(names)}
        for key in {key for entry in entries.values() for key in entry}:
            moments = {n: e[key] for n, e in entries.items() if isinstance(e.get(key), Tensor) and e[key].ndim}
            for name, value in module.model.upgrade_state_dict(moments, prefix="model.").items():
                if name in moments:
                    entries[name][key] = value
