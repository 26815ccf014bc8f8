"""The ResNet's config route: a YAML ``class_path: vae.layers.nets.resnet.ResNet`` parsed by `vae fit` (in this
process), judged by the trust rules and built as the command builds it; the recorded spec builds it again."""

import pytest
import yaml
from conftest import QUICKSTART, run
from jsonargparse import ArgumentParser

from vae.commands.parser import SECTIONS
from vae.core.trust import build, check_classes
from vae.layers.nets import Network
from vae.layers.nets.resnet import ResNet, ResNetDecoder, ResNetEncoder
from vae.training.module import VAEModule


def test_a_yaml_config_naming_vae_nets_resnet_parses_passes_the_trust_rules_and_builds(tmp_path, offline_env):
    """As the shipped configs are judged: the quick start with its network replaced."""
    config = yaml.safe_load(QUICKSTART.read_text())
    init_args = {"channels": [8, 16], "blocks": 1, "hidden_dim": 16, "groups": 4}
    network = {"class_path": "vae.layers.nets.resnet.ResNet", "init_args": init_args}
    config["model"]["model"]["init_args"]["network"] = network
    path = tmp_path / "resnet.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run(["fit", "--config", str(path), "--print_config"], cwd=tmp_path, env=offline_env)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    check_classes(printed, SECTIONS)
    assert printed["model"]["model"]["init_args"]["network"] == network
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VAEModule, "model")
    section = printed["model"]
    model_spec = {**section["model"], "init_args": {**section["model"]["init_args"], "image_shape": [1, 28, 28]}}
    module = parser.instantiate(parser.parse_object({"model": {**section, "model": model_spec}})).model
    encoder, decoder = module.model.network.encoder, module.model.network.decoder
    assert isinstance(encoder, ResNetEncoder) and isinstance(decoder, ResNetDecoder)
    # The recorded spec (a checkpoint's hyperparameters) builds the same network again.
    rebuilt = build(module.hparams["model"]["init_args"]["network"], Network, "model.model.network")
    assert isinstance(rebuilt, ResNet)
    assert (tuple(rebuilt.channels), rebuilt.blocks, rebuilt.hidden_dim, rebuilt.groups) == ((8, 16), 1, 16, 4)


@pytest.mark.parametrize("old", ["--model.network", "--model.network.channels"])
def test_the_networks_old_command_line_keys_name_the_new_ones(tmp_path, offline_env, old):
    """A network chosen with the keys of the earlier layout: a one-line error naming today's key."""
    value = "vae.layers.nets.resnet.ResNet" if old == "--model.network" else "[8, 16]"
    result = run(["fit", "--config", str(QUICKSTART), old, value], cwd=tmp_path, env=offline_env)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"{old} is now --model.model.{old.removeprefix('--model.')}" in line
