"""Every config in configs/ parses into a full, valid configuration (and the prior overlays over the quick start)."""

import pytest
import yaml
from conftest import QUICKSTART, REPO

from vae.cli import cli

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
OVERLAYS = sorted((REPO / "configs" / "priors").glob("*.yaml"))


def printed_config(capsys, *configs) -> dict:
    args = ["fit"] + [arg for config in configs for arg in ("--config", str(config))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_:
        cli(args)
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_parses(config, capsys):
    printed = printed_config(capsys, config)
    assert printed["data"]["class_path"].startswith("vae.data.")
    assert printed["model"]["likelihood"]["class_path"].startswith("vae.")


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[c.stem for c in OVERLAYS])
def test_prior_overlay_parses(overlay, capsys):
    printed = printed_config(capsys, QUICKSTART, overlay)
    assert (
        printed["model"]["prior"]["class_path"] == yaml.safe_load(overlay.read_text())["model"]["prior"]["class_path"]
    )


def test_there_is_a_config_for_every_dataset():
    assert {c.stem for c in CONFIGS} >= {"quickstart", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"}
