"""scripts/model_cost.py: what a config's training step costs, counted on the CPU, checked against exact counts. The
script's table: tests/integration/test_model_cost_script.py."""

import importlib.util

import yaml
from conftest import QUICKSTART, REPO
from torch import nn

spec = importlib.util.spec_from_file_location("model_cost", REPO / "scripts" / "model_cost.py")
model_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_cost)


def test_flops_match_the_exact_count_for_an_mlp(tmp_path):
    """Every FLOP of an MLP VAE is in nn.Linear: forward 2·b·in·out each, backward twice that (the weights' and the
    inputs' gradients), except the first layer's input gradient, which the image does not need."""
    config = yaml.safe_load(QUICKSTART.read_text())
    network = {"class_path": "vae.layers.nets.MLPNet", "init_args": {"hidden_dims": [32]}}
    config["model"]["model"]["init_args"]["network"] = network
    config["data"]["init_args"]["batch_size"] = 8
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(config))

    counted = model_cost.cost(path, batch_size=None)
    module, _, _ = model_cost.build(path)
    linears = [m for m in module.model.modules() if isinstance(m, nn.Linear)]
    first_linear = next(m for m in module.model.network.encoder.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 28 * 28
    exact = sum(2 * 8 * m.in_features * m.out_features * (2 if m is first_linear else 3) for m in linears)
    assert counted["batch"] == 8 and counted["flops"] == exact
    assert counted["parameters"] == sum(p.numel() for p in module.parameters())
    assert counted["memory"] == 16 * counted["parameters"] + counted["activations"] + 8 * 28 * 28 * 4
    assert counted["activations"] >= 4 * 8 * sum(m.in_features for m in linears[1:])  # each layer's input, kept
    assert counted["kernels"] > 2 * len(linears)
