"""``vae sample``: images drawn from a trained model's prior, as one PNG grid.

    vae sample runs/vae/<id> --n 64 --temperature 0.8 --out grid.png
    vae sample runs/vae/<id>/checkpoints/best-epoch029.ckpt --labels 3 7 --n 8   # a conditional model

A conditional model draws one row of ``--n`` images per class (every class by default, or ``--labels``); the others
draw ``--n`` images in a square grid. ``temperature`` scales the prior's spread (1: the model's own samples; below 1:
closer to the prior's mean, smoother). The draws are seeded (``--seed``): the same command gives the same grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from einops import repeat
from torchvision.utils import save_image

from vae.commands.common import check_device
from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.models.base import LatentVariableModel
from vae.models.pictures import grid, seeded
from vae.training.checkpoint_io import checkpoint_of, load
from vae.training.runs import check_output, describe_write_failure, unique_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def sample_grid(
    model: LatentVariableModel,
    *,
    n: int,
    temperature: float = 1.0,
    labels: Sequence[int] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """The grid of samples ``vae sample`` writes, (3, H, W) in [0, 1]: n images in a square grid, or, for a
    conditional model, one row of n images for each of ``labels`` (all its classes by default)."""
    device = next(model.parameters()).device
    if not model.capabilities.conditional:
        with seeded(model, seed):
            return grid(model.sample(n, temperature=temperature), max(1, math.isqrt(n - 1) + 1))
    classes = list(range(model.context_size)) if labels is None else list(labels)
    bad = [label for label in classes if not 0 <= label < model.context_size]
    if bad:
        raise ConfigError(f"--labels {bad[0]} is not a class of this model (0 to {model.context_size - 1})")
    context = repeat(torch.tensor(classes, device=device), "y -> (y s)", s=n)
    with seeded(model, seed):
        return grid(model.sample(len(context), temperature=temperature, context=context), n)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by vae fit, or its run folder")
    parser.add_argument("--n", type=int, help="images (per class for a conditional model; default 64, or 8 per class)")
    parser.add_argument("--temperature", type=float, default=1.0, help="the prior's spread is scaled by it (default 1)")
    parser.add_argument("--labels", type=int, nargs="+", help="a conditional model's classes (default all)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: <checkpoint>.samples.png beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be a positive integer, got {args.n}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        parser.error(f"--temperature must be 0 or more (1: the model's own spread), got {args.temperature}")
    try:
        device = check_device(args.device)
        checkpoint = checkpoint_of(args.checkpoint)
        out = args.out or unique_path(checkpoint.with_suffix(".samples.png"))
        check_output(out, overwrite=args.overwrite, kinds=IMAGE_SUFFIXES, what="the grid")
        model = load(checkpoint, device=device)
        if args.labels is not None and not model.capabilities.conditional:
            raise ConfigError("--labels is for a conditional model; this model is not conditional")
        n = args.n or (8 if model.capabilities.conditional else 64)
        image = sample_grid(model, n=n, temperature=args.temperature, labels=args.labels, seed=args.seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, out)
    except UserError as error:
        exit_with_error(str(error), command="vae sample")
    except OSError as error:
        exit_with_error(describe_write_failure(error), command="vae sample")
    rows = (
        f"{len(args.labels or range(model.context_size))} classes × {n}" if model.capabilities.conditional else f"{n}"
    )
    print(f"{rows} samples at temperature {args.temperature:g}: {out}")
