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
import sys
from pathlib import Path
from typing import NoReturn

from jsonargparse import lazy_instance
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from vae.callbacks import ImageGrids, run_dir
from vae.data import EmbeddedMNIST, ImageDataModule
from vae.errors import UserError, exit_with_error
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
    "checkpoint.save_last": True,
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

    def instantiate_trainer(self, **kwargs) -> Trainer:
        # Missing dataset files are the user's to fix: say so before the Trainer and its logger exist.
        if isinstance(self.datamodule, ImageDataModule):
            self.datamodule.check_files()
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(fit_report(self.trainer), flush=True)


def fit_report(trainer: Trainer) -> str:
    """Where the run's results are (best and last checkpoints, images, how to sync an offline W&B run) and
    which KL estimator produced the logged KL."""
    lines = []
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
        lines.append(
            f"best checkpoint ({checkpoint.monitor} = {float(checkpoint.best_model_score):.2f}): "
            f"{checkpoint.best_model_path}"
        )
        if checkpoint.last_model_path:
            lines.append(f"last checkpoint: {checkpoint.last_model_path}")
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


def cli(args: list[str] | None = None, *, run: bool = True) -> VAECLI:
    """Build the CLI and run its subcommand; ``args`` defaults to the command line. With ``run=False`` the
    arguments take no subcommand and the caller runs the built trainer, model and data module."""
    if "WANDB_MODE" not in os.environ and not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
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
