"""The ``vae`` command: Lightning's CLI (fit, validate, test, predict) over the VAE and its data, and the
KL playground.

vae fit --config configs/quickstart.yaml --model.latent_dim 32
vae fit --help
vae fit --config configs/quickstart.yaml --print_config
vae evaluate runs/vae/<id>/checkpoints/last.ckpt --images
vae compare --config configs/quickstart.yaml --study configs/studies/weightings.yaml
vae kl-demo --out runs/kl_demo
vae benchmark
"""

from __future__ import annotations

import importlib
import logging
import netrc
import os
import re
import socket
import sys
import warnings
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

from jsonargparse import lazy_instance
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from vae.callbacks import ImageGrids, last_checkpoint_path, run_dir
from vae.checkpoints import (
    AtomicCheckpointIO,
    LastCheckpoint,
    Resume,
    check_compatible,
    find_checkpoint,
    read_checkpoint,
)
from vae.config import check_trusted
from vae.data import EmbeddedMNIST, ImageDataModule
from vae.errors import ConfigError, UserError, exit_with_error
from vae.module import VAEModule

TOOLS = {
    "kl-demo": "vae.playground",
    "evaluate": "vae.evaluate",
    "compare": "vae.compare",
    "benchmark": "vae.benchmark",
}

CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/elbo",
    "checkpoint.mode": "max",
    "checkpoint.save_last": False,  # last.ckpt is LastCheckpoint's: written every epoch
    "checkpoint.filename": "best-epoch{epoch:03d}",
    "checkpoint.auto_insert_metric_name": False,
}


class RunConfig(SaveConfigCallback):
    """Saves the full config as ``<run>/config.yaml`` (never overwriting another run's) and into the
    W&B run's config."""

    def __init__(self, parser: LightningArgumentParser, config, **kwargs) -> None:
        super().__init__(parser, config, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        path = run_dir(trainer) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)
        for logger in trainer.loggers:
            logger.log_hyperparams(self.config.as_dict())


class Parser(LightningArgumentParser):
    """Reports bad input as one line (no usage dump), exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: a mistyped --model.lat must not silently set --model.latent_dim.
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        exit_with_error(one_line(message))


def one_line(message: str) -> str:
    """Fold a parser message into one line; of a union's errors keep only the informative ones."""
    text = " ".join(message.split())
    union = re.search(r'Parser key "([^"]+)":.*?Does not validate .*? Errors: - (.*?) Given value type:', text)
    if union is None:
        return text
    key, errors = union.groups()
    useful = [e for e in errors.split(" - ") if "NoneType" not in e]
    return f"{key}: " + "; ".join(useful)


def user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError that caused ``error``, if any (jsonargparse wraps errors raised in constructors)."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
    return None


class VAECLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.image_shape", "model.image_shape", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({**CHECKPOINT_DEFAULTS, "data": lazy_instance(EmbeddedMNIST)})
        parser.add_lightning_class_args(ImageGrids, "images")

    def _parse_ckpt_path(self) -> None:
        """Resolve and vet ``ckpt_path`` as soon as the arguments are parsed. Unlike LightningCLI, do not merge
        the checkpoint's hyperparameters into the config: the config given is the one used, and a checkpoint
        that does not fit it is an error, not a silent override of what the command line says."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is None or not config.get("ckpt_path"):
            return
        if subcommand == "fit":
            self.resume = resume_run(config)
        elif config.ckpt_path not in ("best", "last"):
            read_checkpoint(config.ckpt_path)  # refused if unsafe, one line if damaged

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        for where, path in class_paths(config.as_dict()):
            check_trusted(path, where)
        logger = config.trainer.logger
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
        resume = getattr(self, "resume", None)
        if resume is not None:  # refuse an unsafe, damaged or foreign checkpoint before anything is written
            check_compatible(read_checkpoint(resume.checkpoint), self.model, resume.checkpoint)
        trainer_config = self._get(self.config_init, "trainer", default={})
        if not trainer_config.get("plugins"):  # checkpoints written whole or not at all
            kwargs["plugins"] = [AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(LastCheckpoint())  # the very last: its checkpoint holds every other's state
        return trainer

    def before_fit(self) -> None:
        resume = getattr(self, "resume", None)
        if resume is not None and self.trainer.is_global_zero:
            print(f"resuming {resume.checkpoint} (W&B run {resume.run_id})", flush=True)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(fit_report(self.trainer), flush=True)


def class_paths(config, where: str = "") -> list[tuple[str, str]]:
    """Every (key, class_path) in a parsed config."""
    found = []
    if isinstance(config, dict):
        if isinstance(config.get("class_path"), str):
            found.append((where or "config", config["class_path"]))
        for key, value in config.items():
            found += class_paths(value, f"{where}.{key}" if where else key)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += class_paths(value, f"{where}[{i}]")
    return found


def check_writable(key: str, folder: str | os.PathLike | None) -> None:
    """A ConfigError unless ``folder`` exists as a writable folder or can be made (nothing is made here)."""
    if folder is None or "://" in str(folder):
        return
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: cannot make {path}, since {existing} is a file: choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {existing} is not writable: choose another folder")


def resume_run(config) -> Resume:
    """Resolve ``ckpt_path`` ("last" or a path) to a checkpoint, and continue its W&B run under the same id."""
    logger = config.trainer.logger
    wandb = logger if getattr(logger, "class_path", "").endswith("WandbLogger") else None
    if wandb is not None:
        init = wandb.init_args
        runs = Path(init.save_dir or config.trainer.default_root_dir or ".") / (init.project or "lightning_logs")
    else:
        runs = Path(config.trainer.default_root_dir or ".")
    resume = find_checkpoint(config.ckpt_path, runs=runs)  # read and vetted once the model is built
    config.ckpt_path = str(resume.checkpoint)
    if wandb is not None and not wandb.init_args.get("id"):
        wandb.init_args.id = resume.run_id
        wandb.init_args.resume = "allow"
    return resume


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
    vae = getattr(trainer.lightning_module, "vae", None)
    if vae is not None:
        how = (
            "closed form" if vae.kl_estimator == "analytic" else f"Monte Carlo, {vae.regularizer.num_samples} sample(s)"
        )
        lines.append(f"KL estimator: {vae.kl_estimator} ({how})")
    images = run_dir(trainer) / "images"
    if images.is_dir():
        lines.append(f"image grids: {images}")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if run.offline:
                lines.append(f"W&B run saved offline; upload it with: wandb sync {Path(run.dir).parent}")
            else:
                lines.append(f"W&B run: {run.url}")
    return "\n".join(lines)


def wandb_logged_in() -> bool:
    """Whether W&B has credentials here (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_server() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def choose_wandb_mode() -> None:
    """Offline W&B logging unless logged in and the server answers (an explicit WANDB_MODE wins): training
    never waits on, or fails for, the network; the fit report says how to upload an offline run."""
    if "WANDB_MODE" in os.environ:
        return
    if not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
        return
    host, port = wandb_server()
    if not reachable(host, port):
        os.environ["WANDB_MODE"] = "offline"
        print(f"W&B server {host}:{port} unreachable: logging offline (upload later with wandb sync)", file=sys.stderr)


def cli(args: list[str] | None = None, *, run: bool = True) -> VAECLI:
    """Build the CLI and run its subcommand; ``args`` defaults to the command line. With ``run=False`` the
    arguments take no subcommand and the caller runs the built trainer, model and data module."""
    choose_wandb_mode()
    # Dumping the defaults' tuples (ConvNet channels) as YAML lists is expected; the notice is noise.
    warnings.filterwarnings("ignore", message="(?s).*does not round-trip")
    # The seed is in the saved config; "Seed set to 0" would only stand before any error message.
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
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
            "logger": lazy_instance(WandbLogger, project="vae", save_dir="runs"),
        },
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> None:
    """The console command; ``argv`` defaults to the command line."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in TOOLS:  # the commands beside Lightning's, imported only when used
        importlib.import_module(TOOLS[args[0]]).main(args[1:])
        return
    try:
        cli(argv)
    except (UserError, ValueError, TypeError) as error:
        cause = user_error_in(error)
        if cause is None:
            raise
        exit_with_error(str(cause))


if __name__ == "__main__":
    main()
