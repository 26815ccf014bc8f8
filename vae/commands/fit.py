"""The ``vae`` command: Lightning's CLI (fit, validate, test, predict) over the VAE and its data, and the
KL playground.

vae fit --config configs/quickstart.yaml --model.model.latent_dim 32
vae fit --help
vae fit --config configs/quickstart.yaml --print_config
vae evaluate runs/vae/<id>/checkpoints/last.ckpt --images
vae compare --config configs/quickstart.yaml --study configs/studies/weightings.yaml
vae kl-demo --out runs/kl_demo
vae benchmark
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import lazy_instance
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from vae.commands.parser import SECTIONS, Parser
from vae.core.config_file import read_yaml
from vae.core.errors import (
    ConfigError,
    DataError,
    exit_with_error,
    user_error_in,
)
from vae.core.trust import check_classes, resolve_class, trust_imports
from vae.data.base import ImageDataModule
from vae.data.embedded import EmbeddedMNIST
from vae.models import VAE
from vae.objectives import ELBO
from vae.training.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from vae.training.console import prepare_loggers, quiet_console, quiet_resume
from vae.training.guards import Guard
from vae.training.hardware import precision_advice
from vae.training.images import ImageGrids
from vae.training.metrics_file import METRICS_FILE, MetricsFile, has_curves, plot_curves, read_metrics
from vae.training.module import VAEModule
from vae.training.progress import progress_bar_for
from vae.training.resume import (
    ConfigOverCheckpoint,
    LastCheckpoint,
    Resume,
    changes,
    describe,
    find_checkpoint,
    flatten,
    resume_changes,
)
from vae.training.runs import (
    check_writable,
    config_path,
    describe_write_failure,
    is_rank_zero,
    last_checkpoint_path,
    lock_run,
    run_dir,
    write_failure,
)
from vae.training.signals import StopOnSignal
from vae.training.tracking import check_wandb_mode, choose_wandb_mode, finish_wandb, wandb_report

QUICKSTART_DEFAULTS = {
    "model.model": {
        "class_path": "vae.models.VAE",
        "init_args": {
            "latent_dim": 16,
            "network": {
                "class_path": "vae.layers.nets.ConvNet",
                "init_args": {"channels": [32, 64], "hidden_dim": 256},
            },
            "likelihood": {"class_path": "vae.layers.likelihoods.Bernoulli"},
        },
    },
    "model.objective": {
        "class_path": "vae.objectives.ELBO",
        "init_args": {"weighting": {"class_path": "vae.objectives.Constant", "init_args": {"beta": 1.0}}},
    },
    "data": lazy_instance(EmbeddedMNIST, binarize="dynamic"),
}
"""Without a config, the quick start (configs/quickstart.yaml): binarized digits for the Bernoulli likelihood."""
QUICKSTART_CLASSES = {"data": EmbeddedMNIST, "model.model": VAE, "model.objective": ELBO}

CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/elbo",
    "checkpoint.mode": "max",
    "checkpoint.save_last": False,  # last.ckpt is LastCheckpoint's: written every epoch
    "checkpoint.filename": "best-epoch{epoch:03d}",
    "checkpoint.auto_insert_metric_name": False,
}


class RunConfig(SaveConfigCallback):
    """Saves the full config of every part of a run into its folder (``config.yaml``, then
    ``config-resume-N.yaml`` or ``config-test-N.yaml``: never overwriting, see ``vae.training.runs``) and into the W&B
    run's config; holds the run folder's lock from then on."""

    PARTS = {"fit": "resume", "validate": "validate", "test": "test"}

    def __init__(self, parser: LightningArgumentParser, config, **kwargs) -> None:
        super().__init__(parser, config, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = run_dir(trainer)
        lock_run(folder)
        path = config_path(folder, self.PARTS.get(stage, stage))
        self.parser.save(self.config, str(path), skip_none=False, overwrite=False, multifile=self.multifile)
        for logger in trainer.loggers:
            logger.log_hyperparams(self.config.as_dict())


class VAECLI(LightningCLI):
    attached: Resume | None = None  # the checkpoint (and run) that fit resumes, or test / validate evaluate
    changed: dict[str, tuple] = {}  # settings a resumed run changes (key → (before, after))

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test (Lightning's predict is not offered: a VAE has no one prediction)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # What the model is built for comes from the data: its image shape, and the size of its labels' context.
        parser.link_arguments("data.image_shape", "model.model.init_args.image_shape", apply_on="instantiate")
        parser.link_arguments("data.context_size", "model.model.init_args.context_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(Guard, "guard")
        parser.set_defaults({**CHECKPOINT_DEFAULTS, **QUICKSTART_DEFAULTS})
        parser.add_lightning_class_args(ImageGrids, "images")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse as LightningCLI does, with one difference: where the config chooses another class than the quick
        start's default for the data, the model or the objective, that class is the default, so that the quick
        start's settings (its binarization, its network) never carry over into a class that happens to take the
        same argument (jsonargparse keeps the init_args a new class accepts). A first, silent pass finds the classes
        chosen (``--print_config`` then prints what will run)."""
        listed = sys.argv[1:] if args is None else args
        if isinstance(listed, list | tuple):
            probe = [arg for arg in listed if not str(arg).startswith("--print_config")]
            config = parser.parse_args(probe)
            subcommand = config.get("subcommand")
            chosen = {}
            for key, default in QUICKSTART_CLASSES.items():
                value = config[subcommand].get(key) if subcommand else None
                path = getattr(value, "class_path", None) if value is not None else None
                if isinstance(path, str) and resolve_class(path, None, key) is not default:
                    chosen[key] = {"class_path": path}
            if chosen:
                parser._subcommands_action._name_parser_map[subcommand].set_defaults(chosen)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Resolve ``ckpt_path`` as soon as the arguments are parsed, and attach the command to that checkpoint's
        run (its folder and W&B run). Unlike LightningCLI, do not merge the checkpoint's hyperparameters into the
        config: the config given is the one used; what it cannot change is refused once the model is built."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is None:
            return
        if subcommand in ("test", "validate") and not config.get("ckpt_path"):
            raise ConfigError(
                f"vae {subcommand} needs --ckpt_path: a checkpoint of the run to {subcommand} (a path, or last / best: "
                "the newest run's)"
            )
        if config.get("ckpt_path"):
            self.attached = attach_run(config)
            quiet_resume()

    def instantiate_classes(self) -> None:
        """The data module, the model and the module; a model too large to allocate is a one-line error that says
        how large it would be (counted on the meta device, where nothing is allocated)."""
        try:
            super().instantiate_classes()
        except RuntimeError as error:  # torch's allocator (and torch.OutOfMemoryError): sizes that cannot fit
            if "allocate" not in str(error):
                raise
            config = self.config[self.subcommand] if self.subcommand else self.config
            with torch.device("meta"):
                model = self._parser(self.subcommand).instantiate_classes(config).model.model
            count = sum(p.numel() for p in model.parameters())
            raise ConfigError(
                f"the model would have {count:,} parameters ({count * 4 / 2**30:,.1f} GiB in float32), more than fits "
                "in memory here: make the model (its latent_dim, its network) smaller"
            ) from error

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_classes(config.as_dict(), SECTIONS)
        logger = config.trainer.logger
        if "WandbLogger" in str(getattr(logger, "class_path", "")):
            check_wandb_mode()
        check_trainer_settings(config.trainer)
        accelerator = str(config.trainer.get("accelerator") or "auto")
        on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
        advice = precision_advice(config.trainer.get("precision"), on_cpu)
        if advice is not None and is_rank_zero():
            print(f"warning: {advice}", file=sys.stderr, flush=True)
        for key, folder in [
            ("trainer.default_root_dir", config.trainer.default_root_dir),
            ("trainer.logger.init_args.save_dir", getattr(getattr(logger, "init_args", None), "save_dir", None)),
        ]:
            check_writable(key, folder)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        # Missing or damaged dataset files, and an output folder that cannot be made, are the user's to fix:
        # say so before the Trainer and its logger exist, so nothing is written.
        if isinstance(self.datamodule, ImageDataModule):
            self.datamodule.check_files()
            if not getattr(self.datamodule, "download", False):
                self.datamodule.setup(self.subcommand or "fit")  # reads the files now (setup runs once)
        if self.attached is not None:  # an unsafe, damaged or foreign checkpoint: refused before anything is written
            self.changed = resume_changes(
                read_checkpoint(self.attached.checkpoint), self.model, self.attached.checkpoint
            )
            if is_rank_zero():
                lock_run(self.attached.folder)  # refused if another process works in the run
        trainer_config = self._get(self.config_init, "trainer", default={})
        if not trainer_config.get("plugins"):  # checkpoints written whole or not at all
            kwargs["plugins"] = [AtomicCheckpointIO()]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError, ImportError) as error:  # Lightning's own checks
            if user_error_in(error) is not None:
                raise
            raise ConfigError(f"trainer: {' '.join(str(error).split())}") from error
        # ConfigOverCheckpoint: a resumed run takes the optimizer settings the config gives. StopOnSignal: a
        # scheduler's SIGTERM (or Ctrl-C) saves, says how to resume, exits non-zero. LastCheckpoint: the very last
        # callback, so its checkpoint holds every other's state.
        trainer.callbacks += [ConfigOverCheckpoint(), StopOnSignal(), LastCheckpoint()]
        # Every run's metrics also in <run>/metrics.csv (vae.training.metrics_file), readable and plotted without W&B.
        trainer.loggers = [*trainer.loggers, MetricsFile(lambda: run_dir(trainer))]
        return trainer

    def before_fit(self) -> None:
        if self.attached is None or not self.trainer.is_global_zero:
            return
        changed = {**self.changed, **settings_changes(self.attached.folder, self.config[self.subcommand].as_dict())}
        what = f"; changed: {describe(changed)}" if changed else ", with the settings it had"
        print(f"resuming {self.attached.checkpoint} (W&B run {self.attached.run_id}){what}", flush=True)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(fit_report(self.trainer), flush=True)
        finish_wandb(self.trainer)  # quietly, now: our report says how to sync it

    def after_test(self) -> None:
        """Where the W&B run that took the metrics is (vae test and vae validate), said once: W&B's footer is quiet."""
        if self.trainer.is_global_zero and (lines := wandb_report(self.trainer)):
            print("\n".join(lines), flush=True)
        finish_wandb(self.trainer)

    after_validate = after_test

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        """The Trainer, with one plain line per epoch instead of a redrawn bar where the output is not a terminal
        (vae.training.console), and its W&B loggers ready to start quietly."""
        bar = progress_bar_for(config, callbacks)
        trainer = super()._instantiate_trainer(config, [*callbacks, bar] if bar is not None else callbacks)
        prepare_loggers(trainer.loggers)
        return trainer


# Trainer settings that Lightning accepts and then divides by (or silently ignores): the least value each takes.
TRAINER_MINIMA = {
    "check_val_every_n_epoch": 1,
    "accumulate_grad_batches": 1,
    "log_every_n_steps": 0,
    "min_epochs": 0,
    "min_steps": 0,
    "gradient_clip_val": 0,
}


def check_trainer_settings(trainer) -> None:
    """A one-line ConfigError for a trainer setting out of its range (Lightning checks the others itself)."""
    for key, least in TRAINER_MINIMA.items():
        value = trainer.get(key)
        if isinstance(value, int | float) and value < least:
            raise ConfigError(f"trainer.{key} must be {least} or more, got {value}")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int | float) and interval <= 0:
        raise ConfigError(
            f"trainer.val_check_interval must be positive (a fraction of an epoch, or batches), got {interval}"
        )


def attach_run(config) -> Resume:
    """Resolve ``ckpt_path`` ("last", "best" or a path) to a checkpoint, and log to its W&B run (same id)."""
    logger = config.trainer.logger
    wandb = logger if getattr(logger, "class_path", "").endswith("WandbLogger") else None
    if wandb is not None:
        init = wandb.init_args
        runs = Path(init.save_dir or config.trainer.default_root_dir or ".") / (init.project or "lightning_logs")
    else:
        runs = Path(config.trainer.default_root_dir or ".")
    attached = find_checkpoint(config.ckpt_path, runs=runs)  # read and vetted once the model is built
    config.ckpt_path = str(attached.checkpoint)
    if wandb is not None and not wandb.init_args.get("id"):
        wandb.init_args.id = attached.run_id
        wandb.init_args.resume = "allow"
    return attached


def settings_changes(folder: Path, config: dict) -> dict[str, tuple]:
    """What the config changes in the trainer and data settings against the run's latest saved config (its
    newest ``config.yaml`` / ``config-resume-N.yaml``); nothing if the run folder has none."""
    saved = sorted(folder.glob("config-resume-*.yaml"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    latest = saved[-1] if saved else folder / "config.yaml"
    if not latest.is_file():
        return {}
    previous = read_yaml(latest)
    found = {}
    for section in ("trainer", "data"):
        found |= changes(flatten(previous.get(section), section), flatten(config.get(section), section))
    return {key: change for key, change in found.items() if key not in ("trainer.logger.id", "trainer.logger.resume")}


def fit_report(trainer: Trainer) -> str:
    """Where the run's results are (best and last checkpoints, images, how to sync an offline W&B run) and
    which KL estimator produced the logged KL."""
    lines = []
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
        lines.append(
            f"best checkpoint ({checkpoint.monitor} = {float(checkpoint.best_model_score):.2f}): "
            f"{checkpoint.best_model_path}"
        )
    last = last_checkpoint_path(trainer)
    if last.is_file():
        lines.append(f"last checkpoint (resume with --ckpt_path last): {last}")
    vae = getattr(trainer.lightning_module, "model", None)
    if vae is not None:
        kinds = {(layer.kl_estimator, layer.kl_description) for layer in vae.layers}
        if not vae.layers:  # KL terms of the model's own (a diffusion model's), or none
            lines.append(
                f"KL estimator: {vae.kl_estimator}" + (f" ({vae.kl_description})" if vae.kl_description else "")
            )
        elif len(kinds) == 1:
            ((estimator, description),) = kinds
            lines.append(f"KL estimator: {estimator} ({description})")
        else:  # a hierarchy whose top prior has no closed form; continuous and discrete layers under "mc"
            each = ", ".join(f"{layer.name} {layer.kl_estimator} ({layer.kl_description})" for layer in vae.layers)
            lines.append(f"KL estimators: {each}")
    images = run_dir(trainer) / "images"
    if images.is_dir():
        lines.append(f"image grids: {images}")
    metrics = run_dir(trainer) / METRICS_FILE
    if metrics.is_file():
        try:
            series = read_metrics(metrics)
            if not has_curves(series):  # a run of a few steps has no curve yet: its metrics are still there
                raise DataError(f"no curve yet in {metrics}")
            curves = plot_curves(series, metrics.with_name("curves.png"), title=str(metrics.parent))
            lines.append(f"metrics: {metrics}; training curves: {curves} (redraw with vae plot {metrics.parent})")
        except (DataError, OSError):  # no curve, or a damaged file or a full disk: the metrics are still named
            lines.append(f"metrics: {metrics}")
    return "\n".join([*lines, *wandb_report(trainer)])


def cli(args: list[str] | None = None, *, run: bool = True) -> VAECLI:
    """Build the CLI and run its subcommand; ``args`` defaults to the command line. With ``run=False`` the
    arguments take no subcommand and the caller runs the built trainer, model and data module."""
    quiet_console()
    choose_wandb_mode()
    trust_imports()
    return VAECLI(
        VAEModule,
        ImageDataModule,
        subclass_mode_data=True,
        parser_class=Parser,
        parser_kwargs={
            "description": "Train and evaluate variational autoencoders (LightningCLI). "
            "Also: vae evaluate (a checkpoint's log-likelihood and pictures), vae compare (a study of KL "
            "weightings), vae kl-demo (the KL playground) and vae benchmark (training and evaluation speed); each has "
            "--help."
        },
        auto_configure_optimizers=False,  # the optimizer is model.optimizer: one place, not two
        save_config_callback=RunConfig,
        seed_everything_default=0,
        trainer_defaults={
            "default_root_dir": "runs",
            "max_epochs": 30,
            "devices": 1,  # more only when asked: --trainer.devices 4 --trainer.strategy ddp
            "log_every_n_steps": 10,
            "logger": lazy_instance(WandbLogger, project="vae", save_dir="runs"),
        },
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> None:
    """``vae fit``, ``vae validate`` and ``vae test``: Lightning's subcommands, ``argv`` without ``vae``."""
    try:
        cli(argv)
    except torch.OutOfMemoryError as error:
        where = "GPU memory" if "CUDA" in str(error) else "memory"
        exit_with_error(
            f"out of {where}: {str(error).split('.')[0]}; lower data.batch_size (or the model's size) and resume "
            "with --ckpt_path last"
        )
    except MisconfigurationException as error:  # Lightning's word for a setting that cannot work
        exit_with_error(str(error))
    except BaseException as error:
        cause = user_error_in(error) if isinstance(error, Exception) else None
        written = write_failure(error) if isinstance(error, Exception) else None
        if cause is not None:
            exit_with_error(str(cause))
        if written is not None:  # a full or read-only disk: the user's to fix; the last checkpoint is intact
            exit_with_error(describe_write_failure(written))
        raise
