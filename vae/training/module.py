"""The LightningModule: it receives a model and an objective, and keeps the steps, the logging and the optimizer.

One ``_common_step`` for train, val and test logs whatever terms the objective returns, in nats per example
(summed over pixels and latent units, averaged over the batch): ``{stage}/recon``, ``{stage}/kl`` (raw, unweighted),
``{stage}/elbo`` (unweighted), ``{stage}/loss``, and what the objective adds for this model (each layer's KL, the KL
split, a penalty's terms, the model's own terms, ``iwae``); on training steps the weights beside them
(``train/kl_weight`` and the rest, ``vae.objectives``). From the latent layers, at validation and test:
``{val,test}/active_units`` (per layer for several, ``/<layer>``) and, where the model has a KL per dimension,
``{val,test}/kl_dim/NN``; and the model's own metrics over the split (``split_metrics``: a VQ model's
``codebook/usage``). The full list: docs/metrics.md.

Every batch's labels reach the model as its ``context`` (a conditional model's y; the others ignore them), and the
trainer's global step as its ``step`` (schedules inside a model), so a new model needs no edit here.

Train metrics are logged on the steps Lightning writes to the loggers (every ``trainer.log_every_n_steps``) and on
each epoch's last batch; val and test metrics once per epoch, over the whole split, reduced over processes.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import AttributeDict
from torch import Tensor
from torchmetrics import MeanMetric

from vae.core.spec import to_spec
from vae.core.trust import build, build_optimizer
from vae.data.base import Batch, dataset_size
from vae.metrics.likelihood import LatentStatistics
from vae.models.base import LatentVariableModel
from vae.objectives.elbo import ELBO, Objective

Stage = Literal["train", "val", "test"]


class VAEModule(pl.LightningModule):
    """Trains ``model`` under ``objective``; logs the unweighted terms.

    model: the model (``vae.models``: ``VAE``, ``HierarchicalVAE``, ``ConditionalVAE``, ``JointVAE``, or your own
        ``LatentVariableModel``); its constructor is its config.
    objective: what it is trained on (``vae.objectives``): ``ELBO`` (with a KL weighting and a penalty; the default,
        with β = 1) or ``IWAE``.
    optimizer: called with the parameters; Adam with lr 1e-3 by default.
    channels_last: keep convolution weights and inputs in channels-last memory layout (faster convolutions on GPUs
        with tensor cores, with bf16 precision).
    compile: compile the networks with ``torch.compile`` when training starts (the first steps pay the compile time;
        the state dict keys do not change, so checkpoints stay interchangeable).

    The checkpoint records the model, the objective and the optimizer as specs (plain data, ``vae.core.spec``), so
    it loads with ``weights_only=True``; each class path in it is judged by the trust rules before it is imported.
    """

    def __init__(
        self,
        *,
        model: LatentVariableModel,
        objective: Objective | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # Specs read back from a checkpoint are built here, each class judged by the trust rules first.
        model = build(model, LatentVariableModel, "model.model")
        objective = ELBO() if objective is None else build(objective, Objective, "model.objective")
        optimizer = build_optimizer(optimizer)
        self.save_hyperparameters(
            {
                "model": to_spec(model),
                "objective": to_spec(objective),
                "optimizer": to_spec(optimizer),
                "channels_last": channels_last,
                "compile": compile,
            }
        )
        self.model = model
        self.objective = objective.bind(model)  # its parameters (a discriminator) exist before the optimizer
        self.optimizer = optimizer
        self.channels_last = channels_last
        self.compile_networks = compile
        self.step_terms: dict[str, Tensor] = {}  # this step's loss terms, for the guards (``vae.training.guards``)
        self.latent_stats = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict(
                    {
                        layer.name: LatentStatistics(latent_dim=layer.units, positions=layer.positions)
                        for layer in model.layers
                    }
                )
                for stage in ("val", "test")
            }
        )
        own = {stage: model.split_metrics() for stage in ("val", "test")}  # the model's own, over a whole split
        self.split_metrics = torch.nn.ModuleDict({stage: m for stage, m in own.items() if m is not None})
        # Val/test means weighted by batch size and reduced over processes by torchmetrics (sums of values and of
        # weights): Lightning's own mean reduction averages the per-process image counts as integers.
        self.epoch_means = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict({name: MeanMetric() for name in self.objective.term_names()})
                for stage in ("val", "test")
            }
        )

    @property
    def hparams_initial(self) -> AttributeDict:
        """What Lightning logs to every logger (the W&B run config, beside the command's own sections): the model,
        objective and optimizer as built (``module``: specs with every default filled in), and the KL estimator in use
        ("auto" resolved for the prior). The checkpoint keeps the arguments as given."""
        return AttributeDict({"module": dict(super().hparams_initial), "kl_estimator": self.model.kl_estimator})

    def configure_model(self) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.compile_networks:
            for network in self.model.networks():
                network.compile()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written by an earlier version, in today's layout (``vae.training.migration``)."""
        from vae.training.migration import upgrade_checkpoint

        upgrade_checkpoint(checkpoint, self)

    def _common_step(self, batch: Batch, stage: Stage) -> Tensor:
        x, labels = batch  # the labels are the context of a conditional model; the others ignore them
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x, samples=self.objective.samples, context=labels, step=self.global_step)
        result = self.objective(
            out, step=self.global_step, training=stage == "train", dataset_size=self.dataset_size(stage)
        )
        metrics = dict(result.terms)
        loss = result.loss
        if stage == "train":
            self.step_terms = {name: metrics[name].detach() for name in ("loss", "recon", "kl")}  # for the guards
            if not self.writes_train_metrics():
                return loss
            metrics |= result.weights  # this step's values, averaged over the processes
            options = {"on_step": True, "on_epoch": False, "sync_dist": True, "batch_size": x.shape[0]}
        else:  # the split's means: torchmetrics accumulates, Lightning computes and resets them at epoch end
            for name, value in metrics.items():
                self.epoch_means[stage][name].update(value.detach(), weight=x.shape[0])
            metrics = dict(self.epoch_means[stage].items())
            options = {"on_step": False, "on_epoch": True}
            for name, layer in out.latents.items():
                self.latent_stats[stage][name].update(layer.posterior_mean, layer.kl_per_unit)
            if stage in self.split_metrics:
                self.split_metrics[stage].update(out)
        elbo = metrics.pop("elbo")
        self.log_dict({f"{stage}/{name}": value for name, value in metrics.items()}, **options)
        self.log(f"{stage}/elbo", elbo, prog_bar=True, **options)
        return loss

    def dataset_size(self, stage: Stage) -> int | None:
        """The number of examples in the split a stage runs over (for the KL split), if a trainer serves it."""
        trainer = self._trainer
        if trainer is None:
            return None
        try:
            loaders = {"train": lambda: trainer.train_dataloader, "val": lambda: trainer.val_dataloaders}
            loaders["test"] = lambda: trainer.test_dataloaders
            return dataset_size(loaders[stage]())
        except (AttributeError, RuntimeError):
            return None

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
        if stage in self.split_metrics:  # the model's own, reduced over the processes by torchmetrics
            own = self.split_metrics[stage]
            self.log_dict({f"{stage}/{name}": float(v) for name, v in own.compute().items()}, sync_dist=True)
            own.reset()
        summaries = {}
        for name, metric in self.latent_stats[stage].items():
            summaries[name] = metric.compute()
            metric.reset()
        if not summaries:
            return
        metrics = {f"{stage}/active_units": float(sum(summary.active_units for summary in summaries.values()))}
        if len(summaries) > 1:
            metrics |= {f"{stage}/active_units/{name}": float(s.active_units) for name, s in summaries.items()}
        elif self.model.capabilities.kl_per_dimension:
            (summary,) = summaries.values()
            if summary.kl_per_dim is not None:
                metrics |= {f"{stage}/kl_dim/{d:02d}": kl for d, kl in enumerate(summary.kl_per_dim.tolist())}
        self.log_dict(metrics, sync_dist=True)  # already reduced over the processes: the same on each

    def on_validation_epoch_end(self) -> None:
        self._log_latent_stats("val")

    def on_test_epoch_end(self) -> None:
        self._log_latent_stats("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The optimizer over every parameter; parameters with settings of their own (FactorVAE's discriminator)
        are a parameter group of it with those settings."""
        groups = self.objective.penalty.optimizer_groups() if self.objective.penalty is not None else []
        if not groups:
            return self.optimizer(self.parameters())
        own = {id(p) for group in groups for p in group["params"]}
        rest = [p for p in self.parameters() if id(p) not in own]
        return self.optimizer([{"params": rest}, *groups])
