"""DDP through Lightning with two real CPU processes (gloo, ddp_spawn): the validation metrics are reduced
over both processes' shares of the split exactly as one process computes them, and training at the same
global batch reaches the same metrics."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import tiny_trainer

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets.mlp import MLPNet
from vae.models import VAE, HierarchicalVAE
from vae.objectives import ELBO
from vae.training.module import VAEModule

DETERMINISTIC = ["val/kl", "val/active_units", *(f"val/kl_dim/{d:02d}" for d in range(4))]  # no sampling noise
# A hierarchy: the top layer's KL and active units depend on x alone; the layers below on the sampled z above.
HIERARCHY_DETERMINISTIC = ["val/kl/z2", "val/active_units/z2"]
DIGITS = (1, 28, 28)


def model(hierarchical: bool) -> VAE | HierarchicalVAE:
    """A fresh model (a part is bound to one model only): four latent units, or a two-layer hierarchy."""
    if hierarchical:
        return HierarchicalVAE(
            image_shape=DIGITS, latent_channels=(4, 3), resolutions=(1, 7), width=8, stem_channels=(8,)
        )
    return VAE(image_shape=DIGITS, latent_dim=4, network=MLPNet(hidden_dims=(64,)))


def run(
    root: Path,
    *,
    devices: int,
    batch_size: int,
    train: bool,
    steps: int = 40,
    seed: int = 0,
    hierarchical: bool = False,
) -> dict[str, float]:
    pl.seed_everything(seed, verbose=False)
    module = VAEModule(model=model(hierarchical), objective=ELBO())
    data = EmbeddedMNIST(batch_size=batch_size, val_size=333)  # 167 + 166 images on two processes
    trainer = tiny_trainer(
        root,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=steps,
        num_sanity_val_steps=0,
    )
    if train:
        trainer.fit(module, datamodule=data)
    else:
        trainer.validate(module, datamodule=data)
    return {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}


@pytest.mark.parametrize(
    "hierarchical", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["single-layer", "hierarchical"]
)
def test_validation_metrics_are_reduced_across_processes_exactly(tmp_path, hierarchical):
    """The same weights on one process and on two (333 images: 167 and 166 per process): the KL, per
    dimension, and the active units have no sampling noise, so they agree to float rounding (1e-5); recon and
    ELBO to their Monte-Carlo noise. For a hierarchy, the top layer's KL and active units (the layers below
    depend on the samples above)."""
    one = run(tmp_path, devices=1, batch_size=64, train=False, hierarchical=hierarchical)
    two = run(tmp_path, devices=2, batch_size=32, train=False, hierarchical=hierarchical)
    for name in HIERARCHY_DETERMINISTIC if hierarchical else DETERMINISTIC:
        assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-5), name
    assert two["val/elbo"] == pytest.approx(one["val/elbo"], abs=1.0)


@pytest.mark.slow
def test_two_processes_train_like_one_at_the_same_global_batch(tmp_path):
    """40 steps at a global batch of 64 (one process × 64, two × 32) from the same initial weights: the same
    trajectory up to the reparameterisation noise, which the processes draw differently. Measured: val ELBO
    −270.62 vs −271.12, recon 243.09 vs 244.22, KL 27.52 vs 26.90 (another initial seed: ELBO −285.97). Over
    six noise seeds the val KL spans 26.9–29.1 on one process and 26.8–28.9 on two, and a rerun of the same seed
    repeats to 1e-6. One clean-clone suite run once measured 24.26 on two processes, which no local rerun
    reproduces: slow, so the default suite stays deterministic, and a failure here is worth a look."""
    one = run(tmp_path, devices=1, batch_size=64, train=True)
    two = run(tmp_path, devices=2, batch_size=32, train=True)
    for name, tolerance in {"val/elbo": 3.0, "val/recon": 3.0, "val/kl": 2.0, "train/loss": 10.0}.items():
        assert two[name] == pytest.approx(one[name], abs=tolerance), (name, one[name], two[name])
    assert two["val/active_units"] == one["val/active_units"] == 4
