"""The LightningModule: one ``_common_step`` for train, val and test, and every metric's name.

Logged, in nats per example (summed over pixels and latent dimensions, averaged over the batch):

    {stage}/recon      −E_q[log p(x|z)], the reconstruction negative log-likelihood
    {stage}/kl         D_KL(q(z|x) ‖ p(z)), raw and unweighted
    {stage}/elbo       E_q[log p(x|z)] − D_KL, unweighted (higher is better)
    {stage}/loss       −E_q[log p(x|z)] + β·D_KL, what is minimised
    train/kl_weight    β, the weight applied to the KL
    {val,test}/kl_dim/NN, {val,test}/active_units   the KL of each latent dimension, and the active units

The KL estimator in use ("analytic" or "mc": "auto" resolved for the prior) is logged as the hyperparameter
``kl_estimator`` (top level of the W&B run config; the config's ``model.kl_estimator`` keeps what was
asked). Priors that do not factorise over dimensions (a mixture, the VampPrior) have no per-dimension KL,
so ``kl_dim/NN`` is absent for them.

Train metrics are logged every step; val and test metrics once per epoch, over the whole split.
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from jsonargparse import lazy_instance
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import AttributeDict
from torch import Tensor

from vae.data import Batch
from vae.errors import ConfigError
from vae.evaluation import LatentStatistics
from vae.kl import KLEstimator
from vae.likelihoods import Bernoulli, Likelihood
from vae.model import VAE
from vae.nets import ConvNet, Network
from vae.objectives import beta_elbo
from vae.priors import Prior, StandardNormal

Stage = Literal["train", "val", "test"]


class VAEModule(pl.LightningModule):
    """Trains a ``VAE`` on the β-ELBO.

    image_shape: set from the data module by the ``vae`` command; give it when building by hand.
    latent_dim, network, likelihood, prior, kl_estimator, kl_samples: see ``vae.model.VAE``.
    beta: the KL weight β ≥ 0 (1 is the ELBO, > 1 the β-VAE).
    optimizer: called with the parameters; Adam with lr 1e-3 by default.
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 16,
        network: Network = lazy_instance(ConvNet),
        likelihood: Likelihood = lazy_instance(Bernoulli),
        prior: Prior = lazy_instance(StandardNormal),
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
        beta: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__()
        if not beta >= 0:
            raise ConfigError(f"beta (the KL weight) must be 0 or more, got {beta}")
        self.save_hyperparameters()
        self.beta = beta
        self.optimizer = optimizer
        self.vae = VAE(
            image_shape=image_shape,
            latent_dim=latent_dim,
            network=network,
            likelihood=likelihood,
            prior=prior,
            kl_estimator=kl_estimator,
            kl_samples=kl_samples,
        )
        self.latent_stats = torch.nn.ModuleDict(
            {stage: LatentStatistics(latent_dim=latent_dim) for stage in ("val", "test")}
        )

    @property
    def hparams_initial(self) -> AttributeDict:
        """What Lightning logs to every logger: the constructor's arguments, with the KL estimator in use
        ("auto" resolved for the prior). The checkpoint keeps the arguments as given."""
        return AttributeDict({**super().hparams_initial, "kl_estimator": self.vae.kl_estimator})

    def _common_step(self, batch: Batch, stage: Stage) -> Tensor:
        x, _ = batch
        out = self.vae(x)
        terms = beta_elbo(out.log_px, out.latent.kl, self.beta).mean()
        metrics = {"recon": -terms.log_px, "kl": terms.kl, "elbo": terms.elbo, "loss": terms.loss}
        per_step = stage == "train"
        for name, value in metrics.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=per_step,
                on_epoch=not per_step,
                batch_size=x.shape[0],
                sync_dist=not per_step,
                prog_bar=name == "elbo",
            )
        if stage == "train":
            self.log("train/kl_weight", self.beta, on_step=True, on_epoch=False)
        else:
            self.latent_stats[stage].update(out.moments.mean, out.latent.kl_per_dim)
        return terms.loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._common_step(batch, "test")

    def _log_latent_stats(self, stage: Stage) -> None:
        summary = self.latent_stats[stage].compute()
        self.latent_stats[stage].reset()
        metrics = {f"{stage}/active_units": float(summary.active_units)}
        if summary.kl_per_dim is not None:
            metrics |= {f"{stage}/kl_dim/{d:02d}": kl for d, kl in enumerate(summary.kl_per_dim.tolist())}
        self.log_dict(metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_latent_stats("val")

    def on_test_epoch_end(self) -> None:
        self._log_latent_stats("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())
