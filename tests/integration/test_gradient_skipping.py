"""The ``Guard`` callback on a real Trainer: skipped updates leave the weights and the optimizer alone, and the
guard's state is saved in the checkpoint. The gradient guard's decisions: tests/unit/test_gradient_guard.py."""

from __future__ import annotations

import torch

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.models import VAE
from vae.training.guards import Guard
from vae.training.module import VAEModule


def test_skipped_updates_leave_the_weights_and_the_optimizer_alone(trainer, tmp_path):
    """A threshold far below every norm: the first five updates are skipped (weights and Adam's state untouched),
    the sixth is taken, clipped."""
    torch.manual_seed(0)
    module = VAEModule(model=VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(16,))))
    guard = Guard(grad_skip=1e-6)
    before = {k: v.clone() for k, v in module.state_dict().items() if k.startswith("model.")}
    assert before

    def fit(steps: int):
        run = trainer(max_steps=steps, limit_val_batches=0, callbacks=[guard])
        run.fit(module, datamodule=EmbeddedMNIST(batch_size=64, binarize="static"))
        return run

    run = fit(5)
    assert int(guard.gradients.skipped) == 5
    after = module.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    assert not run.optimizers[0].state  # Adam never stepped
    run.save_checkpoint(tmp_path / "five.ckpt")  # the guard's state is the callback's, in the checkpoint
    saved = torch.load(tmp_path / "five.ckpt", weights_only=True)
    assert int(saved["callbacks"]["Guard"]["skipped"]) == 5 and int(saved["callbacks"]["Guard"]["consecutive"]) == 5
    assert not any(key.startswith("guard.") for key in saved["state_dict"])
    fit(6)
    moved = module.state_dict()
    assert any(not torch.equal(value, moved[key]) for key, value in before.items())
