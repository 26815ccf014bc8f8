"""``vae export``: a trained model's encoder and decoder as TorchScript and ONNX files, each checked against the eager
model as soon as it is written.

    vae export runs/vae/<id> --out exported                          # both parts, both formats
    vae export runs/vae/<id>/checkpoints/last.ckpt --out exported --format onnx --part decoder

Files in ``--out``: ``encoder.pt`` and ``decoder.pt`` (TorchScript, ``torch.jit.load``), ``encoder.onnx`` and
``decoder.onnx`` (ONNX, e.g. ``onnxruntime.InferenceSession``), and ``export.json`` (the image shape, the code size,
the inputs and outputs, whether a context y is needed, and the measured differences). Existing files are never
overwritten without ``--overwrite``.

    encoder: x (b, c, h, w) float32 in [0, 1] [, y (b, classes)] → mean, variance (b, d): q(z|x) as ``encode`` gives
    decoder: z (b, d) [, y (b, classes)] → images (b, c, h, w) in [0, 1]: ``decode``, the likelihood's mean

y is a conditional model's context, float vectors (one-hot for a class). The batch size is dynamic in both formats:
each file is traced at ``--batch`` images and checked on a random input of another batch size against the eager
model (ONNX with onnxruntime, when it is installed: ``pip install 'vae-framework[export]'``). A hierarchy's decoder
draws the layers below the top at their prior means (``TopDownVAE.decode`` at temperature 0).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.models.base import LatentVariableModel, inference

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
PARTS = ("encoder", "decoder")
MANIFEST = "export.json"
TOLERANCE = 1e-4  # the largest |exported − eager| accepted; float32 kernels differ by ~1e-7 here
INSTALL = "pip install 'vae-framework[export]'"
NOT_CHECKED = f"not checked: install onnxruntime ({INSTALL})"


class Encoder(nn.Module):
    """q(z|x) of a model as plain tensors: ``forward(x[, y]) -> (mean, variance)``, each (b, d), for images x
    (b, c, h, w) in [0, 1] and, for a conditional model, context vectors y (b, classes).

    ``model.encode`` itself: the models read the batch size from tensor shapes, so it stays dynamic in the graph."""

    def __init__(self, model: LatentVariableModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        encoding = self.model.encode(x, context=y)
        return encoding.mean, encoding.variance


class Decoder(nn.Module):
    """E[x|z] of a model as plain tensors: ``forward(z[, y]) -> images`` (b, c, h, w) in [0, 1], for codes z (b, d)
    as ``Encoder`` gives them and, for a conditional model, context vectors y (b, classes). A hierarchy's layers
    below the top are at their prior means (``TopDownVAE.decode`` at temperature 0)."""

    def __init__(self, model: LatentVariableModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.decode(z, context=y)


@dataclass(frozen=True)
class ExportedFile:
    """One written file and its check: ``difference`` is max |exported − eager| over its outputs on a random input of
    ``check_batch`` examples (None where it could not be checked, ``note`` says why); ``seconds`` the export's time."""

    path: Path
    part: str
    format: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    difference: float | None
    note: str
    seconds: float
    check_batch: int

    @property
    def ok(self) -> bool:
        """Whether the file computes what the eager model does (True where it could not be checked)."""
        return self.difference is None or self.difference <= TOLERANCE

    def line(self) -> str:
        """``decoder.onnx: max |onnx − eager| = 3.1e-07 (batch 5; exported in 4.2 s)``."""
        if self.difference is None:
            return f"{self.path.name}: {self.note} (exported in {self.seconds:.1f} s)"
        return (
            f"{self.path.name}: max |{self.format} − eager| = {self.difference:.1e} (batch {self.check_batch}; "
            f"exported in {self.seconds:.1f} s)"
        )


@dataclass(frozen=True)
class Signature:
    """What a model's exported parts take and give."""

    image_shape: tuple[int, int, int]
    code_size: int
    context_size: int | None  # the length of y for a conditional model, else None
    code_vocabulary: int | None = None  # an integer code's values (0 to K − 1, int64), else None: a float code

    def inputs(self, part: str) -> tuple[str, ...]:
        first = "x" if part == "encoder" else "z"
        return (first, "y") if self.context_size is not None else (first,)

    @staticmethod
    def outputs(part: str) -> tuple[str, ...]:
        return ("mean", "variance") if part == "encoder" else ("images",)

    def shapes(self) -> dict[str, list]:
        """Each input's and output's shape, "batch" where it is dynamic."""
        c, h, w = self.image_shape
        shapes = {"x": ["batch", c, h, w], "z": ["batch", self.code_size]}
        shapes |= {"mean": ["batch", self.code_size], "variance": ["batch", self.code_size]}
        shapes |= {"images": ["batch", c, h, w]}
        if self.context_size is not None:
            shapes["y"] = ["batch", self.context_size]
        return shapes


def planned_files(folder: str | os.PathLike, formats: Sequence[str], parts: Sequence[str]) -> list[Path]:
    """The files an export writes in ``folder``: each part in each format, then ``export.json``."""
    folder = Path(folder)
    return [folder / f"{part}{FORMATS[fmt]}" for fmt in formats for part in parts] + [folder / MANIFEST]


def check_choices(formats: Sequence[str], parts: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The formats and parts asked for, each once, in order (a one-line ConfigError for one that does not exist)."""
    for kind, given, known in (("format", formats, tuple(FORMATS)), ("part", parts, PARTS)):
        if not given:
            raise ConfigError(f"no {kind} to export: give one or more of {', '.join(known)}")
        for name in given:
            if name not in known:
                raise ConfigError(f"unknown export {kind} {name!r}: choose from {', '.join(known)}")
    return tuple(dict.fromkeys(formats)), tuple(dict.fromkeys(parts))


def refuse_existing(paths: Sequence[Path], *, overwrite: bool) -> None:
    """A one-line ConfigError naming the first of ``paths`` that exists, unless ``overwrite``."""
    existing = [path for path in paths if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(
            f"{existing[0]} exists{more}: pass --overwrite (overwrite=True) to replace it, or choose another --out"
        )
    for path in existing:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder: cannot write the export there; choose another --out")


def check_onnx_exporter() -> None:
    """A one-line ConfigError unless torch's ONNX exporter can run here (it needs onnx and onnxscript)."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"ONNX export needs {' and '.join(missing)}: {INSTALL} (or export --format torchscript alone)"
        )


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def signature_of(model: LatentVariableModel) -> Signature:
    """The model's image shape, code size and context size, read by encoding one blank image."""
    context_size = model.context_size if model.capabilities.conditional else None
    like = {"device": parameter_device(model), "dtype": parameter_dtype(model)}
    x = torch.zeros(1, *model.image_shape, **like)
    y = None if context_size is None else torch.zeros(1, context_size, **like)
    with inference(model):
        code_size = Encoder(model)(x, y)[0].shape[1]
    return Signature(
        image_shape=tuple(model.image_shape),
        code_size=int(code_size),
        context_size=context_size,
        code_vocabulary=model.code_vocabulary,
    )


def parameter_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.zeros(())).device


def parameter_dtype(model: nn.Module) -> torch.dtype:
    return next(iter(model.parameters()), torch.zeros(())).dtype


def check_inputs(
    signature: Signature, part: str, batch: int, *, seed: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, ...]:
    """A random input of ``batch`` examples: images uniform in [0, 1], codes N(0, I) (or uniform integer indices, for
    a model whose code is integer), and one-hot contexts, in the model's precision (float32 for a model ``vae.load``
    gives)."""
    generator = torch.Generator().manual_seed(seed)
    if part == "encoder":
        first = torch.rand(batch, *signature.image_shape, generator=generator)
    elif signature.code_vocabulary is not None:
        indices = torch.randint(signature.code_vocabulary, (batch, signature.code_size), generator=generator)
        first = indices.to(device=device)
    else:
        first = torch.randn(batch, signature.code_size, generator=generator)
    inputs = [first]
    if signature.context_size is not None:
        classes = torch.randint(signature.context_size, (batch,), generator=generator)
        inputs.append(nn.functional.one_hot(classes, signature.context_size).float())
    return tuple(t if not t.is_floating_point() else t.to(device=device, dtype=dtype) for t in inputs)


def eager(model: LatentVariableModel, part: str, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """What the model's own ``encode`` / ``decode`` give (the reference every exported file is checked against)."""
    context = inputs[1] if len(inputs) > 1 else None
    if part == "encoder":
        encoding = model.encode(inputs[0], context=context)
        return encoding.mean, encoding.variance
    return (model.decode(inputs[0], context=context),)


def max_difference(got: Sequence[Tensor], want: Sequence[Tensor]) -> float:
    if len(got) != len(want):
        return float("inf")
    return max(float((g.detach().cpu().double() - w.detach().cpu().double()).abs().max()) for g, w in zip(got, want))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Without the exporters' console output and warnings: torch.jit's deprecation notices, the tracer's notes on
    shapes that are fixed for a model anyway (the image size), the ONNX exporter's progress lines. The check at
    another batch size is what says whether a file is right."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` into a temporary file beside ``path``, then move it there: a failed export leaves no partial file."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_torchscript(wrapper: nn.Module, inputs: tuple[Tensor, ...], path: Path) -> None:
    with quiet():
        traced = torch.jit.trace(wrapper, inputs, check_trace=False)
        traced = torch.jit.freeze(traced)  # the weights it uses as constants: a decoder file holds no encoder
        replace_atomically(path, lambda temporary: torch.jit.save(traced, str(temporary)))


def check_torchscript(path: Path, inputs: tuple[Tensor, ...], reference: tuple[Tensor, ...]) -> tuple[float, str]:
    with quiet():
        loaded = torch.jit.load(str(path), map_location=inputs[0].device)
        out = loaded(*inputs)
    return max_difference(out if isinstance(out, tuple) else (out,), reference), ""


def export_onnx(
    wrapper: nn.Module, inputs: tuple[Tensor, ...], path: Path, names: tuple[str, ...], outputs: tuple[str, ...]
) -> None:
    """torch's exporter (``dynamo=True``: torch.export and onnxscript; the TorchScript-based one is deprecated), the
    batch dimension dynamic, the weights inside the file."""
    batch = torch.export.Dim("batch", min=1)
    dynamic = {name: {0: batch} for name in names}

    def write(temporary: Path) -> None:
        torch.onnx.export(
            wrapper,
            inputs,
            str(temporary),
            input_names=list(names),
            output_names=list(outputs),
            dynamic_shapes=dynamic,
            dynamo=True,
            external_data=False,
            verbose=False,
        )

    with quiet():
        replace_atomically(path, write)


def check_onnx(path: Path, inputs: tuple[Tensor, ...], reference: tuple[Tensor, ...]) -> tuple[float | None, str]:
    """max |onnxruntime − eager| for the file, or (None, why) where onnxruntime is not installed."""
    if not onnxruntime_available():
        return None, NOT_CHECKED
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {arg.name: t.detach().cpu().numpy() for arg, t in zip(session.get_inputs(), inputs)}
    out = [torch.from_numpy(array) for array in session.run(None, feed)]
    return max_difference(out, reference), ""


def export(
    model: LatentVariableModel,
    folder: str | os.PathLike,
    *,
    formats: Sequence[str] = ("torchscript", "onnx"),
    parts: Sequence[str] = PARTS,
    batch: int = 2,
    overwrite: bool = False,
    seed: int = 0,
    source: str | None = None,
) -> list[ExportedFile]:
    """Write the model's ``parts`` ("encoder", "decoder") in each of ``formats`` ("torchscript" → ``<part>.pt``,
    "onnx" → ``<part>.onnx``) and ``export.json`` into ``folder``, and check each file right after it is written:
    loaded back (TorchScript with ``torch.jit.load``, ONNX with onnxruntime if installed) and run on a random input
    of ``batch + 3`` examples, against the model's own ``encode`` / ``decode``.

    batch: the example batch size the files are traced at (2 or more; the batch size stays dynamic).
    overwrite: replace existing files (otherwise a one-line ConfigError names the first, and nothing is written).
    source: where the model came from (a checkpoint), recorded in ``export.json``.

    Returns the written model files with their measured differences (``ExportedFile``), in the order written."""
    formats, parts = check_choices(formats, parts)
    if not isinstance(model, LatentVariableModel):
        raise ConfigError(f"export takes a LatentVariableModel (vae.load gives one), got {type(model).__name__}")
    if batch < 2:
        raise ConfigError(f"the export's example batch must be 2 or more (a batch of 1 fixes the size), got {batch}")
    if not model.capabilities.latent_code:
        raise ConfigError(
            f"{type(model).__name__} has no code of an image, so no encoder or decoder to export (a diffusion "
            "model's latents are noisy images): share its checkpoint, which vae.load opens"
        )
    folder = Path(folder)
    planned = planned_files(folder, formats, parts)
    refuse_existing(planned, overwrite=overwrite)
    if "onnx" in formats:
        check_onnx_exporter()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file: give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder))  # every file is written and checked here first
    try:
        with inference(model):
            signature = signature_of(model)
            written = [
                export_part(model, signature, staging, part, fmt, batch=batch, seed=seed)
                for fmt in formats
                for part in parts
            ]
        write_manifest(staging / MANIFEST, model, signature, written, batch=batch, source=source)
        for path in planned:  # only now, all of them: a failed export leaves the folder as it was
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [replace(item, path=folder / item.path.name) for item in written]


def export_part(
    model: LatentVariableModel, signature: Signature, folder: Path, part: str, fmt: str, *, batch: int, seed: int
) -> ExportedFile:
    """One part in one format, traced at ``batch`` examples, then checked at ``batch + 3``."""
    like = {"device": parameter_device(model), "dtype": parameter_dtype(model)}
    path = folder / f"{part}{FORMATS[fmt]}"
    wrapper = (Encoder if part == "encoder" else Decoder)(model).eval()
    traced = check_inputs(signature, part, batch, seed=seed, **like)
    probe = check_inputs(signature, part, batch + 3, seed=seed + 1, **like)
    reference = eager(model, part, probe)
    names, outputs = signature.inputs(part), signature.outputs(part)
    start = time.perf_counter()
    try:
        if fmt == "torchscript":
            export_torchscript(wrapper, traced, path)
        else:
            export_onnx(wrapper, traced, path, names, outputs)
    except (UserError, OSError):
        raise
    except Exception as error:  # the exporter's own failure: one line, and the way around it
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        other = "onnx" if fmt == "torchscript" else "torchscript"
        raise ConfigError(
            f"cannot export the {part} of {type(model).__name__} to {fmt}: {first.strip()[:300]} "
            f"(--format {other} may work)"
        ) from error
    seconds = time.perf_counter() - start
    check = check_torchscript if fmt == "torchscript" else check_onnx
    difference, note = check(path, probe, reference)
    return ExportedFile(path, part, fmt, names, outputs, difference, note, seconds, check_batch=batch + 3)


def write_manifest(
    path: Path,
    model: LatentVariableModel,
    signature: Signature,
    written: Sequence[ExportedFile],
    *,
    batch: int,
    source: str | None,
) -> None:
    """``export.json``: what the files take and give, and how closely each matched the eager model."""
    files = {}
    for item in written:
        record = {key: value for key, value in asdict(item).items() if key not in ("path", "check_batch")}
        record["max_abs_difference"] = record.pop("difference")
        record["seconds"] = round(record["seconds"], 3)
        files[item.path.name] = record
    manifest = {
        "model": type(model).__name__,
        "source": source,
        "image_shape": list(signature.image_shape),
        "code_size": signature.code_size,
        "code": "integer indices" if signature.code_vocabulary is not None else "float",
        "code_vocabulary": signature.code_vocabulary,
        "context": {"needed": signature.context_size is not None, "size": signature.context_size},
        "shapes": signature.shapes(),
        "dtype": str(parameter_dtype(model)).removeprefix("torch."),
        "inputs": "x: images in [0, 1]; z: codes as the encoder's mean gives them; y: context vectors (one-hot labels)",
        "outputs": "mean, variance: q(z|x); images: E[x|z] in [0, 1]",
        "traced_batch": batch,
        "check_batch": batch + 3,
        "tolerance": TOLERANCE,
        "torch": torch.__version__,
        "files": files,
    }
    replace_atomically(path, lambda temporary: temporary.write_text(json.dumps(manifest, indent=2) + "\n"))


def main(argv: Sequence[str] | None = None) -> None:
    from vae.commands.common import check_device
    from vae.training.checkpoint_io import checkpoint_of, load
    from vae.training.runs import check_writable, describe_write_failure, write_failure

    parser = ArgumentParser(prog="vae export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by vae fit, or its run folder")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write the files in")
    parser.add_argument(
        "--format", nargs="+", choices=tuple(FORMATS), default=list(FORMATS), help="default: torchscript onnx"
    )
    parser.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS), help="default: encoder decoder")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    parser.add_argument("--batch", type=int, default=2, help="the example batch traced (default 2; stays dynamic)")
    parser.add_argument("--device", default="cpu", help="the device the files are traced for (default cpu)")
    args = parser.parse_args(argv)
    try:
        device = check_device(args.device)
        if args.batch < 2:
            raise ConfigError(f"--batch must be 2 or more, got {args.batch}")
        formats, parts = check_choices(args.format, args.part)
        checkpoint = checkpoint_of(args.checkpoint)
        check_writable("--out", args.out)
        refuse_existing(planned_files(args.out, formats, parts), overwrite=args.overwrite)  # before loading
        if "onnx" in formats:
            check_onnx_exporter()
        model = load(checkpoint, device=device)
        written = export(
            model, args.out, formats=formats, parts=parts, batch=args.batch, overwrite=args.overwrite,
            source=str(checkpoint),
        )  # fmt: skip
    except UserError as error:
        exit_with_error(str(error), command="vae export")
    except OSError as error:
        failure = write_failure(error)
        if failure is None:
            raise
        exit_with_error(describe_write_failure(failure), command="vae export")
    for item in written:
        print(item.line())
    print(f"written: {args.out / MANIFEST}")
    wrong = [item for item in written if not item.ok]
    if wrong:
        exit_with_error(
            f"{wrong[0].path} differs from the eager model by {wrong[0].difference:.1e} (more than {TOLERANCE:g}): "
            "do not use it",
            command="vae export",
        )


if __name__ == "__main__":
    main()
