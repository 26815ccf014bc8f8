"""Reading back what `vae export` writes (tests/integration/test_export.py, tests/unit/test_export_models.py): an
exported file run on inputs (TorchScript by torch.jit.load, ONNX by onnxruntime), and the tolerance it is held to.

Tolerance: 1e-5 absolute for every output (images and posterior moments); the files measured here differ from the
eager model by 0 (TorchScript) and ~1e-7 (ONNX, onnxruntime's float32 kernels)."""

import importlib.util

import pytest
import torch

ATOL = 1e-5
ONNX_EXPORT = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript"))


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
