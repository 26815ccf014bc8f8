"""A variational diffusion model against the VAEs on 8-bit Fashion-MNIST, for the same wall time each.

Each trains through the real ``vae fit``, one after the other, for ``--minutes`` of wall time, on the same 8-bit
grey levels (no binarization), every likelihood a distribution over the 256 values:

    VDM         configs/vdm_fashion_mnist.yaml: a learned schedule, a U-Net with Fourier features, p(x|z_0) over
                the 256 values
    VAE         configs/fashion_mnist.yaml with 32 latent dimensions, IAF (configs/posteriors/iaf.yaml: the best
                single-layer posterior of docs/posteriors.md) and the discretized logistic mixture likelihood
    hierarchy   configs/hvae_fashion_mnist.yaml without binarization, with the discretized logistic mixture

Each is scored on the first ``--test-images`` test images (the best checkpoint by validation ELBO): the VAEs by the
importance-weighted −log p(x) with ``--samples`` samples per image, the VDM by its continuous-time ELBO averaged over
``--draws`` draws of (t, ε) per image and by its T = 1000 discrete-time ELBO from as many draws, all in bits/dim
with the standard error over the images (and, for the VDM, the Monte-Carlo standard error of the average). Also the
steps each run took, the step of its best checkpoint, its wall time per step (a batch, forward, backward and Adam, timed
after the runs) and a grid of samples each (``<out>/samples-<name>.png``). Prints Markdown tables.

    python scripts/diffusion_benchmark.py --minutes 15 --out runs/bench/diffusion
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from timed_runs import REPO, steps_of, test_batches, train
from torchvision.utils import save_image

from vae.core.pixels import as_unit
from vae.metrics.likelihood import bits_per_dim
from vae.models.pictures import grid, seeded
from vae.training.checkpoint_io import load_module

LOGISTIC = ["--model.model.init_args.likelihood", "vae.layers.likelihoods.DiscretizedLogisticMixture"]
RUNS = {
    "VDM": ["--config", str(REPO / "configs" / "vdm_fashion_mnist.yaml")],
    "VAE": [
        "--config", str(REPO / "configs" / "fashion_mnist.yaml"),
        "--config", str(REPO / "configs" / "posteriors" / "iaf.yaml"),
        "--model.model.init_args.latent_dim", "32",
        *LOGISTIC,
    ],
    "hierarchy": [
        "--config", str(REPO / "configs" / "hvae_fashion_mnist.yaml"),
        "--data.init_args.binarize", "none",
        *LOGISTIC,
    ],
}  # fmt: skip


@torch.no_grad()
def score(model, batches: list, *, samples: int, draws: int) -> dict[str, torch.Tensor]:
    """Per test image, nats: the VAEs' importance-weighted log p(x); the VDM's ELBO averaged over ``draws`` draws in
    continuous time, its Monte-Carlo variance, and its T = 1000 ELBO from as many draws."""
    torch.manual_seed(0)
    model.eval()
    found: dict[str, list[torch.Tensor]] = {}
    for images, _ in batches:
        x = as_unit(images)
        if model.capabilities.likelihood_bound:
            continuous = model.elbo_draws(x, samples=draws, chunk_size=10).double()
            found.setdefault("log_px", []).append(continuous.mean(dim=0))
            found.setdefault("mc_variance", []).append(continuous.var(dim=0) / draws)
            model.timesteps = 1000
            discrete = model.elbo_draws(x, samples=draws, chunk_size=10).double()
            model.timesteps = None
            found.setdefault("discrete", []).append(discrete.mean(dim=0))
        else:
            found.setdefault("log_px", []).append(model.log_likelihood(x, samples=samples, chunk_size=100).double())
    return {name: torch.cat(values) for name, values in found.items()}


def step_time(module, batch: torch.Tensor, *, steps: int = 20) -> tuple[float, float]:
    """Seconds per training step (forward, backward, Adam) on one batch: mean and standard error over ``steps``."""
    model, objective = module.model.train(), module.objective
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 3):
        start = time.perf_counter()
        loss = objective(model(batch, step=10**6 + step), step=10**6, training=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    kept = torch.tensor(times[3:])
    return float(kept.mean()), float(kept.std() / math.sqrt(len(kept)))


def report(results: dict) -> str:
    lines = [
        "| model | steps trained (best at) | test bits/dim | estimator | s/step |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        how = f"ELBO, {r['draws']} draws (MC SE {r['mc_se']:.4f})" if "mc_se" in r else f"IW-NLL, K = {r['samples']}"
        lines.append(
            f"| {name} | {r['steps']:,} ({r['best_step']:,}) | {r['bpd']:.4f} ± {r['bpd_se']:.4f} | {how} | "
            f"{r['step_time']:.3f} ± {r['step_time_se']:.3f} |"
        )
    vdm = results.get("VDM")
    if vdm is not None:
        gap = 100 * (vdm["discrete_bpd"] - vdm["bpd"]) / vdm["bpd"]
        lines += [
            "",
            f"VDM: continuous-time {vdm['bpd']:.4f} bits/dim, T = 1000 {vdm['discrete_bpd']:.4f} ({gap:+.2f} %); "
            f"learned log-SNR from {vdm['log_snr_0']:.2f} (t = 0) to {vdm['log_snr_1']:.2f} (t = 1)",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "diffusion")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="importance samples per image for the VAEs")
    parser.add_argument("--draws", type=int, default=100, help="draws of the VDM's ELBO per image")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--report-only", action="store_true", help="print the tables of an earlier run again")
    args = parser.parse_args()
    results_file = args.out / "results.json"
    if args.report_only:
        print(report(json.loads(results_file.read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = {}
    for name in args.only:
        print(f"training {name} for {args.minutes} min", flush=True)
        checkpoints[name], _ = train(name, RUNS[name], minutes=args.minutes, out=args.out)
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name, checkpoint in checkpoints.items():
        print(f"scoring {name}", flush=True)
        module = load_module(checkpoint)
        model = module.model
        batches = test_batches(checkpoint, limit=args.test_images, batch_size=100)
        found = score(model, batches, samples=args.samples, draws=args.draws)
        shape = model.image_shape
        to_bits = 1 / (math.prod(shape) * math.log(2))
        nll = -found["log_px"]
        result = {
            "steps": steps_of(checkpoint.parent / "last.ckpt"),
            "best_step": steps_of(checkpoint),
            "bpd": bits_per_dim(float(nll.mean()), shape),
            "bpd_se": float(nll.std() / math.sqrt(len(nll))) * to_bits,
            "images": len(nll),
        }
        if "discrete" in found:
            result |= {
                "draws": args.draws,
                "mc_se": float(found["mc_variance"].sum().sqrt() / len(nll)) * to_bits,
                "discrete_bpd": bits_per_dim(-float(found["discrete"].mean()), shape),
                "log_snr_0": -float(model.schedule.endpoints()[0].detach()),
                "log_snr_1": -float(model.schedule.endpoints()[1].detach()),
            }
        else:
            result["samples"] = args.samples
        with seeded(model, 0):
            save_image(grid(model.sample(36), 6), args.out / f"samples-{name}.png")
        batch = as_unit(batches[0][0][:64])
        result["step_time"], result["step_time_se"] = step_time(module, batch)
        results[name] = result
        results_file.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
