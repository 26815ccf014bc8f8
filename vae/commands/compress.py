"""``vae compress``: lossless compression of images with a trained model, by bits-back coding (``vae.coding``).

    vae compress runs/vae/<id> --split test --out images.vae          # a split of the run's data
    vae compress runs/vae/<id> --images photos/ --out photos.vae      # a folder of images, or a .npz
    vae decompress images.vae --out images/                           # PNG files (or --out images.npz)

The file's size per image is, on average, the model's negative ELBO with discretized latents, plus the initial bits
(once per file) and the coder's overhead. It prints, in bits per dimension and per image: the file, the model's
negative ELBO on the same images (averaged over ``--elbo-samples`` draws), the difference, the per-image costs the
coder measured (the reconstruction term, the latents' prior term and the bits back), the initial bits, and the same
images under gzip, bz2, lzma and PNG; ``--json`` writes all of it with every image's numbers.

A model with a discrete likelihood (Bernoulli on binary images; discretized logistic, or its mixture, on 8-bit ones)
whose latents factorize per dimension is coded: the single-layer VAE and the hierarchy (diagonal Gaussian posteriors,
a StandardNormal or LearnedGaussian prior), a VQ model (its codes under the uniform prior) and a VQ model's learned
prior. Anything else is refused in one line before anything is written.

Images of a split come from the run's config in the split's order; a binarized split is binarized once with the data's
seed (dynamic binarization binarizes the validation and test splits once, with that seed, too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vae.coding.baselines import baseline_bits
from vae.coding.bitsback import BitsBackCoder, Coded, deterministic, machine
from vae.coding.container import FORMAT, Container
from vae.coding.images import Images, read_images
from vae.commands.common import check_device, load_data, run_config_of
from vae.core.checkpoints import fingerprint
from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.core.spec import to_spec
from vae.models.base import LatentVariableModel
from vae.training.checkpoint_io import checkpoint_of, load
from vae.training.runs import check_output, describe_write_failure

LN2 = float(np.log(2.0))


def split_images(checkpoint: Path, config: Path | None, split: str, limit: int | None) -> Images:
    """The images of a split of the run's data, in its order (the first ``limit``), as uint8 values or floats."""
    config_path, run_config = run_config_of(checkpoint, config)
    data = load_data(run_config, config_path, batch_size=500)
    data.check_files()
    data.setup(split)
    batches, count = [], 0
    for batch in data.loader(split, shuffle=False):
        x = batch[0] if isinstance(batch, list | tuple) else batch
        batches.append(x)
        count += len(x)
        if limit is not None and count >= limit:
            break
    if not batches:
        raise ConfigError(f"the {split} split is empty")
    return Images(values=torch.cat(batches)[:limit])


def values_of(model: LatentVariableModel, images: Images) -> tuple[torch.Tensor, int]:
    """The values the coder codes (n, c, h, w) and the scale that gives back the array read (255 for binary images
    stored as 0 and 255); one-line errors for images of another shape or kind."""
    x = images.values
    if len(x) == 0:
        raise ConfigError("there are no images to compress: give at least one")
    if tuple(x.shape[1:]) != tuple(model.image_shape):
        raise ConfigError(
            f"the images are {'×'.join(map(str, x.shape[1:]))} and the model takes "
            f"{'×'.join(map(str, model.image_shape))}: give images of the model's shape"
        )
    scale = 1
    if x.dtype == torch.uint8 and model.likelihood.levels == 2:
        if int(x.max()) <= 1:  # 0/1 values
            x = x.float()
        else:
            scale = 255
    return model.likelihood.symbols(x), scale


def elbo_bits(model: LatentVariableModel, values: torch.Tensor, *, draws: int, batch_size: int, device) -> np.ndarray:
    """−ELBO per image in bits, the mean of ``draws`` single-draw estimates (continuous latents), (n,)."""
    levels = model.likelihood.levels
    out = []
    for start in range(0, len(values), batch_size):
        x = values[start : start + batch_size].to(device).float() / (levels - 1)
        out.append(-model.elbo_draws(x, samples=draws, chunk_size=draws).mean(dim=0).double().cpu())
    return torch.cat(out).numpy() / LN2


def header_of(model, checkpoint: Path, images: Images, values, scale, coded: Coded, coder, threads, device, source):
    return {
        "format": FORMAT,
        "model": {
            "class": type(model).__name__,
            "fingerprint": fingerprint(to_spec(model), model.state_dict()),
            "checkpoint": str(checkpoint),  # as given: decompress from where it was compressed, or give --run
        },
        "images": {
            "count": len(values),
            "shape": list(model.image_shape),
            "levels": coder.levels,
            "scale": scale,
            "layout": images.layout,
            "names": images.names,
            "source": source,
        },
        "coder": {
            "library": "constriction",
            "latent_bits": coder.latent_bits,
            "pixel_rows": coder.pixel_rows,
            "table_elements": coder.table_elements,
            "batches": coded.batches,
            "checksums": coded.checksums,
            "digest": coded.digest,
            "initial_words": coded.initial_words,
            "seed": coder.seed,
            "threads": threads,
            "device": device.type,
        },
        **machine(),
    }


def summary(coded: Coded, elbo: np.ndarray, baselines: dict[str, int], *, dims: int, file_bits: int) -> dict:
    """The numbers the command prints and ``--json`` writes: totals in bits per dimension, and each image's."""
    n = len(elbo)
    per_dim = 1.0 / (n * dims)
    costs = coded.costs
    initial, stack = 32 * coded.initial_words, 32 * len(coded.words)
    return {
        "images": n,
        "dims_per_image": dims,
        "file_bytes": file_bits // 8,
        "header_bytes": (file_bits - stack) // 8,
        "bits_per_dim": {
            "file": file_bits * per_dim,
            "stack": stack * per_dim,
            "neg_elbo": float(elbo.sum()) * per_dim,
            "coded": float(costs.net.sum()) * per_dim,
            "initial": initial * per_dim,
            **{name: bits * per_dim for name, bits in baselines.items()},
        },
        "difference_percent": 100.0 * (file_bits - elbo.sum()) / elbo.sum(),
        "stack_difference_percent": 100.0 * (stack - elbo.sum()) / elbo.sum(),
        "initial_bits": initial,
        "per_image_bits": {
            "coded": costs.net.tolist(),
            "neg_elbo": elbo.tolist(),
            "pixels": costs.pixels.tolist(),
            "latents": costs.latents.tolist(),
            "bits_back": costs.bits_back.tolist(),
        },
    }


def report(numbers: dict, *, per_image: bool, seconds: float) -> str:
    bpd, n, dims = numbers["bits_per_dim"], numbers["images"], numbers["dims_per_image"]
    rows = [
        ("file", bpd["file"], f"the whole file, with its header ({numbers['header_bytes']} bytes)"),
        ("coded stack", bpd["stack"], "the file less its header"),
        ("model −ELBO", bpd["neg_elbo"], "the model's own (continuous latents), the mean over draws"),
        ("coded −ELBO", bpd["coded"], "each image's pixels + latents − bits back, discretized latents"),
        ("initial bits", bpd["initial"], f"{numbers['initial_bits']} bits, once per file"),
    ]
    rows += [(name, bpd[name], "") for name in ("gzip", "bz2", "lzma", "png") if name in bpd]
    lines = [f"{'':14}{'bits/dim':>10}{'bits/image':>12}"]
    lines += [f"{name:14}{value:10.4f}{value * dims:12.1f}  {note}".rstrip() for name, value, note in rows]
    lines.append(
        f"the file is {numbers['difference_percent']:+.2f} % from the model's −ELBO (the stack "
        f"{numbers['stack_difference_percent']:+.2f} %); {n / seconds:.1f} images/s"
    )
    if per_image:
        per = numbers["per_image_bits"]
        lines.append(f"{'image':>6}{'coded':>10}{'−ELBO':>10}{'pixels':>10}{'latents':>10}{'back':>10}  (bits/dim)")
        for i in range(n):
            values = [per[k][i] / dims for k in ("coded", "neg_elbo", "pixels", "latents", "bits_back")]
            lines.append(f"{i:6d}" + "".join(f"{v:10.4f}" for v in values))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae compress", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by vae fit, or its run folder")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", choices=("train", "val", "test"), help="a split of the run's data (default test)")
    source.add_argument("--images", type=Path, help="a folder of images, or a .npz with an 'images' uint8 array")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (.vae)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out (and --json) if they exist")
    parser.add_argument("--limit", type=int, help="compress only the first N images")
    parser.add_argument("--latent-bits", type=int, default=10, help="2^bits buckets per latent dimension (default 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per network pass (default 64)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; recorded for decompression)")
    parser.add_argument("--elbo-samples", type=int, default=8, help="draws per image for the −ELBO (default 8)")
    parser.add_argument("--no-baselines", action="store_true", help="skip gzip, bz2, lzma and PNG")
    parser.add_argument("--per-image", action="store_true", help="print every image's numbers (always in --json)")
    parser.add_argument("--json", type=Path, help="write the numbers, every image's too, to this .json")
    parser.add_argument("--config", type=Path, help="the run's config (default: <run>/config.yaml)")
    parser.add_argument("--device", default="cpu", help="where the networks run (default cpu)")
    args = parser.parse_args(argv)
    for name in ("limit", "batch_size", "threads", "elbo_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not 1 <= args.latent_bits <= 16:
        parser.error(f"--latent-bits must be in [1, 16] (2 to 65,536 buckets per latent), got {args.latent_bits}")
    try:
        device = check_device(args.device)
        check_output(args.out, overwrite=args.overwrite, kinds=(".vae",), what="the compressed images")
        if args.json is not None:
            check_output(args.json, overwrite=args.overwrite, kinds=(".json",), what="the numbers")
        checkpoint = checkpoint_of(args.checkpoint)
        model = load(checkpoint, device=device)
        coder = BitsBackCoder(model, latent_bits=args.latent_bits, batch_size=args.batch_size)
        split = args.split or ("test" if args.images is None else None)
        if args.images is not None:
            images = read_images(args.images, model.image_shape[0])
            names = None if images.names is None else images.names[: args.limit]
            images = Images(values=images.values[: args.limit], names=names, layout=images.layout)
        else:
            images = split_images(checkpoint, args.config, split, args.limit)
        values, scale = values_of(model, images)
        threads = args.threads or torch.get_num_threads()
        deterministic(threads, device)
        coder.latent_dims()  # a layer the coder cannot take is refused here, before any work
        start = time.perf_counter()
        with tqdm(total=len(values), desc="compressing", unit="image", leave=False, disable=None) as bar:
            coded = coder.encode(values, progress=bar.update)
        seconds = time.perf_counter() - start
        source_name = f"split {split}" if split else str(args.images)
        header = header_of(model, checkpoint, images, values, scale, coded, coder, threads, device, source_name)
        container = Container(header=header, words=coded.words)
        size = len(container.to_bytes())
        torch.manual_seed(0)  # the −ELBO's draws (the command restores the caller's random state)
        elbo = elbo_bits(model, values, draws=args.elbo_samples, batch_size=args.batch_size, device=device)
        baselines = {} if args.no_baselines else baseline_bits(values, levels=coder.levels)
        dims = int(np.prod(model.image_shape))
        numbers = summary(coded, elbo, baselines, dims=dims, file_bits=8 * size)
        numbers["seconds"] = seconds
        numbers["latent_bits"] = coder.latent_bits
        container.write(args.out)  # last: a failure before it leaves nothing
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(numbers, indent=1))
    except UserError as error:
        exit_with_error(str(error), command="vae compress")
    except OSError as error:
        exit_with_error(describe_write_failure(error), command="vae compress")
    shape = "×".join(map(str, model.image_shape))
    print(
        f"compressed {len(values)} images ({shape}, {coder.levels} levels) from {source_name} with {checkpoint} "
        f"into {args.out}: {size:,} bytes"
    )
    print(report(numbers, per_image=args.per_image or len(values) <= 16, seconds=seconds))
    if args.json is not None:
        print(f"numbers: {args.json}")
