"""Checkpoints are data: a trained checkpoint loads with weights_only=True and rebuilds the model from its specs, and
a pickle payload in one executes nothing; a config that names a class of another kind under model.model,
model.objective or model.optimizer is refused by `vae fit` in one line. The trust rules themselves:
tests/unit/test_security.py."""

import pickle
import zipfile

import pytest
import torch
import yaml
from conftest import QUICKSTART, offline, run, tiny_trainer
from faults import Payload

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.models import VAE
from vae.objectives import ELBO
from vae.objectives.weighting import FreeBits, LinearWarmup
from vae.training.module import VAEModule


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("checkpoint")
    model = VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(32,)))
    module = VAEModule(model=model, objective=ELBO(weighting=FreeBits(beta=LinearWarmup(steps=3))))
    trainer = tiny_trainer(root, max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=EmbeddedMNIST(batch_size=32))
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(trained_checkpoint):
    checkpoint = torch.load(trained_checkpoint, weights_only=True)  # raises if anything but tensors and plain data
    hyper = checkpoint["hyper_parameters"]
    assert hyper["model"]["class_path"] == "vae.models.vae.VAE"
    weighting = hyper["objective"]["init_args"]["weighting"]
    assert weighting["init_args"]["beta"]["class_path"] == "vae.objectives.weighting.LinearWarmup"
    restored = VAEModule.load_from_checkpoint(trained_checkpoint, weights_only=True)
    weighting = restored.objective.weighting
    assert isinstance(weighting, FreeBits) and weighting.schedule.steps == 3
    assert isinstance(restored.model, VAE) and restored.model.latent_dim == 4
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), checkpoint["state_dict"].values()))


def test_a_pickle_payload_in_a_checkpoint_executes_nothing(trained_checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["model"]["init_args"]["network"] = Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    assert "posix\nsystem" in zipfile.ZipFile(evil).read("evil/data.pkl").decode("latin-1")  # the payload is there
    with pytest.raises(pickle.UnpicklingError):
        VAEModule.load_from_checkpoint(evil, weights_only=True)
    assert not marker.exists()


WRONG_KINDS = {
    "model": ("vae.layers.nets.ConvNet", "LatentVariableModel"),
    "objective": ("vae.objectives.weighting.GECO", "Objective"),
    "optimizer": ("vae.models.VAE", "Optimizer"),
}


@pytest.mark.parametrize("name", WRONG_KINDS, ids=list(WRONG_KINDS))
def test_vae_fit_refuses_a_class_of_another_kind_in_the_model_section_in_one_line(name, tmp_path):
    path, kind = WRONG_KINDS[name]
    config = yaml.safe_load(QUICKSTART.read_text())
    config["model"][name] = {"class_path": path}
    file = tmp_path / "wrong.yaml"
    file.write_text(yaml.safe_dump(config))
    result = run(["fit", "--config", str(file)], cwd=tmp_path, env=offline(tmp_path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"model.{name}: {path} is not a subclass of {kind}" in line
    assert not (tmp_path / "runs").exists()
