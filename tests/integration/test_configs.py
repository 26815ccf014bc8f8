"""Every config in configs/ parses into a full, valid configuration (`vae fit --print_config`, in this process; and
the prior overlays over the quick start), passes the trust rules of vae.core.trust and builds: the data module, and
the model for the data's image shape and context size (as `vae fit` links them)."""

import importlib
import os
from pathlib import Path

import pytest
import yaml
from conftest import QUICKSTART, REPO, run
from jsonargparse import ArgumentParser

from vae.commands.parser import SECTIONS
from vae.core.trust import check_classes
from vae.data.base import ImageDataModule
from vae.training.module import VAEModule

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
OVERLAYS = sorted((REPO / "configs" / "priors").glob("*.yaml"))


def printed_config(args: list[str], folder: Path) -> dict:
    """The full config `vae fit <args> --print_config` prints."""
    result = run(["fit", *args, "--print_config"], cwd=folder, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


def test_there_is_a_config_for_every_dataset():
    assert {c.stem for c in CONFIGS} >= {"quickstart", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"}


DOCUMENTED = {  # the README's class paths on the command line
    "MLP network": [
        "--model.model.network",
        "vae.layers.nets.mlp.MLPNet",
        "--model.model.network.hidden_dims",
        "[512, 256]",
    ],
    "learned-σ Gaussian": [
        "--model.model.likelihood",
        "vae.layers.likelihoods.Gaussian",
        "--model.model.likelihood.learn_sigma",
        "true",
    ],
    "SGD": ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "0.01"],
}


@pytest.mark.parametrize(
    "args",
    [["--config", str(c)] for c in CONFIGS]
    + [["--config", str(QUICKSTART), "--config", str(o)] for o in OVERLAYS]
    + [["--config", str(QUICKSTART), *extra] for extra in DOCUMENTED.values()],
    ids=[c.stem for c in CONFIGS] + [f"quickstart+{o.stem}" for o in OVERLAYS] + list(DOCUMENTED),
)
def test_every_shipped_config_and_documented_example_passes_the_trust_rules_and_builds(args, tmp_path):
    """Parsed into a full config, judged on the objects, as `vae fit` judges them, then built: the data module and
    the model, for the data's image shape and context size. An overlay's prior is the one that ends up in the
    config."""
    printed = printed_config(args, tmp_path)
    assert printed["data"]["class_path"].startswith("vae.data.")
    model_args = printed["model"]["model"]["init_args"]
    assert printed["model"]["model"]["class_path"].startswith("vae.models.")
    if printed["model"]["model"]["class_path"] == "vae.models.CodePrior":  # a second stage: its model is a run's
        check_classes(printed, SECTIONS)
        assert model_args["first_stage"] == "runs/vae/VQ_RUN_ID"  # set on the command line, as its header says
        return  # built on a trained VQ run by tests/integration/test_quantized.py
    if "likelihood" in model_args:  # a diffusion model's p(x|z_0) has no parts: its levels say what it is
        assert model_args["likelihood"]["class_path"].startswith("vae.")
    assert printed["model"]["objective"]["class_path"].startswith("vae.objectives.")
    overlay = next((yaml.safe_load(o.read_text()) for o in OVERLAYS if args[-1] == str(o)), None)
    if overlay is not None:
        assert model_args["prior"]["class_path"] == overlay["model"]["model"]["init_args"]["prior"]["class_path"]
    check_classes(printed, SECTIONS)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageDataModule, "data", required=True)
    data = parser.instantiate(parser.parse_object({"data": printed["data"]})).data
    linked = {"image_shape": list(data.image_shape), "context_size": data.context_size}  # as `vae fit` links them
    section = {**printed["model"], "model": {**printed["model"]["model"], "init_args": {**model_args, **linked}}}
    model = parser_for_model().instantiate(parser_for_model().parse_object({"model": section})).model
    assert isinstance(model, VAEModule) and sum(p.numel() for p in model.parameters()) > 0


def parser_for_model() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VAEModule, "model")
    return parser


def resolved(value):
    """A printed config with every class path replaced by the object it names (vae.ConvNet is
    vae.layers.nets.conv.ConvNet)."""
    if isinstance(value, dict):
        return {k: resolve_class_path(v) if k == "class_path" else resolved(v) for k, v in value.items()}
    return [resolved(v) for v in value] if isinstance(value, list) else value


def resolve_class_path(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_vae_fit_without_a_config_is_the_quick_start(tmp_path):
    assert resolved(printed_config([], tmp_path)) == resolved(printed_config(["--config", str(QUICKSTART)], tmp_path))


@pytest.mark.parametrize(
    ("args", "binarize"),
    [
        ([], "dynamic"),  # the quick start itself
        (["--config", str(REPO / "configs" / "fashion_mnist.yaml")], "none"),  # grey levels, as its header says
        (["--config", str(REPO / "configs" / "cifar10.yaml")], "none"),
        (["--data", "vae.data.FashionMNIST"], "none"),
        (["--config", str(REPO / "configs" / "hvae_fashion_mnist.yaml")], "static"),  # its own setting
    ],
    ids=["no-config", "fashion_mnist", "cifar10", "data-flag", "hvae_fashion_mnist"],
)
def test_the_quick_starts_settings_never_carry_over_into_another_data_class(args, binarize, tmp_path):
    """The quick start's data (the embedded digits, binarized dynamically) is `vae fit`'s default; a config that
    chooses another data module gets that module's own defaults, not the digits' binarization."""
    assert printed_config(args, tmp_path)["data"]["init_args"]["binarize"] == binarize
