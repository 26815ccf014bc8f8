"""Training and evaluation speed, side by side in one run: our `vae fit` path, a bare PyTorch loop, pythae.

    vae benchmark [--rounds 3] [--steps 200] [--window 20] [--batch-size 128] [--out runs/benchmark.json]
    python scripts/benchmark.py ...      (the same)

Every contender trains the same model (16 latent dimensions, Bernoulli likelihood, Adam 1e-3) on the same
uint8 images (Fashion-MNIST's training set when Debian's package or data/fashion-mnist has it, else the
embedded MNIST digits) at the same batch size, for three architectures: our default 28×28 conv VAE, pythae's
MNIST conv VAE (its home ground; pythae runs its own classes there), and the default hierarchical VAE
(``vae.models.HierarchicalVAE`` at its defaults: three latent layers; pythae has none, so it is compared with the
bare loop only).

    ours            Lightning Trainer + VAEModule + the in-memory data module, W&B logging (offline), as `vae fit`
    ours, fast      the same with the fast path's settings: bf16 autocast, channels-last, fused Adam
    bare loop       the same VAE in a plain loop: permutation slices, forward, backward, Adam
    pythae          pythae's BaseTrainer on the same encoder/decoder (pip install "vae-framework[bench]")

The contenders take turns, ``--rounds`` times, so that a slow minute of a noisy machine falls on all of
them; throughput is images/s over timed windows of ``--window`` steps after each run's warm-up window, and
the table shows the median window. "vs bare" is paired: each turn's median against the bare loop's turn
beside it, the median of those ratios, with their range over the turns. pythae's trainer has no step hooks,
so its windows are whole epochs of a subset of the same size.

Also measured: whole training epochs of ``configs/fashion_mnist_fast.yaml`` through the ``vae`` command's
own machinery, with and without ``torch.compile`` (its compile time reported on its own), and the
importance-weighted NLL evaluation (examples/s at K = ``--iw-samples``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch

from vae.commands.pythae_replica import PythaeMNISTConv
from vae.core.errors import ArgumentParser, DataError
from vae.core.pixels import as_unit
from vae.data.base import TensorSplit
from vae.data.embedded import EmbeddedMNIST
from vae.data.standard import FashionMNIST
from vae.metrics.likelihood import importance_weighted_log_likelihood
from vae.models.base import LatentVariableModel
from vae.models.hierarchical import HierarchicalVAE
from vae.models.vae import VAE
from vae.objectives.elbo import ELBO
from vae.training.console import prepare_loggers
from vae.training.hardware import cpu_has_bf16
from vae.training.module import VAEModule

Rates = list[float] | None  # images/s of each timed window; None: the contender is not installed


def synchronize() -> None:
    """Wait for the GPU's queued work, so that a wall-clock mark means the work before it is done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
    """Wall-clock marks: at the start of training, after the first step, after every ``window``-th step,
    and at the end of each epoch's training batches (before its validation)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.start = 0.0
        self.first_step = 0.0
        self.marks: list[float] = []
        self.epoch_start = 0.0
        self.last_batch_end = 0.0
        self.epochs: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        synchronize()
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        synchronize()
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 1 or step % self.window == 0 or batch_idx == trainer.num_training_batches - 1:
            synchronize()
            now = time.perf_counter()
            if step == 1:
                self.first_step = now - self.start
            if step % self.window == 0:
                self.marks.append(now)
            self.last_batch_end = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(self.last_batch_end - self.epoch_start)


def rates(marks: list[float], images_per_window: int) -> list[float]:
    """Images/s of each window between consecutive marks (the first mark ends the warm-up window)."""
    return [images_per_window / (b - a) for a, b in zip(marks, marks[1:])]


def wandb_offline(save_dir: str) -> pl.loggers.WandbLogger:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_SILENT"] = "true"
    logger = pl.loggers.WandbLogger(project="vae-benchmark", save_dir=save_dir)
    prepare_loggers([logger])  # as `vae fit` starts W&B: no notice about its deprecated `anonymous` setting
    return logger


MakeModel = Callable[[], LatentVariableModel]
"""A fresh model for each contender and each turn (a model's parts belong to it alone)."""


def ours(
    data: pl.LightningDataModule, *, make: MakeModel, steps: int, window: int, device: str, fast: bool = False
) -> Rates:
    """Our training path; ``fast``: with bf16 autocast, channels-last and a fused Adam."""
    timer = StepTimer(window)
    module = VAEModule(
        model=make(),
        objective=ELBO(),
        channels_last=fast,
        optimizer=partial(torch.optim.Adam, lr=1e-3, fused=fast),
    )
    with tempfile.TemporaryDirectory() as tmp:
        logger = wandb_offline(tmp)
        trainer = pl.Trainer(
            max_steps=steps,
            accelerator=device,
            devices=1,
            precision="bf16-mixed" if fast else "32-true",
            logger=logger,
            callbacks=[timer],
            limit_val_batches=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        trainer.fit(module, datamodule=data)
        logger.experiment.finish()
    return rates(timer.marks, window * data.batch_size)


def bare_loop(images: torch.Tensor, *, make: MakeModel, steps: int, window: int, batch_size: int, device: str) -> Rates:
    torch.manual_seed(0)
    vae = make().to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    images = images.to(device)
    marks, step = [], 0
    while step < steps:
        for index in torch.randperm(len(images), device=device).split(batch_size):
            if len(index) < batch_size or step >= steps:
                continue
            x = as_unit(images[index])
            out = vae(x)
            loss = (out.kl - out.log_px).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % window == 0:
                synchronize()
                marks.append(time.perf_counter())
    return rates(marks, window * batch_size)


def pythae_rates(
    images: torch.Tensor, *, make: MakeModel, steps: int, window: int, batch_size: int, device: str
) -> Rates:
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
        from pythae.trainers.training_callbacks import MetricConsolePrinterCallback, ProgressBarCallback
    except ImportError:
        return None
    ours_vae = make()
    if not isinstance(ours_vae, VAE) or not ours_vae.latent.diagonal:  # pythae's VAE: one diagonal Gaussian latent
        return None
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=ours_vae.latent_dim, reconstruction_loss="bce")
    if isinstance(ours_vae.network, PythaeMNISTConv):  # pythae's own networks, on its home ground
        encoder, decoder = Encoder_Conv_VAE_MNIST(config), Decoder_Conv_AE_MNIST(config)
    else:  # our networks, inside pythae's interfaces

        class Encoder(BaseEncoder):
            def __init__(self) -> None:
                super().__init__()
                self.net = ours_vae

            def forward(self, x):
                moments = self.net.posterior(x)
                return ModelOutput(embedding=moments.mean, log_covariance=moments.logvar)

        class Decoder(BaseDecoder):
            def __init__(self) -> None:
                super().__init__()
                self.net = ours_vae.network.decoder

            def forward(self, z):
                return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

        encoder, decoder = Encoder(), Decoder()
    model = PythaeVAE(config, encoder=encoder, decoder=decoder)
    subset = as_unit(images[: window * batch_size])  # one window per epoch
    epochs = max(3, steps // window)
    for name in [name for name in logging.root.manager.loggerDict if name.startswith("pythae")]:
        logging.getLogger(name).setLevel(logging.WARNING)  # its information lines ("Model passed sanity check", ...)
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
        quiet = (ProgressBarCallback, MetricConsolePrinterCallback)  # pythae's per-batch bars and loss lines
        handler = trainer.callback_handler
        handler.callbacks = [c for c in handler.callbacks if not isinstance(c, quiet)]
        marks = [time.perf_counter()]
        for epoch in range(1, epochs + 1):
            trainer.train_step(epoch)
            synchronize()
            marks.append(time.perf_counter())
    return rates(marks[1:], len(subset))  # the first epoch warms up


@dataclass(frozen=True)
class EpochTiming:
    """Whole training epochs of a config through the ``vae`` command's machinery (validation excluded)."""

    config: str
    compiled: bool
    images_per_epoch: int
    epoch_seconds: list[float]  # each epoch's training batches, data included
    first_step_seconds: float  # the first step: with torch.compile, where the compile time is paid
    step_seconds: float  # the median step after the first window

    @property
    def steady_images_per_s(self) -> float:
        """Of the fastest epoch (after the first, which pays the compile time, when compiled)."""
        return self.images_per_epoch / min((self.compiled and self.epoch_seconds[1:]) or self.epoch_seconds)

    @property
    def compile_seconds(self) -> float:
        return self.first_step_seconds - self.step_seconds


def epochs_of(config: Path, *, epochs: int, compiled: bool, device: str) -> EpochTiming:
    """Train ``epochs`` epochs of ``config`` as ``vae fit --config config`` builds it (W&B offline, no
    pictures or checkpoints in the way) and time each epoch's training batches."""
    from vae.commands.fit import cli

    window = 10
    timer = StepTimer(window)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # `vae benchmark`'s own
        wandb_offline(tmp)  # sets the offline mode before the CLI builds its logger
        built = cli(
            [
                f"--config={config}",
                f"--trainer.max_epochs={epochs}",
                f"--trainer.accelerator={device}",
                f"--trainer.default_root_dir={tmp}",
                f"--trainer.logger.init_args.save_dir={tmp}",
                "--trainer.limit_val_batches=0",
                "--checkpoint.monitor=null",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
                f"--model.compile={str(compiled).lower()}",
                f"--images.every_n_epochs={epochs + 1}",
            ],
            run=False,
        )
        built.trainer.callbacks.append(timer)
        built.trainer.fit(built.model, datamodule=built.datamodule)
        built.trainer.logger.experiment.finish()
    steps = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    return EpochTiming(
        config=str(config),
        compiled=compiled,
        images_per_epoch=len(built.datamodule.splits["train"]),
        epoch_seconds=timer.epochs,
        first_step_seconds=timer.first_step,
        step_seconds=statistics.median(steps) / window,
    )


def iw_rate(images: torch.Tensor, *, samples: int, device: str, count: int, batch_size: int, chunk: int) -> float:
    """Examples/s of the importance-weighted log-likelihood at K = ``samples`` (the default model,
    float32, as ``vae evaluate`` computes it)."""
    vae = VAE(image_shape=(1, 28, 28)).to(device).eval()
    x = as_unit(images[:count].to(device))
    with torch.no_grad():
        importance_weighted_log_likelihood(vae, x[:2], num_samples=100, chunk_size=100)  # warm-up
        synchronize()
        start = time.perf_counter()
        for batch in x.split(batch_size):
            importance_weighted_log_likelihood(vae, batch, num_samples=samples, chunk_size=chunk)
        synchronize()
    return len(x) / (time.perf_counter() - start)


def take_turns(contenders: dict[str, Callable[[], Rates]], rounds: int) -> dict[str, list[list[float]] | None]:
    """Run every contender ``rounds`` times, in turn: each one's windows, turn by turn (None: not installed)."""
    turns: dict[str, list[list[float]] | None] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            if turns[name] is not None:
                found = run()
                turns[name] = None if found is None else [*turns[name], found]
    return turns


@dataclass(frozen=True)
class Paired:
    """A contender against a reference, turn by turn: the median of the per-turn ratios of median images/s
    (each turn against the reference's turn beside it, so a slow minute of the machine falls on both), and
    their range over the turns."""

    ratio: float
    low: float
    high: float

    @staticmethod
    def of(turns: list[list[float]], reference: list[list[float]]) -> Paired:
        ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(turns, reference)]
        return Paired(statistics.median(ratios), min(ratios), max(ratios))


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="turns each contender takes (default 3)")
    parser.add_argument("--steps", type=int, default=200, help="steps per turn, default conv VAE (default 200)")
    parser.add_argument("--window", type=int, default=20, help="steps per timed window (default 20)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--large-steps", type=int, default=20, help="steps per turn, pythae's MNIST VAE (default 20)")
    parser.add_argument("--large-window", type=int, default=4)
    parser.add_argument("--skip-large", action="store_true", help="leave out pythae's (17 M parameter) MNIST VAE")
    parser.add_argument("--hierarchical-steps", type=int, default=40, help="steps per turn, hierarchical VAE (40)")
    parser.add_argument("--hierarchical-window", type=int, default=10)
    parser.add_argument("--skip-hierarchical", action="store_true", help="leave out the hierarchical VAE")
    parser.add_argument(
        "--skip-fast", action="store_true", help="leave out the fast path (bf16: slow on CPUs without bf16 units)"
    )
    parser.add_argument("--fast-config", type=Path, default=Path("configs/fashion_mnist_fast.yaml"))
    parser.add_argument("--fast-epochs", type=int, default=2, help="epochs of the fast config (default 2; 0: skip)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile run of the fast config")
    parser.add_argument("--iw-samples", type=int, default=5000, help="K of the importance-weighted NLL")
    parser.add_argument("--iw-images", type=int, help="images to evaluate (default 20 on the CPU, 1000 on a GPU)")
    parser.add_argument("--iw-batch-size", type=int, default=100, help="images per batch (default 100)")
    parser.add_argument("--iw-chunk", type=int, default=100, help="samples per chunk (default 100)")
    parser.add_argument("--root", default="data")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark.json"))
    args = parser.parse_args(argv)
    numbers = (args.rounds, args.steps, args.window, args.batch_size, args.large_steps, args.large_window)
    numbers += (args.hierarchical_steps, args.hierarchical_window)
    short = args.steps < 3 * args.window or args.large_steps < 3 * args.large_window
    if min(numbers) < 1 or short or args.hierarchical_steps < 3 * args.hierarchical_window:
        parser.error("rounds, steps, windows and batch size must be positive, and steps at least 3 windows")
    if args.fast_epochs and not args.fast_config.is_file():
        parser.error(f"fast config not found: {args.fast_config} (run from the repository, or --fast-epochs 0)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    iw_images = args.iw_images or (20 if args.device == "cpu" else 1000)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no "GPU available" lines at every turn

    name, train, data = training_images(args.root, args.batch_size)
    shape = {"image_shape": (1, 28, 28)}
    architectures: dict[str, tuple[MakeModel, int, int]] = {
        "default conv VAE": (partial(VAE, **shape), args.steps, args.window)
    }
    if not args.skip_large:

        def pythae_conv() -> VAE:
            return VAE(**shape, network=PythaeMNISTConv())

        architectures["pythae MNIST conv VAE"] = (pythae_conv, args.large_steps, args.large_window)
    if not args.skip_hierarchical:
        hierarchy = partial(HierarchicalVAE, **shape)
        architectures["hierarchical VAE"] = (hierarchy, args.hierarchical_steps, args.hierarchical_window)
    report: dict = {
        "data": name,
        "batch_size": args.batch_size,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads",
        "cpu_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "training": {},
    }
    lines = [f"{name}, batch {args.batch_size}, {report['device_name']}; median of timed windows, {args.rounds} turns"]
    if args.device == "cpu":  # what "ours, fast path" (bf16 autocast) measures on this CPU
        units = {True: "has bf16 instructions", False: "has no bf16 instructions (bf16 is emulated)", None: "?"}
        lines.append(f"  CPU {units[report['cpu_bf16']]}: the fast path's bf16 autocast runs on it as such")
    lines.append("  vs bare, vs pythae: median over turns of each turn's ratio to theirs; range: lowest-highest")
    lines.append(f"  {'path':<24} {'images/s':>10} {'vs bare':>8} {'range':>11} {'vs pythae':>10}  windows")
    for arch, (make, steps, window) in architectures.items():
        common = {"make": make, "steps": steps, "window": window, "device": args.device}
        contenders = {
            "ours (vae fit path)": partial(ours, data, **common),
            **({} if args.skip_fast else {"ours, fast path": partial(ours, data, fast=True, **common)}),
            "bare PyTorch loop": partial(bare_loop, train.images, batch_size=args.batch_size, **common),
            "pythae BaseTrainer": partial(pythae_rates, train.images, batch_size=args.batch_size, **common),
        }
        turns = take_turns(contenders, args.rounds)
        bare, pythae = turns["bare PyTorch loop"], turns["pythae BaseTrainer"]
        lines.append(f"{arch}")
        for path, found in turns.items():
            if not found:
                lines.append(f"  {path:<24} {'(not installed, or no such model)':>10}")
                continue
            windows = [rate for turn in found for rate in turn]
            median = statistics.median(windows)
            vs_bare = Paired.of(found, bare)
            vs_pythae = Paired.of(found, pythae) if pythae else None
            report["training"][f"{arch} / {path}"] = {
                "images_per_s": median,
                "vs_bare": vs_bare.ratio,
                "vs_bare_range": [vs_bare.low, vs_bare.high],
                "vs_pythae": vs_pythae.ratio if vs_pythae else None,
                "windows": windows,
            }
            pythae_text = f"{vs_pythae.ratio:>9.2f}x" if vs_pythae else f"{'-':>10}"
            lines.append(
                f"  {path:<24} {median:>10,.0f} {vs_bare.ratio:>7.2f}x {vs_bare.low:>6.2f}-{vs_bare.high:<5.2f}"
                f"{pythae_text}  {len(windows)}"
            )

    if args.fast_epochs:
        lines.append(f"{args.fast_config} ({args.fast_epochs} epochs; training batches, data included)")
        report["fast_config"] = []
        for compiled in (False,) if args.no_compile else (False, True):
            timing = epochs_of(args.fast_config, epochs=args.fast_epochs, compiled=compiled, device=args.device)
            report["fast_config"].append(asdict(timing) | {"compile_seconds": timing.compile_seconds})
            epochs = ", ".join(f"{t:.2f}" for t in timing.epoch_seconds)
            label = "torch.compile" if compiled else "eager"
            lines.append(
                f"  {label:<14} epoch of {timing.images_per_epoch:,} images: {epochs} s "
                f"({timing.steady_images_per_s:,.0f} images/s; 60,000 in {60_000 / timing.steady_images_per_s:.2f} s)"
                + (f"; compile time {timing.compile_seconds:.1f} s" if compiled else "")
            )

    iw = iw_rate(
        train.images,
        samples=args.iw_samples,
        device=args.device,
        count=iw_images,
        batch_size=args.iw_batch_size,
        chunk=args.iw_chunk,
    )
    report |= {"iw_nll_examples_per_s": iw, "iw_samples": args.iw_samples, "iw_images": iw_images}
    lines.append(
        f"importance-weighted NLL (default conv VAE, float32), K={args.iw_samples}, {iw_images} images: "
        f"{iw:,.2f} examples/s (10,000 test images in {10_000 / iw:,.0f} s)"
    )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
