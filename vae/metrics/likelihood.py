"""Evaluation: latent statistics (reduced correctly across processes), the importance-weighted
log-likelihood, bits per dimension, and ``evaluate`` over a split.

Clustering accuracy (of a layer with one categorical variable, ``vae.layers.discrete``): each image's most probable
category is its cluster; the clusters are matched one-to-one to the classes by the Hungarian algorithm so that the
most images agree, and the accuracy is the fraction that do (Xie et al. 2016's unsupervised clustering accuracy).

Active units (Burda et al. 2015): dimension d is active when Cov_x(E_q[z_d|x]) > 0.01, the variance
over the data of the posterior mean. For a feature-map layer the unit is a latent channel: its variance is the
mean over positions of each position's variance. The KL per unit is the dataset mean of the KL of that dimension
(or channel, summed over positions), where the prior factorises (it does not for a mixture or the VampPrior).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from torch import Tensor
from torchmetrics import Metric

from vae.core.errors import ConfigError
from vae.core.pixels import as_unit
from vae.models.base import LatentVariableModel, inference

ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass  # not frozen: torchmetrics maps over the fields of what compute() returns
class LatentSummary:
    """kl_per_dim: (u,) nats per unit, or None if no batch had one; mean_variance: (u,) Var_x(E_q[z_u|x]) (mean over
    positions); active_units: how many units' variances exceed the threshold."""

    kl_per_dim: Tensor | None
    mean_variance: Tensor
    active_units: int


class LatentStatistics(Metric):
    """Accumulates, over batches (and processes), a layer's KL per unit and its active units.

    units: latent dimensions (a vector) or channels (a feature map); positions: h·w of a feature map, 1 for a vector.
    """

    full_state_update = False

    def __init__(self, *, latent_dim: int, positions: int = 1, threshold: float = ACTIVE_UNIT_THRESHOLD) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("kl_sum", default=torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("mean_sum", "mean_sq_sum"):
            self.add_state(name, default=torch.zeros(latent_dim, positions, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("count", "kl_count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior_mean: Tensor, kl_per_dim: Tensor | None) -> None:
        """posterior_mean: (b, u, s), or (b, d) for a vector; kl_per_dim: (b, u), None where the prior does not
        factorise."""
        if posterior_mean.dim() == 2:
            posterior_mean = rearrange(posterior_mean, "b d -> b d 1")
        if kl_per_dim is not None:
            self.kl_sum += reduce(kl_per_dim.double(), "b u -> u", "sum")
            self.kl_count += kl_per_dim.shape[0]
        self.mean_sum += reduce(posterior_mean.double(), "b u s -> u s", "sum")
        self.mean_sq_sum += reduce(posterior_mean.double().square(), "b u s -> u s", "sum")
        self.count += posterior_mean.shape[0]

    def compute(self) -> LatentSummary:
        n = self.count.clamp_min(1)
        mean = self.mean_sum / n
        # Unbiased variance over the examples seen, per unit and position, then the mean over positions.
        variance = ((self.mean_sq_sum - n * mean.square()) / (n - 1).clamp_min(1)).clamp_min(0).mean(dim=1)
        return LatentSummary(
            kl_per_dim=(self.kl_sum / self.kl_count).float() if self.kl_count > 0 else None,
            mean_variance=variance.float(),
            active_units=int((variance > self.threshold).sum()),
        )


def importance_weighted_log_likelihood(
    vae: LatentVariableModel, x: Tensor, *, num_samples: int, chunk_size: int = 100, context: Tensor | None = None
) -> Tensor:
    """The importance-weighted estimate of log p(x) per example (b,), nats, with K = ``num_samples``: the model's
    ``log_likelihood`` (in eval mode without gradients; the model is left in the mode it was found in)."""
    return vae.log_likelihood(x, samples=num_samples, chunk_size=chunk_size, context=context)


def clustering_accuracy(clusters: Tensor, labels: Tensor) -> float:
    """The fraction of examples whose cluster, matched one-to-one to a class by the Hungarian algorithm (the
    matching that maximises the agreement), is their class; clusters and labels are integers (n,). With more
    clusters than classes the unmatched clusters count as wrong."""
    from scipy.optimize import linear_sum_assignment

    if clusters.shape != labels.shape or clusters.dim() != 1 or not len(clusters):
        raise ValueError(f"clusters and labels must be integer vectors of one length: {clusters.shape}, {labels.shape}")
    clusters, labels = clusters.long().cpu(), labels.long().cpu()
    size = (int(clusters.max()) + 1, int(labels.max()) + 1)
    counts = torch.zeros(size, dtype=torch.long)  # counts[cluster, class]
    counts.index_put_((clusters, labels), torch.ones_like(clusters), accumulate=True)
    rows, columns = linear_sum_assignment(counts.numpy(), maximize=True)
    return float(counts[rows, columns].sum()) / len(clusters)


class Reconstruction(Metric):
    """How close reconstructions E[x | z = E_q[z|x]] are to their images, in [0, 1] pixels, averaged over images:
    ``mse`` (per pixel), ``psnr`` (10·log10(1 / MSE of each image), dB) and ``ssim`` (Wang et al. 2004, an 11×11
    Gaussian window of σ 1.5, torchmetrics'; None for images smaller than the window). Beside the likelihood, they
    compare with models trained on other losses; they know nothing of the likelihood's spread."""

    SSIM_WINDOW = 11

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))  # per image, then the mean
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.add_state("squared_error", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, reconstructions: Tensor, images: Tensor) -> None:
        reconstructions, images = reconstructions.float(), as_unit(images).float()
        self.squared_error += (reconstructions - images).double().square().sum()
        self.pixels += images.numel()
        self.psnr.update(reconstructions, images)
        if min(images.shape[-2:]) >= self.SSIM_WINDOW:
            self.ssim.update(reconstructions, images)

    def compute(self) -> dict[str, float | None]:
        return {
            "mse": float(self.squared_error / self.pixels.clamp_min(1)),
            "psnr": float(self.psnr.compute()),
            "ssim": float(self.ssim.compute()) if self.ssim.update_count else None,
        }


def encode_split(
    vae: LatentVariableModel, batches: Iterable[tuple[Tensor, Tensor]], *, device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """``mean``, ``variance`` (n, d) of q(z|x) as ``encode`` gives them (float32; an integer code, a VQ model's
    indices, stays integer), and ``labels``, of every (x, y) batch in
    order, on the CPU (a conditional model is given y)."""
    means, variances, labels = [], [], []
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        encoding = vae.encode(x, context=y if vae.capabilities.conditional else None)
        means.append((encoding.mean.float() if encoding.mean.is_floating_point() else encoding.mean).cpu())
        variances.append(encoding.variance.float().cpu())
        labels.append(y.cpu())
    if not means:
        raise ConfigError("the split has no images to encode")
    return {"mean": torch.cat(means), "variance": torch.cat(variances), "labels": torch.cat(labels)}


def bits_per_dim(nll: float, image_shape: Sequence[int]) -> float:
    """Nats per example → bits per dimension: nll / (D · ln 2), D = c·h·w."""
    return nll / (math.prod(image_shape) * math.log(2))


@dataclass(frozen=True)
class Evaluation:
    """A model's numbers on one split, in nats per example (bits per dimension where named).

    kl_per_layer / active_units_per_layer: by layer name, top first (one entry for the single-layer VAE);
    kl_per_dim: the KL per latent dimension of a single-layer model (None for a hierarchy, or a prior that does
    not factorise)."""

    split: str
    num_examples: int
    num_samples: int
    log_likelihood: float | None  # the estimate of log p(x) from K = num_samples draws per image (None: none)
    bits_per_dim: float | None  # −log_likelihood / (D ln 2)
    elbo: float
    recon: float  # −E_q[log p(x|z)]
    kl: float
    active_units: int
    kl_per_dim: list[float] | None
    kl_per_layer: dict[str, float]
    active_units_per_layer: dict[str, int]
    disentanglement: dict[str, float] | None = None  # vae.metrics.disentanglement's, for data with factors
    conditional: bool = False  # a conditional model: the log-likelihood is log p(x | y)
    clustering_accuracy: dict[str, float] | None = None  # of each layer with one categorical variable, by layer
    reconstruction: dict[str, float | None] | None = None  # mse, psnr (dB), ssim of reconstructions (Reconstruction)
    quality: dict[str, float] | None = None  # fid, kid_mean, kid_std, precision, recall (vae.metrics.quality)
    model_metrics: dict[str, float] | None = None  # the model's own over the split (``split_metrics``)
    inference_gap: float | None = None  # log_likelihood − elbo: a lower bound on E_x[KL(q(z|x) ‖ p(z|x))]
    no_kl_per_dim: str | None = None  # why a single-layer model has no KL per dimension (a correlated posterior)
    likelihood_estimator: str = "importance-weighted"  # or "elbo": the ELBO averaged over K draws (no density)
    bits_per_dim_se: float | None = None  # the standard error of bits_per_dim over the images
    estimator_se: float | None = None  # "elbo": the Monte-Carlo standard error of bits_per_dim (from the K draws)
    kl_terms: dict[str, float] | None = None  # the model's KL terms (a diffusion model's kl/prior, diffusion)
    latent_layers: bool = True  # False: no latent layers to count active units of (a diffusion model)

    def table(self) -> str:
        rows = [("split", f"{self.split} ({self.num_examples} images)")]
        if self.log_likelihood is not None and self.bits_per_dim is not None:
            given = " | y" if self.conditional else ""
            how = (
                f", importance-weighted, K={self.num_samples}"
                if self.likelihood_estimator == "importance-weighted"
                else f" ≥ ELBO, averaged over K={self.num_samples} draws"
            )
            bits = f"{self.bits_per_dim:.4f}"
            if self.bits_per_dim_se is not None:
                bits += f" ± {self.bits_per_dim_se:.4f} (standard error over the images)"
            rows += [
                (f"log p(x{given}){how}", f"{self.log_likelihood:.3f} nats"),
                ("negative log-likelihood in bits/dim", bits),
            ]
            if self.estimator_se is not None:
                rows.append(("  Monte-Carlo standard error of the estimate", f"{self.estimator_se:.5f} bits/dim"))
            if self.inference_gap is not None:
                rows.append(
                    ("inference gap, log p(x) − ELBO (≤ E KL(q(z|x) || p(z|x)))", f"{self.inference_gap:.3f} nats")
                )
        else:
            rows.append(("log p(x)", "n/a (the model has no posterior density)"))
        rows += [
            ("ELBO", f"{self.elbo:.3f} nats"),
            ("  reconstruction −E_q[log p(x|z" + (",y)]" if self.conditional else ")]"), f"{self.recon:.3f} nats"),
            ("  KL(q(z|x,y) || p(z|y))" if self.conditional else "  KL(q(z|x) || p(z))", f"{self.kl:.3f} nats"),
        ]
        rows += [(f"    {name}", f"{value:.3f} nats") for name, value in (self.kl_terms or {}).items()]
        units = f"{self.active_units}" if self.latent_layers else "n/a (no latent layers with a code of each image)"
        rows.append(("active units (Cov_x E_q[z_d] > 0.01)", units))
        if len(self.kl_per_layer) > 1:
            rows += [
                (f"  layer {name}: KL, active units", f"{kl:.3f} nats, {self.active_units_per_layer[name]}")
                for name, kl in self.kl_per_layer.items()
            ]
        if self.kl_per_dim is not None:
            rows.append(("KL per dimension", ", ".join(f"{v:.2f}" for v in self.kl_per_dim)))
        elif self.no_kl_per_dim is not None:
            rows.append(("KL per dimension", f"n/a ({self.no_kl_per_dim})"))
        if self.reconstruction is None and not self.latent_layers:
            rows.append(("reconstructions", "n/a (the model has no code of each image to reconstruct from)"))
        if self.reconstruction is not None:
            r = self.reconstruction
            ssim = "n/a (images under 11×11)" if r["ssim"] is None else f"{r['ssim']:.4f}"
            rows.append(("reconstructions: MSE, PSNR, SSIM", f"{r['mse']:.5f}, {r['psnr']:.2f} dB, {ssim}"))
        rows += [(name, f"{value:.4f}") for name, value in (self.model_metrics or {}).items()]
        if self.quality is not None:
            rows += [(f"samples: {name}", f"{value:.4f}") for name, value in self.quality.items()]
        for name, accuracy in (self.clustering_accuracy or {}).items():
            rows.append((f"clustering accuracy of {name} (Hungarian matching)", f"{accuracy:.4f}"))
        if self.disentanglement is not None:
            rows += [(f"disentanglement: {name}", f"{value:.3f}") for name, value in self.disentanglement.items()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def evaluate(
    vae: LatentVariableModel,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_samples: int = 5000,
    chunk_size: int = 100,
    split: str = "test",
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Importance-weighted log-likelihood, ELBO and its terms, and each layer's KL and active units over a split;
    for a conditional model given the batches' labels (log p(x | y)), and for a layer with one categorical variable
    its clustering accuracy against integer labels. It runs in eval mode without gradients, on ``device`` (where
    the model is moved), and leaves the model in the mode it found it."""
    with inference(vae.to(device)):
        return _evaluate(vae, batches, num_samples=num_samples, chunk_size=chunk_size, split=split, device=device)


def _evaluate(
    vae: LatentVariableModel,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_samples: int,
    chunk_size: int,
    split: str,
    device: torch.device | str,
) -> Evaluation:
    """``evaluate``'s work, inside ``inference``."""
    abilities = vae.capabilities
    if abilities.deterministic_encoder:  # one code per image: the estimate is exact with K = 1
        num_samples = 1
    stats = {
        layer.name: LatentStatistics(latent_dim=layer.units, positions=layer.positions).to(device)
        for layer in vae.layers
    }
    names = list(stats)
    density, bound = abilities.posterior_density, abilities.likelihood_bound and not abilities.posterior_density
    sums = torch.zeros(3 + len(names) + len(vae.kl_term_names), dtype=torch.float64)  # count, log p, log p(x|z), KLs
    per_image: list[Tensor] = []  # each image's estimate of log p(x)
    mc_variance = torch.zeros((), dtype=torch.float64)  # Σ over images of the variance of each image's estimate
    clusters: dict[str, list[Tensor]] = {layer.name: [] for layer in vae.layers if layer.clusters}
    labelled: list[Tensor] = []
    reconstruction = Reconstruction().to(device) if abilities.latent_code else None
    own = vae.split_metrics()
    own = None if own is None else own.to(device)
    for images, labels in batches:
        x, labels = as_unit(images.to(device)), labels.to(device)
        out = vae(x, context=labels)
        if reconstruction is not None:
            reconstruction.update(vae.reconstruct(x, context=labels), x)
        if density:
            log_likelihood = importance_weighted_log_likelihood(
                vae, x, num_samples=num_samples, chunk_size=chunk_size, context=labels
            )
        elif bound:
            draws = vae.elbo_draws(x, samples=num_samples, chunk_size=chunk_size, context=labels).double()
            log_likelihood = draws.mean(dim=0)
            if num_samples > 1:
                mc_variance += (draws.var(dim=0) / num_samples).sum().cpu()
        else:
            log_likelihood = torch.full((len(x),), math.nan, device=x.device)
        per_image.append(log_likelihood.double().cpu())
        if own is not None:
            own.update(out)
        for name, layer in out.latents.items():
            stats[name].update(layer.posterior_mean, layer.kl_per_unit)
            if name in clusters:
                clusters[name].append(layer.posterior_mean[:, 0].argmax(dim=-1).cpu())
        if clusters and labels.dim() == 1 and not labels.is_floating_point():
            labelled.append(labels.cpu())
        kls = [out.latents[name].kl.sum() for name in names] + [out.kl_terms[name].sum() for name in vae.kl_term_names]
        batch = torch.stack([x.new_tensor(float(len(x))), log_likelihood.sum(), out.log_px.sum(), *kls]).double()
        sums += batch.cpu()
    classes = len(torch.cat(labelled).unique()) if labelled else 0  # one class (CelebA's 0s) scores nothing
    n = float(sums[0])
    if n == 0:
        raise ConfigError(f"the {split} split is empty: nothing to evaluate")
    log_likelihood, log_px, *kls = (float(v) / n for v in sums[1:])
    layer_kls, term_kls = kls[: len(names)], kls[len(names) :]
    estimated = density or bound
    estimates = torch.cat(per_image)
    to_bits = 1 / (math.prod(vae.image_shape) * math.log(2))
    spread = float(estimates.std() / math.sqrt(n)) * to_bits if estimated and n > 1 else None
    # How far the posterior is from the true one: the importance-weighted log p(x) (≤ log p(x)) minus the ELBO, a lower
    # bound on E_x[KL(q(z|x) ‖ p(z|x))]; none for a deterministic encoder, whose estimate is the ELBO itself.
    gap = log_likelihood - (log_px - sum(kls)) if density and not abilities.deterministic_encoder else None
    summaries = {name: metric.compute() for name, metric in stats.items()}
    only = summaries[names[0]] if len(names) == 1 else None
    return Evaluation(
        split=split,
        num_examples=int(n),
        num_samples=num_samples,
        log_likelihood=log_likelihood if estimated else None,
        bits_per_dim=bits_per_dim(-log_likelihood, vae.image_shape) if estimated else None,
        elbo=log_px - sum(kls),
        recon=-log_px,
        kl=sum(kls),
        active_units=sum(summary.active_units for summary in summaries.values()),
        kl_per_dim=only.kl_per_dim.tolist() if only is not None and only.kl_per_dim is not None else None,
        kl_per_layer=dict(zip(names, layer_kls)),
        active_units_per_layer={name: summary.active_units for name, summary in summaries.items()},
        conditional=abilities.conditional,
        reconstruction=None if reconstruction is None else reconstruction.compute(),
        inference_gap=gap,
        no_kl_per_dim=vae.layers[0].no_kl_per_unit if len(vae.layers) == 1 else None,
        model_metrics=None if own is None else {name: float(value) for name, value in own.compute().items()},
        clustering_accuracy=(
            {name: clustering_accuracy(torch.cat(found), torch.cat(labelled)) for name, found in clusters.items()}
            if clusters and len(labelled) == len(next(iter(clusters.values()))) and classes > 1
            else None
        ),
        likelihood_estimator="elbo" if bound else "importance-weighted",
        bits_per_dim_se=spread,
        estimator_se=float(mc_variance.sqrt() / n) * to_bits if bound and num_samples > 1 else None,
        kl_terms=dict(zip(vae.kl_term_names, term_kls)) if vae.kl_term_names else None,
        latent_layers=bool(vae.layers),
    )
