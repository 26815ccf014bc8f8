"""The LightningModule: one ``_common_step`` for train, val and test; it logs whatever terms the objective returns.

Logged, in nats per example (summed over pixels and latent units, averaged over the batch), from the objective
(``vae.objectives.elbo``): ``{stage}/recon``, ``{stage}/kl`` (raw, unweighted), ``{stage}/elbo`` (unweighted),
``{stage}/loss``, ``{stage}/kl/<layer>`` for each layer of a hierarchy, ``{stage}/iwae`` under the IWAE objective;
on training steps the weights beside them: ``train/kl_weight``, what a weighting adds (capacity, free_bits_active,
geco_multiplier, geco_constraint, capacity/<layer>), ``train/kl_balance/<layer>`` while KL balancing is on, and what
the model used at the step (``train/temperature`` of a relaxed discrete latent, ``vae.layers.discrete``).

Every batch's labels reach the model as its ``context`` (a conditional model's y, ``vae.models.conditional``; the others
ignore it), and the trainer's global step as its ``step`` (schedules inside a model), so a new model needs no edit
here.

From the objective at validation and test, where the top layer's prior is a diagonal Gaussian:
``{val,test}/kl_split/{mi,tc,dwkl}`` (the KL split, ``vae.core.split``, by ``kl_split``); from a penalty
(``vae.objectives.penalties``), its terms at every stage and its weights at training steps.

From the latent layers, at validation and test: ``{val,test}/active_units`` (all layers), and for the single-layer
VAE ``{val,test}/kl_dim/NN`` (the KL of each latent dimension; absent for priors that do not factorise: a mixture,
the VampPrior), for a hierarchy ``{val,test}/active_units/<layer>`` (per latent channel for feature maps).

From the gradient guard: ``train/grad_norm`` and ``train/grad_skip_threshold`` when clipping or skipping is on,
``train/skipped_steps`` when steps can be skipped.

The KL estimator in use ("analytic" or "mc": "auto" resolved for the prior) is logged as the hyperparameter
``kl_estimator`` (top level of the W&B run config; the config's ``model.kl_estimator`` keeps what was asked).

Train metrics are logged on the steps Lightning writes to the loggers (every ``trainer.log_every_n_steps``)
and on each epoch's last batch; val and test metrics once per epoch, over the whole split.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar

import pytorch_lightning as pl
import torch
from jsonargparse import lazy_instance
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import AttributeDict, rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from vae.core.errors import ConfigError, NonFiniteError
from vae.core.kl import KLEstimator
from vae.core.spec import to_spec
from vae.core.trust import build, build_optimizer
from vae.data.base import Batch, dataset_size
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets.common import Architecture
from vae.layers.nets.conv import ConvNet
from vae.layers.priors import Prior, StandardNormal
from vae.metrics.likelihood import LatentStatistics
from vae.models.base import RELAXED_IWAE, LatentVariableModel
from vae.models.vae import build_model
from vae.objectives.elbo import KLSplitSetting, objective_for
from vae.objectives.penalties import Penalty
from vae.objectives.weighting import Constant, Weighting
from vae.training.guards import GradientGuard, SkipSetting
from vae.training.runs import last_checkpoint_path

Stage = Literal["train", "val", "test"]
NonFinitePolicy = Literal["stop", "skip"]
T = TypeVar("T")


def concrete(value: T) -> T:
    """A jsonargparse ``lazy_instance`` default made into a plain instance of its class (others pass)."""
    if hasattr(value, "lazy_get_init_args"):
        return type(value).__bases__[-1](**vars(value.lazy_get_init_args()))
    return value


class VAEModule(pl.LightningModule):
    """Trains a latent-variable model under an objective; logs the unweighted terms.

    image_shape: set from the data module by the ``vae`` command; give it when building by hand.
    network: the architecture: an encoder/decoder pair for the single-layer VAE (``ConvNet``, ``MLPNet``,
        ``LinearNet``), or a hierarchy (``vae.models.hierarchical.TopDown``).
    latent_dim, likelihood, prior, kl_estimator, kl_samples: see ``vae.models.vae.VAE`` (for a hierarchy the prior is
        the top layer's, and the layers' sizes are the architecture's).
    weighting: how the KL enters the loss at each step (``vae.objectives.weighting``): a constant β by default
        (``--model.weighting.beta 4`` for the β-VAE), warm-up, cyclical, capacity, free bits, GECO.
    importance_samples: K > 1 trains on the IWAE bound with K importance samples (``vae.objectives.elbo.IWAE``, logged
        as ``{stage}/iwae`` beside the ELBO's terms from the same samples); 1 is the (weighted) ELBO.
    kl_balancing_steps: NVAE's KL balancing across the layers of a hierarchy for the first this many steps
        (``vae.objectives.elbo.balance``); 0 is off.
    penalty: a disentangling penalty on the top latent layer (``vae.objectives.penalties``): ``BetaTCVAE``,
    ``FactorVAE``,
        ``DIPVAE``; None is none. It adds to the weighting's loss, so it composes with every weighting.
    kl_split: the estimator of the top layer's KL split into mutual information, total correlation and
        dimension-wise KL (``vae.core.split``), logged at validation and test as ``{stage}/kl_split/{mi,tc,dwkl}``
        and weighed by ``BetaTCVAE``: "mss" (minibatch-stratified sampling), "mws" (minibatch-weighted), or "off".
    grad_clip: clip the gradients' total norm to this value; None is off.
    grad_skip: skip updates whose gradient norm exceeds this value (VDVAE), or "adaptive" (a threshold that
        follows the norms and cannot stall training, ``vae.training.guards``); None is off.
    channels_last: keep convolution weights and inputs in channels-last memory layout (faster convolutions
        on GPUs with tensor cores, with bf16 precision).
    compile: compile the networks with ``torch.compile`` when training starts (the first steps pay the compile
        time; the state dict keys do not change, so checkpoints stay interchangeable).
    nonfinite: what a non-finite training loss, KL, reconstruction or gradient does: "stop" (the default)
        ends the run with a message naming the step and the term, before the optimizer step, so the weights
        and the last checkpoint stay good; "skip" skips that batch's update, warns, and counts the skipped
        steps (``train/skipped_steps``).
    optimizer: called with the parameters; Adam with lr 1e-3 by default.
    """

    # The arguments that define what the weights mean: a resumed run must keep them (``vae.training.checkpoints``).
    ARCHITECTURE = ("image_shape", "latent_dim", "network", "likelihood", "prior")

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 16,
        network: Architecture = lazy_instance(ConvNet),
        likelihood: Likelihood = lazy_instance(Bernoulli),
        prior: Prior = lazy_instance(StandardNormal),
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
        weighting: Weighting = lazy_instance(Constant, beta=1.0),
        importance_samples: int = 1,
        kl_balancing_steps: int = 0,
        penalty: Penalty | None = None,
        kl_split: KLSplitSetting = "mss",
        grad_clip: float | None = None,
        grad_skip: SkipSetting = None,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite: NonFinitePolicy = "stop",
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__()
        # Plain objects (LightningCLI's lazy defaults made concrete; specs from a checkpoint built).
        network = build(concrete(network), Architecture, "model.network")
        likelihood = build(concrete(likelihood), Likelihood, "model.likelihood")
        prior = build(concrete(prior), Prior, "model.prior")
        weighting = build(concrete(weighting), Weighting, "model.weighting")
        penalty = None if penalty is None else build(concrete(penalty), Penalty, "model.penalty")
        optimizer = build_optimizer(optimizer)
        if nonfinite not in ("stop", "skip"):
            raise ConfigError(f"model.nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        self.guard = GradientGuard(clip=grad_clip, skip=grad_skip)
        # Recorded as plain data (specs), so that a checkpoint loads with weights_only=True (vae.core.trust).
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
                "kl_balancing_steps": kl_balancing_steps,
                "penalty": None if penalty is None else to_spec(penalty),
                "kl_split": kl_split,
                "grad_clip": grad_clip,
                "grad_skip": grad_skip,
                "channels_last": channels_last,
                "compile": compile,
                "nonfinite": nonfinite,
                "optimizer": to_spec(optimizer),
            }
        )
        self.channels_last = channels_last
        self.compile_networks = compile
        self.nonfinite = nonfinite
        self.step_terms: dict[str, Tensor] = {}
        self.optimizer = optimizer
        parts = {
            "image_shape": tuple(image_shape),
            "latent_dim": latent_dim,
            "likelihood": likelihood,
            "prior": prior,
            "kl_estimator": kl_estimator,
            "kl_samples": kl_samples,
        }
        try:
            self.vae: LatentVariableModel = build_model(network, **parts)
        except RuntimeError as error:  # torch's allocator (and torch.OutOfMemoryError): sizes that cannot fit
            if "allocate" not in str(error):
                raise
            with torch.device("meta"):  # the same model without memory, to count it
                count = sum(p.numel() for p in build_model(network, **parts).parameters())
            raise ConfigError(
                f"the model would have {count:,} parameters ({count * 4 / 2**30:,.1f} GiB in float32), more than "
                f"fits in memory here: make model.latent_dim ({latent_dim}) or the network smaller"
            ) from error
        top = self.vae.layers[0]
        if penalty is not None and penalty.build(units=1).needs_split and not top.kl_splits:
            raise ConfigError(
                f"{type(penalty).__name__} weighs the KL split of the top latent layer, which needs one diagonal "
                "Gaussian prior on it (StandardNormal or LearnedGaussian): not a mixture, the VampPrior, or a prior "
                "that depends on a label"
            )
        if importance_samples > 1 and self.vae.relaxed:
            raise ConfigError(RELAXED_IWAE)
        self.objective = objective_for(
            weighting=weighting,
            importance_samples=importance_samples,
            kl_balancing_steps=kl_balancing_steps,
            penalty=None if penalty is None else penalty.build(units=top.units * top.positions),
            kl_split=kl_split,
        )
        self.latent_stats = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict(
                    {
                        layer.name: LatentStatistics(latent_dim=layer.units, positions=layer.positions)
                        for layer in self.vae.layers
                    }
                )
                for stage in ("val", "test")
            }
        )
        # Val/test means weighted by batch size and reduced over processes by torchmetrics (sums of values and
        # of weights): Lightning's own mean reduction averages the per-process image counts as integers.
        names = self.objective.term_names(self.vae.layer_names, splittable=top.kl_splits)
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
            for network in self.vae.networks():
                network.compile()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written by earlier versions load: their keys are renamed to this layout (``upgrade``), and
        the optimizer's state, kept by parameter position, follows the parameters to their new positions and
        shapes (a parameter added since starts without state, as at the first step)."""
        saved = list(checkpoint["state_dict"])
        checkpoint["state_dict"] = self.upgrade(checkpoint["state_dict"])
        names = [name for name, _ in self.named_parameters()]
        renamed = list(self.upgrade(dict.fromkeys(saved)))[: len(saved)]  # the saved keys under today's names
        before = [key for key in renamed if key in names]  # the parameters in the order the checkpoint has them
        if before != names and set(before) <= set(names):
            position = {name: i for i, name in enumerate(before)}  # a parameter added since has no state yet
            for state in checkpoint.get("optimizer_states", []):
                old = state["state"]
                state["state"] = {
                    new: old[position[name]]
                    for new, name in enumerate(names)
                    if name in position and position[name] in old
                }
                if len(state["param_groups"]) == 1:
                    state["param_groups"][0]["params"] = list(range(len(names)))
        for state in checkpoint.get("optimizer_states", []):  # each moment changes as its parameter did
            entries = {names[i]: entry for i, entry in state["state"].items() if i < len(names)}
            for key in {key for entry in entries.values() for key in entry}:
                moments = {n: e[key] for n, e in entries.items() if isinstance(e.get(key), Tensor) and e[key].ndim}
                for name, value in self.upgrade(moments).items():
                    if name in moments:
                        entries[name][key] = value

    def upgrade(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of an earlier layout in this one: the model's renamed keys (``upgrade_state_dict``), the
        weighting's state now inside the objective, and the gradient guard's state (added later) at its start."""
        state = self.vae.upgrade_state_dict(state, prefix="vae.")
        state = {("objective." + k if k.startswith("weighting.") else k): v for k, v in state.items()}
        for key, value in self.guard.state_dict(prefix="guard.").items():
            state.setdefault(key, value)
        return state

    def _common_step(self, batch: Batch, stage: Stage) -> Tensor:
        x, labels = batch  # the labels are the context of a conditional model; the others ignore them
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.vae(x, samples=self.objective.samples, context=labels, step=self.global_step)
        result = self.objective(
            out, step=self.global_step, training=stage == "train", dataset_size=self.dataset_size(stage)
        )
        metrics = dict(result.terms)
        # Train metrics on the steps Lightning writes to the loggers, val/test once per epoch over the split
        # (all reduced over the processes under DDP); the ELBO also in the progress bar.
        per_step = stage == "train"
        loss = result.loss
        if per_step:  # checked with the gradients, before the optimizer step
            self.step_terms = {name: metrics[name].detach() for name in ("loss", "recon", "kl")}
        if per_step and not self.writes_train_metrics():
            return loss
        if per_step:  # this step's values, averaged over the processes
            metrics |= result.weights
            if self.nonfinite == "skip" or self.guard.skip is not None:
                metrics["skipped_steps"] = float(self.guard.skipped)
            options = {"on_step": True, "on_epoch": False, "sync_dist": True, "batch_size": x.shape[0]}
        else:  # the split's means: torchmetrics accumulates, Lightning computes and resets them at epoch end
            for name, value in metrics.items():
                self.epoch_means[stage][name].update(value.detach(), weight=x.shape[0])
            metrics = dict(self.epoch_means[stage].items())
            options = {"on_step": False, "on_epoch": True}
            for name, layer in out.latents.items():
                self.latent_stats[stage][name].update(layer.posterior_mean, layer.kl_per_unit)
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

    def on_fit_start(self) -> None:
        # The parameters by name, listed once: walking the modules each step cost 0.6 ms on the CPU.
        self.named_trainables = tuple((name, p) for name, p in self.named_parameters() if p.requires_grad)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The guards, once per optimizer step with one host sync: this step's loss terms and the gradients'
        total norm.

        A non-finite one stops the run (a NonFiniteError naming the step and the terms), or under
        ``nonfinite="skip"`` drops every gradient, so the optimizer leaves all weights and its own state alone.
        A finite norm goes to the gradient guard (``grad_clip``, ``grad_skip``), which clips the gradients or
        skips the update. Under DDP the gradients are already averaged, so every process sees the same norm and
        takes the same decision."""
        terms, self.step_terms = self.step_terms, {}
        values = [term.float().reshape(()) for term in terms.values()]
        grads = {name: p.grad for name, p in self.named_trainables if p.grad is not None}
        check_norm = self.trainer.precision != "16-mixed"  # 16-mixed: the gradient scaler skips inf steps
        norm = None
        if grads and (check_norm or self.guard.active):
            norm = torch.nn.utils.get_total_norm(list(grads.values()))
            values.append(norm.reshape(()))
        if not values:
            return
        numbers = torch.stack(values).tolist()  # the one host sync
        finite_terms = all(math.isfinite(v) for v in numbers[: len(terms)])
        finite_norm = norm is None or math.isfinite(numbers[-1])
        if finite_terms and (finite_norm or not check_norm):
            if norm is not None and finite_norm and self.guard.active:
                self.apply_guard(numbers[-1], norm)
            return
        bad_terms = [f"train/{name} = {value}" for name, value in zip(terms, numbers) if not math.isfinite(value)]
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
        self.guard.skipped += 1
        rank_zero_warn(f"step {step}: non-finite {what}; skipped this update (model.nonfinite: skip)")
        self.drop_gradients()

    def apply_guard(self, value: float, norm: Tensor) -> None:
        """Clip or skip this update as the gradient guard decides, and log the norm and the threshold."""
        decision = self.guard.decide(value)
        if decision.skip:
            self.drop_gradients()
        elif decision.clip_to is not None:
            torch.nn.utils.clip_grads_with_norm_([p for _, p in self.named_trainables], decision.clip_to, norm)
        if self.writes_train_metrics():
            logged = {"train/grad_norm": value}
            if decision.threshold is not None:
                logged["train/grad_skip_threshold"] = decision.threshold
            self.log_dict(logged, on_step=True, on_epoch=False)

    def drop_gradients(self) -> None:
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
        summaries = {}
        for name, metric in self.latent_stats[stage].items():
            summaries[name] = metric.compute()
            metric.reset()
        metrics = {f"{stage}/active_units": float(sum(summary.active_units for summary in summaries.values()))}
        if len(summaries) > 1:
            metrics |= {f"{stage}/active_units/{name}": float(s.active_units) for name, s in summaries.items()}
        else:
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
