"""Priors p(z) over a latent layer, chosen with the model's ``prior`` argument in YAML.

    StandardNormal    N(0, I)                                      closed-form KL (the default)
    LearnedGaussian   N(μ, diag σ²), μ and σ learned                closed-form KL
    LearnedFullGaussian N(μ, L Lᵀ), μ and the Cholesky factor L learned  closed-form KL (triangular solves)
    GaussianMixture   Σ_k π_k N(μ_k, diag σ_k²), all learned        Monte-Carlo KL (no closed form exists)
    VampPrior         1/K Σ_k q(z | u_k), pseudo-inputs u_k learned  Monte-Carlo KL (Tomczak & Welling 2018)
    FlowPrior         a masked autoregressive or neural-spline flow  Monte-Carlo KL (zuko's MAF and NSF)

A prior is a module whose constructor takes its hyperparameters (what YAML names, with ``class_path``); the latent
layer it belongs to calls ``bind`` once, with the layer's size, which makes its parameters. Its forward returns p(z)
as a torch distribution with event shape (d,), so the KL regularizer picks the closed form or Monte Carlo by looking
the pair of distributions up, never by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, MultivariateNormal, Normal
from zuko.distributions import NormalizingFlow

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND, GaussianMoments, full_precision, soft_clamp
from vae.core.spec import Configurable

Encode = Callable[[Tensor], GaussianMoments]
"""Images (b, c, h, w) → the posterior's moments (b, d) of the layer a prior belongs to (for the VampPrior)."""


class Prior(Configurable, nn.Module, ABC):
    """p(z) over ``latent_dim`` dimensions, with its parameters (if any), made by ``bind``."""

    latent_dim: int | None = None  # set by bind
    encodes: bool = False  # made of the layer's posterior densities at learned inputs (the VampPrior)

    def bind(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> Prior:
        """Make the parameters for a layer of ``latent_dim`` dimensions on images of ``image_shape``; once."""
        if self.latent_dim is not None:
            raise ConfigError(
                f"this {type(self).__name__} prior is already part of a layer of {self.latent_dim} dimensions: give "
                "each model (and each layer) a prior of its own"
            )
        self.latent_dim = latent_dim
        self.build(latent_dim=latent_dim, image_shape=image_shape)
        return self

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        """The parameters for the layer's size (none by default)."""

    @abstractmethod
    def forward(self, encode: Encode) -> Distribution:
        """p(z) with batch shape () and event shape (d,). ``encode`` gives the layer's posterior moments for images,
        for priors defined through it (the VampPrior); the others ignore it."""

    def sample(self, n: int, *, encode: Encode, temperature: float = 1.0) -> Tensor:
        """n draws, (n, d), with the spread around the prior's mean scaled by ``temperature``."""
        prior = self(encode)
        z = prior.sample(torch.Size([n]))
        if temperature != 1.0:  # for a mixture prior: towards the mixture's mean
            z = prior.mean + temperature * (z - prior.mean)
        return z


def gaussian_mixture(logits: Tensor, components: GaussianMoments) -> MixtureSameFamily:
    """Σ_k softmax(logits)_k N(mean_k, diag exp(logvar_k)); logits (K,), component moments (K, d)."""
    return MixtureSameFamily(Categorical(logits=logits), components.distribution())


class StandardNormal(Prior):
    """p(z) = N(0, I), the standard VAE prior; the KL to it has a closed form."""

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)


class LearnedGaussian(Prior):
    """p(z) = N(μ, diag σ²) with μ and log σ² trained with the model (the log-variance soft-clamped like the
    posterior's); closed-form KL."""

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        self.mean = nn.Parameter(torch.zeros(latent_dim))
        self.logvar = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        return GaussianMoments(self.mean, soft_clamp(self.logvar, LOGVAR_BOUND)).distribution()


class LearnedFullGaussian(Prior):
    """p(z) = N(μ, L Lᵀ) with μ and the Cholesky factor L trained with the model: L's strict lower triangle free, its
    diagonal exp(½ log σ²) with the log-variance soft-clamped like the posterior's; starting at N(0, I). The KL from
    a diagonal or a full-covariance Gaussian posterior is the closed form, by triangular solves."""

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        self.mean = nn.Parameter(torch.zeros(latent_dim))
        self.logvar = nn.Parameter(torch.zeros(latent_dim))
        self.lower = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        diagonal = (0.5 * soft_clamp(self.logvar, LOGVAR_BOUND)).exp()
        scale_tril = self.lower.tril(-1) + torch.diag(diagonal)
        return MultivariateNormal(self.mean, scale_tril=scale_tril, validate_args=False)


class GaussianMixture(Prior):
    """p(z) = a learned mixture of ``num_components`` diagonal Gaussians (weights, means and log-variances all
    trained, the means starting spread over N(0, I)); Monte-Carlo KL."""

    def __init__(self, *, num_components: int = 10) -> None:
        super().__init__()
        if num_components < 1:
            raise ConfigError(f"GaussianMixture num_components must be at least 1, got {num_components}")
        self.num_components = num_components

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        self.logits = nn.Parameter(torch.zeros(self.num_components))
        self.means = nn.Parameter(torch.randn(self.num_components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(self.num_components, latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        return gaussian_mixture(self.logits, GaussianMoments(self.means, soft_clamp(self.logvars, LOGVAR_BOUND)))


class VampPrior(Prior):
    """p(z) = 1/K Σ_k q(z | u_k) over ``num_pseudo_inputs`` learned pseudo-inputs u_k; Monte-Carlo KL.

    The pseudo-inputs are images in [0, 1] (a sigmoid of free parameters), so they live where the data does. Each
    training step runs the encoder on the K pseudo-inputs as well as on the batch (the paper used K = 500 on MNIST;
    100 keeps a CPU run cheap).
    """

    encodes = True

    def __init__(self, *, num_pseudo_inputs: int = 100) -> None:
        super().__init__()
        if num_pseudo_inputs < 1:
            raise ConfigError(f"VampPrior num_pseudo_inputs must be at least 1, got {num_pseudo_inputs}")
        self.num_pseudo_inputs = num_pseudo_inputs

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        self.pseudo_logits = nn.Parameter(0.1 * torch.randn(self.num_pseudo_inputs, *image_shape))

    def pseudo_inputs(self) -> Tensor:
        return torch.sigmoid(self.pseudo_logits)  # (K, c, h, w)

    def forward(self, encode: Encode) -> Distribution:
        logits = self.pseudo_logits.new_zeros(self.pseudo_logits.shape[0])  # equal weights 1/K
        return gaussian_mixture(logits, encode(self.pseudo_inputs()))


class Float32Flow(NormalizingFlow):
    """A zuko flow whose densities and draws are computed in float32 even under bf16/fp16 autocast (the KL needs it)."""

    def log_prob(self, value: Tensor) -> Tensor:
        with torch.autocast(value.device.type, enabled=False):
            return super().log_prob(full_precision(value))

    def rsample(self, shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008 (torch's signature)
        with torch.autocast(self.base.mean.device.type, enabled=False):
            return super().rsample(shape)


class FlowPrior(Prior):
    """p(z) a normalizing flow trained with the model (zuko): ``kind`` "maf", masked autoregressive affine transforms
    (Papamakarios et al. 2017), or "nsf", monotonic rational-quadratic splines (Durkan et al. 2019); ``transforms``
    autoregressive transforms, each an MLP of ``hidden`` widths, from a N(0, I) base. log p(z) is one pass (the
    density direction), a draw d passes. Monte-Carlo KL; ``temperature`` scales the base's draws."""

    def __init__(
        self, *, kind: Literal["maf", "nsf"] = "maf", transforms: int = 3, hidden: tuple[int, ...] = (128, 128)
    ):
        super().__init__()
        if kind not in ("maf", "nsf"):
            raise ConfigError(f"FlowPrior kind must be 'maf' or 'nsf', got {kind!r}")
        hidden = tuple(hidden)
        if transforms < 1 or not hidden or min(hidden) < 1:
            raise ConfigError(
                f"FlowPrior needs at least 1 transform and positive hidden widths, got {transforms}, {hidden}"
            )
        self.kind, self.transforms, self.hidden = kind, transforms, hidden

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        make = zuko.flows.MAF if self.kind == "maf" else zuko.flows.NSF
        self.flow = make(features=latent_dim, transforms=self.transforms, hidden_features=self.hidden)

    def forward(self, encode: Encode) -> Distribution:
        flow = self.flow()
        return Float32Flow(flow.transform, flow.base)

    def sample(self, n: int, *, encode: Encode, temperature: float = 1.0) -> Tensor:
        flow = self(encode)
        with torch.autocast(self.flow.base.loc.device.type, enabled=False):
            return flow.transform.inv(temperature * flow.base.sample(torch.Size([n])))
