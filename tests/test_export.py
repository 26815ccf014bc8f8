"""`vae export`: a checkpoint from a real (short) `vae fit`, exported by the real command to TorchScript and ONNX, read
back and run on real digits at a batch size other than the one traced, against the eager model; a conditional VAE,
a hierarchy and a JointVAE exported by the library function; and bad input as one-line errors.

Tolerance: 1e-5 absolute for every output (images and posterior moments); the files measured here differ from the
eager model by 0 (TorchScript) and ~1e-7 (ONNX, onnxruntime's float32 kernels)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_vae

import vae
import vae.commands.export
from vae.commands.export import NOT_CHECKED, PARTS, TOLERANCE, export
from vae.core.errors import ConfigError
from vae.core.pixels import as_unit
from vae.data.embedded import EmbeddedMNIST
from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import StandardNormal
from vae.models.conditional import Conditional
from vae.models.hierarchical import TopDown
from vae.models.joint import Joint

ATOL = 1e-5
ONNX_EXPORT = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript"))
BUILD = {"likelihood": Bernoulli(), "prior": StandardNormal(), "kl_estimator": "auto", "kl_samples": 1}


def run_folder(root: Path) -> Path:
    """The one run folder of the shared short run (``runs/vae/<run id>``)."""
    (folder,) = (root / "runs" / "vae").iterdir()
    return folder


def run_exported(path, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The outputs of an exported file on ``inputs``: TorchScript by torch.jit.load, ONNX by onnxruntime."""
    if path.suffix == ".pt":
        with torch.no_grad():
            out = torch.jit.load(str(path))(*inputs)
        return out if isinstance(out, tuple) else (out,)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs)}
    return tuple(torch.from_numpy(array) for array in session.run(None, feed))


def assert_same(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def exported(trained_run):
    """The quick start's short run (conftest's ``trained_run``), exported by `vae export <run folder>` in both
    formats."""
    folder, root, env = trained_run
    formats = ["torchscript", "onnx"] if ONNX_EXPORT else ["torchscript"]
    result = run_vae(["export", str(folder), "--out", "exported", "--format", *formats], cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, env, result


@pytest.fixture(scope="module")
def digits():
    """Seven real test digits (floats in [0, 1]): a batch size neither traced (2) nor checked (5) by the export."""
    data = EmbeddedMNIST(batch_size=7)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))
    return as_unit(images), labels


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_exported_checkpoint_computes_what_the_eager_model_does_on_real_digits(exported, digits, suffix):
    root, _, _ = exported
    if suffix == ".onnx" and not ONNX_EXPORT:
        pytest.skip("onnx and onnxscript are not installed (pip install 'vae-framework[export]')")
    model = vae.load(run_folder(root))
    x, _ = digits
    encoding = model.encode(x)
    mean, variance = run_exported(root / "exported" / f"encoder{suffix}", x)
    assert_same((mean, variance), (encoding.mean, encoding.variance))
    assert mean.shape == (7, 16) and (variance > 0).all()
    (images,) = run_exported(root / "exported" / f"decoder{suffix}", encoding.mean)
    assert_same((images,), (model.decode(encoding.mean),))
    assert images.shape == (7, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    (one,) = run_exported(root / "exported" / f"decoder{suffix}", encoding.mean[:1])  # a batch of one runs too
    assert_same((one,), (model.decode(encoding.mean[:1]),))


def test_export_prints_each_file_with_its_check_and_describes_them_in_export_json(exported):
    root, _, result = exported
    folder = root / "exported"
    manifest = json.loads((folder / "export.json").read_text())
    names = ["encoder.pt", "decoder.pt"] + (["encoder.onnx", "decoder.onnx"] if ONNX_EXPORT else [])
    assert list(manifest["files"]) == names
    assert manifest["image_shape"] == [1, 28, 28] and manifest["code_size"] == 16
    assert manifest["context"] == {"needed": False, "size": None}
    assert manifest["model"] == "VAE" and manifest["source"].endswith(".ckpt")
    assert manifest["shapes"]["x"] == ["batch", 1, 28, 28] and manifest["shapes"]["images"] == ["batch", 1, 28, 28]
    lines = result.stdout.splitlines()
    for name in names:
        record = manifest["files"][name]
        kind = "torchscript" if name.endswith(".pt") else "onnx"
        assert record["inputs"] == (["x"] if name.startswith("encoder") else ["z"])
        assert record["outputs"] == (["mean", "variance"] if name.startswith("encoder") else ["images"])
        if record["note"] == NOT_CHECKED:  # onnxruntime is not installed: written, not checked
            assert f"{name}: {NOT_CHECKED}" in result.stdout
            continue
        assert 0 <= record["max_abs_difference"] < ATOL, record
        (line,) = [line for line in lines if line.startswith(f"{name}: ")]
        assert f"max |{kind} − eager| = " in line and "(batch 5; exported in " in line
    assert lines[-1] == "written: exported/export.json"
    assert result.stderr.count("\n") <= 1 and "Traceback" not in result.stderr  # quiet: no exporter chatter


def test_onnx_files_name_their_inputs_and_outputs_and_leave_the_batch_free(exported):
    onnxruntime = pytest.importorskip("onnxruntime")
    root, _, _ = exported
    if not ONNX_EXPORT:
        pytest.skip("onnx and onnxscript are not installed")
    session = onnxruntime.InferenceSession(str(root / "exported" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (x,) = session.get_inputs()
    assert x.name == "x" and isinstance(x.shape[0], str) and x.shape[1:] == [1, 28, 28]
    assert [o.name for o in session.get_outputs()] == ["mean", "variance"]
    assert not list((root / "exported").glob("*.data")) and not list((root / "exported").glob(".*"))


def test_an_existing_file_is_kept_without_overwrite_and_replaced_with_it(exported, digits):
    root, env, _ = exported
    out = root / "again"
    out.mkdir()
    (out / "decoder.pt").write_bytes(b"the user's own file")
    args = ["export", str(run_folder(root)), "--out", "again", "--format", "torchscript", "--part", "decoder"]
    refused = run_vae(args, cwd=root, env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "again/decoder.pt exists" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert (out / "decoder.pt").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["decoder.pt"]  # nothing else written either
    replaced = run_vae([*args, "--overwrite"], cwd=root, env=env)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["decoder.pt", "export.json"]
    z = torch.randn(3, 16)
    assert_same(run_exported(out / "decoder.pt", z), (vae.load(run_folder(root)).decode(z),))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "missing.ckpt", "--out", "x"], "checkpoint not found: missing.ckpt"),
        (["export", "RUN", "--out", "x", "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    ],
)
def test_bad_input_is_one_line_exit_status_2(exported, args, message):
    root, env, _ = exported
    result = run_vae([str(run_folder(root)) if a == "RUN" else a for a in args], cwd=root, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (root / "x").exists()


def small(kind: str):
    """A small untrained model of each kind (as the tests of vae.models.conditional, vae.models.hierarchical and
    vae.models.joint build
    them), its image shape, and its code size."""
    torch.manual_seed(0)
    if kind == "conditional":
        architecture, shape, latent_dim, code = Conditional(network=MLPNet(hidden_dims=(32,)), classes=10), 28, 4, 4
    elif kind == "hierarchy":
        network = TopDown(latent_channels=(6, 4, 3), resolutions=(1, 2, 4), width=8, stem_channels=(), blocks=1)
        architecture, shape, latent_dim, code = network, 8, 16, 6  # the top layer's 6 channels at 1×1
    else:  # z, a categorical's 3 probabilities and 2 Bernoulli units side by side
        joint = Joint(network=MLPNet(hidden_dims=(16,)), categories=3, bernoulli=2)
        architecture, shape, latent_dim, code = joint, 4, 2, 2 + 3 + 2
    model = architecture.build(image_shape=(1, shape, shape), latent_dim=latent_dim, **BUILD).eval()
    return model, (1, shape, shape), code


def onnx(kind: str, parts: tuple[str, ...]):
    """ONNX export takes seconds per file (torch rebuilds its table of ONNX translations every time). By default
    the decoder of the conditional model (two inputs sharing the batch); every part of every kind with -m slow (the
    hierarchy's: its learned state expanded to the batch, the noise of the layers below multiplied by temperature
    0)."""
    marks = [pytest.mark.skipif(not ONNX_EXPORT, reason="onnx and onnxscript are not installed")]
    marks += [pytest.mark.slow] if len(parts) > 1 else []
    return pytest.param(kind, "onnx", parts, marks=marks, id=f"{kind}-onnx-{'-'.join(parts)}")


KINDS = ("conditional", "hierarchy", "joint")


@pytest.mark.parametrize(
    ("kind", "fmt", "parts"),
    [pytest.param(kind, "torchscript", PARTS, id=f"{kind}-torchscript") for kind in KINDS]
    + [onnx(kind, ("decoder",)) for kind in ("conditional",)]
    + [onnx(kind, PARTS) for kind in KINDS],
)
def test_each_kind_of_model_exports_and_matches_its_eager_encode_and_decode(tmp_path, kind, fmt, parts):
    model, image_shape, code = small(kind)
    written = export(model, tmp_path, formats=(fmt,), parts=parts, batch=3)
    suffix = ".pt" if fmt == "torchscript" else ".onnx"
    assert [item.path.name for item in written] == [f"{part}{suffix}" for part in parts]
    assert all(item.check_batch == 6 and (item.difference is None or item.difference < ATOL) for item in written)
    x, labels = torch.rand(7, *image_shape), torch.arange(7) % 10
    y = (F.one_hot(labels, 10).float(),) if kind == "conditional" else ()  # float one-hot: as the integer labels
    context = labels if kind == "conditional" else None
    encoding = model.encode(x, context=context)
    assert encoding.mean.shape == (7, code)
    if "encoder" in parts:
        assert_same(run_exported(tmp_path / f"encoder{suffix}", x, *y), (encoding.mean, encoding.variance))
    z = encoding.mean
    (images,) = run_exported(tmp_path / f"decoder{suffix}", z, *y)
    assert_same((images,), (model.decode(z, context=context),))  # a hierarchy: the layers below at prior means
    assert_same(run_exported(tmp_path / f"decoder{suffix}", z, *y), (images,))  # deterministic
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert manifest["code_size"] == code and manifest["image_shape"] == list(image_shape)
    assert manifest["context"] == ({"needed": True, "size": 10} if y else {"needed": False, "size": None})
    names = {"encoder": ("x", "y") if y else ("x",), "decoder": ("z", "y") if y else ("z",)}
    assert [item.inputs for item in written] == [names[part] for part in parts]


def test_an_onnx_file_is_written_unchecked_without_onnxruntime(exported, digits, monkeypatch):
    """Where onnxruntime is not installed the check says how to install it (and the file stays: it is valid)."""
    root, _, _ = exported
    if not ONNX_EXPORT:
        pytest.skip("onnx and onnxscript are not installed")
    monkeypatch.setattr(vae.commands.export, "onnxruntime_available", lambda: False)
    path = root / "exported" / "decoder.onnx"
    z = torch.randn(3, 16)
    difference, note = vae.commands.export.check_onnx(path, (z,), (z,))
    assert (difference, note) == (None, NOT_CHECKED) and "pip install 'vae-framework[export]'" in note
    item = vae.commands.export.ExportedFile(path, "decoder", "onnx", ("z",), ("images",), None, note, 1.0, 5)
    assert item.ok and item.line() == f"decoder.onnx: {NOT_CHECKED} (exported in 1.0 s)"


def test_the_library_refuses_to_overwrite_and_unknown_choices(tmp_path):
    model, _, _ = small("joint")
    (tmp_path / "export.json").write_text("{}")
    with pytest.raises(ConfigError, match="export.json exists: pass --overwrite"):
        export(model, tmp_path, formats=("torchscript",))
    assert (tmp_path / "export.json").read_text() == "{}" and not (tmp_path / "encoder.pt").exists()
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export(model, tmp_path, formats=("tflite",))
    written = export(model, tmp_path, formats=("torchscript",), parts=("decoder",), overwrite=True)
    assert [item.path.name for item in written] == ["decoder.pt"] and written[0].difference <= TOLERANCE


def test_an_exporter_failure_is_one_line_and_leaves_no_half_export(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate\n(a long report)")

    monkeypatch.setattr(vae.commands.export, "export_onnx", fail)
    monkeypatch.setattr(vae.commands.export, "check_onnx_exporter", lambda: None)  # as if onnx and onnxscript were here
    model, _, _ = small("joint")
    message = "cannot export the encoder of JointVAE to onnx: Unsupported operator aten::frobnicate "
    with pytest.raises(ConfigError, match=re.escape(message + "(--format torchscript may work)")):
        export(model, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # the TorchScript files written before it are gone
