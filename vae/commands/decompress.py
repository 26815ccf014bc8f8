"""``vae decompress``: the images a file written by ``vae compress`` holds, bit for bit.

    vae decompress images.vae --out images/          # PNG files, under the names they were compressed with
    vae decompress images.vae --out images.npz       # one array, as it was read (or as the split gave it)

The model is the run the file names (``--run`` for another copy of it); one whose fingerprint (a hash of its weights
and config) differs from the file's is refused. Decoding repeats the compression's batches and thread count; each
batch's images are checked against its checksum in the file, all of them against their SHA-256, and the initial bits
must come back, so that another machine's arithmetic (another torch, CPU kind or device) or a damaged file is a
one-line error, never wrong images.
Nothing is written unless every image decoded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from vae.coding.bitsback import BitsBackCoder, CodingError, deterministic, machine
from vae.coding.container import Container
from vae.coding.images import check_destination, check_names, write_images
from vae.commands.common import check_device
from vae.core.checkpoints import fingerprint
from vae.core.errors import ArgumentParser, ConfigError, DataError, UserError, exit_with_error
from vae.core.spec import to_spec
from vae.training.checkpoint_io import checkpoint_of, load
from vae.training.runs import describe_write_failure


def field(header: dict, *keys: str):
    """A header entry, or a one-line error naming what the file lacks."""
    value = header
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise DataError(f"the file's header has no {'.'.join(keys)}: it is damaged or not from vae compress")
        value = value[key]
    return value


def differences(header: dict) -> str:
    """How this machine differs from the one that compressed the file, in words ('' where it does not)."""
    return "; ".join(
        f"{key} {header.get(key)} there, {value} here" for key, value in machine().items() if header.get(key) != value
    )


def checked(header: dict) -> dict:
    """The header's coding settings, each an integer, with sizes that fit together; a one-line error otherwise."""
    keys = ("latent_bits", "seed", "threads", "pixel_rows", "table_elements", "initial_words", "batches", "checksums")
    settings = {key: field(header, "coder", key) for key in keys}
    settings["count"] = field(header, "images", "count")
    lists = settings["batches"], settings["checksums"]
    numbers = [value for key, value in settings.items() if key not in ("batches", "checksums")]
    if not all(isinstance(v, list) for v in lists) or len(lists[0]) != len(lists[1]):
        raise DataError("the file's header does not hold together (its batches and checksums): it is damaged")
    whole = [*numbers, *lists[0], *lists[1]]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in whole) or settings["threads"] < 1:
        raise DataError("the file's header does not hold together (its counts or settings): it is damaged")
    if sum(settings["batches"]) != settings["count"]:
        raise DataError(
            f"the file's batches hold {sum(lists[0])} images and its header says {settings['count']}: it is damaged"
        )
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae decompress", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a file written by vae compress")
    parser.add_argument("--out", type=Path, required=True, help="a folder for PNG files, or a path ending in .npz")
    parser.add_argument("--run", type=Path, help="the model's checkpoint or run folder (default: the file's)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--device", help="where the networks run (default: where they ran compressing)")
    args = parser.parse_args(argv)
    try:
        check_destination(args.out, overwrite=args.overwrite)
        container = Container.read(args.file)
        header = container.header
        device = check_device(args.device or field(header, "coder", "device"))
        checkpoint = checkpoint_of(args.run or Path(field(header, "model", "checkpoint")))
        model = load(checkpoint, device=device)
        found, recorded = fingerprint(to_spec(model), model.state_dict()), field(header, "model", "fingerprint")
        if found != recorded:
            raise ConfigError(
                f"{args.file} was compressed with the model {recorded}, and {checkpoint} is {found} (other weights or "
                "config): give the run it was compressed with, --run"
            )
        if list(model.image_shape) != field(header, "images", "shape"):
            raise DataError(f"{args.file}'s images are not the model's shape: the file is damaged")
        settings = checked(header)
        check_names(field(header, "images", "names"), settings["count"])
        coder = BitsBackCoder(
            model,
            latent_bits=settings["latent_bits"],
            seed=settings["seed"],
            pixel_rows=settings["pixel_rows"],
            table_elements=settings["table_elements"],
        )
        deterministic(settings["threads"], device)  # as compressing
        start = time.perf_counter()
        with tqdm(total=settings["count"], desc="decompressing", unit="image", leave=False, disable=None) as bar:
            try:
                values = coder.decode(
                    container.words,
                    batches=settings["batches"],
                    initial_words=settings["initial_words"],
                    checksums=settings["checksums"],
                    digest_of_values=field(header, "coder", "digest"),
                    progress=bar.update,
                )
            except (CodingError, ValueError) as error:  # constriction's ValueError: a table it cannot take
                changed = differences(header)
                raise CodingError(f"{error}{f' ({changed})' if changed else ''}; nothing was written") from error
        seconds = time.perf_counter() - start
        write_images(
            args.out,
            values,
            levels=coder.levels,
            names=field(header, "images", "names"),
            layout=field(header, "images", "layout"),
            scale=field(header, "images", "scale"),
        )
    except UserError as error:
        exit_with_error(str(error), command="vae decompress")
    except OSError as error:
        exit_with_error(describe_write_failure(error), command="vae decompress")
    print(f"decompressed {len(values)} images into {args.out} ({len(values) / seconds:.1f} images/s)")
