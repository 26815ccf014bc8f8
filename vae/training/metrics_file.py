"""A run's metrics on its own disk, beside W&B: ``<run>/metrics.csv``, and its training curves as a PNG.

Every ``vae fit`` writes, besides W&B, one row per logged value to ``<run>/metrics.csv``: ``step,metric,value``
(the trainer's global step, the metric's name as W&B has it, e.g. ``train/kl`` or ``val/elbo``). Rows are appended and
flushed as they are logged, so a killed job keeps them; a resumed run appends too, and where it logs a step again
the later row wins (``read_metrics``). ``plot_curves`` draws recon, KL, ELBO, the KL weight and each layer's KL
against the step (``vae plot``, and the fit report's ``curves.png``).

    import pandas as pd
    metrics = pd.read_csv("runs/vae/<run id>/metrics.csv").pivot_table(index="step", columns="metric", values="value")
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from vae.core.errors import DataError

METRICS_FILE = "metrics.csv"
Series = dict[str, list[tuple[int, float]]]
"""Each metric's (step, value) pairs, by step."""


class MetricsFile(Logger):
    """Lightning logger that appends every logged value to ``<run>/metrics.csv`` (rank zero only).

    folder: the run folder, asked for at the first write (W&B names the run folder once its run has started).
    """

    def __init__(self, folder: Callable[[], Path]) -> None:
        super().__init__()
        self.folder = folder
        self.path: Path | None = None

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's config is its ``config.yaml``."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float | Tensor], step: int | None = None) -> None:
        if self.path is None:
            self.path = self.folder() / METRICS_FILE
            self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(["step", "metric", "value"])
            for name, value in metrics.items():
                if name == "epoch" or name.startswith("trainer/"):
                    continue
                number = float(value.item() if isinstance(value, Tensor) else value)
                writer.writerow([-1 if step is None else int(step), name, repr(number)])


def read_metrics(path: str | Path) -> Series:
    """Each metric's (step, value) pairs from a ``metrics.csv``, sorted by step; a step logged twice (a resumed run
    repeating steps after its checkpoint) keeps the later value."""
    values: dict[str, dict[int, float]] = {}
    try:
        with open(path, newline="") as file:
            rows = csv.DictReader(file)
            if rows.fieldnames != ["step", "metric", "value"]:
                raise DataError(f"{path} is not a run's metrics.csv (its columns are not step, metric, value)")
            for row in rows:
                values.setdefault(row["metric"], {})[int(row["step"])] = float(row["value"])
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} is not a run's metrics.csv ({error})") from error
    return {name: sorted(points.items()) for name, points in values.items()}


PANELS = (  # (title, y label, the metrics drawn in it: a name, or a prefix ending in "/")
    ("reconstruction", "−E_q[log p(x|z)] (nats)", ("train/recon", "val/recon", "test/recon")),
    ("KL, raw", "D_KL(q ‖ p) (nats)", ("train/kl", "val/kl", "test/kl")),
    ("ELBO", "ELBO (nats, unweighted)", ("train/elbo", "val/elbo", "test/elbo")),
    ("KL weight", "weight", ("train/kl_weight", "train/kl_weight/")),
    # each layer's KL, or a model's KL terms: a diffusion model's kl/prior and diffusion (docs/metrics.md)
    (
        "KL per layer or term",
        "nats",
        ("train/kl/", "val/kl/", "test/kl/", "train/diffusion", "val/diffusion", "test/diffusion"),
    ),
)


def panels(series: Series) -> list[tuple[str, str, list[str]]]:
    """The panels that have something to draw, each with the metrics it draws."""
    found = []
    for title, label, wanted in PANELS:
        names = [n for w in wanted for n in sorted(series) if (n.startswith(w) if w.endswith("/") else n == w)]
        if names:
            found.append((title, label, names))
    return found


def has_curves(series: Series) -> bool:
    """Whether some panel has a curve to draw: a metric with at least two points (a run of a few steps has none)."""
    return any(len(series[name]) >= 2 for _, _, names in panels(series) for name in names)


def plot_curves(series: Series, out: Path, *, title: str = "") -> Path:
    """Draw the training curves (every panel of ``PANELS`` that has data) against the step into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels(series)
    if not chosen:
        raise DataError(
            f"nothing to plot: none of recon, kl, elbo, kl_weight was logged ({', '.join(series) or 'no metrics'})"
        )
    columns = min(3, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for ax, (name, label, names) in zip(axes.flat, chosen):
        for metric in names:
            steps, values = zip(*series[metric])
            style = {"lw": 1} if metric.startswith("train/") else {"marker": "o", "ms": 3}  # val, test: points
            ax.plot(steps, values, label=metric, **style)
        ax.set(title=name, xlabel="step", ylabel=label)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
