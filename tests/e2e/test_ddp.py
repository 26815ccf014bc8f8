"""DDP through Lightning with two real CPU processes (gloo, ddp_spawn): the validation metrics are reduced
over both processes' shares of the split exactly as one process computes them, and training at the same
global batch reaches the same metrics."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import tiny_trainer

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets.mlp import MLPNet
from vae.layers.nets.unet import UNet
from vae.models import VAE, VDM, HierarchicalVAE
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


@pytest.mark.slow
def test_a_diffusion_models_terms_are_reduced_across_processes(tmp_path):
    """A VDM validated with the same weights on one process and on two: its prior term, a closed form of each image,
    agrees to float rounding; the diffusion term to its Monte-Carlo noise (the processes draw their own t and ε); and
    two processes train it (slow: four process starts)."""

    def validate(devices: int, batch_size: int, train: bool = False) -> dict[str, float]:
        pl.seed_everything(0, verbose=False)
        network = UNet(channels=(8, 16), fourier=())
        model = VDM(image_shape=DIGITS, network=network, levels=2, ema_decay=0.9, sampling_steps=2)
        module = VAEModule(model=model, objective=ELBO())
        data = EmbeddedMNIST(batch_size=batch_size, val_size=333, binarize="static")
        settings = {"max_epochs": 1, "limit_train_batches": 4, "num_sanity_val_steps": 0}
        trainer = tiny_trainer(tmp_path, devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", **settings)
        (trainer.fit if train else trainer.validate)(module, datamodule=data)
        return {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}

    one, two = validate(1, 64), validate(2, 32)
    assert two["val/kl/prior"] == pytest.approx(one["val/kl/prior"], rel=1e-5)
    assert two["val/diffusion"] == pytest.approx(one["val/diffusion"], rel=0.05)
    trained = validate(2, 32, train=True)
    assert trained["val/kl"] == pytest.approx(trained["val/kl/prior"] + trained["val/diffusion"], rel=1e-5)
