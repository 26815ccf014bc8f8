"""KL weightings through a real Trainer: schedules continue exactly across a resume, and GECO's state is saved in the
checkpoint and restored."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.models import VAE
from vae.objectives import ELBO
from vae.objectives.weighting import GECO, Cyclical, LinearWarmup
from vae.training.module import VAEModule


class RecordWeights(pl.Callback):
    def __init__(self) -> None:
        self.weights: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights[trainer.global_step - 1] = float(trainer.callback_metrics["train/kl_weight"])


def module_with(weighting) -> VAEModule:
    model = VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(32,)))
    return VAEModule(model=model, objective=ELBO(weighting=weighting))


def fit(trainer, module, data, root, *, max_steps, ckpt_path=None):
    recorder = RecordWeights()
    checkpoints = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=5)
    run = trainer(
        max_steps=max_steps,
        callbacks=[recorder, checkpoints],
        enable_checkpointing=True,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    run.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return recorder.weights


SCHEDULES = {
    "warmup": lambda: LinearWarmup(start=0.0, end=1.0, steps=20),
    "cyclical": lambda: Cyclical(beta=1.0, total_steps=24, cycles=3, ramp=0.5),
}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=list(SCHEDULES))
def test_schedules_continue_exactly_across_a_resume(schedule, trainer, tmp_path):
    data = EmbeddedMNIST(batch_size=256)
    first = fit(trainer, module_with(schedule()), data, tmp_path, max_steps=10)
    resumed = fit(trainer, module_with(schedule()), data, tmp_path, max_steps=25, ckpt_path=tmp_path / "last.ckpt")
    assert sorted(first) == list(range(10)) and sorted(resumed) == list(range(10, 25))
    weighting = schedule()
    for step, weight in {**first, **resumed}.items():
        assert weight == pytest.approx(weighting.beta(step)), step


def test_geco_state_is_saved_in_the_checkpoint_and_restored(trainer, tmp_path):
    data = EmbeddedMNIST(batch_size=256)
    module = module_with(GECO(target=150.0))
    fit(trainer, module, data, tmp_path, max_steps=5)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    weighting = module.objective.weighting
    assert float(saved["objective.weighting.multiplier"]) == float(weighting.multiplier) != 1.0
    restored = VAEModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    assert float(restored.objective.weighting.multiplier) == float(weighting.multiplier)
    assert int(restored.objective.weighting.updates) == 5
