"""The single-layer default against a hierarchical VAE for the same wall time, on statically binarized Fashion-MNIST.

Both train through the real ``vae fit``, one after the other, each for ``--minutes`` of wall time
(``trainer.max_time``): ``configs/fashion_mnist.yaml`` with 32 latent dimensions, a Bernoulli likelihood and
static binarization, and ``configs/hvae_fashion_mnist.yaml``. Each is then scored on the first
``--test-images`` test images: the importance-weighted log-likelihood with ``--samples`` samples per image (with
its standard error over the images), the KL of each layer, the active units, and sample grids (written beside
the runs). Prints a Markdown table.

    python scripts/hierarchical_benchmark.py --minutes 25 --out runs/bench/hierarchical

Binarization: Fashion-MNIST's grey levels are binarized once, seeded by the data module's seed (0): the training,
validation and test images are the same Bernoulli samples in every run (``vae.data.base``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from timed_runs import REPO, steps_of, test_batches, train

from vae.core.pixels import as_unit
from vae.metrics.likelihood import evaluate, importance_weighted_log_likelihood
from vae.models.pictures import all_pictures
from vae.training.checkpoint_io import load_module
from vae.training.images import save_grids

SINGLE = [
    "--config", str(REPO / "configs" / "fashion_mnist.yaml"),
    "--model.model.latent_dim", "32",
    "--model.model.likelihood", "vae.layers.likelihoods.Bernoulli",
    "--data.init_args.binarize", "static",
]  # fmt: skip
HIERARCHICAL = ["--config", str(REPO / "configs" / "hvae_fashion_mnist.yaml")]


@torch.no_grad()
def score(checkpoint: Path, *, test_images: int, samples: int) -> dict:
    module = load_module(checkpoint).eval()
    batches = test_batches(checkpoint, test_images, batch_size=100)
    torch.manual_seed(0)
    per_example = torch.cat(
        [
            importance_weighted_log_likelihood(module.model, as_unit(images), num_samples=samples)
            for images, _ in batches
        ]
    )[:test_images]
    result = evaluate(module.model, batches, num_samples=1)
    ranking = None if result.kl_per_dim is None else torch.tensor(result.kl_per_dim)
    grids = all_pictures(module.model, as_unit(batches[0][0][:32]), ranking)
    pictures = save_grids(grids, checkpoint.parent.parent / "pictures")
    torch.save(-per_example, checkpoint.parent.parent / "test_nll.pt")  # per image, for paired differences
    return {
        "nll": float(-per_example.mean()),
        "nll_se": float(per_example.std() / math.sqrt(len(per_example))),
        "elbo": result.elbo,
        "kl": result.kl,
        "kl_per_layer": result.kl_per_layer,
        "active_units": result.active_units_per_layer,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "steps": steps_of(checkpoint),
        "pictures": [str(p) for p in pictures],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="wall time of each training run (15 or more)")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/hierarchical"))
    parser.add_argument("--score-only", action="store_true", help="score the runs already in --out, no training")
    args = parser.parse_args()
    rows = {}
    earlier = json.loads((args.out / "results.json").read_text()) if args.score_only else {}
    for name, flags in (("single-layer", SINGLE), ("hierarchical", HIERARCHICAL)):
        if args.score_only:
            checkpoint, wall = Path(earlier[name]["checkpoint"]), earlier[name]["wall_s"]
        else:
            checkpoint, wall = train(name, flags, minutes=args.minutes, out=args.out)
        numbers = score(checkpoint, test_images=args.test_images, samples=args.samples)
        rows[name] = {"wall_s": wall, "checkpoint": str(checkpoint), **numbers}
        print(json.dumps({name: rows[name]}, indent=1), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    # The difference on the same test images, with the standard error of the paired differences.
    single, hierarchical = (torch.load(args.out / name / "test_nll.pt") for name in rows)
    difference = single - hierarchical
    print(
        f"single-layer − hierarchical test IW-NLL, paired over the same {len(difference)} images: "
        f"{float(difference.mean()):.2f} ± {float(difference.std() / math.sqrt(len(difference))):.2f} nats"
    )
    nll = f"test IW-NLL (K={args.samples}, {args.test_images} images)"
    print(f"\n| model | parameters | steps | wall | {nll} | ELBO | KL per layer | active units |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        kl = ", ".join(f"{k} {v:.2f}" for k, v in r["kl_per_layer"].items())
        au = ", ".join(f"{k} {v}" for k, v in r["active_units"].items())
        print(
            f"| {name} | {r['parameters']:,} | {r['steps']:,} | {r['wall_s'] / 60:.1f} min "
            f"| {r['nll']:.2f} ± {r['nll_se']:.2f} | {r['elbo']:.2f} | {kl} | {au} |"
        )


if __name__ == "__main__":
    main()
