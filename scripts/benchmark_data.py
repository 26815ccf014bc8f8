"""Loading throughput on Fashion-MNIST: the in-memory fast path against the per-item paths.

Measures images per second for one pass over the 55,000 training images at batch size 128, each path
delivering uint8 batches on the device that trains (the GPU rows only where CUDA is available):

    fast path          vae.data's TensorBatches: slices of a permutation of one uint8 tensor
    per item           a DataLoader over the same tensor, one __getitem__ per image, then collate
    torchvision        torchvision.datasets.FashionMNIST + ToTensor (PIL per image), the textbook path

    python scripts/benchmark_data.py [--repeats 3] [--batch-size 128]

It needs the Fashion-MNIST files (Debian: sudo apt-get install dataset-fashion-mnist, or data/fashion-mnist/).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from vae.data.base import TensorBatches, TensorSplit
from vae.data.standard import FashionMNIST


def throughput(make: Callable[[], Iterable], device: torch.device, repeats: int) -> tuple[float, float]:
    """(images/s, seconds per pass): the median over ``repeats`` passes, after one warm-up pass."""
    times = []
    for attempt in range(repeats + 1):
        loader = make()
        start = time.perf_counter()
        count = 0
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            count += len(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if attempt:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return count / seconds, seconds


def torchvision_root(folder: Path, target: Path) -> Path:
    """torchvision's layout (FashionMNIST/raw/, uncompressed) built from the files wherever they are."""
    raw = target / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FashionMNIST.files:
        source = folder / name
        if source.is_file():
            shutil.copyfile(source, raw / name)
        else:
            with gzip.open(folder / f"{name}.gz", "rb") as f, open(raw / name, "wb") as out:
                shutil.copyfileobj(f, out)
    return target


def paths(train: TensorSplit, textbook: Dataset, device: torch.device, bs: int) -> list[tuple]:
    """(name, workers, where the data lives, a function making the loader) for each path on ``device``."""
    resident = train.to(device)
    per_item = TensorDataset(train.images, train.labels)
    pin = device.type == "cuda"
    rows = [
        (
            "fast path (one uint8 tensor, sliced)",
            0,
            f"{device.type} resident",
            lambda: TensorBatches(resident, batch_size=bs, shuffle=True, seed=0, epoch=lambda: 0),
        )
    ]
    for workers in (0, 2):
        for name, dataset in (
            ("per item (DataLoader over the tensor)", per_item),
            ("torchvision FashionMNIST + PILToTensor", textbook),
        ):
            rows.append(
                (
                    name,
                    workers,
                    f"cpu -> {device.type}",
                    lambda d=dataset, w=workers: DataLoader(
                        d, batch_size=bs, shuffle=True, num_workers=w, pin_memory=pin
                    ),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--root", default="data", help="where data/fashion-mnist is looked for (default: data)")
    args = parser.parse_args()

    data = FashionMNIST(root=args.root, batch_size=args.batch_size)
    data.setup("fit")
    train: TensorSplit = data.splits["train"]
    bs = args.batch_size
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(data.located(), Path(tmp))
        textbook = torchvision.datasets.FashionMNIST(root=str(root), train=True, transform=v2.PILToTensor())
        for device in devices:
            for name, workers, where, make in paths(train, textbook, device, bs):
                results.append((name, workers, where, *throughput(make, device, args.repeats)))

    print(f"Fashion-MNIST, {len(train):,} training images, batch {bs}, median of {args.repeats} passes")
    print(f"{'path':<40} {'workers':>7}  {'where':<16} {'images/s':>12} {'s/pass':>8}")
    for name, workers, where, rate, seconds in results:
        print(f"{name:<40} {workers:>7}  {where:<16} {rate:>12,.0f} {seconds:>8.3f}")


if __name__ == "__main__":
    main()
