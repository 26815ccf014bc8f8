"""Callbacks: image grids of samples and reconstructions, to PNG files and to W&B, rank zero only."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from einops import rearrange
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import make_grid, save_image

from vae.errors import ConfigError


def run_dir(trainer: pl.Trainer) -> Path:
    """The run's folder: where its checkpoints/, images/ and config.yaml live.

    It is the folder Lightning's ModelCheckpoint puts ``checkpoints/`` in:
    ``{save_dir}/{logger name}/{logger version}`` with a logger, ``default_root_dir`` without one.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


class ImageGrids(pl.Callback):
    """After every validation epoch, draws samples from the prior p(z) and reconstructions of a fixed
    validation batch, and writes them to ``<run>/images/{samples,reconstructions}_epochNNN.png`` and to
    W&B under ``val/images/samples`` and ``val/images/reconstructions``.

    num_samples: images in the sample grid (from fixed prior noise, so epochs are comparable).
    num_reconstructions: validation images shown, each above its reconstruction.
    nrow: images per row.
    seed: the seed of that noise.
    """

    def __init__(self, *, num_samples: int = 64, num_reconstructions: int = 32, nrow: int = 8, seed: int = 0) -> None:
        super().__init__()
        if num_samples < 1 or num_reconstructions < 1 or nrow < 1:
            raise ConfigError("images num_samples, num_reconstructions and nrow must be positive integers")
        if num_reconstructions % nrow:
            raise ConfigError(f"images num_reconstructions ({num_reconstructions}) must be a multiple of nrow ({nrow})")
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions
        self.nrow = nrow
        self.seed = seed
        self.fixed_batch: Tensor | None = None

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
            images = batch[0][: self.num_reconstructions].detach().cpu()
            self.fixed_batch = images if self.fixed_batch is None else torch.cat([self.fixed_batch, images])
            self.fixed_batch = self.fixed_batch[: self.num_reconstructions]

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.fixed_batch is None:
            return
        vae = pl_module.vae
        device = pl_module.device
        x = self.fixed_batch.to(device)
        # The same noise every epoch (so grids are comparable), without touching the training RNG.
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            samples = vae.sample(vae.prior_distribution().sample(torch.Size([self.num_samples])))
            pairs = torch.stack([x, vae.reconstruct(x)])  # (2, n, c, h, w)
        # Each row of inputs is followed by the row of their reconstructions.
        pairs = rearrange(pairs, "two (r n) c h w -> (r two n) c h w", n=self.nrow)
        grids = {
            "samples": make_grid(samples.float().cpu(), nrow=self.nrow, padding=2, pad_value=0.5),
            "reconstructions": make_grid(pairs.float().cpu(), nrow=self.nrow, padding=2, pad_value=0.5),
        }
        folder = run_dir(trainer) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            save_image(grid, folder / f"{name}_epoch{trainer.current_epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name, grid in grids.items():
                    logger.log_image(key=f"val/images/{name}", images=[grid], step=trainer.global_step)
