"""Lossless compression by bits-back coding (``vae compress``) against the models' −ELBO and the standard compressors.

Four models train through the real ``vae fit``, one after the other, for ``--minutes`` of wall time each (or come
from ``--reuse NAME=CHECKPOINT``):

    VAE, binarized         configs/fashion_mnist.yaml with 32 latent dimensions, Bernoulli, statically binarized
                           (the single-layer model of docs/posteriors.md's benchmark, diagonal Gaussian posterior)
    hierarchy, binarized   configs/hvae_fashion_mnist.yaml
    VAE, 8-bit             the same VAE on the 256 grey levels, with the discretized logistic mixture
    hierarchy, 8-bit       configs/hvae_fashion_mnist.yaml without binarization, with the discretized logistic mixture

Each best checkpoint (by validation ELBO) compresses the first ``--test-images`` test images with ``vae compress``
(``--latent-bits`` buckets per latent, the default 10), and ``vae decompress`` gives them back, checked bit for bit:
the file's bits/dim against the model's −ELBO (8 draws per image), the initial bits, gzip, bz2, lzma and PNG on the
same images, and the throughput both ways (images/s, this machine, nothing else running). Then the gap against the
latent precision: the coded stack at 6, 8, 10 and 12 bits per latent. Prints Markdown tables; ``<out>/results.json``
keeps the numbers.

    python scripts/compression_benchmark.py --minutes 15 --out runs/bench/compression
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from timed_runs import REPO, steps_of, train

from vae.commands.compress import split_images, values_of
from vae.training.checkpoint_io import load

MIXTURE = ["--model.model.init_args.likelihood", "vae.layers.likelihoods.DiscretizedLogisticMixture"]
VAE = ["--config", str(REPO / "configs" / "fashion_mnist.yaml"), "--model.model.latent_dim", "32"]
HIERARCHY = ["--config", str(REPO / "configs" / "hvae_fashion_mnist.yaml")]
RUNS = {
    "VAE, binarized": [
        *VAE, "--model.model.likelihood", "vae.layers.likelihoods.Bernoulli", "--data.init_args.binarize", "static",
    ],
    "hierarchy, binarized": HIERARCHY,
    "VAE, 8-bit": [*VAE, *MIXTURE],
    "hierarchy, 8-bit": [*HIERARCHY, "--data.init_args.binarize", "none", *MIXTURE],
}  # fmt: skip


def vae(*args: str) -> str:
    """Run a ``vae`` command; what it printed."""
    done = subprocess.run([sys.executable, "-m", "vae", *args], check=True, cwd=REPO, capture_output=True, text=True)
    return done.stdout


def compress(checkpoint: Path, out: Path, *, images: int, bits: int, baselines: bool = True) -> dict:
    """``vae compress`` of the first test images; its --json numbers."""
    numbers = out.with_suffix(".json")
    vae(
        "compress", str(checkpoint), "--split", "test", "--limit", str(images), "--out", str(out),
        "--latent-bits", str(bits), "--json", str(numbers), "--overwrite", *([] if baselines else ["--no-baselines"]),
    )  # fmt: skip
    return json.loads(numbers.read_text())


def round_trip(checkpoint: Path, folder: Path, *, images: int) -> dict:
    """Compress and decompress with the default settings, checking the images come back bit for bit."""
    found = compress(checkpoint, folder / "images.vae", images=images, bits=10)
    values, scale = values_of(load(checkpoint), split_images(checkpoint, None, "test", images))  # as compress read
    printed = vae("decompress", str(folder / "images.vae"), "--out", str(folder / "decoded.npz"), "--overwrite")
    with np.load(folder / "decoded.npz") as decoded:
        found["exact"] = bool(np.array_equal((values * scale).numpy().astype(np.uint8), decoded["images"]))
    found["decompress_per_second"] = float(re.search(r"\(([\d.]+) images/s\)", printed).group(1))
    return found


def report(results: dict) -> str:
    lines = [
        "| model | steps | −ELBO | file (stack) | file − (−ELBO) | initial bits | gzip | bz2 | lzma | PNG | "
        "compress / decompress (images/s) | exact |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        b = r["bits_per_dim"]
        lines.append(
            f"| {name} | {r['steps']:,} | {b['neg_elbo']:.4f} | {b['file']:.4f} ({b['stack']:.4f}) | "
            f"{r['difference_percent']:+.2f} % ({r['stack_difference_percent']:+.2f} %) | "
            f"{r['initial_bits']} ({b['initial']:.4f}) | {b['gzip']:.4f} | {b['bz2']:.4f} | {b['lzma']:.4f} | "
            f"{b['png']:.4f} | {r['images'] / r['seconds']:.0f} / {r['decompress_per_second']:.0f} | "
            f"{'yes' if r['exact'] else 'NO'} |"
        )
    lines += ["", "| model | " + " | ".join(f"{bits} bits" for bits in BITS) + " |", "| --- |" + " --- |" * len(BITS)]
    for name, r in results.items():
        cells = [
            f"{s['bits_per_dim']['stack']:.4f} ({s['stack_difference_percent']:+.2f} %)" for s in r["sweep"].values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BITS = (6, 8, 10, 12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "compression")
    parser.add_argument("--reuse", action="append", default=[], help="NAME=CHECKPOINT: skip that model's training")
    parser.add_argument("--only", action="append", help="run only these models (by name)")
    args = parser.parse_args()
    reuse = dict(item.split("=", 1) for item in args.reuse)
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name, run in RUNS.items():
        if args.only and name not in args.only:
            continue
        if name in reuse:
            checkpoint = Path(reuse[name])
        else:
            checkpoint, _ = train(name, run, minutes=args.minutes, out=args.out)
        folder = args.out / name.replace(" ", "-").replace(",", "")
        folder.mkdir(parents=True, exist_ok=True)
        found = round_trip(checkpoint, folder, images=args.test_images)
        found["steps"] = steps_of(checkpoint)
        found["checkpoint"] = str(checkpoint)
        found["sweep"] = {
            str(bits): compress(
                checkpoint, folder / f"bits{bits}.vae", images=args.test_images, bits=bits, baselines=False
            )
            for bits in BITS
        }
        for numbers in [found, *found["sweep"].values()]:
            numbers.pop("per_image_bits", None)
        results[name] = found
        results_file.write_text(json.dumps(results, indent=1))
        print(f"{name}: done", flush=True)
    print(report(results))


if __name__ == "__main__":
    main()
