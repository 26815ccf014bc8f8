"""Priors p(z) over the latent space, chosen with ``model.prior`` in YAML.

    StandardNormal    N(0, I)                                      closed-form KL (the default)
    LearnedGaussian   N(μ, diag σ²), μ and σ learned                closed-form KL
    GaussianMixture   Σ_k π_k N(μ_k, diag σ_k²), all learned        Monte-Carlo KL (no closed form exists)
    VampPrior         1/K Σ_k q(z | u_k), pseudo-inputs u_k learned  Monte-Carlo KL (Tomczak & Welling 2018)

Each choice is a ``Prior``: a small frozen dataclass of hyperparameters (what YAML names, with class_path)
whose ``build`` makes the ``PriorModule`` for a given latent size. The module's forward returns p(z) as a
torch distribution with event shape (d,), so the KL regularizer picks the closed form or Monte Carlo by
looking the pair of distributions up, never by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND, GaussianMoments, soft_clamp
from vae.core.spec import Recorded

Encode = Callable[[Tensor], GaussianMoments]
"""Images (b, c, h, w) → the posterior's moments (b, d) of the layer a prior belongs to (for the VampPrior)."""


class PriorModule(nn.Module, ABC):
    """p(z) over ``latent_dim`` dimensions, with its parameters (if any)."""

    @abstractmethod
    def forward(self, encode: Encode) -> Distribution:
        """p(z) with batch shape () and event shape (d,). ``encode`` gives the layer's posterior moments for images,
        for priors defined through it (the VampPrior); the others ignore it."""


def gaussian_mixture(logits: Tensor, components: GaussianMoments) -> MixtureSameFamily:
    """Σ_k softmax(logits)_k N(mean_k, diag exp(logvar_k)); logits (K,), component moments (K, d)."""
    return MixtureSameFamily(Categorical(logits=logits), components.distribution())


class StandardNormalModule(PriorModule):
    def __init__(self, *, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)


class LearnedGaussianModule(PriorModule):
    """N(μ, diag σ²) with μ and log σ² learned (the log-variance soft-clamped like the posterior's)."""

    def __init__(self, *, latent_dim: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(latent_dim))
        self.logvar = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        return GaussianMoments(self.mean, soft_clamp(self.logvar, LOGVAR_BOUND)).distribution()


class GaussianMixtureModule(PriorModule):
    """A learned mixture of diagonal Gaussians: weights, means and log-variances all trained."""

    def __init__(self, *, latent_dim: int, num_components: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.means = nn.Parameter(torch.randn(num_components, latent_dim))  # spread over N(0, I)
        self.logvars = nn.Parameter(torch.zeros(num_components, latent_dim))

    def forward(self, encode: Encode) -> Distribution:
        return gaussian_mixture(self.logits, GaussianMoments(self.means, soft_clamp(self.logvars, LOGVAR_BOUND)))


class VampPriorModule(PriorModule):
    """The VampPrior: the equal-weight mixture of the encoder's posteriors at K learned pseudo-inputs.

    The pseudo-inputs are images in [0, 1] (a sigmoid of free parameters), so they live where the data does.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], num_pseudo_inputs: int) -> None:
        super().__init__()
        self.pseudo_logits = nn.Parameter(0.1 * torch.randn(num_pseudo_inputs, *image_shape))

    def pseudo_inputs(self) -> Tensor:
        return torch.sigmoid(self.pseudo_logits)  # (K, c, h, w)

    def forward(self, encode: Encode) -> Distribution:
        logits = self.pseudo_logits.new_zeros(self.pseudo_logits.shape[0])  # equal weights 1/K
        return gaussian_mixture(logits, encode(self.pseudo_inputs()))


class Prior(Recorded, ABC):
    """A choice of prior for ``model.prior``: hyperparameters that build the ``PriorModule``."""

    @abstractmethod
    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> PriorModule: ...


@dataclass(frozen=True)
class StandardNormal(Prior):
    """p(z) = N(0, I), the standard VAE prior; the KL to it has a closed form."""

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> PriorModule:
        return StandardNormalModule(latent_dim=latent_dim)


@dataclass(frozen=True)
class LearnedGaussian(Prior):
    """p(z) = N(μ, diag σ²) with μ and σ trained with the model; closed-form KL."""

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> PriorModule:
        return LearnedGaussianModule(latent_dim=latent_dim)


@dataclass(frozen=True)
class GaussianMixture(Prior):
    """p(z) = a learned mixture of ``num_components`` diagonal Gaussians; Monte-Carlo KL."""

    num_components: int = 10

    def __post_init__(self) -> None:
        if self.num_components < 1:
            raise ConfigError(f"GaussianMixture num_components must be at least 1, got {self.num_components}")

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> PriorModule:
        return GaussianMixtureModule(latent_dim=latent_dim, num_components=self.num_components)


@dataclass(frozen=True)
class VampPrior(Prior):
    """p(z) = 1/K Σ_k q(z | u_k) over ``num_pseudo_inputs`` learned pseudo-inputs u_k; Monte-Carlo KL.

    Each training step runs the encoder on the K pseudo-inputs as well as on the batch (the paper used
    K = 500 on MNIST; 100 keeps a CPU run cheap).
    """

    num_pseudo_inputs: int = 100

    def __post_init__(self) -> None:
        if self.num_pseudo_inputs < 1:
            raise ConfigError(f"VampPrior num_pseudo_inputs must be at least 1, got {self.num_pseudo_inputs}")

    def build(self, *, latent_dim: int, image_shape: tuple[int, int, int]) -> PriorModule:
        return VampPriorModule(image_shape=image_shape, num_pseudo_inputs=self.num_pseudo_inputs)
