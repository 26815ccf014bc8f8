"""``vae plot``: a run's training curves (recon, KL, ELBO, KL weight, each layer's KL) as a PNG, without W&B.

    vae plot runs/vae/<run id>                        # writes runs/vae/<run id>/curves.png
    vae plot runs/vae/<run id>/metrics.csv --out curves.png
    vae plot runs/wandb/offline-run-<date>-<run id>/run-<run id>.wandb   # a W&B run file, read back locally

It reads the run's ``metrics.csv`` (``vae.training.metrics_file``), or a W&B run file (online or offline). The default
``curves.png`` beside the metrics is redrawn each time (``vae fit`` draws it at its end too); a file given with
``--out`` is not overwritten without ``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vae.commands.sample import IMAGE_SUFFIXES
from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.training.metrics_file import METRICS_FILE, Series, panels, plot_curves, read_metrics
from vae.training.runs import check_output, describe_write_failure
from vae.training.tracking import read_history


def read_series(path: Path) -> Series:
    """The metrics of a run folder (its ``metrics.csv``), a ``metrics.csv`` or a W&B ``.wandb`` run file."""
    if path.is_dir():
        if not (path / METRICS_FILE).is_file():
            raise ConfigError(
                f"{path} has no {METRICS_FILE}: give a run folder of vae fit, its metrics.csv, or a W&B run file "
                "(runs/wandb/<run>/run-<id>.wandb)"
            )
        path = path / METRICS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: give a run folder, its metrics.csv, or a W&B run file")
    if path.suffix == ".wandb":
        history = read_history(path)
        numeric = [
            key
            for key, points in history.series.items()
            if not key.startswith("trainer/") and all(isinstance(v, int | float) for _, v in points)
        ]  # not the images
        curves = {key: history.curve(key) for key in numeric}
        return {key: list(zip(map(int, steps), values)) for key, (steps, values) in curves.items() if steps}
    return read_metrics(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder, its metrics.csv, or a W&B run file (.wandb)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: <run>/curves.png, redrawn)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        series = read_series(args.run)
        folder = args.run if args.run.is_dir() else args.run.parent
        out = args.out or folder / "curves.png"
        if args.out is not None:
            check_output(out, overwrite=args.overwrite, kinds=IMAGE_SUFFIXES, what="the curves")
        plot_curves(series, out, title=str(args.run))
    except UserError as error:
        exit_with_error(str(error), command="vae plot")
    except OSError as error:
        exit_with_error(describe_write_failure(error), command="vae plot")
    print(f"training curves ({', '.join(title for title, _, _ in panels(series))}): {out}")
