"""``vae encode``: the posterior of every image of a split, as a NumPy file for your own analysis.

    vae encode runs/vae/<id> --split test --out latents.npz

The file holds ``mean`` and ``variance`` (n, d): q(z|x)'s mean and variance per image as ``model.encode`` gives them
(a hierarchy's top layer; discrete codes as probabilities), ``labels`` (n,) (or (n, factors)), and ``split`` and
``checkpoint``. A conditional model is given each image's label. The data come from the run's ``config.yaml``
(``--config`` to give another), in the split's order.

    import numpy as np
    latents = np.load("latents.npz")
    latents["mean"].shape, latents["labels"][:10]
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae.commands.common import check_device, load_data, run_config_of
from vae.core.errors import ArgumentParser, UserError, exit_with_error
from vae.metrics.likelihood import encode_split
from vae.training.checkpoint_io import checkpoint_of, load
from vae.training.runs import check_output, describe_write_failure, unique_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae encode", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by vae fit, or its run folder")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--out", type=Path, help="the .npz to write (default: <checkpoint>.<split>.latents.npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--config", type=Path, help="the run's config (default: <run>/config.yaml)")
    parser.add_argument("--batch-size", type=int, default=500, help="images per batch (default 500)")
    parser.add_argument("--limit", type=int, help="encode only the first N batches")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for name in ("batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    try:
        device = check_device(args.device)
        checkpoint = checkpoint_of(args.checkpoint)
        out = args.out or unique_path(checkpoint.with_suffix(f".{args.split}.latents.npz"))
        check_output(out, overwrite=args.overwrite, kinds=(".npz",), what="the latents")
        config_path, config = run_config_of(checkpoint, args.config)
        model = load(checkpoint, device=device)
        data = load_data(config, config_path, batch_size=args.batch_size)
        data.check_files()
        data.setup(args.split)
        loader = data.loader(args.split, shuffle=False)  # in the split's order, the training split's too
        arrays = {
            k: v.numpy() for k, v in encode_split(model, itertools.islice(loader, args.limit), device=device).items()
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        try:
            with open(partial, "wb") as file:  # whole or not at all
                np.savez(file, **arrays, split=np.array(args.split), checkpoint=np.array(str(checkpoint)))
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    except UserError as error:
        exit_with_error(str(error), command="vae encode")
    except OSError as error:
        exit_with_error(describe_write_failure(error), command="vae encode")
    n, d = arrays["mean"].shape
    print(f"encoded {n} {args.split} images: mean and variance ({n}, {d}), labels {arrays['labels'].shape}: {out}")
