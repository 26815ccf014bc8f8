"""Training on the IWAE bound (``vae.objectives.IWAE``) through a real Trainer: a tighter bound than the ELBO, and
the loss it minimises is its negative. The estimators against an exact model: tests/unit/test_evaluation.py."""

import pytest
import torch

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.models import VAE
from vae.objectives import IWAE
from vae.training.module import VAEModule


def test_training_on_the_iwae_bound(trainer):
    data = EmbeddedMNIST(batch_size=256)
    model = VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(32,)))
    module = VAEModule(model=model, objective=IWAE(samples=5))
    run = trainer(max_epochs=1, limit_train_batches=6)
    run.fit(module, datamodule=data)
    metrics = run.callback_metrics
    assert metrics["val/iwae"] >= metrics["val/elbo"] - 1.0  # a tighter bound, up to noise
    assert torch.isfinite(metrics["train/loss"]) and metrics["train/loss"] == pytest.approx(-metrics["train/iwae"])
