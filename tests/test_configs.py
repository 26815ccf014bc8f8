"""Every config in configs/ parses into a full, valid configuration (and the prior overlays over the quick start),
passes the trust rules of vae.core.trust and builds."""

import importlib

import pytest
import yaml
from conftest import QUICKSTART, REPO
from jsonargparse import ArgumentParser

from vae.commands.fit import SECTIONS, cli
from vae.core.trust import check_classes
from vae.data.base import ImageDataModule
from vae.training.module import VAEModule

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
OVERLAYS = sorted((REPO / "configs" / "priors").glob("*.yaml"))


def printed_config(capsys, args: list[str]) -> dict:
    """The full config `vae fit <args> --print_config` prints."""
    with pytest.raises(SystemExit) as exit_:
        cli(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_there_is_a_config_for_every_dataset():
    assert {c.stem for c in CONFIGS} >= {"quickstart", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"}


DOCUMENTED = {  # the README's class paths on the command line
    "MLP network": ["--model.network", "vae.layers.nets.mlp.MLPNet", "--model.network.hidden_dims", "[512, 256]"],
    "learned-σ Gaussian": [
        "--model.likelihood",
        "vae.layers.likelihoods.Gaussian",
        "--model.likelihood.learn_sigma",
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
def test_every_shipped_config_and_documented_example_passes_the_trust_rules_and_builds(args, capsys):
    """Parsed into a full config, judged on the objects, as `vae fit` judges them, then built: the data module and
    the model. An overlay's prior is the one that ends up in the config."""
    printed = printed_config(capsys, args)
    assert printed["data"]["class_path"].startswith("vae.data.")
    assert printed["model"]["likelihood"]["class_path"].startswith("vae.")
    overlay = next((yaml.safe_load(o.read_text()) for o in OVERLAYS if args[-1] == str(o)), None)
    if overlay is not None:
        assert printed["model"]["prior"]["class_path"] == overlay["model"]["prior"]["class_path"]
    check_classes(printed, SECTIONS)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageDataModule, "data", required=True)
    data = parser.instantiate(parser.parse_object({"data": printed["data"]})).data
    model = (
        parser_for_model()
        .instantiate(
            parser_for_model().parse_object({"model": {**printed["model"], "image_shape": list(data.image_shape)}})
        )
        .model
    )
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


def test_vae_fit_without_a_config_is_the_quick_start(capsys):
    assert resolved(printed_config(capsys, [])) == resolved(printed_config(capsys, ["--config", str(QUICKSTART)]))
