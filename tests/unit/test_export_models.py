"""Each kind of model (a conditional VAE, a hierarchy, a JointVAE, a residual VQ-VAE with integer codes) exported by
the library function ``vae.commands.export.export`` to TorchScript (and ONNX), read back and run against its eager
encode and decode; the library's refusals (an existing file, an unknown format); and an exporter's failure as one line
that leaves no half export. (The `vae export` command on a trained checkpoint: tests/integration/test_export.py.)

Tolerance: 1e-5 absolute for every output (tests/exported.py)."""

import json
import re

import pytest
import torch
import torch.nn.functional as F
from exported import ATOL, ONNX_EXPORT, assert_same, run_exported

import vae.commands.export
from vae.commands.export import PARTS, TOLERANCE, export
from vae.core.errors import ConfigError
from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import StandardNormal
from vae.layers.quantizers import ResidualVQ
from vae.models import VQVAE, ConditionalVAE, HierarchicalVAE, JointVAE


def settings() -> dict:
    """The likelihood, prior and KL settings of every small model here (fresh parts: a part is bound to one model)."""
    return {"likelihood": Bernoulli(), "prior": StandardNormal(), "kl_estimator": "auto", "kl_samples": 1}


def small(kind: str):
    """A small untrained model of each kind (as the tests of vae.models.conditional, vae.models.hierarchical and
    vae.models.joint build them), its image shape, and its code size."""
    torch.manual_seed(0)
    if kind == "conditional":
        shape, code = 28, 4
        model = ConditionalVAE(
            image_shape=(1, shape, shape),
            context_size=10,
            latent_dim=4,
            network=MLPNet(hidden_dims=(32,)),
            **settings(),
        )
    elif kind == "hierarchy":
        shape, code = 8, 6  # the top layer's 6 channels at 1×1
        model = HierarchicalVAE(
            image_shape=(1, shape, shape),
            latent_channels=(6, 4, 3),
            resolutions=(1, 2, 4),
            width=8,
            stem_channels=(),
            blocks=1,
            **settings(),
        )
    elif kind == "vq":  # 4×4 images to a 2×2 grid of codes from 2 codebooks: 8 integer indices
        shape, code = 4, 8
        quantizer = ResidualVQ(depth=2, codebook_size=6, dim=3)
        model = VQVAE(image_shape=(1, shape, shape), quantizer=quantizer, channels=(4,), blocks=1)
    else:  # z, a categorical's 3 probabilities and 2 Bernoulli units side by side
        shape, code = 4, 2 + 3 + 2
        model = JointVAE(
            image_shape=(1, shape, shape),
            latent_dim=2,
            network=MLPNet(hidden_dims=(16,)),
            categories=3,
            bernoulli=2,
            **settings(),
        )
    return model.eval(), (1, shape, shape), code


def onnx(kind: str, parts: tuple[str, ...]):
    """ONNX export takes seconds per file (torch rebuilds its table of ONNX translations every time). By default
    the decoder of the conditional model (two inputs sharing the batch); every part of every kind with -m slow (the
    hierarchy's: its learned state expanded to the batch, the noise of the layers below multiplied by temperature
    0)."""
    marks = [pytest.mark.skipif(not ONNX_EXPORT, reason="onnx and onnxscript are not installed")]
    marks += [pytest.mark.slow] if len(parts) > 1 else []
    return pytest.param(kind, "onnx", parts, marks=marks, id=f"{kind}-onnx-{'-'.join(parts)}")


KINDS = ("conditional", "hierarchy", "joint", "vq")


@pytest.mark.parametrize(
    ("kind", "fmt", "parts"),
    [pytest.param(kind, "torchscript", PARTS, id=f"{kind}-torchscript") for kind in KINDS]
    + [onnx(kind, ("decoder",)) for kind in ("conditional",)]
    + [pytest.param("vq", "onnx", PARTS, id="vq-onnx", marks=onnx("vq", ("decoder",)).marks)]
    + [onnx(kind, PARTS) for kind in KINDS if kind != "vq"],
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
    if kind == "vq":  # integer indices in, the same images out
        assert z.dtype == torch.long and 0 <= int(z.min()) and int(z.max()) < 6
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert manifest["code_vocabulary"] == (6 if kind == "vq" else None)
    assert manifest["code_size"] == code and manifest["image_shape"] == list(image_shape)
    assert manifest["context"] == ({"needed": True, "size": 10} if y else {"needed": False, "size": None})
    names = {"encoder": ("x", "y") if y else ("x",), "decoder": ("z", "y") if y else ("z",)}
    assert [item.inputs for item in written] == [names[part] for part in parts]


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
