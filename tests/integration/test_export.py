"""`vae export`, in this process: a checkpoint from a real (short) `vae fit` (the session's quick start), exported by
the real command to TorchScript and ONNX, read back and run on real digits at a batch size other than the one traced,
against the eager model; an existing file kept without --overwrite; and bad input as one-line errors. (Each kind of
model exported by the library function: tests/unit/test_export_models.py.)

Tolerance: 1e-5 absolute for every output (tests/exported.py)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import run
from exported import ATOL, ONNX_EXPORT, assert_same, run_exported

import vae
import vae.commands.export
from vae.commands.export import NOT_CHECKED
from vae.core.pixels import as_unit
from vae.data.embedded import EmbeddedMNIST


def run_folder(root: Path) -> Path:
    """The one run folder of the shared short run (``runs/vae/<run id>``)."""
    (folder,) = (root / "runs" / "vae").iterdir()
    return folder


@pytest.fixture(scope="module")
def exported(trained_run):
    """The quick start's short run (conftest's ``trained_run``), exported by `vae export <run folder>` in both
    formats."""
    folder, root, env = trained_run
    formats = ["torchscript", "onnx"] if ONNX_EXPORT else ["torchscript"]
    result = run(["export", str(folder), "--out", "exported", "--format", *formats], cwd=root, env=env)
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
    refused = run(args, cwd=root, env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "again/decoder.pt exists" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert (out / "decoder.pt").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["decoder.pt"]  # nothing else written either
    replaced = run([*args, "--overwrite"], cwd=root, env=env)
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
    result = run([str(run_folder(root)) if a == "RUN" else a for a in args], cwd=root, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (root / "x").exists()


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
