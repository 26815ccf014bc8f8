"""Sample-quality metrics against independent references: FID against the closed-form Fréchet distance of Gaussians
fitted with numpy (scipy.linalg.sqrtm), KID against a numpy unbiased MMD² with the cubic kernel, improved
precision/recall against hand-computed cases and a brute-force double loop; sample_quality end to end on real MNIST
digits with a tiny VAE and a fixed random feature network; and the Inception weights' lookup, which never hangs and
fails in one line (no test downloads anything: there is no network here, and the one download tried goes to a
closed port on this machine).

Tolerances: FID rel 1e-6 on synthetic float64 features (both sides are float64; sqrtm and eigvals agree far
closer), rel 1e-4 end to end; KID rel 1e-9 (the same sums in float64); precision/recall exact (they are counts).
"""

import importlib.util
import math
import socket
import sys
import time

import numpy as np
import pytest
import scipy.linalg
import torch
from einops import rearrange
from faults import Payload
from torch import nn

from vae.core.errors import ConfigError, DataError
from vae.data.embedded import load_embedded_mnist
from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import StandardNormal
from vae.metrics.quality import (
    INCEPTION_FILES,
    INCEPTION_URL,
    SampleQuality,
    feature_network,
    frechet_distance,
    inception_input,
    inception_weights,
    kernel_distance,
    precision_recall,
    sample_features,
    sample_quality,
)
from vae.models.conditional import ConditionalVAE
from vae.models.vae import VAE

F64 = torch.float64
needs_torch_fidelity = pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is None, reason="the Inception network needs torch-fidelity"
)


class RandomFeatures(nn.Module):
    """A fixed random feature network: flatten, a seeded random projection to ``features`` dimensions, tanh."""

    def __init__(self, pixels: int = 784, features: int = 8, seed: int = 0) -> None:
        super().__init__()
        weight = torch.randn(pixels, features, generator=torch.Generator().manual_seed(seed)) / math.sqrt(pixels)
        self.register_buffer("weight", weight)

    def forward(self, x):
        return torch.tanh(4 * rearrange(x, "b c h w -> b (c h w)") @ self.weight)  # (b, features)


def fid_reference(real: torch.Tensor, fake: torch.Tensor) -> float:
    """||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), with numpy's covariances (n − 1) and scipy's matrix square root."""
    a, b = real.numpy(), fake.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * root))


def kid_reference(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The unbiased MMD² of two sets of m points with k(x, y) = (x·y/d + 1)³: the within-set sums leave out i = j."""
    x, y = real.numpy(), fake.numpy()
    m, d = x.shape
    kxx, kyy, kxy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m**2)


def precision_recall_loops(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Improved precision/recall by brute force: every distance by a Python double loop."""

    def radii(points):
        out = []
        for i, p in enumerate(points):
            others = sorted(float(np.linalg.norm(p - q)) for j, q in enumerate(points) if j != i)
            out.append(others[k - 1])
        return out

    def inside(points, centres, centre_radii):
        hits = 0
        for p in points:
            hits += any(np.linalg.norm(p - c) <= r for c, r in zip(centres, centre_radii))
        return hits / len(points)

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --- FID ------------------------------------------------------------------------------------------------------------


def test_fid_is_the_closed_form_frechet_distance_and_zero_for_a_set_against_itself():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 6, generator=g, dtype=F64) @ torch.randn(6, 6, generator=g, dtype=F64)
    fake = 0.7 * torch.randn(250, 6, generator=g, dtype=F64) @ torch.randn(6, 6, generator=g, dtype=F64) + 0.5
    expected = fid_reference(real, fake)
    assert expected > 1.0
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(real.float(), fake.float()) == pytest.approx(expected, rel=1e-4)  # float32 features
    scale = float(torch.cov(real.T).trace())
    assert abs(frechet_distance(real, real)) < 1e-9 * scale
    shifted = real + torch.tensor([3.0, 0, 0, 0, 0, 0], dtype=F64)  # equal covariances: only ||Δμ||² = 9 is left
    assert frechet_distance(real, shifted) == pytest.approx(9.0, rel=1e-9)


# --- KID ------------------------------------------------------------------------------------------------------------


def test_kid_with_one_subset_of_everything_is_the_unbiased_mmd_with_the_cubic_kernel():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(120, 5, generator=g, dtype=F64)
    fake = 1.3 * torch.randn(120, 5, generator=g, dtype=F64) + 0.2
    kid = kernel_distance(real, fake, subset_size=1000)  # clipped to all 120 of each: one subset
    assert (kid.subset_size, kid.subsets, kid.std) == (120, 1, 0.0)
    assert kid.mean == pytest.approx(kid_reference(real, fake), rel=1e-9)
    again = torch.randn(120, 5, generator=g, dtype=F64)  # a second sample of real's distribution
    assert abs(kernel_distance(real, again).mean) < 0.1 * kid.mean


def test_kid_subsets_are_seeded_and_leave_the_global_generator_alone():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(90, 4, generator=g, dtype=F64), torch.randn(80, 4, generator=g, dtype=F64) + 0.3
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first = kernel_distance(real, fake, subset_size=30, subsets=20, seed=3)
    assert torch.rand(1) == before  # KID drew its subsets from its own fork of the generator
    assert first == kernel_distance(real, fake, subset_size=30, subsets=20, seed=3)
    assert first != kernel_distance(real, fake, subset_size=30, subsets=20, seed=4)
    assert (first.subset_size, first.subsets) == (30, 20) and first.std > 0
    with pytest.raises(ConfigError):
        kernel_distance(real, fake, subset_size=1)


# --- precision / recall -----------------------------------------------------------------------------------------------


def test_precision_and_recall_of_identical_and_of_far_apart_sets():
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    same = precision_recall(points, points.clone())
    assert (same.precision, same.recall) == (1.0, 1.0)
    far = precision_recall(points, points + 100.0)
    assert (far.precision, far.recall) == (0.0, 0.0)


def test_precision_and_recall_of_a_hand_computed_case():
    """k = 3 on a line. Real: 0…9 and 200…209. A real point's ball reaches its 3rd nearest neighbour: 3 at the
    ends of a run, 2 inside, so the balls of 0…9 cover [−3, 12]. Fake: 0.5, 2.5, …, 8.5 (inside [−3, 12]) and
    100…104 (far from everything): precision 5/10. The fakes 0.5…8.5 are 2 apart, their balls 4 to 6 wide, covering
    [−5.5, 14.5] ⊇ 0…9; 100…104 cover [97, 107]; no fake ball reaches 200…209: recall 10/20."""
    real = torch.cat([torch.arange(10.0), torch.arange(200.0, 210.0)]).double()[:, None]
    fake = torch.cat([torch.arange(0.5, 10.0, 2.0), torch.arange(100.0, 105.0)]).double()[:, None]
    result = precision_recall(real, fake, k=3)
    assert (result.precision, result.recall) == (0.5, 0.5)
    assert precision_recall_loops(real.numpy(), fake.numpy(), 3) == (0.5, 0.5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_and_recall_against_a_brute_force_double_loop(k):
    g = torch.Generator().manual_seed(k)
    real = torch.randn(40, 4, generator=g, dtype=F64)
    fake = 1.5 * torch.randn(35, 4, generator=g, dtype=F64) + 0.8
    expected = precision_recall_loops(real.numpy(), fake.numpy(), k)
    assert 0 < expected[0] < 1 and 0 < expected[1]  # a case that discriminates
    for rows in (None, 7, 1):  # one block, blocks of 7 rows (the last one short), one row at a time
        result = precision_recall(real, fake, k=k, rows=rows)
        assert (result.precision, result.recall) == expected


@needs_torch_fidelity
def test_precision_and_recall_agree_with_torch_fidelitys():
    from torch_fidelity.metric_prc import calculate_precision_recall_full  # its convention: generated first

    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(300, 16, generator=g, dtype=F64), 1.2 * torch.randn(250, 16, generator=g, dtype=F64)
    ours = precision_recall(real, fake, k=3, rows=64)
    theirs = calculate_precision_recall_full(fake, real, neighborhood=3)
    assert theirs == pytest.approx((ours.precision, ours.recall), abs=1e-6)  # they average in float32


def test_precision_recall_needs_more_points_than_neighbours():
    with pytest.raises(ConfigError, match="at least 4"):
        precision_recall(torch.zeros(3, 2), torch.zeros(10, 2), k=3)
    with pytest.raises(ConfigError, match="k ≥ 1"):
        precision_recall(torch.zeros(5, 2), torch.zeros(5, 2), k=0)


# --- sample_quality end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """300 real MNIST digits (uint8) and their labels, shuffled from the embedded 5,000 (sorted by label)."""
    split = load_embedded_mnist()
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:300]
    return split.images[order], split.labels[order]


def batches(images, labels, size=64):
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, len(images), size)]


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(32,)), likelihood=Bernoulli())


def test_sample_quality_end_to_end_is_finite_deterministic_and_the_closed_form_on_its_features(digits):
    vae, net = tiny_vae(), RandomFeatures()
    options = dict(num_samples=200, features=net, batch_size=64, kid_subset_size=200)
    vae.train()
    result = sample_quality(vae, batches(*digits), **options)
    assert isinstance(result, SampleQuality) and vae.training  # the caller's mode is back
    assert all(math.isfinite(v) for v in result.as_dict().values())
    assert (result.samples, result.real_images, result.kid_subsets, result.features) == (200, 200, 1, "RandomFeatures")
    assert 0 <= result.precision <= 1 and 0 <= result.recall <= 1 and result.fid > 0
    assert sample_quality(vae, batches(*digits), **options) == result  # the same seed: the same numbers
    assert sample_quality(vae, batches(*digits), seed=1, **options).fid != result.fid
    found = sample_features(vae, batches(*digits), num_samples=200, network=net, batch_size=64)
    assert found.real.shape == found.fake.shape == (200, 8)
    assert result.fid == pytest.approx(fid_reference(found.real, found.fake), rel=1e-4)
    assert result.kid_mean == pytest.approx(kid_reference(found.real, found.fake), rel=1e-9)
    loops = precision_recall_loops(found.real.numpy(), found.fake.numpy(), 3)
    assert (result.precision, result.recall) == loops
    assert "FID" in result.table() and "precision (k=3)" in result.table()


def test_real_images_as_uint8_or_floats_give_the_same_features_and_normalised_ones_are_refused(digits):
    vae, net = tiny_vae(), RandomFeatures()
    images, labels = digits[0][:100], digits[1][:100]
    as_bytes = sample_features(vae, batches(images, labels), num_samples=100, network=net)
    as_floats = sample_features(vae, batches(images.float() / 255, labels), num_samples=100, network=net)
    torch.testing.assert_close(as_bytes.real, as_floats.real, rtol=0, atol=0)
    torch.testing.assert_close(as_bytes.fake, as_floats.fake, rtol=0, atol=0)
    with pytest.raises(DataError, match="not normalised"):
        sample_features(vae, batches(images.float() / 127.5 - 1, labels), num_samples=100, network=net)
    with pytest.raises(ConfigError, match="the model's"):
        sample_features(vae, batches(images[:, :, :14], labels), num_samples=100, network=net)


def test_a_conditional_model_samples_with_the_real_labels_in_turn(digits):
    torch.manual_seed(0)
    parts = dict(prior=StandardNormal(), kl_estimator="auto", kl_samples=1)
    model = ConditionalVAE(
        image_shape=(1, 28, 28),
        context_size=10,
        latent_dim=4,
        network=MLPNet(hidden_dims=(32,)),
        likelihood=Bernoulli(),
        **parts,
    )
    images, labels = digits[0][:50], digits[1][:50]
    net = RandomFeatures()
    default = sample_features(model, batches(images, labels), num_samples=80, network=net, batch_size=32)
    cycled = labels[torch.arange(80) % 50]
    given = sample_features(model, batches(images, labels), num_samples=80, network=net, batch_size=32, context=cycled)
    torch.testing.assert_close(default.fake, given.fake, rtol=0, atol=0)
    other = sample_features(model, batches(images, labels), num_samples=80, network=net, context=(cycled + 1) % 10)
    assert not torch.equal(default.fake, other.fake)  # the labels matter
    assert default.real.shape == (50, 8)  # fewer real images than samples: all of them


# --- the Inception network's input and weights -----------------------------------------------------------------------


def test_inception_input_is_uint8_with_three_channels_and_rounds_floats():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    torch.testing.assert_close(inception_input(levels.float() / 255), levels.expand(1, 3, 16, 16), rtol=0, atol=0)
    assert torch.equal(inception_input(levels), levels.expand(1, 3, 16, 16))
    colour = torch.full((2, 3, 5, 5), 0.999)
    assert inception_input(colour).dtype == torch.uint8 and bool((inception_input(colour) == 255).all())
    with pytest.raises(ConfigError, match="1 or 3"):
        inception_input(torch.zeros(1, 2, 5, 5))


@needs_torch_fidelity
def test_our_download_address_is_torch_fidelitys():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert INCEPTION_URL == URL_INCEPTION_V3 and URL_INCEPTION_V3.endswith(INCEPTION_FILES[0])


@needs_torch_fidelity
def test_inception_without_weights_and_without_downloads_is_a_one_line_error_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        feature_network("inception", allow_download=False)
    assert time.monotonic() - start < 2.0
    message = one_line(error)
    assert "--inception-weights PATH" in message and INCEPTION_URL in message and "downloads are off" in message


def test_a_download_that_cannot_connect_fails_fast_in_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with socket.socket() as probe:  # a port on this machine that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        inception_weights(url=f"http://127.0.0.1:{port}/weights.pth", timeout=2.0)
    assert time.monotonic() - start < 3.0
    assert "cannot download" in one_line(error) and "--inception-weights PATH" in one_line(error)
    assert not list((tmp_path / "torch").rglob("*.pth*"))


@needs_torch_fidelity
def test_a_missing_weights_path_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no" / "weights.pth"
    for spec in (missing, str(missing)):
        with pytest.raises(ConfigError) as error:
            feature_network(spec)
        assert str(missing) in one_line(error) and "no such file" in one_line(error)
    with pytest.raises(ConfigError) as error:
        inception_weights(missing)
    assert str(missing) in one_line(error) and "no such file" in one_line(error)


def test_the_hub_cache_is_searched_for_torch_fidelitys_and_pytorch_fids_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / INCEPTION_FILES[1]).write_bytes(b"")
    assert inception_weights(allow_download=False) == cache / INCEPTION_FILES[1]
    (cache / INCEPTION_FILES[0]).write_bytes(b"")
    assert inception_weights(allow_download=False) == cache / INCEPTION_FILES[0]
    given = tmp_path / "mine.pth"
    given.write_bytes(b"")
    assert inception_weights(given, allow_download=False) == given  # a path given wins over the cache


@needs_torch_fidelity
def test_files_that_are_not_inception_weights_are_refused_in_one_line_and_run_nothing(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError) as error:
        feature_network(empty)
    assert "cannot read" in one_line(error)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ConfigError) as error:
        feature_network(other)
    assert "no InceptionV3 FID weights" in one_line(error)
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"fc.weight": Payload(marker)}, evil)
    with pytest.raises(ConfigError) as error:
        feature_network(evil)
    assert "cannot read" in one_line(error) and not marker.exists()


def test_without_torch_fidelity_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # what Python does when a package is absent: ImportError
    with pytest.raises(ConfigError) as error:
        feature_network("inception", allow_download=False)
    assert "pip install torch-fidelity" in one_line(error)
    assert isinstance(feature_network(nn.Identity()), nn.Identity)  # a custom network needs nothing


def inception_layout_weights(path, seed=0):
    """Random weights in the real layout of torch-fidelity's file: the keys and shapes of torchvision's InceptionV3
    with 1008 classes and no auxiliary head (the same as torch-fidelity's, key for key), read off a network built on
    the meta device; He-scaled random convolutions, identity batch norms: features that vary with the image."""
    from torchvision.models import inception_v3

    with torch.device("meta"):
        layout = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, meta in layout.items():
        if not meta.is_floating_point():
            state[key] = torch.zeros(meta.shape, dtype=meta.dtype)  # num_batches_tracked
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = torch.ones(meta.shape)
        elif meta.dim() == 4:  # a convolution's weight (out, in, kh, kw)
            state[key] = torch.randn(meta.shape, generator=g) * math.sqrt(2 / meta[0].numel())
        else:  # batch-norm shifts and means, the classifier (unused by the pool features)
            state[key] = torch.zeros(meta.shape)
    torch.save(state, path)


@needs_torch_fidelity
@pytest.mark.slow
def test_a_local_weights_file_in_torch_fidelitys_format_gives_inception_features(tmp_path, digits):
    """The --inception-weights route for real: a file in torch-fidelity's layout (random weights) builds torchmetrics'
    InceptionV3, which takes the grey 28×28 digits and samples (repeated to 3 channels, resized to 299×299) to
    2048-d features (about 10 s on two cores). sample_quality on them is sample_quality on any network (above); its
    FID alone would add torchmetrics' eigvals of a 2048×2048 matrix, tens of seconds on two busy cores."""
    path = tmp_path / "inception.pth"
    inception_layout_weights(path)
    network = feature_network(path)
    assert network.name == "InceptionV3 pool, 2048-d (inception.pth)"
    vae = tiny_vae()
    found = sample_features(vae, batches(*digits), num_samples=3, network=network)
    assert found.real.shape == found.fake.shape == (3, 2048) and bool(found.real.isfinite().all())
    assert not torch.equal(found.real, found.fake)
