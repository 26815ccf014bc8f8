"""Callbacks: the pictures of ``vae.models.pictures`` during training, to PNG files and to W&B, rank zero only."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import save_image

from vae.core.errors import ConfigError
from vae.models import pictures
from vae.training.runs import run_dir


class ImageGrids(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, draws the pictures of ``vae.models.pictures`` (samples from the
    prior with fixed noise, reconstructions of a fixed validation batch, latent traversals of the most
    informative dimensions, interpolations) to ``<run>/images/<name>_epochNNN.png`` and to W&B under
    ``val/images/<name>``. Rank zero only.

    num_samples: images in the sample grid (from fixed prior noise, so epochs are comparable); a square
        number fills the grid.
    num_reconstructions: validation images shown, each above its reconstruction.
    nrow: images per row.
    seed: the seed of the prior noise.
    every_n_epochs: the interval, in validation epochs.
    """

    def __init__(
        self,
        *,
        num_samples: int = 64,
        num_reconstructions: int = 32,
        nrow: int = 8,
        seed: int = 0,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        if min(num_samples, num_reconstructions, nrow, every_n_epochs) < 1:
            raise ConfigError("images num_samples, num_reconstructions, nrow and every_n_epochs must be positive")
        if num_reconstructions % nrow:
            raise ConfigError(f"images num_reconstructions ({num_reconstructions}) must be a multiple of nrow ({nrow})")
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions
        self.nrow = nrow
        self.seed = seed
        self.every_n_epochs = every_n_epochs
        self.fixed_batch: Tensor | None = None
        self.fixed_labels: Tensor | None = None  # the batch's labels: a conditional model's context

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.fixed_batch is None or len(self.fixed_batch) < self.num_reconstructions:
            images, labels = (part[: self.num_reconstructions].detach().cpu() for part in batch)
            self.fixed_batch = images if self.fixed_batch is None else torch.cat([self.fixed_batch, images])
            self.fixed_labels = labels if self.fixed_labels is None else torch.cat([self.fixed_labels, labels])
            self.fixed_batch = self.fixed_batch[: self.num_reconstructions]
            self.fixed_labels = self.fixed_labels[: self.num_reconstructions]

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.fixed_batch is None or trainer.current_epoch % self.every_n_epochs:
            return
        vae = pl_module.model
        layers = pl_module.latent_stats["val"]
        ranking = None
        if len(layers) == 1:  # a single latent vector: its dimensions ranked for the traversals
            stats = next(iter(layers.values())).compute()  # this epoch's, before the module resets them
            ranking = stats.kl_per_dim if stats.kl_per_dim is not None else stats.mean_variance
        x, labels = self.fixed_batch.to(pl_module.device), self.fixed_labels
        labels = None if labels is None else labels.to(pl_module.device)
        grids = pictures.all_pictures(
            vae, x, ranking, context=labels, num_samples=self.num_samples, nrow=self.nrow, seed=self.seed
        )
        save_grids(grids, run_dir(trainer) / "images", suffix=f"_epoch{trainer.current_epoch:03d}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name, image in grids.items():
                    logger.log_image(key=f"val/images/{name}", images=[image], step=trainer.global_step)


def save_grids(grids: dict[str, Tensor], folder: Path, *, suffix: str = "") -> list[Path]:
    """Write each grid as ``<folder>/<name><suffix>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in grids.items():
        paths.append(folder / f"{name}{suffix}.png")
        save_image(image, paths[-1])
    return paths
