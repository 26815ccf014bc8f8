"""The LightningModule: one ``_common_step`` for train, val and test, and every metric's name.

Logged, in nats per example (summed over pixels and latent dimensions, averaged over the batch):

    {stage}/recon      −E_q[log p(x|z)], the reconstruction negative log-likelihood
    {stage}/kl         D_KL(q(z|x) ‖ p(z)), raw and unweighted
    {stage}/elbo       E_q[log p(x|z)] − D_KL, unweighted (higher is better)
    {stage}/loss       what is minimised under the weighting (−E_q[log p(x|z)] + β·D_KL for a constant β)
    train/kl_weight    the weight the weighting put on the KL at this step (β)
    train/<extra>      what a weighting adds: capacity, free_bits_active, geco_multiplier, geco_constraint
    {val,test}/kl_dim/NN, {val,test}/active_units   the KL of each latent dimension, and the active units

The KL estimator in use ("analytic" or "mc": "auto" resolved for the prior) is logged as the hyperparameter
``kl_estimator`` (top level of the W&B run config; the config's ``model.kl_estimator`` keeps what was
asked). Priors that do not factorise over dimensions (a mixture, the VampPrior) have no per-dimension KL,
so ``kl_dim/NN`` is absent for them.

Train metrics are logged on the steps Lightning writes to the loggers (every ``trainer.log_every_n_steps``)
and on each epoch's last batch; val and test metrics once per epoch, over the whole split.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import pytorch_lightning as pl
import torch
from jsonargparse import lazy_instance
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import AttributeDict, rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from vae.callbacks import last_checkpoint_path
from vae.config import build, build_optimizer, to_spec
from vae.data import Batch
from vae.errors import ConfigError, NonFiniteError
from vae.evaluation import LatentStatistics
from vae.kl import KLEstimator
from vae.likelihoods import Bernoulli, Likelihood
from vae.model import VAE
from vae.nets import ConvNet, Network
from vae.objectives import elbo_terms, iwae_bound
from vae.priors import Prior, StandardNormal
from vae.weighting import Constant, Weighting

Stage = Literal["train", "val", "test"]
NonFinitePolicy = Literal["stop", "skip"]
T = TypeVar("T")


def concrete(value: T) -> T:
    """A jsonargparse ``lazy_instance`` default made into a plain instance of its class (others pass)."""
    if hasattr(value, "lazy_get_init_args"):
        return type(value).__bases__[-1](**vars(value.lazy_get_init_args()))
    return value


class VAEModule(pl.LightningModule):
    """Trains a ``VAE`` under a KL weighting; logs the unweighted terms.

    image_shape: set from the data module by the ``vae`` command; give it when building by hand.
    latent_dim, network, likelihood, prior, kl_estimator, kl_samples: see ``vae.model.VAE``.
    weighting: how the KL enters the loss at each step (``vae.weighting``): a constant β by default
        (``--model.weighting.beta 4`` for the β-VAE), warm-up, cyclical, capacity, free bits, GECO.
    importance_samples: K > 1 trains on the IWAE bound with K importance samples (logged as
        ``{stage}/iwae``; recon, kl and elbo are still logged from a single-sample pass); 1 is the ELBO.
    channels_last: keep convolution weights and inputs in channels-last memory layout (faster convolutions
        on GPUs with tensor cores, with bf16 precision).
    compile: compile the encoder and decoder with ``torch.compile`` when training starts (the first steps pay
        the compile time; the state dict keys do not change, so checkpoints stay interchangeable).
    nonfinite: what a non-finite training loss, KL, reconstruction or gradient does: "stop" (the default)
        ends the run with a message naming the step and the term, before the optimizer step, so the weights
        and the last checkpoint stay good; "skip" skips that batch's update, warns, and counts the skipped
        steps (``train/skipped_steps``).
    optimizer: called with the parameters; Adam with lr 1e-3 by default.
    """

    # The arguments that define what the weights mean: a resumed run must keep them (``vae.checkpoints``).
    ARCHITECTURE = ("image_shape", "latent_dim", "network", "likelihood", "prior")

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
        weighting: Weighting = lazy_instance(Constant, beta=1.0),
        importance_samples: int = 1,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite: NonFinitePolicy = "stop",
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__()
        # Plain objects (LightningCLI's lazy defaults made concrete; specs from a checkpoint built).
        network = build(concrete(network), Network, "model.network")
        likelihood = build(concrete(likelihood), Likelihood, "model.likelihood")
        prior = build(concrete(prior), Prior, "model.prior")
        weighting = build(concrete(weighting), Weighting, "model.weighting")
        optimizer = build_optimizer(optimizer)
        if nonfinite not in ("stop", "skip"):
            raise ConfigError(f"model.nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        if importance_samples < 1:
            raise ConfigError(f"importance_samples must be at least 1, got {importance_samples}")
        if importance_samples > 1 and not (isinstance(weighting, Constant) and weighting.value == 1.0):
            raise ConfigError(
                "the IWAE bound (importance_samples > 1) is its own objective: use the default weighting "
                "Constant(beta=1.0) with it"
            )
        # Recorded as plain data (specs), so that a checkpoint loads with weights_only=True (vae.config).
        self.save_hyperparameters(
            {
                "image_shape": tuple(image_shape),
                "latent_dim": latent_dim,
                "network": to_spec(network),
                "likelihood": to_spec(likelihood),
                "prior": to_spec(prior),
                "kl_estimator": kl_estimator,
                "kl_samples": kl_samples,
                "weighting": to_spec(weighting),
                "importance_samples": importance_samples,
                "channels_last": channels_last,
                "compile": compile,
                "nonfinite": nonfinite,
                "optimizer": to_spec(optimizer),
            }
        )
        self.weighting = weighting
        self.importance_samples = importance_samples
        self.channels_last = channels_last
        self.compile_networks = compile
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.step_terms: dict[str, Tensor] = {}
        self.optimizer = optimizer
        parts = {
            "image_shape": image_shape,
            "latent_dim": latent_dim,
            "network": network,
            "likelihood": likelihood,
            "prior": prior,
            "kl_estimator": kl_estimator,
            "kl_samples": kl_samples,
        }
        try:
            self.vae = VAE(**parts)
        except RuntimeError as error:  # torch's allocator (and torch.OutOfMemoryError): sizes that cannot fit
            if "allocate" not in str(error):
                raise
            with torch.device("meta"):  # the same model without memory, to count it
                count = sum(p.numel() for p in VAE(**parts).parameters())
            raise ConfigError(
                f"the model would have {count:,} parameters ({count * 4 / 2**30:,.1f} GiB in float32), more than "
                f"fits in memory here: make model.latent_dim ({latent_dim}) or the network smaller"
            ) from error
        self.latent_stats = torch.nn.ModuleDict(
            {stage: LatentStatistics(latent_dim=latent_dim) for stage in ("val", "test")}
        )
        # Val/test means weighted by batch size and reduced over processes by torchmetrics (sums of values and
        # of weights): Lightning's own mean reduction averages the per-process image counts as integers.
        names = ("recon", "kl", "elbo", "loss", *(("iwae",) if importance_samples > 1 else ()))
        self.epoch_means = torch.nn.ModuleDict(
            {stage: torch.nn.ModuleDict({name: MeanMetric() for name in names}) for stage in ("val", "test")}
        )

    @property
    def hparams_initial(self) -> AttributeDict:
        """What Lightning logs to every logger: the constructor's arguments, with the KL estimator in use
        ("auto" resolved for the prior). The checkpoint keeps the arguments as given."""
        return AttributeDict({**super().hparams_initial, "kl_estimator": self.vae.kl_estimator})

    def configure_model(self) -> None:
        if self.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        if self.compile_networks:
            self.vae.encoder.compile()
            self.vae.decoder.compile()

    def _common_step(self, batch: Batch, stage: Stage) -> Tensor:
        x, _ = batch
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.vae(x)
        terms = elbo_terms(out.log_px, out.latent.kl).mean()
        weighted = self.weighting(
            out.log_px, out.latent.kl, out.latent.kl_per_dim, step=self.global_step, training=stage == "train"
        )
        metrics = {"recon": -terms.log_px, "kl": terms.kl, "elbo": terms.elbo, "loss": weighted.loss}
        if self.importance_samples > 1:  # the IWAE bound is the objective; recon, kl, elbo are still logged
            weights = self.vae.log_weights(x, self.importance_samples)
            iwae = iwae_bound(weights.log_px, weights.log_pz, weights.log_qz).bound.mean()
            metrics |= {"iwae": iwae, "loss": -iwae}
        # Train metrics on the steps Lightning writes to the loggers, val/test once per epoch over the split
        # (all reduced over the processes under DDP); the ELBO also in the progress bar.
        per_step = stage == "train"
        loss = metrics["loss"]
        if per_step:  # checked with the gradients, before the optimizer step
            self.step_terms = {name: metrics[name].detach() for name in ("loss", "recon", "kl")}
        if per_step and not self.writes_train_metrics():
            return loss
        if per_step:
            metrics |= {"kl_weight": weighted.kl_weight, **weighted.extras}
            if self.nonfinite == "skip":
                metrics["skipped_steps"] = float(self.skipped_steps)
        if per_step:  # this step's values, averaged over the processes
            options = {"on_step": True, "on_epoch": False, "sync_dist": True, "batch_size": x.shape[0]}
        else:  # the split's means: torchmetrics accumulates, Lightning computes and resets them at epoch end
            for name, value in metrics.items():
                self.epoch_means[stage][name].update(value.detach(), weight=x.shape[0])
            metrics = dict(self.epoch_means[stage].items())
            options = {"on_step": False, "on_epoch": True}
            self.latent_stats[stage].update(out.moments.mean, out.latent.kl_per_dim)
        elbo = metrics.pop("elbo")
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()}, **options)
        self.log(f"{stage}/elbo", elbo, prog_bar=True, **options)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The non-finite guard, once per optimizer step with one host sync: this step's loss terms and the
        gradients' total norm. A non-finite one stops the run (a NonFiniteError naming the step and the
        terms), or under ``nonfinite="skip"`` drops every gradient, so the optimizer leaves all weights and
        its own state alone. Under DDP the gradients are already averaged, so every process sees the same
        non-finite norm and takes the same decision."""
        terms, self.step_terms = self.step_terms, {}
        checks = [torch.stack([term.float().reshape(()) for term in terms.values()])] if terms else []
        grads = {name: p.grad for name, p in self.named_parameters() if p.grad is not None}
        if grads and self.trainer.precision != "16-mixed":  # 16-mixed: the gradient scaler skips inf steps
            checks.append(torch.nn.utils.get_total_norm(list(grads.values())).reshape(1))
        if not checks or bool(torch.isfinite(torch.cat(checks)).all()):
            return
        bad_terms = [f"train/{name} = {float(value)}" for name, value in terms.items() if not torch.isfinite(value)]
        if bad_terms:
            what = ", ".join(bad_terms)
        else:
            names = [name for name, grad in grads.items() if not bool(torch.isfinite(grad).all())]
            what = f"gradient of {', '.join(names[:3])}{' and more' if len(names) > 3 else ''}"
        step = self.global_step
        if self.nonfinite == "stop":
            last = last_checkpoint_path(self.trainer)
            where = f"the last good checkpoint is {last}; " if last.is_file() else ""
            raise NonFiniteError(
                f"step {step}: non-finite {what}; stopped before the update, {where}lower the learning rate (and "
                "resume with --ckpt_path last), or set --model.nonfinite skip to skip such batches"
            )
        self.skipped_steps += 1
        rank_zero_warn(f"step {step}: non-finite {what}; skipped this update (model.nonfinite: skip)")
        for p in self.parameters():
            p.grad = None

    def writes_train_metrics(self) -> bool:
        """Whether to log this training step's metrics: on the steps Lightning writes to the loggers (every
        ``trainer.log_every_n_steps`` steps, and when the run is told to stop), and on an epoch's last batch
        (so that epoch-end callbacks see this epoch's values). Each ``self.log`` costs Lightning about half a
        millisecond on the host, more than a whole step of a small model on a GPU, and a value logged on
        the other steps would reach no logger."""
        trainer = self._trainer
        if trainer is None or trainer.log_every_n_steps == 0:
            return False
        return (self.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop or trainer.is_last_batch

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
        self.log_dict(metrics, sync_dist=True)  # already reduced over the processes: the same on each

    def on_validation_epoch_end(self) -> None:
        self._log_latent_stats("val")

    def on_test_epoch_end(self) -> None:
        self._log_latent_stats("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())
