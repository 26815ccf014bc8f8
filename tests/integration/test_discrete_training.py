"""The relaxation's annealed temperature through real fits: a function of the global step, so a resumed run goes on
exactly where it stopped. (The discrete layers' numbers on their own: tests/unit/test_discrete.py.)"""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from vae.data.embedded import EmbeddedMNIST
from vae.layers.discrete import Temperature
from vae.layers.nets.mlp import MLPNet
from vae.models.joint import JointVAE
from vae.training.module import VAEModule


class RecordTemperature(pl.Callback):
    def __init__(self) -> None:
        self.temperatures: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.temperatures[trainer.global_step - 1] = float(trainer.callback_metrics["train/temperature"])


def test_the_annealed_temperature_continues_exactly_across_a_resume(tmp_path, trainer):
    """τ is a function of the global step, not a counter: a run resumed from step 6 goes on from τ(6)."""
    schedule = Temperature(start=1.0, minimum=0.3, rate=0.15)

    def fit(max_steps: int, ckpt_path=None) -> dict[int, float]:
        torch.manual_seed(0)
        model = JointVAE(
            image_shape=(1, 28, 28), latent_dim=2, network=MLPNet(hidden_dims=(16,)), categories=3, temperature=1.0,
            min_temperature=0.3, anneal_rate=0.15,
        )  # fmt: skip
        recorder = RecordTemperature()
        checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=3)
        run = trainer(
            max_steps=max_steps, limit_val_batches=0, log_every_n_steps=1, enable_checkpointing=True,
            callbacks=[recorder, checkpoints],
        )  # fmt: skip
        run.fit(VAEModule(model=model), datamodule=EmbeddedMNIST(batch_size=64), ckpt_path=ckpt_path)
        return recorder.temperatures

    first = fit(6)
    resumed = fit(12, ckpt_path=tmp_path / "last.ckpt")
    assert sorted(first) == list(range(6)) and sorted(resumed) == list(range(6, 12))
    for step, temperature in {**first, **resumed}.items():
        assert temperature == pytest.approx(schedule.at(step), rel=1e-6), step
    assert resumed[7] > 0.3 and resumed[11] == pytest.approx(0.3)  # e^−0.15·t reaches the floor 0.3 at t = 8.03
