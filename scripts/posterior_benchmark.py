"""Posterior families for the same wall time on statically binarized Fashion-MNIST: the diagonal Gaussian, the full
covariance, orthogonal Sylvester flows and IAF.

Each trains through the real ``vae fit``, one after the other, for ``--minutes`` of wall time:
``configs/fashion_mnist.yaml`` with 32 latent dimensions, a Bernoulli likelihood and static binarization (the grey
levels binarized once, seeded by the data module's seed 0), with the posterior of ``configs/posteriors/``. Each is
then scored on the first ``--test-images`` test images with ``--samples`` importance samples per image, from one set
of draws:

    IW-NLL     −log (1/K) Σ_k w_k                       the importance-weighted estimate of −log p(x)
    ELBO       (1/K) Σ_k log w_k                          its expectation over q, estimated from K draws
    gap        log (1/K) Σ_k w_k − (1/K) Σ_k log w_k       ≤ E KL(q(z|x) ‖ p(z|x)): how far q is from the true posterior

each with its standard error over the images, and the differences from the diagonal posterior paired over the same
images. Also the active units, the steps each run took in its wall time (and the step of its best checkpoint by
validation ELBO, the one scored), and the wall time of a training step (forward, backward and Adam on a batch of 128,
timed after the run, mean ± standard error over ``--timed-steps``; ``--time-only`` times them again on a quiet
machine). Prints Markdown tables (``--report-only`` prints them again).

    python scripts/posterior_benchmark.py --minutes 15 --out runs/bench/posteriors
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from timed_runs import REPO, steps_of, test_batches, train

from vae.core.pixels import as_unit
from vae.metrics.likelihood import evaluate
from vae.training.checkpoint_io import load_module

BASE = [
    "--config", str(REPO / "configs" / "fashion_mnist.yaml"),
    "--model.model.latent_dim", "32",
    "--model.model.likelihood", "vae.layers.likelihoods.Bernoulli",
    "--data.init_args.binarize", "static",
]  # fmt: skip
POSTERIORS = {
    "diagonal": [],
    "full covariance": ["--config", str(REPO / "configs" / "posteriors" / "full_covariance.yaml")],
    "Sylvester": ["--config", str(REPO / "configs" / "posteriors" / "sylvester.yaml")],
    "IAF": ["--config", str(REPO / "configs" / "posteriors" / "iaf.yaml")],
}


@torch.no_grad()
def per_image(model, batches: list, *, test_images: int, samples: int, chunk: int = 100) -> dict[str, torch.Tensor]:
    """log p(x) (importance-weighted) and the ELBO of each test image, from the same ``samples`` draws."""
    torch.manual_seed(0)
    log_px, elbo = [], []
    for images, _ in batches:
        x = as_unit(images)
        total, mean = None, torch.zeros(len(x), dtype=torch.float64)
        for start in range(0, samples, chunk):
            log_w = model.log_weights(x, min(chunk, samples - start)).double()  # (k, b)
            part = torch.logsumexp(log_w, dim=0)
            total = part if total is None else torch.logaddexp(total, part)
            mean += log_w.sum(dim=0)
        log_px.append(total - math.log(samples))
        elbo.append(mean / samples)
    return {"log_px": torch.cat(log_px)[:test_images], "elbo": torch.cat(elbo)[:test_images]}


def step_time(model, batches: list, *, steps: int) -> tuple[float, float]:
    """Seconds per training step (mean, standard error) on batches of 128: forward, backward, Adam."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = as_unit(torch.cat([images for images, _ in batches])[:128])
    times = []
    for i in range(steps + 3):  # 3 to warm up
        start = time.perf_counter()
        out = model(x)
        loss = -(out.log_px - out.kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    t = torch.tensor(times)
    return float(t.mean()), float(t.std() / math.sqrt(len(t)))


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def score(checkpoint: Path, *, test_images: int, samples: int, timed_steps: int) -> dict:
    module = load_module(checkpoint).eval()
    model = module.model
    batches = test_batches(checkpoint, test_images)
    images = per_image(model, batches, test_images=test_images, samples=samples)
    torch.save(images, checkpoint.parent.parent / "test_per_image.pt")  # for paired differences
    result = evaluate(model, batches, num_samples=1)
    nll, elbo, gap = (-images["log_px"]), images["elbo"], images["log_px"] - images["elbo"]
    seconds, seconds_se = step_time(model, batches, steps=timed_steps)
    return {
        "nll": mean_se(nll),
        "elbo": mean_se(elbo),
        "gap": mean_se(gap),
        "kl": result.kl,
        "active_units": result.active_units,
        "step_s": (seconds, seconds_se),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps_of(checkpoint),  # the best checkpoint's (by validation ELBO)
        "trained_steps": steps_of(checkpoint.parent / "last.ckpt"),  # all the run took in its wall time
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall time of each training run (15 or more)")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--timed-steps", type=int, default=30)
    parser.add_argument("--only", nargs="*", default=list(POSTERIORS), choices=list(POSTERIORS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/posteriors"))
    parser.add_argument("--score-only", action="store_true", help="score the runs already in --out, no training")
    parser.add_argument(
        "--time-only", action="store_true", help="time the steps of the runs already in --out again (a quiet machine)"
    )
    parser.add_argument("--report-only", action="store_true", help="print the tables of the results in --out")
    args = parser.parse_args()
    if args.report_only:
        report(json.loads((args.out / "results.json").read_text()), test_images=args.test_images, samples=args.samples)
        return
    results = args.out / "results.json"
    earlier = json.loads(results.read_text()) if results.is_file() else {}  # runs not redone stay in the table
    rows = {}
    for name in args.only:
        if args.time_only:
            model = load_module(Path(earlier[name]["checkpoint"])).model
            batches = test_batches(Path(earlier[name]["checkpoint"]), 200)
            seconds = step_time(model, batches, steps=args.timed_steps)
            trained = steps_of(Path(earlier[name]["checkpoint"]).parent / "last.ckpt")
            rows[name] = {**earlier[name], "step_s": seconds, "trained_steps": trained}
            (args.out / "results.json").write_text(json.dumps({**earlier, **rows}, indent=1))
            continue
        if args.score_only:
            checkpoint, wall = Path(earlier[name]["checkpoint"]), earlier[name]["wall_s"]
        else:
            checkpoint, wall = train(name, BASE + POSTERIORS[name], minutes=args.minutes, out=args.out)
        numbers = score(checkpoint, test_images=args.test_images, samples=args.samples, timed_steps=args.timed_steps)
        rows[name] = {"wall_s": wall, "checkpoint": str(checkpoint), **numbers}
        print(json.dumps({name: rows[name]}), flush=True)
        (args.out / "results.json").write_text(json.dumps({**earlier, **rows}, indent=1))
    report({**earlier, **rows}, test_images=args.test_images, samples=args.samples)


def report(rows: dict, *, test_images: int, samples: int) -> None:
    """The Markdown tables: each run's numbers, and the differences from the diagonal posterior, paired."""
    print(f"\ntest images: {test_images}; K = {samples}; nats per image, mean ± standard error\n")
    print(
        "| posterior | parameters | steps trained (best at) | test ELBO | test IW-NLL | inference gap | active units "
        "| s/step |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['parameters']:,} | {r.get('trained_steps', 0):,} ({r['steps']:,}) "
            f"| {r['elbo'][0]:.2f} ± {r['elbo'][1]:.2f} "
            f"| {r['nll'][0]:.2f} ± {r['nll'][1]:.2f} | {r['gap'][0]:.2f} ± {r['gap'][1]:.2f} | {r['active_units']} "
            f"| {r['step_s'][0]:.4f} ± {r['step_s'][1]:.4f} |"
        )
    if "diagonal" not in rows:
        return
    diagonal = torch.load(Path(rows["diagonal"]["checkpoint"]).parent.parent / "test_per_image.pt")
    print("\npaired over the same images, against the diagonal posterior (positive: better than diagonal)\n")
    print("| posterior | IW-NLL gain | ELBO gain | gap reduction |")
    print("| --- | --- | --- | --- |")
    for name, r in rows.items():
        if name == "diagonal":
            continue
        ours = torch.load(Path(r["checkpoint"]).parent.parent / "test_per_image.pt")
        gain = ours["log_px"] - diagonal["log_px"]
        elbo_gain = ours["elbo"] - diagonal["elbo"]
        gap_cut = (diagonal["log_px"] - diagonal["elbo"]) - (ours["log_px"] - ours["elbo"])
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in map(mean_se, (gain, elbo_gain, gap_cut))]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
