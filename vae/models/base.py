"""Latent-variable models: what every model returns (``ModelOutput``), their common interface, and the
single-layer VAE (encoder → one ``GaussianLatent`` → decoder → likelihood), the one-layer case of it.

    log w_k = log p(x|z_k) + Σ_l [log p(z_l,k | z_>l,k) − log q(z_l,k | x, z_>l,k)],   E_q[w] = p(x)

Hierarchies build on the same pieces (``vae.models.hierarchical``); an objective reads only ``ModelOutput``
(``vae.objectives.elbo``).

Axes: b batch, k samples per example, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from einops import rearrange
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.core.gaussian import GaussianMoments
from vae.core.kl import Estimator
from vae.layers.latents import GaussianLatent, KLParts, LatentSample
from vae.layers.likelihoods import Likelihood
from vae.models import pictures

RELAXED_IWAE = (
    "the IWAE objective (importance_samples > 1) needs exact log densities, and discrete latents train on a "
    "relaxation: use importance_samples 1 (vae evaluate's log-likelihood uses exact samples)"
)
"""Why a ``relaxed`` model cannot train on the IWAE bound: said before training, and by the model if asked by hand."""


@contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode and without gradients inside the block; afterwards every submodule is back in the mode
    the caller left it (a model in training mode stays so, and its BatchNorm statistics are never updated here)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training


Method = TypeVar("Method", bound=Callable[..., Any])


def inferring(method: Method) -> Method:
    """A model method that runs under ``inference``: eval mode, no gradients, the caller's mode restored."""

    @functools.wraps(method)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with inference(self):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def log_mean_exp_chunks(chunks: Iterable[Tensor]) -> Tensor:
    """log (1/K) Σ_k exp(a_k) over chunks of shape (k_i, b), with K = Σ k_i, merged by log-add-exp: one
    chunk in memory at a time, and exact (the same as one log-sum-exp over all K)."""
    total, count = None, 0
    for chunk in chunks:
        part = torch.logsumexp(chunk, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        count += chunk.shape[0]
    if total is None:
        raise ValueError("log_mean_exp_chunks needs at least one chunk")
    return total - math.log(count)


@dataclass(frozen=True)
class Encoding:
    """q(z|x) of a batch, as the model's code: the posterior mean and variance of every code feature, (b, d).

    For one Gaussian latent vector these are μ and σ²; for a hierarchy, its top layer's (the layers below are drawn
    given it); for discrete latents, each variable's outcome probabilities (a categorical's K, a Bernoulli unit's
    q(1)) and their variances p(1 − p). ``decode`` takes the mean (or any code of this shape) back to images.
    """

    mean: Tensor
    variance: Tensor

    @classmethod
    def of(cls, moments: GaussianMoments) -> Encoding:
        """A Gaussian posterior's code: its mean and its variance exp(log σ²)."""
        return cls(mean=moments.mean, variance=moments.logvar.exp())


@dataclass(frozen=True)
class ModelOutput:
    """One forward pass over b examples with K posterior samples each; every per-example tensor is (K·b,),
    laid out "(k b)".

    log_px: log p(x|z) per example, nats summed over pixels.
    latents: each layer's ``LatentSample`` by name, from the top of the hierarchy down.
    params: the decoder's output, (K·b, param channels, h, w).
    samples: K.
    settings: what the model used at this step that is logged beside the weights at training steps (the
        relaxation's temperature of discrete latents, ``temperature``).
    """

    log_px: Tensor
    latents: dict[str, LatentSample]
    params: Tensor
    samples: int = 1
    settings: dict[str, float] = field(default_factory=dict)

    @property
    def kl(self) -> Tensor:
        """The total KL per example: the sum of the layers' KLs (K·b,)."""
        return torch.stack([layer.kl for layer in self.latents.values()]).sum(dim=0)

    def kl_parts(self) -> KLParts:
        return KLParts.of(self.latents)

    def log_w(self) -> Tensor:
        """The log importance weights, (K, b): exact log densities of the samples, whatever the KL estimator."""
        log_ratio = torch.stack([layer.log_ratio() for layer in self.latents.values()]).sum(dim=0)
        return rearrange(self.log_px - log_ratio, "(k b) -> k b", k=self.samples)


class LatentVariableModel(nn.Module, ABC):
    """The interface every model keeps: a forward pass to ``ModelOutput``, samples, reconstructions, pictures.

    image_shape: (c, h, w) of the images modelled; likelihood: p(x|z); layers: the latent layers, top first.
    conditional: whether it models p(x | y) and needs the context y (a label or a vector, ``vae.models.conditional``) in
        every call; the others take ``context`` and ignore it, so the training module hands every model its batch's
        labels.
    relaxed: whether training decodes relaxed samples whose density is not the model's (discrete latents,
        ``vae.layers.discrete``); such a model cannot train on the IWAE bound.
    """

    image_shape: tuple[int, int, int]
    likelihood: Likelihood
    conditional: bool = False
    relaxed: bool = False  # training decodes relaxed samples (discrete latents): no IWAE training

    @property
    @abstractmethod
    def layers(self) -> list[GaussianLatent | Any]:
        """The latent layers, from the top of the hierarchy down (each has ``name`` and ``units``)."""

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def kl_estimator(self) -> Estimator:
        """The KL estimator in use: "analytic" if every layer has a closed form, else "mc"."""
        return "analytic" if all(layer.kl_estimator == "analytic" for layer in self.layers) else "mc"

    @abstractmethod
    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        """x: images (b, c, h, w), floats in [0, 1] or uint8 (read as k/255); ``samples`` posterior draws each;
        context: the batch's labels (b,) or context vectors (b, m), used by a conditional model; step: the trainer's
        global step, for schedules inside the model (a relaxation's temperature), None outside training."""

    # The everyday methods below (sample, reconstruct, encode, decode, log_likelihood) run under ``inference``: in
    # eval mode, without gradients, leaving the model in the mode they found it. Images are (b, c, h, w), floats in
    # [0, 1] or uint8, on the model's device; ``context`` is what a conditional model needs (the labels y).

    @abstractmethod
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        """E[x|z] for n draws of z from the prior, each layer's spread scaled by ``temperature``, (n, c, h, w)."""

    @abstractmethod
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        """E[x|z] with z at the posterior means of the top ``keep`` layers (all by default) and, below them, drawn
        from the prior given those (what the top layers encode), (b, c, h, w)."""

    @abstractmethod
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        """q(z|x)'s mean and variance as the model's code (``Encoding``), (b, d) each."""

    @abstractmethod
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        """E[x|z] for codes z (b, d) as ``encode`` gives them, (b, c, h, w)."""

    @abstractmethod
    def networks(self) -> list[nn.Module]:
        """The deterministic networks, for ``torch.compile`` (``model.compile``)."""

    def representation(self, x: Tensor, *, context: Tensor | None = None) -> Tensor:
        """The code the disentanglement metrics score: the posterior mean of ``encode``, (b, d)."""
        return self.encode(x, context=context).mean

    def log_weights(self, x: Tensor, num_samples: int, *, context: Tensor | None = None) -> Tensor:
        """log w_k for ``num_samples`` posterior samples of each example, (K, b)."""
        return self.forward(x, samples=num_samples, context=context).log_w()

    @inferring
    def log_likelihood(
        self, x: Tensor, *, samples: int = 1000, chunk_size: int = 100, context: Tensor | None = None
    ) -> Tensor:
        """The importance-weighted estimate of log p(x) per example (b,), nats (of log p(x | y) given the labels
        ``context`` of a conditional model):

            log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x)   (z all the layers of a hierarchy)

        It is the IWAE bound with K = ``samples``: a lower bound in expectation that tightens as K grows (Burda et
        al. 2015). Samples are drawn ``chunk_size`` at a time, so memory does not grow with K."""
        if samples < 1 or chunk_size < 1:
            raise ConfigError(f"samples and chunk_size must be positive integers, got {samples} and {chunk_size}")
        sizes = [min(chunk_size, samples - start) for start in range(0, samples, chunk_size)]
        return log_mean_exp_chunks(self.log_weights(x, k, context=context) for k in sizes)

    @torch.no_grad()
    def pictures(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        ranking: Tensor | None = None,
        nrow: int = 8,
        seed: int = 0,
        num_samples: int = 64,
    ) -> dict[str, Tensor]:
        """The model's pictures (``vae.models.pictures``) for a batch x of at least 2 images (with its ``context``):
        samples and reconstructions here, and what a model adds (traversals, per-class rows, ...).
        ``ranking``: how informative each dimension of a single latent vector is (its KL), to order traversals."""
        grids = {"samples": pictures.samples(self, num=num_samples, nrow=nrow, seed=seed)}
        rows = len(x) // nrow * nrow
        if rows:
            labels = None if context is None else context[:rows]
            grids["reconstructions"] = pictures.reconstructions(self, x[:rows], nrow=nrow, context=labels)
        return grids

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        """A state dict written by an earlier version of this model, with its keys renamed to this layout (none
        by default); keys already in this layout pass unchanged."""
        return dict(state)
