"""The ``vae`` command: Lightning's CLI (fit, validate, test, predict) over the VAE and its data.

vae fit --config configs/quickstart.yaml --model.latent_dim 32
vae fit --help
vae fit --config configs/quickstart.yaml --print_config
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

from jsonargparse import lazy_instance
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

from vae.callbacks import ImageGrids, run_dir
from vae.data import ImageDataModule
from vae.errors import UserError
from vae.module import VAEModule

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


class VAECLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.image_shape", "model.image_shape", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(ImageGrids, "images")

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(fit_report(self.trainer), flush=True)


def fit_report(trainer: Trainer) -> str:
    """Where the run's results are: best and last checkpoints, images, and how to sync an offline W&B run."""
    lines = []
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
        lines.append(
            f"best checkpoint ({checkpoint.monitor} = {float(checkpoint.best_model_score):.2f}): "
            f"{checkpoint.best_model_path}"
        )
        if checkpoint.last_model_path:
            lines.append(f"last checkpoint: {checkpoint.last_model_path}")
    images = run_dir(trainer) / "images"
    if images.is_dir():
        lines.append(f"image grids: {images}")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if run.settings._offline:
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


def cli(args: list[str] | None = None) -> VAECLI:
    """Build and run the CLI; ``args`` defaults to the command line."""
    if "WANDB_MODE" not in os.environ and not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
    return VAECLI(
        VAEModule,
        ImageDataModule,
        subclass_mode_data=True,
        save_config_callback=RunConfig,
        seed_everything_default=0,
        trainer_defaults={
            "default_root_dir": "runs",
            "logger": lazy_instance(WandbLogger, project="vae", save_dir="runs"),
        },
        args=args,
    )


def main() -> None:
    try:
        cli()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
