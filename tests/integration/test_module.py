"""The units contract and the logged metrics, through a real Lightning Trainer on real MNIST digits. The terms and
the latent statistics on their own: tests/unit/test_elbo_terms.py."""

import pytest
import pytorch_lightning as pl
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.models import VAE
from vae.objectives import ELBO
from vae.objectives.weighting import Constant
from vae.training.module import VAEModule

LATENT_DIM = 8


class SeedEachBatch(pl.Callback):
    """Seeds the RNG right before each validation batch, so a test can replay the posterior sample."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_validation_batch_start(self, *args, **kwargs) -> None:
        torch.manual_seed(self.seed)


def vae(hidden: int) -> VAE:
    return VAE(image_shape=(1, 28, 28), latent_dim=LATENT_DIM, network=MLPNet(hidden_dims=(hidden,)))


def validate(trainer, module: VAEModule, data: EmbeddedMNIST, seed: int) -> dict[str, float]:
    run = trainer(callbacks=[SeedEachBatch(seed)])
    run.validate(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in run.callback_metrics.items()}


@pytest.fixture(scope="module")
def data():
    data = EmbeddedMNIST(batch_size=500)
    data.setup("validate")
    return data


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_logged_terms_are_sums_over_pixels_and_latents_averaged_over_the_batch(data, beta, trainer):
    module = VAEModule(model=vae(64), objective=ELBO(weighting=Constant(beta=beta)))
    metrics = validate(trainer, module, data, seed=3)

    # An independent computation with torch.distributions, replaying the same posterior sample.
    x = data.splits["val"].images.float() / 255.0
    with torch.no_grad():
        moments = module.model.posterior(x)
        q = Independent(Normal(moments.mean, (0.5 * moments.logvar).exp()), 1)
        prior = Independent(Normal(torch.zeros_like(moments.mean), 1.0), 1)
        torch.manual_seed(3)
        z = q.rsample()
        bernoulli = Bernoulli(logits=module.model.network.decoder(z), validate_args=False)  # grey levels in [0, 1]
        log_px = Independent(bernoulli, 3).log_prob(x)  # summed over 784 pixels
    kl = kl_divergence(q, prior)  # summed over the 8 latent dimensions

    assert metrics["val/kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert metrics["val/recon"] == pytest.approx(-log_px.mean().item(), rel=1e-5)
    assert metrics["val/elbo"] == pytest.approx((log_px - kl).mean().item(), rel=1e-5)
    assert metrics["val/loss"] == pytest.approx((-log_px + beta * kl).mean().item(), rel=1e-5)
    # The KL per dimension sums to the KL; active units are counted over the validation set.
    per_dim = [metrics[f"val/kl_dim/{d:02d}"] for d in range(LATENT_DIM)]
    assert sum(per_dim) == pytest.approx(metrics["val/kl"], rel=1e-5)
    assert 0 <= metrics["val/active_units"] <= LATENT_DIM


def test_active_units_count_dimensions_whose_posterior_mean_varies(data, trainer):
    """Posterior means that do not depend on x are never counted as active."""
    module = VAEModule(model=vae(64))
    with torch.no_grad():
        head = module.model.latent.head
        head.weight[: LATENT_DIM // 2] = 0.0  # the first half of the means no longer depend on x
        head.bias[: LATENT_DIM // 2] = 0.0
    metrics = validate(trainer, module, data, seed=0)
    assert metrics["val/active_units"] <= LATENT_DIM // 2


class RecordLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_train_metrics_reach_the_logger_on_its_steps_with_that_steps_values(trainer, tmp_path):
    """Train metrics are logged only on the steps Lightning writes (every log_every_n_steps) and on an
    epoch's last batch; the logger gets the value of its own step, not a stale one."""
    recorder = RecordLosses()
    run = trainer(
        max_epochs=1,
        limit_train_batches=7,
        limit_val_batches=0,
        log_every_n_steps=3,
        logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[recorder],
    )
    run.fit(VAEModule(model=vae(32)), datamodule=EmbeddedMNIST())
    rows = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = {
        int(values[header.index("step")]): float(values[header.index("train/loss")])
        for values in (row.split(",") for row in rows[1:])
        if values[header.index("train/loss")]
    }
    assert sorted(logged) == [2, 5]  # steps 3 and 6 of 7
    assert logged == {step: pytest.approx(recorder.losses[step], rel=1e-6) for step in logged}
    assert run.callback_metrics["train/loss"] == pytest.approx(recorder.losses[-1], rel=1e-6)  # the last batch
