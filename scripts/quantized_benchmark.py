"""Quantizers on Fashion-MNIST's 8-bit images (28×28, codes on a 7×7 grid), each trained for the same wall time, then
the best of them with a learned prior against the single-layer VAE and the hierarchy in bits/dim.

Every model trains through the real ``vae fit``, one after the other, each for ``--minutes`` of wall time
(``trainer.max_time``), under a discretized logistic likelihood over the 256 grey levels (so that every bits/dim is a
code length of the 8-bit images):

    plain VQ    configs/vq_fashion_mnist.yaml without k-means initialisation or restarts (1,024 codes, EMA)
    fixed VQ    configs/vq_fashion_mnist.yaml as shipped: k-means initialisation, codes unused for 100 steps restarted
    FSQ         configs/fsq_fashion_mnist.yaml: levels [8, 5, 5, 5], 1,000 codes

each scored on the whole test split: codebook usage (the share of codes used at least once), perplexity, and the
reconstructions' PSNR and SSIM. The quantizer with the best test reconstruction term then gets its prior
(configs/vq_prior_fashion_mnist.yaml) for the same wall time, and the single-layer VAE (configs/fashion_mnist.yaml)
and the hierarchy (configs/hvae_fashion_mnist.yaml), both under the same likelihood on the same 8-bit images, train
for it too. The three are scored in test bits/dim on the first ``--test-images`` test images: the VQ model's exact
−ELBO (one-hot posterior; an upper bound on −log p(x)), the VAEs' importance-weighted NLL with ``--samples`` samples.
Sample grids of all three are written beside the runs. Prints Markdown tables.

    python scripts/quantized_benchmark.py --minutes 10 --out runs/bench/quantized

Run it in the background on an otherwise idle machine (about 6 × --minutes plus scoring).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from timed_runs import REPO, steps_of, test_batches, train
from torchvision.utils import save_image

from vae.core.pixels import as_unit
from vae.metrics.likelihood import bits_per_dim, evaluate, importance_weighted_log_likelihood
from vae.models.pictures import grid, seeded
from vae.training.checkpoint_io import load_module

CONFIGS = REPO / "configs"
QUANTIZER = "--model.model.init_args.quantizer.init_args"
DISCRETE = ["--model.model.init_args.likelihood", "vae.layers.likelihoods.DiscretizedLogistic"]
DISCRETE += ["--data.init_args.binarize", "none"]  # the 8-bit images themselves
FIRST_STAGES = {
    "plain VQ": [
        "--config", str(CONFIGS / "vq_fashion_mnist.yaml"),
        f"{QUANTIZER}.kmeans_init", "false", f"{QUANTIZER}.restart_after", "0",
    ],
    "fixed VQ": ["--config", str(CONFIGS / "vq_fashion_mnist.yaml")],
    "FSQ": ["--config", str(CONFIGS / "fsq_fashion_mnist.yaml")],
}  # fmt: skip
VAES = {
    "single-layer VAE": ["--config", str(CONFIGS / "fashion_mnist.yaml"), *DISCRETE],
    "hierarchical VAE": [
        "--config", str(CONFIGS / "hvae_fashion_mnist.yaml"), *DISCRETE,
    ],
}  # fmt: skip


@torch.no_grad()
def score_first_stage(checkpoint: Path) -> dict:
    """Usage, perplexity, PSNR and SSIM over the whole test split."""
    model = load_module(checkpoint).model.eval()
    result = evaluate(model, test_batches(checkpoint), num_samples=1)
    return {
        "recon": result.recon,
        "usage": result.model_metrics["codebook/usage"],
        "perplexity": result.model_metrics["codebook/perplexity"],
        "codes": model.quantizer.codebook_size,
        "psnr": result.reconstruction["psnr"],
        "ssim": result.reconstruction["ssim"],
        "steps": steps_of(checkpoint),
    }


@torch.no_grad()
def score_bits(checkpoint: Path, *, test_images: int, samples: int, pictures: Path) -> dict:
    """Test bits/dim on the first ``test_images`` test images (with its standard error over the images), and a grid
    of 64 samples."""
    model = load_module(checkpoint).model.eval()
    torch.manual_seed(0)
    batches = test_batches(checkpoint, test_images)
    log_px = torch.cat(
        [importance_weighted_log_likelihood(model, as_unit(x), num_samples=samples) for x, _ in batches]
    )[:test_images]
    per_image = -log_px / (784 * math.log(2))
    with seeded(model, 0):
        save_image(grid(model.sample(64), 8), pictures)
    return {
        "bits_per_dim": float(per_image.mean()),
        "bits_per_dim_se": float(per_image.std() / math.sqrt(len(per_image))),
        "check": bits_per_dim(float(-log_px.mean()), (1, 28, 28)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps_of(checkpoint),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time of each training run (10 or more)")
    parser.add_argument("--test-images", type=int, default=1000, help="test images for the bits/dim table")
    parser.add_argument("--samples", type=int, default=100, help="importance samples per image for the VAEs")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/quantized"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"first_stage": {}, "bits": {}}
    checkpoints = {}
    for name, flags in FIRST_STAGES.items():
        checkpoint, wall = train(name, flags, minutes=args.minutes, out=args.out)
        checkpoints[name] = checkpoint
        results["first_stage"][name] = {"wall_s": wall, **score_first_stage(checkpoint)}
        print(json.dumps({name: results["first_stage"][name]}), flush=True)
    best = min(results["first_stage"], key=lambda name: results["first_stage"][name]["recon"])
    prior_args = ["--config", str(CONFIGS / "vq_prior_fashion_mnist.yaml")]
    prior_args += ["--model.model.init_args.first_stage", str(checkpoints[best])]
    second = {f"{best} + prior": prior_args, **VAES}
    for name, flags in second.items():
        checkpoint, wall = train(name, flags, minutes=args.minutes, out=args.out)
        picture = args.out / f"samples-{name.replace(' ', '-').replace('+', 'and')}.png"
        score = score_bits(checkpoint, test_images=args.test_images, samples=args.samples, pictures=picture)
        results["bits"][name] = {"wall_s": wall, "samples": str(picture), **score}
        print(json.dumps({name: results["bits"][name]}), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))

    print("\n| quantizer | codes | steps | test usage | perplexity | PSNR (dB) | SSIM | recon (nats) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["first_stage"].items():
        print(
            f"| {name} | {r['codes']:,} | {r['steps']:,} | {100 * r['usage']:.1f} % | {r['perplexity']:.0f} "
            f"| {r['psnr']:.2f} | {r['ssim']:.4f} | {r['recon']:.1f} |"
        )
    print(f"\n| model | parameters | steps | test bits/dim ({args.test_images} images) |")
    print("| --- | --- | --- | --- |")
    for name, r in results["bits"].items():
        bound = "−ELBO, exact" if "prior" in name else f"IW-NLL, K = {args.samples}"
        print(
            f"| {name} | {r['parameters']:,} | {r['steps']:,} | {r['bits_per_dim']:.4f} ± {r['bits_per_dim_se']:.4f} "
            f"({bound}) |"
        )


if __name__ == "__main__":
    main()
