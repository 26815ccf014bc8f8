"""Posterior families q(z|x) of a latent layer, chosen with the model's ``posterior`` argument in YAML.

    DiagonalGaussian   N(μ, diag σ²)             the default; closed-form KL where the prior has one
    FullCovariance     N(μ, L Lᵀ)                L lower triangular with a positive diagonal; closed-form KL to a
                                                 Gaussian prior, diagonal or full (triangular solves, ``vae.core.kl``)
    Planar, Sylvester, IAF  (``vae.layers.flows``)  a normalizing flow applied to the diagonal Gaussian's draws:
                                                 Monte-Carlo KL, with log q(z|x) carried from the change of variables

The layer's head gives every family the diagonal Gaussian's mean and log-variance (2·d features). A family that needs
more per example (a Cholesky factor's lower triangle, a flow's parameters, IAF's context vector) reads it from the
layer's input with a head of its own (``extra``), made by ``bind`` for the layer's size.

Where the density of q can be evaluated at any point (``density``: the Gaussians), the KL is the closed form or the
Monte-Carlo estimate of ``vae.core.kl`` and importance weights use ``log_prob``. A flow's q(z|x) is known only at its
own draws: planar and Sylvester flows have no inverse in closed form, and IAF's takes one pass per dimension. So a
flow's distribution (``FlowDistribution``) returns each draw with its log-density (``rsample_and_log_prob``), and its
``log_prob`` is an error rather than a silent inversion.

Axes: b batch (or rows: K·b for K samples each), s draws per row, d latent dimensions, p parameters per row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from vae.core.errors import ConfigError
from vae.core.gaussian import FullGaussianMoments, GaussianMoments, full_precision
from vae.core.spec import Configurable

Moments = GaussianMoments | FullGaussianMoments
Transform = Callable[[Tensor], tuple[Tensor, Tensor]]
"""Draws of the base (s, b, d) → the flowed draws (s, b, d) and log |det ∂f/∂z₀| at each (s, b)."""


def flat(h: Tensor) -> Tensor:
    """A layer's input as one feature vector per row: (b, f) unchanged, (b, c, h, w) → (b, c·h·w)."""
    return h if h.dim() == 2 else rearrange(h, "b ... -> b (...)")


class FlowDensityError(ConfigError):
    """log_prob was asked of a flow posterior at a point that is not one of its own draws."""


class FlowDistribution(Distribution):
    """q(z|x) of a flow posterior: z = f(z₀) with z₀ drawn from the Gaussian ``base``, and

        log q(z|x) = log N(z₀; μ, diag σ²) − log |det ∂f/∂z₀|

    carried with each draw by ``rsample_and_log_prob``. ``mean`` is the stated posterior mean f(μ), the flow applied
    to the Gaussian's mean (E_q[z] has no closed form); it is the code ``encode`` gives and active units are counted
    from. Batch shape (b,), event shape (d,), as the base's."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: Distribution, transform: Transform) -> None:
        self.base, self.transform = base, transform
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        """Draws z (*sample_shape, b, d) and log q(z|x) at each (*sample_shape, b), reparameterised."""
        shape = torch.Size(sample_shape)
        z0 = self.base.rsample(torch.Size([int(shape.numel())]))  # (s, b, d)
        z, log_det = self.flowed(z0)
        log_q = self.base.log_prob(z0) - log_det
        return z.reshape(*shape, *z.shape[1:]), log_q.reshape(*shape, *log_q.shape[1:])

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: Tensor) -> Tensor:
        raise FlowDensityError(
            "a flow posterior's density is known only at its own draws (rsample_and_log_prob carries it): planar and "
            "Sylvester flows have no closed-form inverse, and IAF's takes one pass per dimension"
        )

    @property
    def mean(self) -> Tensor:
        return self.flowed(self.base.mean.unsqueeze(0))[0][0]

    def flowed(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """The flow in float32 even under bf16/fp16 autocast: log q needs it, as every density here does."""
        with torch.autocast(z0.device.type, enabled=False):
            return self.transform(full_precision(z0))


class Posterior(Configurable, nn.Module):
    """A family of posteriors q(z|x) over a latent vector of ``dim`` dimensions: the diagonal Gaussian, which every
    family starts from, and what it makes of it. ``bind`` is called once by the layer it belongs to."""

    dim: int | None = None  # set by bind
    density: bool = True  # log q(z|x) can be evaluated at any z (``log_prob``); a flow's only at its own draws
    description: str = "diagonal Gaussian"

    def bind(self, *, dim: int, features: int) -> Posterior:
        """Make the parameters for a layer of ``dim`` dimensions whose input has ``features`` features per example
        (flattened); once."""
        if self.dim is not None:
            raise ConfigError(
                f"this {type(self).__name__} posterior is already part of a layer of {self.dim} dimensions: give each "
                "model (and each layer) a posterior of its own"
            )
        self.dim = dim
        self.build(dim=dim, features=features)
        return self

    def build(self, *, dim: int, features: int) -> None:
        """The parameters for the layer's size (none by default)."""

    def extra(self, h: Tensor) -> Tensor | None:
        """What the family reads from the layer's input h beyond the Gaussian's moments, (b, p); None by default."""
        return None

    def moments(self, base: GaussianMoments, extra: Tensor | None) -> Moments:
        """The Gaussian q is (or a flow starts from), from the head's diagonal moments and ``extra``."""
        return base

    def distribution(self, moments: Moments, extra: Tensor | None) -> Distribution:
        """q(z|x), batch shape (b,), event shape (d,)."""
        return moments.distribution()

    def reference(self) -> Distribution:
        """q at zero mean and unit covariance, batch shape (1,): what the KL estimator is chosen by (its type)."""
        assert self.dim is not None
        zeros = torch.zeros(1, self.dim)
        return GaussianMoments(zeros, zeros).distribution()


class DiagonalGaussian(Posterior):
    """q(z|x) = N(μ(x), diag σ²(x)): the KL per dimension is defined, and the KL splits (``vae.core.split``)."""


class FullCovariance(Posterior):
    """q(z|x) = N(μ(x), L(x) L(x)ᵀ): the head's σ(x) on L's diagonal (positive), and d(d − 1)/2 more features per
    example on its strict lower triangle, from a head of its own that starts at zero (the posterior starts diagonal).
    The KL to a Gaussian prior is the closed form (log-determinant ratio, trace, Mahalanobis term) from the Cholesky
    factors by triangular solves; to a mixture or the VampPrior it is Monte Carlo. A correlated posterior has no KL
    per dimension."""

    description = "full-covariance Gaussian"

    def build(self, *, dim: int, features: int) -> None:
        if features < 1:
            raise ConfigError("FullCovariance reads its Cholesky factor from the layer's input: give its size")
        self.register_buffer("rows", torch.tril_indices(dim, dim, offset=-1)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(dim, dim, offset=-1)[1], persistent=False)
        self.off_diagonal = nn.Linear(features, dim * (dim - 1) // 2)
        nn.init.zeros_(self.off_diagonal.weight)
        nn.init.zeros_(self.off_diagonal.bias)

    def extra(self, h: Tensor) -> Tensor:
        return self.off_diagonal(flat(h))

    def reference(self) -> Distribution:
        assert self.dim is not None
        return FullGaussianMoments(torch.zeros(1, self.dim), torch.eye(self.dim)[None]).distribution()

    def moments(self, base: GaussianMoments, extra: Tensor | None) -> FullGaussianMoments:
        assert extra is not None and self.dim is not None
        mean, logvar = full_precision(base.mean), full_precision(base.logvar)
        lower = mean.new_zeros(*mean.shape, self.dim)
        lower[:, self.rows, self.cols] = full_precision(extra)
        return FullGaussianMoments(mean=mean, scale_tril=lower + torch.diag_embed((0.5 * logvar).exp()))
