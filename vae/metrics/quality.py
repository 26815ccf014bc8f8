"""Sample quality of a trained model: FID, KID and improved precision/recall of its samples against real images,
measured in the space of a feature network.

    FID (Heusel et al. 2017)      ||μ_r − μ_g||² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½), Gaussians fitted to the two
                                  feature sets (covariances with n − 1); squared feature units, 0 for equal moments
    KID (Bińkowski et al. 2018)   the unbiased MMD² with the kernel k(x, y) = (x·y/d + 1)³, its mean and standard
                                  deviation over random subsets of equal size drawn from the two sets; unbiased, so
                                  it can dip below 0 when the sets match
    precision / recall            (Kynkäänniemi et al. 2019) the fraction of generated images inside the real
                                  manifold / of real images inside the generated manifold, a set's manifold being
                                  the union of balls around its points, each reaching that point's k-th nearest
                                  neighbour in its own set (k = 3); fractions in [0, 1]

The numbers depend on the feature network and compare only within one. The standard network is InceptionV3's
2048-d pool features with the weights of the TF FID graph (torch-fidelity's port, through torchmetrics): published
FIDs use it, and it needs ``torch-fidelity`` and its weights file (``inception_weights`` says how it is found). A
custom network (any nn.Module mapping images (b, c, h, w), floats in [0, 1], to features (b, d)) gets the images as
they are: no resizing, no channel repeat.

Each image goes through the network once: the features are kept (float64), FID and KID are torchmetrics'
FrechetInceptionDistance and KernelInceptionDistance fed those features, and precision/recall is computed here with
torch.cdist in blocks of rows, so memory stays bounded (torchmetrics has no precision/recall).

Axes: b batch, c channels, h height, w width, n real images, m generated images, d feature dimensions.
"""

from __future__ import annotations

import hashlib
import io
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from vae.core.errors import ConfigError, DataError
from vae.core.pixels import as_unit
from vae.models.base import LatentVariableModel, inference
from vae.models.pictures import seeded

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
"""Where torch-fidelity downloads its InceptionV3 weights from (its ``URL_INCEPTION_V3``)."""
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
"""The weights' file names in the torch hub cache, either of which is used when found there: torch-fidelity's, then
pytorch-fid's (the same TF graph converted: pytorch-fid loads it into torchvision's InceptionV3, whose state-dict keys
are torch-fidelity's, and both names carry the SHA-256 prefix 6726825d). A file that does not fit is refused."""
INCEPTION_SHA256 = "6726825d"  # the prefix of the SHA-256 of torch-fidelity's file (torch hub's naming convention)
INSTALL = "pip install torch-fidelity (the quality extra: pip install 'vae-framework[quality]')"
CHUNK_ELEMENTS = 1 << 24  # distances held at once by precision_recall: 128 MiB of float64


def weights_advice(cache: Path) -> str:
    return (
        f"download {INCEPTION_URL} where there is a network and pass it with --inception-weights PATH "
        f"(or put it in {cache})"
    )


def one_line(value: object) -> str:
    return " ".join(str(value).split())


METRICS = ("fid", "kid_mean", "kid_std", "precision", "recall")


@dataclass(frozen=True)
class SampleQuality:
    """A model's samples against real images, in one feature space (``features``).

    fid: squared feature units; kid_mean / kid_std: over ``kid_subsets`` subsets of ``kid_subset_size`` images of
    each set, squared kernel units; precision / recall: fractions in [0, 1], with k-th nearest-neighbour balls."""

    fid: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    samples: int  # generated images
    features: str  # the feature network
    real_images: int
    k: int
    kid_subset_size: int
    kid_subsets: int

    def as_dict(self) -> dict[str, float]:
        """The five numbers by name (for a logger: ``{f"quality/{name}": value}``)."""
        return {name: value for name, value in asdict(self).items() if name in METRICS}

    def table(self) -> str:
        rows = [
            ("features", self.features),
            ("images", f"{self.samples} generated, {self.real_images} real"),
            ("FID", f"{self.fid:.3f}"),
            (
                f"KID (unbiased MMD², {self.kid_subsets} subsets of {self.kid_subset_size})",
                f"{self.kid_mean:.5f} ± {self.kid_std:.5f}",
            ),
            (f"precision (k={self.k})", f"{self.precision:.4f}"),
            (f"recall (k={self.k})", f"{self.recall:.4f}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# --- the feature network ---------------------------------------------------------------------------------------------


def require_torch_fidelity() -> None:
    """torchmetrics' InceptionV3 is torch-fidelity's: a one-line ConfigError naming the install when it is missing."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ConfigError(f"the Inception features need the torch-fidelity package: {INSTALL}") from None


def inception_weights(
    path: str | Path | None = None, *, allow_download: bool = True, timeout: float = 10.0, url: str = INCEPTION_URL
) -> Path:
    """The InceptionV3 weights file: ``path`` when given (it must exist); else torch-fidelity's (or pytorch-fid's)
    file in the torch hub cache, ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub, by default
    ~/.cache/torch/hub), where torch-fidelity itself would look; else, if ``allow_download``, downloaded there from
    ``url`` (SHA-256 checked). A download never stalls: every connect and read gives up after ``timeout`` seconds
    (with no network the name lookup fails at once). Every failure is a one-line ConfigError naming the fix."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"Inception weights {path}: no such file; pass --inception-weights PATH with torch-fidelity's "
                f"{INCEPTION_FILES[0]} (from {INCEPTION_URL})"
            )
        return path
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (cache / name).is_file():
            return cache / name
    if not allow_download:
        raise ConfigError(
            f"the Inception weights are not in the torch hub cache and downloads are off: {weights_advice(cache)}"
        )
    return download(url, cache / INCEPTION_FILES[0], timeout=timeout)


def download(url: str, target: Path, *, timeout: float) -> Path:
    """``url`` to ``target`` through a partial file, its SHA-256 prefix checked; urllib honours the proxy settings."""
    partial = target.with_name(target.name + ".partial")
    advice = "where there is a network, download it and pass it with --inception-weights PATH"
    advice += f" (or put it in {target.parent})"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            target.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts; ValueError: a malformed url
        partial.unlink(missing_ok=True)
        reason = one_line(getattr(error, "reason", error))
        raise ConfigError(f"cannot download the Inception weights ({reason}) from {url}: {advice}") from None
    if not digest.hexdigest().startswith(INCEPTION_SHA256):
        partial.unlink(missing_ok=True)
        raise ConfigError(f"what {url} sent is not the Inception weights (SHA-256): {advice}")
    partial.replace(target)
    return target


def load_inception_state(path: Path) -> dict[str, Tensor]:
    """The weights' state dict, read with ``weights_only=True`` (tensors only: a pickle payload executes nothing)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a user's file: not a zip, not a pickle, or one that holds more than tensors
        raise ConfigError(
            f"cannot read {path} as a weights file ({type(error).__name__}; tensors only): pass torch-fidelity's "
            f"{INCEPTION_FILES[0]}"
        ) from None
    fc = state.get("fc.weight") if isinstance(state, Mapping) else None
    if not isinstance(fc, Tensor) or tuple(fc.shape) != (1008, 2048):
        raise ConfigError(
            f"{path} holds no InceptionV3 FID weights (no fc.weight of shape 1008×2048): pass torch-fidelity's "
            f"{INCEPTION_FILES[0]}"
        )
    return dict(state)


def inception_input(images: Tensor) -> Tensor:
    """Images (b, c, h, w), uint8 or floats in [0, 1], as the Inception network takes them: uint8 (floats rounded,
    so k/255 → k exactly; torchmetrics' ``normalize=True`` would truncate) and 3 channels (grey repeated). The
    network resizes them to 299×299 itself."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"the Inception features need images (b, 1 or 3, h, w), got {tuple(images.shape)}")
    pixels = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return repeat(pixels, "b 1 h w -> b 3 h w") if pixels.shape[1] == 1 else pixels


class InceptionFeatures(nn.Module):
    """InceptionV3's 2048-d pool features of images (b, c, h, w), uint8 or floats in [0, 1]: torchmetrics'
    ``NoTrainInceptionV3`` (torch-fidelity's port of the TF FID graph) with the weights at ``weights``, resized to
    299×299 by the TF-1 bilinear resize that torch-fidelity and the original FID code use (``antialias=False``)."""

    num_features = 2048

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        require_torch_fidelity()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.weights = Path(weights)
        state = load_inception_state(self.weights)
        buffer = io.BytesIO()  # our own serialisation of plain tensors: torch-fidelity reads it with weights_only=False
        torch.save(state, buffer)
        buffer.seek(0)
        try:
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048"],
                feature_extractor_weights_path=buffer,
                antialias=False,
            )
        except RuntimeError as error:  # load_state_dict: missing, unexpected or misshapen keys
            lines = str(error).strip().splitlines() or [type(error).__name__]
            detail = one_line(lines[min(1, len(lines) - 1)])  # the first of the missing, unexpected or misshapen keys
            detail = detail if len(detail) <= 160 else detail[:157] + "..."
            raise ConfigError(
                f"{self.weights} does not fit torch-fidelity's InceptionV3 ({detail}): pass its {INCEPTION_FILES[0]}"
            ) from None

    @property
    def name(self) -> str:
        return f"InceptionV3 pool, 2048-d ({self.weights.name})"

    def forward(self, images: Tensor) -> Tensor:
        return self.net(inception_input(images))  # (b, 2048)


def feature_network(
    spec: str | Path | nn.Module = "inception", *, allow_download: bool = True, timeout: float = 10.0
) -> nn.Module:
    """The network that maps images to features: ``spec`` itself when it is a module; for "inception", InceptionV3
    with the weights found by ``inception_weights`` (the hub cache, else a download if ``allow_download``); for any
    other string or a path, InceptionV3 with the weights file at that path."""
    if isinstance(spec, nn.Module):
        return spec
    require_torch_fidelity()
    if isinstance(spec, str) and spec == "inception":
        return InceptionFeatures(inception_weights(allow_download=allow_download, timeout=timeout))
    return InceptionFeatures(inception_weights(spec))


def describe(network: nn.Module) -> str:
    return network.name if isinstance(network, InceptionFeatures) else type(network).__name__


# --- the metrics, on features ----------------------------------------------------------------------------------------


class GivenFeatures(nn.Module):
    """Features already extracted, handed to torchmetrics' metrics as their "custom network" in place of images."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def check_features(real: Tensor, fake: Tensor, *, at_least: int) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(f"features must be (n, d) and (m, d), got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) < at_least:
        raise ConfigError(f"needs at least {at_least} real and generated images, got {len(real)} and {len(fake)}")


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between features (n, d) and (m, d), n, m ≥ 2: torchmetrics' FrechetInceptionDistance, in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    check_features(real, fake, at_least=2)
    metric = FrechetInceptionDistance(feature=GivenFeatures(real.shape[1])).to(real.device)
    metric.update(real.double(), real=True)
    metric.update(fake.double().to(real.device), real=False)
    return float(metric.compute())


@dataclass(frozen=True)
class KernelDistance:
    """KID: the mean and (population) standard deviation of the unbiased MMD² over ``subsets`` subsets of
    ``subset_size`` points of each set."""

    mean: float
    std: float
    subset_size: int
    subsets: int


def kernel_distance(
    real: Tensor, fake: Tensor, *, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> KernelDistance:
    """KID between features (n, d) and (m, d): torchmetrics' KernelInceptionDistance (cubic kernel, float64) over
    ``subsets`` random subsets of min(subset_size, n, m) points of each set, drawn from ``seed``; one subset when
    that is all of both sets (every draw would be the same)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    check_features(real, fake, at_least=2)
    if subset_size < 2 or subsets < 1:
        raise ConfigError(f"KID needs a subset size of at least 2 and 1 subset, got {subset_size} and {subsets}")
    size = min(subset_size, len(real), len(fake))
    subsets = 1 if size == len(real) == len(fake) else subsets
    with warnings.catch_warnings():  # that it keeps every feature: so does this module, on purpose
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=GivenFeatures(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double().to(real.device), real=False)
    with torch.random.fork_rng(devices=[]):  # its subsets come from torch.randperm on the CPU generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return KernelDistance(mean=float(mean), std=float(std), subset_size=size, subsets=subsets)


def kth_neighbour_radii(points: Tensor, k: int, rows: int) -> Tensor:
    """The distance from each point (n, d) to its k-th nearest other point of the set, (n,): the (k+1)-th smallest
    distance, the point itself (at 0) being the first."""
    return torch.cat([torch.cdist(block, points).kthvalue(k + 1, dim=1).values for block in points.split(rows)])


def covered(points: Tensor, centres: Tensor, radii: Tensor, rows: int) -> float:
    """The fraction of points (m, d) inside at least one ball (centres (n, d), radii (n,)), boundary included."""
    inside = [(torch.cdist(block, centres) <= radii).any(dim=1) for block in points.split(rows)]  # (rows, n) each
    return float(torch.cat(inside).double().mean())


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float  # the fraction of generated points inside the real manifold
    recall: float  # the fraction of real points inside the generated manifold


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3, rows: int | None = None) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of features fake (m, d) against real (n, d):
    precision, the fraction of fake points inside the real manifold; recall, the fraction of real points inside the
    fake manifold; a manifold is the union of the balls around a set's points reaching each one's k-th nearest
    neighbour in that set. Distances are computed ``rows`` points at a time (by default as many as keep
    ``CHUNK_ELEMENTS`` distances), so memory stays bounded whatever n and m."""
    if k < 1:
        raise ConfigError(f"precision/recall needs k ≥ 1 neighbours, got {k}")
    check_features(real, fake, at_least=k + 1)
    real, fake = real.double(), fake.double().to(real.device)
    rows = rows or max(1, CHUNK_ELEMENTS // max(len(real), len(fake)))
    return PrecisionRecall(
        precision=covered(fake, real, kth_neighbour_radii(real, k, rows), rows),
        recall=covered(real, fake, kth_neighbour_radii(fake, k, rows), rows),
    )


# --- a model's samples against real images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityFeatures:
    """Features of the real images (n, d) and of the model's samples (m, d), float64 on the CPU."""

    real: Tensor
    fake: Tensor


def features_of(network: nn.Module, images: Tensor) -> Tensor:
    return rearrange(network(images), "b ... -> b (...)").double().cpu()  # (b, d)


def sample_features(
    model: LatentVariableModel,
    real_batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_samples: int,
    network: nn.Module,
    batch_size: int = 100,
    temperature: float = 1.0,
    context: Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> QualityFeatures:
    """The features of up to ``num_samples`` real images (the first of ``real_batches``: (x, y) batches, x uint8 or
    floats in [0, 1]) and of ``num_samples`` samples of the model (``model.sample`` at ``temperature``, drawn
    ``batch_size`` at a time from ``seed``). A conditional model samples with ``context`` (num_samples,) or
    (num_samples, m), by default the labels of the real images used, in turn: the real label distribution. The
    model and the network run in eval mode without gradients on ``device`` (where both are moved), and are left in
    the mode they were found in."""
    if num_samples < 2 or batch_size < 1:
        raise ConfigError(f"sample quality needs num_samples ≥ 2 and batch_size ≥ 1, got {num_samples}, {batch_size}")
    report = progress or (lambda message: None)
    with inference(model.to(device)), inference(network.to(device)):
        real, labels = [], []
        count = 0
        for images, batch_labels in real_batches:
            take = min(len(images), num_samples - count)
            x = as_unit(images[:take].to(device))
            if tuple(x.shape[1:]) != tuple(model.image_shape):
                raise ConfigError(f"the real images are {tuple(x.shape[1:])}, the model's {tuple(model.image_shape)}")
            if x.numel() and (x.min() < 0 or x.max() > 1):
                raise DataError("the real images must be uint8 or floats in [0, 1] (pixels='unit'), not normalised")
            real.append(features_of(network, x))
            labels.append(batch_labels[:take])
            count += take
            report(f"real images: {count}/{num_samples}")
            if count == num_samples:
                break
        if count < 2:
            raise DataError(f"sample quality needs at least 2 real images, got {count}")
        if context is None and model.capabilities.conditional:
            found = torch.cat(labels)
            context = found[torch.arange(num_samples) % len(found)]
        if context is not None and len(context) != num_samples:
            raise ConfigError(f"context must have num_samples ({num_samples}) rows, got {len(context)}")
        fake = []
        with seeded(model, seed):
            for start in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - start)
                chunk = None if context is None else context[start : start + n].to(device)
                samples = model.sample(n, temperature=temperature, context=chunk).clamp(0, 1)  # (n, c, h, w)
                fake.append(features_of(network, samples))
                report(f"samples: {start + n}/{num_samples}")
    return QualityFeatures(real=torch.cat(real), fake=torch.cat(fake))


def sample_quality(
    model: LatentVariableModel,
    real_batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_samples: int,
    features: str | Path | nn.Module = "inception",
    batch_size: int = 100,
    k: int = 3,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    temperature: float = 1.0,
    context: Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    allow_download: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SampleQuality:
    """FID, KID and precision/recall (k neighbours) of ``num_samples`` samples of the model against up to as many
    real images from ``real_batches``, in the space of ``features`` ("inception", a path to the InceptionV3
    weights, or a module: ``feature_network``). Deterministic given ``seed`` (the samples and KID's subsets); see
    ``sample_features`` for the images, the context of a conditional model and the modes."""
    network = feature_network(features, allow_download=allow_download)
    found = sample_features(
        model,
        real_batches,
        num_samples=num_samples,
        network=network,
        batch_size=batch_size,
        temperature=temperature,
        context=context,
        seed=seed,
        device=device,
        progress=progress,
    )
    real, fake = found.real.to(device), found.fake.to(device)
    kid = kernel_distance(real, fake, subset_size=kid_subset_size, subsets=kid_subsets, seed=seed)
    manifolds = precision_recall(real, fake, k=k)
    return SampleQuality(
        fid=frechet_distance(found.real, found.fake),
        kid_mean=kid.mean,
        kid_std=kid.std,
        precision=manifolds.precision,
        recall=manifolds.recall,
        samples=len(fake),
        features=describe(network),
        real_images=len(real),
        k=k,
        kid_subset_size=kid.subset_size,
        kid_subsets=kid.subsets,
    )
