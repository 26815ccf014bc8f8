"""Training throughput, side by side in one run: our `vae fit` path, a bare PyTorch loop, and pythae.

    python scripts/benchmark.py [--steps 120] [--window 20] [--batch-size 128] [--out runs/benchmark.json]

Every contender trains the same model (the default 28×28 conv VAE, 16 latent dimensions, Bernoulli
likelihood, Adam 1e-3) on the same uint8 images (Fashion-MNIST's training set when Debian's package or
data/fashion-mnist has it, else the embedded MNIST digits) at the same batch size:

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
from pathlib import Path

import pytorch_lightning as pl
import torch

from vae.data import EmbeddedMNIST, FashionMNIST, TensorSplit
from vae.errors import DataError
from vae.evaluation import importance_weighted_log_likelihood
from vae.likelihoods import Bernoulli
from vae.model import VAE
from vae.module import VAEModule
from vae.nets import ConvNet


def training_images(root: str) -> tuple[str, TensorSplit, pl.LightningDataModule]:
    try:
        data = FashionMNIST(root=root)
        data.setup("fit")
        return "Fashion-MNIST", data.splits["train"], data
    except DataError:
        data = EmbeddedMNIST()
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


def ours(data: pl.LightningDataModule, *, steps: int, window: int, device: str) -> list[float]:
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
        trainer.fit(VAEModule(image_shape=(1, 28, 28)), datamodule=data)
        logger.experiment.finish()
    return rates(timer.marks, window * data.batch_size)


def bare_loop(images: torch.Tensor, *, steps: int, window: int, batch_size: int, device: str) -> list[float]:
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 28, 28), network=ConvNet(), likelihood=Bernoulli()).to(device)
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


def pythae_rates(images: torch.Tensor, *, steps: int, window: int, batch_size: int, device: str) -> list[float] | None:
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except ImportError:
        return None
    ours_vae = VAE(image_shape=(1, 28, 28), network=ConvNet(), likelihood=Bernoulli())

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

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce")
    model = PythaeVAE(config, encoder=Encoder(), decoder=Decoder())
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
    vae = VAE(image_shape=(1, 28, 28), network=ConvNet(), likelihood=Bernoulli()).to(device).eval()
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
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--root", default="data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark.json"))
    args = parser.parse_args()
    name, train, data = training_images(args.root)
    data.batch_size = args.batch_size
    common = {"steps": args.steps, "window": args.window, "device": args.device}
    results = {
        "ours (vae fit path)": ours(data, **common),
        "bare PyTorch loop": bare_loop(train.images, batch_size=args.batch_size, **common),
        "pythae BaseTrainer": pythae_rates(train.images, batch_size=args.batch_size, **common),
    }
    iw = iw_rate(train.images, samples=args.iw_samples, device=args.device)
    bare = statistics.median(results["bare PyTorch loop"])
    print(f"{name}, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads; median of timed windows")
    print(f"{'path':<22} {'images/s':>10} {'vs bare':>8}  windows")
    table = {}
    for path, values in results.items():
        if values is None:
            print(f"{path:<22} {'(not installed)':>10}")
            continue
        median = statistics.median(values)
        table[path] = {"images_per_s": median, "vs_bare": median / bare, "windows": values}
        print(f"{path:<22} {median:>10,.0f} {median / bare:>7.2f}x  {len(values)}")
    print(f"importance-weighted NLL, K={args.iw_samples}: {iw:,.2f} examples/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"data": name, "batch_size": args.batch_size, "device": args.device, "training": table}
    args.out.write_text(json.dumps({**report, "iw_nll_examples_per_s": iw, "iw_samples": args.iw_samples}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
