"""Training throughput, side by side in one run: our `vae fit` path, a bare PyTorch loop, and pythae.

    python scripts/benchmark.py [--steps 400] [--window 20] [--large-steps 30] [--large-window 5]
                                [--batch-size 128] [--out runs/benchmark.json]

Every contender trains the same model (16 latent dimensions, Bernoulli likelihood, Adam 1e-3) on the same
uint8 images (Fashion-MNIST's training set when Debian's package or data/fashion-mnist has it, else the
embedded MNIST digits) at the same batch size, for two architectures: our default 28×28 conv VAE, and
pythae's MNIST conv VAE (its home ground; pythae runs its own classes there).

    ours        Lightning Trainer + VAEModule + the in-memory data module, W&B logging (offline), as `vae fit`
    bare loop   the same VAE in a plain loop: permutation slices, forward, backward, Adam
    pythae      pythae's BaseTrainer on the same encoder/decoder (pip install "vae-framework[bench]")

Throughput is images/s over timed windows of ``--window`` steps after a warm-up window; the table shows the
median window. pythae's trainer has no step hooks, so its windows are whole epochs of a subset of the same
size. Also measured: the importance-weighted NLL evaluation (examples/s at K = ``--iw-samples``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from einops import rearrange
from torch import nn

from vae.data import EmbeddedMNIST, FashionMNIST, TensorSplit
from vae.errors import DataError
from vae.evaluation import importance_weighted_log_likelihood
from vae.likelihoods import Bernoulli
from vae.model import VAE
from vae.module import VAEModule
from vae.nets import ConvNet, GaussianMoments, Network


class PythaeEncoder(nn.Module):
    """pythae's Encoder_Conv_VAE_MNIST, layer for layer: four stride-2 convolutions (128 → 1024 channels)
    with batch norm and ReLU, then linear heads for the mean and log-variance."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        sizes = [1, 128, 256, 512, 1024]
        self.body = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(a, b, 4, 2, padding=1), nn.BatchNorm2d(b), nn.ReLU())
                for a, b in zip(sizes[:-1], sizes[1:])
            )
        )
        self.mean, self.logvar = nn.Linear(1024, latent_dim), nn.Linear(1024, latent_dim)

    def forward(self, x: torch.Tensor) -> GaussianMoments:
        h = rearrange(self.body(x), "b c h w -> b (c h w)")  # (b, 1024): 28 → 14 → 7 → 3 → 1
        return GaussianMoments(self.mean(h), self.logvar(h))


class PythaeDecoder(nn.Module):
    """pythae's Decoder_Conv_AE_MNIST, layer for layer, returning logits (pythae applies a sigmoid)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 1024 * 4 * 4)
        self.body = nn.Sequential(
            nn.ConvTranspose2d(1024, 512, 3, 2, padding=1), nn.BatchNorm2d(512), nn.ReLU(),
            nn.ConvTranspose2d(512, 256, 3, 2, padding=1, output_padding=1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.ConvTranspose2d(256, 1, 3, 2, padding=1, output_padding=1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(rearrange(self.fc(z), "b (c h w) -> b c h w", c=1024, h=4, w=4))  # 4 → 7 → 14 → 28


@dataclass(frozen=True)
class PythaeMNISTConv(Network):
    """pythae's MNIST conv VAE (7.1 M parameters), to compare on pythae's home ground."""

    def encoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
        return PythaeEncoder(latent_dim)

    def decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
        return PythaeDecoder(latent_dim)


def training_images(root: str, batch_size: int) -> tuple[str, TensorSplit, pl.LightningDataModule]:
    try:
        data = FashionMNIST(root=root, batch_size=batch_size)
        data.setup("fit")
        return "Fashion-MNIST", data.splits["train"], data
    except DataError:
        data = EmbeddedMNIST(batch_size=batch_size)
        data.setup("fit")
        return "embedded MNIST", data.splits["train"], data


class StepTimer(pl.Callback):
    """Wall-clock time at every ``window``-th training step."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.window == 0:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())


def rates(marks: list[float], images_per_window: int) -> list[float]:
    """Images/s of each window after the first (warm-up) one."""
    return [images_per_window / (b - a) for a, b in zip(marks[1:], marks[2:])]


def ours(data: pl.LightningDataModule, *, network: Network, steps: int, window: int, device: str) -> list[float]:
    timer = StepTimer(window)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ["WANDB_SILENT"] = "true"
        logger = pl.loggers.WandbLogger(project="vae-benchmark", save_dir=tmp)
        trainer = pl.Trainer(
            max_steps=steps,
            accelerator=device,
            devices=1,
            logger=logger,
            callbacks=[timer],
            limit_val_batches=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        trainer.fit(VAEModule(image_shape=(1, 28, 28), network=network), datamodule=data)
        logger.experiment.finish()
    return rates(timer.marks, window * data.batch_size)


def bare_loop(
    images: torch.Tensor, *, network: Network, steps: int, window: int, batch_size: int, device: str
) -> list[float]:
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 28, 28), network=network, likelihood=Bernoulli()).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    images = images.to(device)
    marks, step = [], 0
    while step < steps:
        for index in torch.randperm(len(images), device=device).split(batch_size):
            if len(index) < batch_size or step >= steps:
                continue
            x = images[index].float() / 255.0
            out = vae(x)
            loss = (out.latent.kl - out.log_px).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % window == 0:
                if device == "cuda":
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())
    return rates([marks[0], *marks], window * batch_size)


def pythae_rates(
    images: torch.Tensor, *, network: Network, steps: int, window: int, batch_size: int, device: str
) -> list[float] | None:
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except ImportError:
        return None
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce")
    if isinstance(network, PythaeMNISTConv):  # pythae's own networks, on its home ground
        encoder, decoder = Encoder_Conv_VAE_MNIST(config), Decoder_Conv_AE_MNIST(config)
    else:  # our networks, inside pythae's interfaces
        ours_vae = VAE(image_shape=(1, 28, 28), network=network, likelihood=Bernoulli())

        class Encoder(BaseEncoder):
            def __init__(self) -> None:
                super().__init__()
                self.net = ours_vae.encoder

            def forward(self, x):
                moments = self.net(x)
                return ModelOutput(embedding=moments.mean, log_covariance=moments.logvar)

        class Decoder(BaseDecoder):
            def __init__(self) -> None:
                super().__init__()
                self.net = ours_vae.decoder

            def forward(self, z):
                return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

        encoder, decoder = Encoder(), Decoder()
    model = PythaeVAE(config, encoder=encoder, decoder=decoder)
    subset = images[: window * batch_size].float() / 255.0  # one window per epoch
    epochs = max(3, steps // window)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = BaseTrainer(
            model,
            BaseDataset(subset, torch.zeros(len(subset))),
            training_config=BaseTrainerConfig(
                output_dir=tmp,
                per_device_train_batch_size=batch_size,
                learning_rate=1e-3,
                num_epochs=epochs,
                no_cuda=device != "cuda",
            ),
        )
        trainer.prepare_training()
        marks = [time.perf_counter()]
        for epoch in range(1, epochs + 1):
            trainer.train_step(epoch)
            if device == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
    return rates(marks, len(subset))


def iw_rate(images: torch.Tensor, *, samples: int, device: str, count: int = 20) -> float:
    vae = VAE(image_shape=(1, 28, 28), network=ConvNet(), likelihood=Bernoulli()).to(device).eval()  # the default
    x = images[:count].to(device).float() / 255.0
    with torch.no_grad():
        importance_weighted_log_likelihood(vae, x[:2], num_samples=100, chunk_size=100)  # warm-up
        start = time.perf_counter()
        importance_weighted_log_likelihood(vae, x, num_samples=samples, chunk_size=500)
        if device == "cuda":
            torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--large-steps", type=int, default=30, help="steps for pythae's larger MNIST model")
    parser.add_argument("--large-window", type=int, default=5)
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--root", default="data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark.json"))
    args = parser.parse_args()
    name, train, data = training_images(args.root, args.batch_size)
    architectures = {
        "default conv VAE": (ConvNet(), args.steps, args.window),
        "pythae MNIST conv VAE": (PythaeMNISTConv(), args.large_steps, args.large_window),
    }
    report: dict = {"data": name, "batch_size": args.batch_size, "device": args.device, "training": {}}
    lines = []
    for arch, (network, steps, window) in architectures.items():
        common = {"network": network, "steps": steps, "window": window, "device": args.device}
        results = {
            "ours (vae fit path)": ours(data, **common),
            "bare PyTorch loop": bare_loop(train.images, batch_size=args.batch_size, **common),
            "pythae BaseTrainer": pythae_rates(train.images, batch_size=args.batch_size, **common),
        }
        bare = statistics.median(results["bare PyTorch loop"])
        lines.append(f"{arch}: {window}-step windows")
        for path, values in results.items():
            if values is None:
                lines.append(f"  {path:<22} {'(not installed)':>10}")
                continue
            median = statistics.median(values)
            report["training"][f"{arch} / {path}"] = {"images_per_s": median, "vs_bare": median / bare}
            lines.append(f"  {path:<22} {median:>10,.0f} {median / bare:>7.2f}x  {len(values)}")
    iw = iw_rate(train.images, samples=args.iw_samples, device=args.device)
    threads = torch.get_num_threads()
    print(f"{name}, batch {args.batch_size}, {args.device}, {threads} threads; median of timed windows")
    print(f"  {'path':<22} {'images/s':>10} {'vs bare':>8}  windows")
    print("\n".join(lines))
    print(f"importance-weighted NLL (default conv VAE), K={args.iw_samples}: {iw:,.2f} examples/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report |= {"iw_nll_examples_per_s": iw, "iw_samples": args.iw_samples}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
