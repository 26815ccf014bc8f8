"""The model interface: what every model returns (``ModelOutput``), what it can be asked (``LatentVariableModel``) and
what it can do (``Capabilities``). A model is one class whose constructor is its config; commands and objectives ask
it, and never branch on its class.

    log w_k = log p(x|z_k) + Σ_l [log p(z_l,k | z_>l,k) − log q(z_l,k | x, z_>l,k)],   E_q[w] = p(x)

An objective reads only ``ModelOutput`` (``vae.objectives``); a model's own loss terms (a commitment loss, say) ride
on it as ``terms``, logged raw and weighted like every other term.

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
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.distributions import Distribution
from torchmetrics import Metric

from vae.core.errors import ConfigError
from vae.core.gaussian import GaussianMoments
from vae.core.kl import Estimator
from vae.core.spec import Configurable
from vae.layers.latents import KLParts, LatentLayer, LatentSample
from vae.layers.likelihoods import Likelihood
from vae.layers.nets.common import Network, check_network
from vae.models import pictures


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


def renamed_keys(state: Mapping[str, Tensor], renamed: Mapping[str, str], prefix: str = "") -> dict[str, Tensor]:
    """A state dict with each key that starts with ``prefix`` + an old name (the first of ``renamed`` that fits)
    under ``prefix`` + its new name; other keys pass unchanged."""
    upgraded = {}
    for key, value in state.items():
        for old, new in renamed.items():
            if key.startswith(prefix + old):
                key = prefix + new + key[len(prefix + old) :]
                break
        upgraded[key] = value
    return upgraded


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
class Term:
    """A loss term of the model's own (a VQ commitment loss, a codebook loss): its value per example (K·b,), raw,
    and the weight it enters the loss with. It is logged as ``{stage}/<name>`` (the batch mean), its weight beside it
    at training steps as ``train/<name>_weight``; it is not part of the ELBO."""

    value: Tensor
    weight: float = 1.0


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
    terms: the model's own loss terms by name (``Term``), as its ``term_names`` declares them.
    kl_terms: parts of the KL that are no latent layer's, per example (K·b,) by the name they are logged under, as
        the model's ``kl_term_names`` declares them (a diffusion model's ``kl/prior`` and ``diffusion``): they add to
        ``kl`` and are weighed with it.
    """

    log_px: Tensor
    latents: dict[str, LatentSample]
    params: Tensor
    samples: int = 1
    settings: dict[str, float] = field(default_factory=dict)
    terms: dict[str, Term] = field(default_factory=dict)
    kl_terms: dict[str, Tensor] = field(default_factory=dict)

    @property
    def kl(self) -> Tensor:
        """The total KL per example: the sum of the layers' KLs and the KL terms (K·b,); zero for a model with
        neither (a plain autoencoder)."""
        parts = [layer.kl for layer in self.latents.values()] + list(self.kl_terms.values())
        if not parts:
            return torch.zeros_like(self.log_px)
        return torch.stack(parts).sum(dim=0)

    def kl_parts(self) -> KLParts:
        """What a KL weighting weighs: each layer's KL, and each KL term as a part of its own (no KL per unit)."""
        parts = KLParts.of(self.latents)
        for name, kl in self.kl_terms.items():
            parts.per_layer[name], parts.per_unit[name], parts.sizes[name] = kl, None, 1
        return parts

    def log_w(self) -> Tensor:
        """The log importance weights, (K, b): exact log densities of the samples, whatever the KL estimator."""
        log_w = self.log_px
        if self.latents:
            log_w = log_w - torch.stack([layer.log_ratio() for layer in self.latents.values()]).sum(dim=0)
        return rearrange(log_w, "(k b) -> k b", k=self.samples)


@dataclass(frozen=True)
class LayerLaw:
    """One latent layer as a coder meets it in the generative order (``LatentVariableModel.walk``), for b examples.

    name: the layer's name (a code sequence's position, for an autoregressive prior over codes).
    prior: p(z_l | z_>l): a diagonal Gaussian (``Independent(Normal)``) or a ``Categorical`` over the layer's values.
    posterior: q(z_l | x, z_>l) of the same family, when the walk is given the images; None without them.
    code: where q(z_l | x, z_>l) puts all its mass on one value (a quantized code), that value (b, ...) in place of a
        posterior; None otherwise.
    """

    name: str
    prior: Distribution
    posterior: Distribution | None = None
    code: Tensor | None = None


Choose = Callable[[LayerLaw], Tensor]  # a layer's law → the z_l to go on with, in the prior's event shape


@dataclass(frozen=True)
class Capabilities:
    """What a model can do: what commands and objectives ask it, in place of looking at its class.

    posterior_density: q(z|x) has an exact density at its own samples, so log p(x) has an importance-weighted
        estimate (``log_likelihood``; ``vae evaluate``'s log-likelihood and bits/dim).
    iwae_training: it can train on the IWAE bound (a model that decodes relaxed samples in training cannot).
    kl_split: its top layer's KL splits into mutual information, total correlation and dimension-wise KL (a diagonal
        Gaussian posterior against one unconditional diagonal Gaussian prior): logged, and what β-TCVAE weighs.
    kl_per_dimension: the KL of each latent dimension is defined (one latent vector with a prior that factorises).
    conditional: it models p(x | y), and every call needs the context y (``context``).
    continuous_code: ``encode``'s code is one continuous vector that ``decode`` takes back, with a prior over it
        (``prior_distribution``): traversals, interpolations, a manifold of a 2-D code.
    needs_trained_prior: sampling needs a prior trained separately after the model (a quantized code's).
    deterministic_encoder: q(z|x) puts all its mass on one code (a quantized code's one-hot posterior): every
        importance sample is the same, so the importance-weighted log p(x) is the ELBO for every K, computed once.
    latent_code: each image has a code that ``encode``, ``decode`` and ``reconstruct`` work with; a diffusion model,
        whose latents are noisy copies of the image under a fixed encoder, has none (no reconstructions, latent
        scatter, active units).
    likelihood_bound: without a posterior density, log p(x) is reported as the ELBO averaged over draws
        (``elbo_draws``), a lower bound whose Monte-Carlo error is known (a diffusion model's, whose bound is tight);
        a model with neither (a plain autoencoder, which has no prior) reports none.
    sampling_steps: sampling runs a chain whose number of steps is a choice (``sample(n, steps=...)``, ``vae sample
        --steps``), and ``sampling_pictures`` shows it.
    """

    posterior_density: bool = True
    iwae_training: bool = True
    kl_split: bool = False
    kl_per_dimension: bool = False
    conditional: bool = False
    continuous_code: bool = False
    needs_trained_prior: bool = False
    deterministic_encoder: bool = False
    latent_code: bool = True
    likelihood_bound: bool = False
    sampling_steps: bool = False


class LatentVariableModel(Configurable, nn.Module, ABC):
    """The interface every model keeps. A model's constructor is its config (typed keyword arguments, recorded as
    ``init_args``); the base takes what comes from the data, linked by the ``vae`` command:

    image_shape: (c, h, w) of the images modelled.
    context_size: the size of the context the data gives with each image (its number of classes, the length of an
        attribute vector; None for unlabelled data). A conditional model reads it; the others accept and ignore it.

    A model has ``layers`` (its latent layers, top first; none for a plain autoencoder), a ``likelihood`` p(x|z), the
    names of its own loss terms (``term_names``, handed over in ``ModelOutput.terms``) and its ``capabilities``.
    """

    likelihood: nn.Module  # set by the model (a class attribute would hide the submodule)
    term_names: tuple[str, ...] = ()
    kl_term_names: tuple[str, ...] = ()  # the names of its KL terms (``ModelOutput.kl_terms``), as logged
    code_vocabulary: int | None = None  # the values of each element of an integer code (indices 0 to K − 1); None:
    # the code is continuous

    def __init__(self, *, image_shape: tuple[int, int, int], context_size: int | None = None) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ConfigError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
        if context_size is not None and context_size < 1:
            raise ConfigError(f"context_size must be a positive integer or None, got {context_size}")
        self.image_shape = tuple(image_shape)
        self.context_size = context_size

    def bind_network(self, network: Network, likelihood: Likelihood, *, code_dim: int) -> Network:
        """``network`` bound to this model: its encoder for the model's images, its decoder from codes of
        ``code_dim`` features to the likelihood's parameters at every pixel; a one-line error for anything that is
        not an encoder/decoder pair (a whole model given as a network, say)."""
        check_network(network, type(self).__name__)
        channels = likelihood.param_channels(self.image_shape[0])
        return network.bind(image_shape=self.image_shape, code_dim=code_dim, out_channels=channels)

    @property
    def layers(self) -> list[LatentLayer]:
        """The latent layers, from the top of the hierarchy down (each has ``name``, ``units`` and ``positions``)."""
        return []

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def capabilities(self) -> Capabilities:
        """What this model can do (``Capabilities``); by default from its layers: a KL split where its top layer has
        one, a KL per dimension for a single latent vector whose prior factorises."""
        top = self.layers[:1]
        return Capabilities(
            kl_split=bool(top) and top[0].kl_splits,
            kl_per_dimension=len(self.layers) == 1 and top[0].positions == 1 and top[0].factorises,
        )

    @property
    def kl_estimator(self) -> Estimator:
        """The KL estimator in use: "analytic" if every layer has a closed form, else "mc"."""
        return "analytic" if all(layer.kl_estimator == "analytic" for layer in self.layers) else "mc"

    @property
    def kl_description(self) -> str | None:
        """How the KL terms of a model without latent layers are computed, for the run's summary (None: no terms)."""
        return None

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

    def coding_refusal(self) -> str | None:
        """Why this model's latents cannot be chosen layer by layer (``walk``), in one line; None where they can."""
        return f"{type(self).__name__} has no generative pass whose latents a coder can choose"

    def walk(self, n: int, *, x: Tensor | None, choose: Choose) -> Tensor:
        """The generative pass for n examples with every latent chosen by the caller (a bits-back coder): layer by layer
        from the top, ``choose`` receives the layer's ``LayerLaw`` (its prior given the layers chosen above and, given
        the images x in [0, 1], its posterior) and returns z_l; the result is the likelihood's parameters given them
        all, (n, param channels, h, w). Deterministic: the same x and choices give the same numbers, bit for bit, on
        the same machine and batch. A model that cannot (``coding_refusal``) raises a one-line error."""
        raise ConfigError(self.coding_refusal() or f"{type(self).__name__} does not implement walk")

    def networks(self) -> list[nn.Module]:
        """The deterministic networks, for ``torch.compile`` (``--model.compile``): the model's direct submodules by
        default."""
        return list(self.children())

    def prior_distribution(self) -> Distribution | None:
        """p(code): the prior over what ``encode`` gives and ``decode`` takes, event shape (d,), where there is one
        (a ``continuous_code``); None by default."""
        return None

    def split_metrics(self) -> Metric | None:
        """A metric of the model's own over a whole split (a torchmetrics ``Metric``, reduced over processes), or
        None (the default): ``update`` takes each batch's ``ModelOutput``, ``compute`` gives named numbers. The
        training module logs them as ``{val,test}/<name>`` at each epoch's end, and ``vae evaluate`` reports them
        (a VQ model's codebook usage)."""
        return None

    def representation(self, x: Tensor, *, context: Tensor | None = None) -> Tensor:
        """The code the disentanglement metrics score: the posterior mean of ``encode``, (b, d)."""
        return self.encode(x, context=context).mean

    def log_weights(self, x: Tensor, num_samples: int, *, context: Tensor | None = None) -> Tensor:
        """log w_k for ``num_samples`` posterior samples of each example, (K, b)."""
        return self.forward(x, samples=num_samples, context=context).log_w()

    @inferring
    def elbo_draws(self, x: Tensor, *, samples: int, chunk_size: int = 100, context: Tensor | None = None) -> Tensor:
        """Single-draw estimates of the ELBO, log p(x|z) − KL, for ``samples`` draws per example (K, b), nats, drawn
        ``chunk_size`` at a time: their mean is the ELBO's estimate, their spread its Monte-Carlo error. What ``vae
        evaluate`` reports as log p(x) for a model without a posterior density (a diffusion model). For a deterministic
        encoder (``capabilities.deterministic_encoder``) every draw is the same code: computed once, repeated."""
        if samples < 1 or chunk_size < 1:
            raise ConfigError(f"samples and chunk_size must be positive integers, got {samples} and {chunk_size}")
        if self.capabilities.deterministic_encoder:
            out = self.forward(x, context=context)
            return repeat(out.log_px - out.kl, "b -> k b", k=samples)
        draws = []
        for start in range(0, samples, chunk_size):
            out = self.forward(x, samples=min(chunk_size, samples - start), context=context)
            draws.append(rearrange(out.log_px - out.kl, "(k b) -> k b", k=out.samples))
        return torch.cat(draws)

    @inferring
    def log_likelihood(
        self, x: Tensor, *, samples: int = 1000, chunk_size: int = 100, context: Tensor | None = None
    ) -> Tensor:
        """The importance-weighted estimate of log p(x) per example (b,), nats (of log p(x | y) given the labels
        ``context`` of a conditional model):

            log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x)   (z all the layers of a hierarchy)

        It is the IWAE bound with K = ``samples``: a lower bound in expectation that tightens as K grows (Burda et
        al. 2015). Samples are drawn ``chunk_size`` at a time, so memory does not grow with K. For a deterministic
        encoder (``capabilities.deterministic_encoder``) every sample is the same code, and the estimate is the ELBO,
        computed once. A model without a posterior density (``capabilities.posterior_density``) has no such estimate:
        a one-line error."""
        if not self.capabilities.posterior_density:
            raise ConfigError(f"{type(self).__name__} has no posterior density: no importance-weighted log p(x)")
        if samples < 1 or chunk_size < 1:
            raise ConfigError(f"samples and chunk_size must be positive integers, got {samples} and {chunk_size}")
        if self.capabilities.deterministic_encoder:  # every sample is the same code: K = 1 is exact
            return self.log_weights(x, 1, context=context)[0]
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
        samples (unless sampling needs a separately trained prior) and reconstructions; for an unconditional
        ``continuous_code``, traversals of its ``nrow`` most
        informative dimensions (by ``ranking``, e.g. their KL; by default in their order) and interpolations.
        A model adds its own (per-class rows, temperatures, ...) by overriding this."""
        abilities = self.capabilities
        grids = {}
        if not abilities.needs_trained_prior:
            grids["samples"] = pictures.samples(self, num=num_samples, nrow=nrow, seed=seed)
        rows = len(x) // nrow * nrow
        if rows:
            labels = None if context is None else context[:rows]
            grids["reconstructions"] = pictures.reconstructions(self, x[:rows], nrow=nrow, context=labels)
        if abilities.continuous_code and not abilities.conditional:
            grids["traversals"] = pictures.traversals(self, x, ranking, dims=nrow)
            grids["interpolations"] = pictures.interpolations(self, x, pairs=min(4, len(x) // 2))
        return grids

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        """A state dict written by an earlier version of this model, with its keys renamed to this layout (none
        by default); keys already in this layout pass unchanged."""
        return dict(state)
