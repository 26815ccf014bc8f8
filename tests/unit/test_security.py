"""Checkpoints are data, configs are code: a checkpoint loads with weights_only=True and a pickle payload in
one executes nothing; a config builds only classes, defined in trusted modules, of the kind each key expects,
however the path to them is spelt (the spellings that reach os, subprocess, builtins, importlib and pickle
through trusted packages are refused: tests/integration/test_bad_input.py runs them through the real command). A
trained checkpoint, and one carrying a pickle payload: tests/integration/test_checkpoint_security.py."""

import collections
import pickle
from pathlib import Path

import pytest
import torch

from vae.commands.parser import SECTIONS
from vae.core.errors import ConfigError
from vae.core.spec import to_spec
from vae.core.trust import build, build_optimizer, check_classes, expected_base, judge, resolve_class
from vae.data.base import ImageDataModule
from vae.layers.likelihoods import Gaussian
from vae.layers.nets import ConvNet, MLPNet, Network
from vae.layers.priors import GaussianMixture
from vae.models import VAE, HierarchicalVAE
from vae.models.base import LatentVariableModel
from vae.objectives import ELBO, IWAE, BetaTCVAE, Objective
from vae.objectives.weighting import GECO, FreeBits, LinearWarmup, Weighting


@pytest.mark.parametrize(
    "value",
    [
        ConvNet(channels=(16, 32)),
        FreeBits(floor=0.25, beta=LinearWarmup(steps=7)),
        GECO(target=90.0),
        Gaussian(sigma=0.2, learn_sigma=True),
        GaussianMixture(num_components=3),
        VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(16,)), prior=GaussianMixture()),
        HierarchicalVAE(image_shape=(1, 8, 8), latent_channels=(4, 2), resolutions=(1, 2), width=8, stem_channels=()),
        ELBO(weighting=GECO(target=90.0), penalty=BetaTCVAE(beta=4.0), kl_split="mws"),
        IWAE(samples=3),
    ],
    ids=["conv-net", "free-bits", "geco", "gaussian", "mixture", "vae", "hierarchical-vae", "elbo", "iwae"],
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
    with pytest.raises(ConfigError, match="vae.layers.nets.MLPNet is not a subclass of LatentVariableModel"):
        build({"class_path": "vae.layers.nets.MLPNet"}, LatentVariableModel, "model.model")
    with pytest.raises(ConfigError, match="vae.objectives.Constant is not a subclass of Objective"):
        build({"class_path": "vae.objectives.Constant"}, Objective, "model.objective")
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


# What each key of a config's model and data sections must name (``SECTIONS``: the module's constructor's types).
KINDS = {
    "model.model": LatentVariableModel,
    "model.objective": Objective,
    "model.optimizer": torch.optim.Optimizer,
    "data": ImageDataModule,
}


@pytest.mark.parametrize("key", KINDS, ids=list(KINDS))
def test_each_section_key_expects_its_kind(key):
    assert expected_base(key, SECTIONS) is KINDS[key]


@pytest.mark.parametrize(
    "key,path,reached",
    [
        ("model.model", "vae.models.VAE", VAE),
        ("model.model", "vae.models.HierarchicalVAE", HierarchicalVAE),
        ("model.objective", "vae.objectives.ELBO", ELBO),
        ("model.objective", "vae.objectives.IWAE", IWAE),
        ("model.optimizer", "torch.optim.AdamW", torch.optim.AdamW),
    ],
)
def test_each_key_takes_its_own_kind(key, path, reached):
    assert judge(key, path, SECTIONS) is reached


# A class of another kind under each key: a network, a weighting or a model where a model, an objective or an
# optimizer belongs; each refused in one line that names the key, the path and the kind it expects.
WRONG_KINDS = [
    ("model.model", "vae.layers.nets.ConvNet", "LatentVariableModel (vae.models.base.LatentVariableModel)"),
    ("model.model", "vae.objectives.ELBO", "LatentVariableModel (vae.models.base.LatentVariableModel)"),
    ("model.model", "vae.training.module.VAEModule", "LatentVariableModel (vae.models.base.LatentVariableModel)"),
    ("model.objective", "vae.objectives.weighting.GECO", "Objective (vae.objectives.elbo.Objective)"),
    ("model.objective", "vae.models.VAE", "Objective (vae.objectives.elbo.Objective)"),
    ("model.optimizer", "vae.models.VAE", "Optimizer (torch.optim.optimizer.Optimizer)"),
]


@pytest.mark.parametrize("key,path,kind", WRONG_KINDS, ids=[f"{key}={path}" for key, path, _ in WRONG_KINDS])
def test_a_config_naming_a_class_of_another_kind_is_refused_in_one_line(key, path, kind):
    section, _, name = key.partition(".")
    config = {section: {name: {"class_path": path}}}
    with pytest.raises(ConfigError) as error:
        check_classes(config, SECTIONS)
    assert str(error.value) == f"{key}: {path} is not a subclass of {kind}"
