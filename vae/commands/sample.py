"""``vae sample``: images drawn from a trained model's prior, as one PNG grid.

    vae sample runs/vae/<id> --n 64 --temperature 0.8 --out grid.png
    vae sample runs/vae/<id>/checkpoints/best-epoch029.ckpt --labels 3 7 --n 8   # a conditional model

    vae sample runs/vae/<id> --sampler gmm     # codes from a Gaussian mixture fitted to the training codes

A conditional model draws one row of ``--n`` images per class (every class by default, or ``--labels``); the others
draw ``--n`` images in a square grid. ``temperature`` scales the prior's spread (1: the model's own samples; below 1:
closer to the prior's mean, smoother). The draws are seeded (``--seed``): the same command gives the same grid.

``--sampler gmm`` or ``flow`` draws the codes from a density fitted to where the training images' codes are (the
aggregate posterior; ``vae.models.samplers``) instead of the prior, and decodes them. The first such call fits it to
the training split (a progress bar), prints how well it fits held-out codes and saves it beside the checkpoint
(``<checkpoint>.sampler-gmm.pt``); later calls reuse it (``--refit`` fits it again). A saved sampler is refused for any
other model.

A diffusion model (``vae.models.VDM``) samples by ancestral sampling over ``--steps`` steps (its ``sampling_steps`` by
default; a progress bar); ``--images`` also writes, beside the grid, the same draws at several numbers of steps and
the denoising trajectory of a few samples (``<grid>.steps.png``, ``<grid>.trajectory.png``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from einops import repeat
from torchvision.utils import save_image
from tqdm.auto import tqdm

from vae.commands.common import check_device, load_data, run_config_of
from vae.core.checkpoints import fingerprint
from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.core.spec import to_spec
from vae.metrics.likelihood import encode_split
from vae.models.base import LatentVariableModel
from vae.models.pictures import grid, seeded
from vae.models.samplers import SAMPLERS, CodeSampler, fit_sampler, load_sampler, save_sampler
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
    steps: int | None = None,
) -> torch.Tensor:
    """The grid of samples ``vae sample`` writes, (3, H, W) in [0, 1]: n images in a square grid, or, for a
    conditional model, one row of n images for each of ``labels`` (all its classes by default)."""
    device = next(model.parameters()).device
    if steps is not None and not model.capabilities.sampling_steps:
        raise ConfigError(
            f"--steps is for a model that samples by a chain of steps (a diffusion model), not {type(model).__name__}"
        )
    chain = {"steps": steps} if steps is not None else {}
    if not model.capabilities.conditional:
        with seeded(model, seed):
            return grid(model.sample(n, temperature=temperature, **chain), max(1, math.isqrt(n - 1) + 1))
    classes = list(range(model.context_size)) if labels is None else list(labels)
    bad = [label for label in classes if not 0 <= label < model.context_size]
    if bad:
        raise ConfigError(f"--labels {bad[0]} is not a class of this model (0 to {model.context_size - 1})")
    context = repeat(torch.tensor(classes, device=device), "y -> (y s)", s=n)
    with seeded(model, seed):
        return grid(model.sample(len(context), temperature=temperature, context=context), n)


def fitted_sampler(
    model: LatentVariableModel, checkpoint: Path, kind: str, *, refit: bool, config: Path | None, device: torch.device
) -> CodeSampler:
    """The ``kind`` sampler of this checkpoint: the one saved beside it, or fitted now to the training split's codes
    (and saved)."""
    abilities = model.capabilities
    if not abilities.continuous_code or abilities.conditional:
        raise ConfigError(
            f"--sampler {kind} fits the codes of a model with one continuous code that decode takes back, and "
            f"{type(model).__name__} has {'a conditional code' if abilities.conditional else 'none'}: use the prior"
        )
    path = checkpoint.with_suffix(f".sampler-{kind}.pt")
    stamp = fingerprint(to_spec(model), model.state_dict())
    dim = int(model.prior_distribution().event_shape[0])  # a continuous code has a prior over it
    if path.exists() and not refit:
        return load_sampler(path, fingerprint=stamp, dim=dim).to(device)
    config_path, run_config = run_config_of(checkpoint, config)
    data = load_data(run_config, config_path, batch_size=500)
    data.check_files()
    data.setup("fit")
    loader = data.loader("train", shuffle=False)
    codes = encode_split(
        model, tqdm(loader, desc="encoding the training split", leave=False, disable=None), device=device
    )["mean"]
    fitted = fit_sampler(kind, codes)
    save_sampler(path, fitted.sampler, fingerprint=stamp)
    print(
        f"fitted the {kind} sampler to {fitted.train_codes} training codes: log-density {fitted.train_log_prob:.2f} "
        f"nats per code on them, {fitted.held_out_log_prob:.2f} on {fitted.held_out_codes} held out; saved: {path}"
    )
    return fitted.sampler.to(device)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by vae fit, or its run folder")
    parser.add_argument("--n", type=int, help="images (per class for a conditional model; default 64, or 8 per class)")
    parser.add_argument("--temperature", type=float, default=1.0, help="the prior's spread is scaled by it (default 1)")
    parser.add_argument("--labels", type=int, nargs="+", help="a conditional model's classes (default all)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: <checkpoint>.samples.png beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument(
        "--sampler",
        choices=("prior", *SAMPLERS),
        default="prior",
        help="where the codes come from: the prior (default), or a gmm or flow fitted to the training codes",
    )
    parser.add_argument("--refit", action="store_true", help="fit the --sampler again, replacing the saved one")
    parser.add_argument("--config", type=Path, help="the run's config, for the training data (default: the run's)")
    parser.add_argument("--steps", type=int, help="a diffusion model's sampling steps (default: its sampling_steps)")
    parser.add_argument(
        "--images",
        action="store_true",
        help="a diffusion model: also the draws at several step counts, and a trajectory",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be a positive integer, got {args.n}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
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
        if args.images and not model.capabilities.sampling_steps:
            raise ConfigError(
                f"--images shows a chain of sampling steps, and {type(model).__name__} samples in one pass"
            )
        if args.sampler == "prior":
            image = sample_grid(
                model, n=n, temperature=args.temperature, labels=args.labels, seed=args.seed, steps=args.steps
            )
        else:
            sampler = fitted_sampler(
                model, checkpoint, args.sampler, refit=args.refit, config=args.config, device=device
            )
            with seeded(model, args.seed), torch.no_grad():
                image = grid(model.decode(sampler.sample(n, temperature=args.temperature)), math.isqrt(n - 1) + 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, out)
        extra = []
        if args.images:
            counts = tuple(sorted({16, 64, args.steps})) if args.steps else ()  # () the model's: 16, 64, its default
            drawn = model.sampling_pictures(
                min(n, 16), seed=args.seed, temperature=args.temperature, step_counts=counts
            )
            for name, picture in drawn.items():
                path = unique_path(out.with_suffix(f".{name}{out.suffix}"))
                save_image(picture, path)
                extra.append(path)
    except UserError as error:
        exit_with_error(str(error), command="vae sample")
    except OSError as error:
        exit_with_error(describe_write_failure(error), command="vae sample")
    rows = (
        f"{len(args.labels or range(model.context_size))} classes × {n}" if model.capabilities.conditional else f"{n}"
    )
    source = "" if args.sampler == "prior" else f" from the {args.sampler} sampler"
    chain = f", {args.steps or model.sampling_steps} steps" if model.capabilities.sampling_steps else ""
    print(f"{rows} samples{source} at temperature {args.temperature:g}{chain}: {out}")
    for path in extra:
        print(f"written: {path}")
