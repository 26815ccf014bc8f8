"""Checkpoints are data, configs are code: a checkpoint loads with weights_only=True and a pickle payload in
one executes nothing; a config builds only classes, defined in trusted modules, of the kind each key expects,
however the path to them is spelt (the spellings that reach os, subprocess, builtins, importlib and pickle
through trusted packages are refused: tests/test_bad_input.py runs them through the real command)."""

import collections
import pickle
import zipfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from faults import Payload

from vae.core.errors import ConfigError
from vae.core.spec import to_spec
from vae.core.trust import build, build_optimizer, resolve_class
from vae.data.embedded import EmbeddedMNIST
from vae.layers.likelihoods import Gaussian
from vae.layers.nets.common import Network
from vae.layers.nets.conv import ConvNet
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import GaussianMixture
from vae.objectives.weighting import GECO, FreeBits, LinearWarmup, Weighting
from vae.training.module import VAEModule


@pytest.mark.parametrize(
    "value",
    [
        ConvNet(channels=(16, 32)),
        FreeBits(floor=0.25, beta=LinearWarmup(steps=7)),
        GECO(target=90.0),
        Gaussian(sigma=0.2, learn_sigma=True),
        GaussianMixture(num_components=3),
    ],
)
def test_specs_are_plain_data_that_rebuild_the_same_object(value):
    spec = to_spec(value)
    assert pickle.loads(pickle.dumps(spec)) == spec
    rebuilt = build(spec, type(value).__mro__[1], "model.x")
    assert type(rebuilt) is type(value) and to_spec(rebuilt) == spec


def test_optimizer_specs_round_trip():
    spec = to_spec(build_optimizer({"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}))
    assert spec == {"class_path": "torch.optim.adamw.AdamW", "init_args": {"lr": 0.01}}
    optimizer = build_optimizer(spec)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 0.01


def test_specs_build_only_trusted_subclasses_of_the_expected_type(monkeypatch):
    with pytest.raises(ConfigError, match="VAE_TRUSTED_MODULES=collections"):
        build({"class_path": "collections.OrderedDict"}, Network, "model.network")
    with pytest.raises(ConfigError, match="is not a subclass of Network"):
        build({"class_path": "vae.objectives.weighting.Constant"}, Network, "model.network")
    with pytest.raises(ConfigError, match="is not a subclass of Weighting"):
        build({"class_path": "torch.nn.Linear", "init_args": {"in_features": 1, "out_features": 1}}, Weighting, "w")
    monkeypatch.setenv("VAE_TRUSTED_MODULES", "collections")
    assert resolve_class("collections.OrderedDict", dict, "x") is collections.OrderedDict  # allowed once trusted


# Paths that start in a trusted package and reach something that runs code: each names where it really leads.
SPELLINGS = {
    "torch.os.system": "it is the function posix.system",
    "vae.training.runs.os.system": "it is the function posix.system",
    "torch.serialization.os.system": "it is the function posix.system",
    "vae.commands.compare.subprocess.Popen": "is subprocess.Popen, which is not from a trusted module",
    "vae.commands.compare.subprocess.run": "it is the function subprocess.run",
    "torch.serialization.pickle.loads": "it is the function _pickle.loads",
    "torch.serialization.pickle.Unpickler": "is _pickle.Unpickler, which is not from a trusted module",
    "vae.commands.importlib.import_module": "it is the function importlib.import_module",
    "vae.core.trust.importlib": "it is the module importlib",
    "vae.commands.sys.modules": "is builtins.dict, which is not from a trusted module",
    "torch.optim.Adam.__class__": "is builtins.type, which is not from a trusted module",
    "torch.load": "it is the function torch.serialization.load",  # trusted, but a function: loads pickles
    "torch.hub.load": "it is the function torch.hub.load",  # trusted, but a function: runs hubconf.py
    "torch.optim.Adam.__init__": "it is the function torch.optim.adam.Adam.__init__",
    "builtins.eval": "builtins.eval is not from a trusted module",
    "posix.system": "posix.system is not from a trusted module",
    "pytorch_lightning.cli.LightningCLI": "is not a subclass of Optimizer",  # trusted class, wrong kind
}


@pytest.mark.parametrize("path", SPELLINGS, ids=list(SPELLINGS))
def test_a_path_is_judged_by_the_object_it_reaches_not_by_its_spelling(path):
    with pytest.raises(ConfigError) as error:
        build_optimizer({"class_path": path, "init_args": {"command": "touch pwned"}})
    message = str(error.value)
    assert SPELLINGS[path] in message and "\n" not in message, message
    assert not Path("pwned").exists()


def trained_checkpoint(tmp_path) -> str:
    module = VAEModule(latent_dim=4, network=MLPNet(hidden_dims=(32,)), weighting=FreeBits(beta=LinearWarmup(steps=3)))
    trainer = pl.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=EmbeddedMNIST(batch_size=32))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(tmp_path):
    path = trained_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)  # raises if anything but tensors and plain data
    assert (
        checkpoint["hyper_parameters"]["weighting"]["init_args"]["beta"]["class_path"]
        == "vae.objectives.weighting.LinearWarmup"
    )
    restored = VAEModule.load_from_checkpoint(path, weights_only=True)
    weighting = restored.objective.weighting
    assert isinstance(weighting, FreeBits) and weighting.schedule.steps == 3
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), checkpoint["state_dict"].values()))


def test_a_pickle_payload_in_a_checkpoint_executes_nothing(tmp_path):
    path = trained_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["network"] = Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    assert "posix\nsystem" in zipfile.ZipFile(evil).read("evil/data.pkl").decode("latin-1")  # the payload is there
    with pytest.raises(pickle.UnpicklingError):
        VAEModule.load_from_checkpoint(evil, weights_only=True)
    assert not marker.exists()
