"""Latent layers: each owns its posterior head, its prior and its KL estimator, and hands on a ``LatentSample``.

    GaussianLatent      q(z|h) = N(μ(h), diag σ²(h)) against an unconditional prior p(z) from ``vae.layers.priors``:
                        the single-layer VAE's latent, and the top of a hierarchy
    TopDownLatent       q(z_l | x, z_>l) and p(z_l | z_>l) from the same top-down state h (a layer below the
                        top of a hierarchy): the prior and the posterior are both computed from h, the posterior
                        also from the bottom-up features of x; optionally NVAE's residual-normal posterior
                        q = N(μ_p + Δμ, σ_p·Δσ)

Every layer returns its KL per example in nats, summed over all its units (contract 1), estimated in closed
form where one exists and by Monte Carlo otherwise (``vae.core.kl``), with the KL per unit beside it: per latent
dimension for a vector, per channel (summed over positions) for a feature map.

A model that draws K samples per example (the IWAE bound) runs its layers on the batch repeated K times,
laid out "(k b)": every per-example tensor here then has K·b rows.

Axes: b batch, c channels, h height, w width, d latent dimensions, u units, s positions (h·w).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, reduce, repeat
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND, GaussianMoments, full_precision, soft_clamp
from vae.core.kl import Estimator, KLEstimator, KLRegularizer, factorised, resolve_estimator
from vae.core.split import KLSplit, SplitEstimator, check_estimator, split_at
from vae.layers.flows import ConvIAF
from vae.layers.nets.conv import Conv
from vae.layers.posteriors import DiagonalGaussian, FlowDistribution, Moments, Posterior
from vae.layers.priors import Encode, Prior


@dataclass(frozen=True)
class LatentSample:
    """What one latent layer hands on, for a batch of b examples (K·b with K samples each).

    z: the sample passed on, (b, d) for a vector or (b, c, h, w) for a feature map.
    kl: D_KL(q ‖ p) per example, summed over the layer's units, (b,), nats, raw.
    kl_per_unit: (b, u) summing to ``kl`` (per dimension, or per channel summed over positions); None where the
        prior does not factorise (a mixture, the VampPrior).
    posterior_mean: E_q[z], (b, u, s), s = 1 for a vector: active units are counted from it.
    posterior, prior: the two distributions z was drawn from and is judged against (batch (b,)); their log
        densities at z give the importance weights (``log_ratio``).
    estimator: "analytic" or "mc".
    event: the sample as the two distributions see it, where it differs from z (a discrete layer's exact one-hot
        draw, (b, n, K), when z is its relaxation); None: z itself.
    log_q: log q(z|x) at z, (b,), carried with the draw where the posterior's density can be evaluated only there (a
        flow posterior: ``posterior.log_prob`` is an error); None: ``posterior.log_prob(z)`` is exact.
    """

    z: Tensor
    kl: Tensor
    kl_per_unit: Tensor | None
    posterior_mean: Tensor
    posterior: Distribution
    prior: Distribution
    estimator: Estimator
    event: Tensor | None = None
    log_q: Tensor | None = None

    @property
    def elements(self) -> int:
        """The layer's number of latent elements: d for a vector, c·h·w for a feature map."""
        return int(self.z[0].numel())

    def log_ratio(self) -> Tensor:
        """log q(z) − log p(z) per example, (b,): this layer's part of −log w, exact whatever the KL estimator."""
        z = self.flat_z()
        log_q = self.posterior.log_prob(z) if self.log_q is None else self.log_q
        return log_q - self.prior.log_prob(z)

    def flat_z(self) -> Tensor:
        """z as the distributions see it: (b, d) for the vector layers, (b, c, h, w) for the map layers, the exact
        draw for a discrete layer."""
        if self.event is not None:
            return self.event
        if self.z.dim() == 2:
            return self.z
        event = len(self.posterior.event_shape)
        return self.z if event == self.z.dim() - 1 else rearrange(self.z, "b c h w -> b (c h w)")


@dataclass(frozen=True)
class KLParts:
    """What a KL weighting weighs: each layer's KL per example (b,), its KL per unit (b, u) where defined, and its
    number of latent elements (c·h·w, or d)."""

    per_layer: dict[str, Tensor]
    per_unit: dict[str, Tensor | None]
    sizes: dict[str, int]

    @classmethod
    def of(cls, latents: dict[str, LatentSample]) -> KLParts:
        return cls(
            per_layer={name: layer.kl for name, layer in latents.items()},
            per_unit={name: layer.kl_per_unit for name, layer in latents.items()},
            sizes={name: layer.elements for name, layer in latents.items()},
        )

    @property
    def total(self) -> Tensor:
        """Σ_l KL_l per example, (b,); a scalar zero for a model without latent layers (a plain autoencoder)."""
        if not self.per_layer:
            return torch.zeros(())
        return torch.stack(list(self.per_layer.values())).sum(dim=0)

    def scaled(self, coefficients: dict[str, Tensor]) -> KLParts:
        """Every layer's KL (and KL per unit) multiplied by its coefficient."""
        return KLParts(
            per_layer={name: coefficients[name] * kl for name, kl in self.per_layer.items()},
            per_unit={name: None if u is None else coefficients[name] * u for name, u in self.per_unit.items()},
            sizes=self.sizes,
        )


def diagonal_normal(d: Distribution) -> Normal | None:
    """The Normal of a diagonal Gaussian with one event dimension (its batch of means and scales), else None."""
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal) and len(d.event_shape) == 1:
        return d.base_dist
    return None


def splittable(posterior: Distribution, prior: Distribution) -> bool:
    """Whether a layer's KL splits into mutual information, total correlation and dimension-wise KL
    (``vae.core.split``): a diagonal Gaussian posterior against one unconditional diagonal Gaussian prior."""
    return diagonal_normal(posterior) is not None and diagonal_normal(prior) is not None and prior.batch_shape == ()


def diagonal_gaussian(mean: Tensor, log_std: Tensor, event_dims: int) -> Independent:
    """N(mean, diag exp(log_std)²) over the last ``event_dims`` axes, in float32 under autocast."""
    scale = full_precision(log_std).exp()
    return Independent(Normal(full_precision(mean), scale, validate_args=False), event_dims, validate_args=False)


def per_channel(kl_per_element: Tensor) -> Tensor:
    """KL per latent channel: (b, c, h, w) → (b, c), summed over positions; (b, d) passes unchanged."""
    return reduce(kl_per_element, "b c h w -> b c", "sum") if kl_per_element.dim() == 4 else kl_per_element


def as_units(mean: Tensor) -> Tensor:
    """A posterior mean as (b, units, positions): (b, d) → (b, d, 1), (b, c, h, w) → (b, c, h·w)."""
    return rearrange(mean, "b c h w -> b c (h w)") if mean.dim() == 4 else rearrange(mean, "b d -> b d 1")


class LatentLayer(nn.Module):
    """A stochastic layer: its name in metric keys, its number of units (dimensions, or channels) and of positions
    (h·w of a feature map, 1 for a vector), and the KL estimator in use."""

    name: str
    units: int
    positions: int
    kl_estimator: Estimator
    kl_splits: bool = False  # whether its KL splits (``splittable``): a diagonal Gaussian, unconditional prior
    factorises: bool = True  # whether its KL has a part per unit (``LatentSample.kl_per_unit``): not for a mixture
    clusters: bool = False  # whether its posterior assigns each example to a cluster (one categorical variable)
    no_kl_per_unit: str | None = None  # why the KL has no part per unit, in words, where a reader would look for one
    diagonal: bool = False  # whether q is a diagonal Gaussian (posterior means and variances per unit)

    @property
    def kl_description(self) -> str:
        """How its KL is computed, in words (the fit report); the Gaussian layers' from their ``KLRegularizer``."""
        if self.kl_estimator == "analytic":
            return "closed form"
        return f"Monte Carlo, {self.regularizer.num_samples} sample(s)"


def carried(layer: LatentLayer) -> str:
    """The KL of a layer with a flow posterior, in words."""
    return f"Monte Carlo, {layer.regularizer.num_samples} sample(s), log q(z|x) carried through the flow"


class GaussianLatent(LatentLayer):
    """A Gaussian posterior from ``head`` (or a family built on it: a full covariance, a flow) against an unconditional
    prior over ``shape``.

    head: maps the layer's input to 2·d features (a vector layer, d = ``shape[0]``) or 2·c channels (a feature map
        layer of ``shape`` (c, h, w)): the mean and the log-variance, soft-clamped to ±``LOGVAR_BOUND``.
    prior: a prior of ``vae.layers.priors``, bound here to the layer's size (over the flattened layer for a feature
        map).
    posterior: the family of q(z|x) (``vae.layers.posteriors``, ``vae.layers.flows``; ``DiagonalGaussian`` by default),
        bound here to the layer's size; one other than the diagonal Gaussian takes a latent vector, and reads what it
        needs beyond the head's moments from the layer's input, of ``features`` features per example (flattened).
    kl_estimator / kl_samples: as ``vae.core.kl.KLRegularizer``; "auto" is resolved here, "analytic" for a prior with no
        closed form is a one-line error. A flow posterior's KL is always Monte Carlo, E_q[log q(z|x) − log p(z)] with
        log q carried from the change of variables.
    """

    def __init__(
        self,
        *,
        name: str,
        shape: tuple[int, ...],
        head: nn.Module,
        prior: Prior,
        image_shape: tuple[int, int, int],
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
        posterior: Posterior | None = None,
        features: int = 0,
    ) -> None:
        super().__init__()
        self.name, self.shape, self.units = name, tuple(shape), shape[0]
        self.dim = int(torch.Size(shape).numel())
        self.positions = self.dim // self.units
        self.head = head
        posterior = DiagonalGaussian() if posterior is None else posterior
        if not isinstance(posterior, DiagonalGaussian) and self.positions > 1:  # a 1×1 map is a vector
            raise ConfigError(
                f"a posterior other than the diagonal Gaussian ({posterior.description}) takes a latent vector, and "
                f"layer {name} is a {'×'.join(map(str, shape))} feature map: give it resolution 1 (or use the "
                "diagonal Gaussian)"
            )
        if prior.encodes and not posterior.density:
            raise ConfigError(
                f"the {type(prior).__name__} is a mixture of the posterior's densities at learned inputs, and a flow "
                f"posterior ({posterior.description}) has a density only at its own draws: use another prior "
                "(GaussianMixture, StandardNormal) or a Gaussian posterior"
            )
        self.posterior = posterior.bind(dim=self.dim, features=features)
        self.diagonal = isinstance(posterior, DiagonalGaussian)
        self.prior = prior.bind(latent_dim=self.dim, image_shape=image_shape)
        self.prior_name = type(prior).__name__
        self.kl_estimator: Estimator = "analytic"
        self.regularizer = KLRegularizer(estimator=kl_estimator, num_samples=kl_samples)

    @property
    def kl_description(self) -> str:
        return carried(self) if not self.posterior.density else super().kl_description

    def resolve(self, estimator: KLEstimator, encode: Encode) -> None:
        """Resolve "auto" for this prior now, and refuse "analytic" where it has no closed form, before training."""
        with torch.no_grad():
            prior = self.prior(encode)
        self.prior_diagonal = diagonal_normal(prior) is not None
        if not self.posterior.density:
            if estimator == "analytic":
                raise ConfigError(
                    "kl_estimator 'analytic' needs a closed-form KL, and a flow posterior "
                    f"({self.posterior.description}) has none (its density is known only at its draws): use 'auto' or "
                    "'mc'"
                )
            self.kl_splits, self.factorises, self.kl_estimator = False, False, "mc"
            self.no_kl_per_unit = f"undefined for a correlated posterior ({self.posterior.description})"
            return
        posterior = self.posterior.reference()
        self.kl_splits = splittable(posterior, prior)
        self.factorises = factorised(posterior, prior)
        if not self.factorises:
            self.no_kl_per_unit = (
                f"undefined for a correlated posterior ({self.posterior.description})"
                if not isinstance(self.posterior, DiagonalGaussian)
                else f"undefined: the prior ({self.prior_name}) does not factorise over dimensions"
            )
        try:
            self.kl_estimator = resolve_estimator(posterior, prior, estimator)
        except ConfigError as error:
            if estimator != "analytic":
                raise
            raise ConfigError(
                f"kl_estimator 'analytic' needs a closed-form KL, and prior {self.prior_name} has none: use 'auto' "
                "or 'mc'"
            ) from error

    def parts(self, h: Tensor) -> tuple[Moments, Tensor | None]:
        """The Gaussian q is (or a flow starts from), flattened to (b, d), and what its family read beyond it."""
        out = self.head(h)
        if out.dim() == 4:
            out = rearrange(out, "b (two c) h w -> b (two c h w)", two=2)
        mean, raw_logvar = rearrange(out, "b (two d) -> two b d", two=2)
        extra = self.posterior.extra(h)
        return self.posterior.moments(GaussianMoments(mean, soft_clamp(raw_logvar, LOGVAR_BOUND)), extra), extra

    def moments(self, h: Tensor) -> Moments:
        """The posterior's moments, flattened to (b, d): the Gaussian's; for a flow posterior the stated mean f(μ) (the
        flow applied to the Gaussian's mean) with the Gaussian's variances."""
        moments, extra = self.parts(h)
        if self.posterior.density:
            return moments
        return GaussianMoments(mean=self.posterior.distribution(moments, extra).mean, logvar=moments.logvar)

    def prior_distribution(self, encode: Encode) -> Distribution:
        """p(z), event shape (d,) (flattened for a feature map)."""
        return self.prior(encode)

    def laws(self, h: Tensor | None, encode: Encode) -> tuple[Distribution, Distribution | None]:
        """p(z) and, given the head's input h, q(z|h) (None without it), both over the flattened layer (d,)."""
        posterior = None
        if h is not None:
            moments, extra = self.parts(h)
            posterior = self.posterior.distribution(moments, extra)
        return self.prior(encode), posterior

    def coding_refusal(self) -> str | None:
        """Why a bits-back coder cannot take this layer (its posterior or its prior does not factorize per dimension),
        or None."""
        if not self.diagonal:
            return (
                f"layer {self.name}'s posterior ({self.posterior.description}) does not factorize per dimension; "
                "bits-back coding here needs the diagonal Gaussian"
            )
        if not self.prior_diagonal:
            return (
                f"layer {self.name}'s prior ({self.prior_name}) is not a diagonal Gaussian; bits-back coding here "
                "needs a prior that factorizes per dimension (StandardNormal, LearnedGaussian)"
            )
        return None

    def unflatten(self, z: Tensor) -> Tensor:
        if len(self.shape) == 1:
            return z
        c, h, w = self.shape
        return rearrange(z, "b (c h w) -> b c h w", c=c, h=h, w=w)

    def forward(
        self, h: Tensor, *, encode: Encode, samples: int = 1, prior: Distribution | None = None
    ) -> LatentSample:
        """h: the input of the head, (b, ...); with ``samples`` K > 1 each example's posterior is drawn K times,
        and every output has K·b rows laid out "(k b)". prior: a prior of this batch's own in place of the layer's
        (a conditional p(z | y), ``vae.models.conditional``), batch shape (K·b,) laid out "(k b)"."""
        moments, extra = self.parts(h)
        # The stated mean, once per example (a flow's costs a pass of the flow), before the K draws' repeat.
        mean = moments.mean if self.posterior.density else self.posterior.distribution(moments, extra).mean.detach()
        if samples > 1:
            moments = moments.repeat(samples)
            extra = None if extra is None else repeat(extra, "b p -> (k b) p", k=samples)
            mean = repeat(mean, "b d -> (k b) d", k=samples)
        posterior = self.posterior.distribution(moments, extra)
        prior = self.prior(encode) if prior is None else prior
        if self.posterior.density:
            reg = self.regularizer(posterior, prior)
            z, kl, per_dim, estimator, log_q = reg.z, reg.kl, reg.kl_per_dim, reg.estimator, None
        else:  # E_q[log q(z|x) − log p(z)] over the draws, with log q carried from the change of variables
            draws, log_qs = posterior.rsample_and_log_prob(torch.Size([self.regularizer.num_samples]))
            kl = (log_qs - prior.log_prob(draws)).mean(dim=0)
            z, per_dim, estimator, log_q = draws[0], None, "mc", log_qs[0]
        return LatentSample(
            z=self.unflatten(z),
            kl=kl,
            kl_per_unit=None if per_dim is None else per_channel(self.unflatten(per_dim)),
            posterior_mean=as_units(self.unflatten(mean)),
            posterior=posterior,
            prior=prior,
            estimator=estimator,
            log_q=log_q,
        )

    def sample_prior(self, n: int, *, encode: Encode, temperature: float = 1.0) -> Tensor:
        """n draws from the prior, (n, *shape); temperature scales the spread around the prior's mean."""
        return self.unflatten(self.prior.sample(n, encode=encode, temperature=temperature))


class TopDownLatent(LatentLayer):
    """A layer below the top of a top-down hierarchy, on feature maps of ``width`` channels at one resolution.

        prior      p(z_l | z_>l)     = N(μ_p, σ_p²) from h                      (prior head: conv → 2c + width)
        posterior  q(z_l | x, z_>l)  = N(μ_q, σ_q²) from [h, e], e the encoder's features at this resolution
                   residual_normal:    N(μ_p + Δμ, (σ_p·Δσ)²)  (NVAE), so the KL depends only on Δμ/σ_p and Δσ
        out        h + W_z z + r, r the prior head's residual features: the state passed down

    prior_head (width → 2c + width channels), posterior_head (2·width → 2c, + the flow's context channels) and project
    (c → width) replace the default cells where given.

    flow: an IAF on the posterior (``vae.layers.flows.ConvIAF``, IAF's own setting): the posterior head also gives
    its context map, the draw is flowed, log q carried with it, and the KL is Monte Carlo; the stated posterior mean
    is the flow at the Gaussian's mean.

    Both distributions factorise over (c, h, w): the KL has a closed form ("auto" and "analytic"); "mc" estimates it
    from ``kl_samples`` samples, as for any layer.
    """

    def __init__(
        self,
        *,
        name: str,
        channels: int,
        width: int,
        positions: int,
        residual_normal: bool = False,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
        prior_head: nn.Module | None = None,
        posterior_head: nn.Module | None = None,
        project: nn.Module | None = None,
        flow: ConvIAF | None = None,
        flow_context: int = 0,
    ) -> None:
        super().__init__()
        self.name, self.units, self.positions = name, channels, positions
        self.width, self.residual_normal = width, residual_normal
        # The default cells (other maps of the same shapes may be given: linear ones make a linear-Gaussian model).
        self.prior_head = prior_head or cell(width, 2 * channels + width, zero_last=True)  # starts at N(0, I)
        self.posterior_head = posterior_head or cell(2 * width, 2 * channels + flow_context)
        self.project = project or Conv(channels, width, kernel_size=1)
        self.flow, self.diagonal = flow, flow is None
        if flow is not None:
            self.factorises = False
            if kl_estimator == "analytic":
                raise ConfigError(f"kl_estimator 'analytic' needs a closed-form KL, and layer {name}'s IAF has none")
            self.no_kl_per_unit = "undefined for a correlated posterior (an IAF)"
        self.kl_estimator: Estimator = "mc" if kl_estimator == "mc" or flow is not None else "analytic"
        self.regularizer = KLRegularizer(estimator=kl_estimator, num_samples=kl_samples)

    @property
    def kl_description(self) -> str:
        return carried(self) if self.flow is not None else super().kl_description

    def prior_parts(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(μ_p, log σ_p, residual features) from the top-down state h (b, width, h, w)."""
        out = self.prior_head(h)
        mean, log_std = rearrange(out[:, : 2 * self.units], "b (two c) h w -> two b c h w", two=2)
        return mean, soft_clamp(log_std, LOGVAR_BOUND / 2), out[:, 2 * self.units :]

    def forward(self, h: Tensor, features: Tensor) -> tuple[LatentSample, Tensor]:
        """h: the top-down state, features: the encoder's at this resolution, both (b, width, h, w). Returns the
        sample and the state passed down."""
        prior, posterior, residual = self.laws(h, features)
        if self.flow is None:
            reg = self.regularizer(posterior, prior)
            z, kl, per_unit, log_q, mean = reg.z, reg.kl, per_channel(reg.kl_per_dim), None, posterior.mean
        else:  # E_q[log q − log p] over the draws, with log q carried from the change of variables
            draws, log_qs = posterior.rsample_and_log_prob(torch.Size([self.regularizer.num_samples]))
            kl = (log_qs - prior.log_prob(draws)).mean(dim=0)
            z, per_unit, log_q = draws[0], None, log_qs[0]
            mean = posterior.mean.detach()  # statistics only (a no_grad block here trips torch's module tracker)
        sample = LatentSample(
            z=z,
            kl=kl,
            kl_per_unit=per_unit,
            posterior_mean=as_units(mean),
            posterior=posterior,
            prior=prior,
            estimator=self.kl_estimator,
            log_q=log_q,
        )
        return sample, self.descend(h, z, residual)

    def laws(self, h: Tensor, features: Tensor | None) -> tuple[Distribution, Distribution | None, Tensor]:
        """p(z_l | z_>l), q(z_l | x, z_>l) given the encoder's ``features`` (None without them), and the prior head's
        residual features, from the top-down state h."""
        p_mean, p_log_std, residual = self.prior_parts(h)
        posterior = None if features is None else self.posterior(h, features, p_mean, p_log_std)
        return diagonal_gaussian(p_mean, p_log_std, 3), posterior, residual

    def descend(self, h: Tensor, z: Tensor, residual: Tensor) -> Tensor:
        """The state passed down once z_l is chosen: h + W_z z + r."""
        return h + self.project(z.to(h.dtype)) + residual

    def posterior(self, h: Tensor, features: Tensor, p_mean: Tensor, p_log_std: Tensor) -> Distribution:
        """q(z_l | x, z_>l), event shape (c, h, w): the diagonal Gaussian, or the IAF's flow of it."""
        q_out = self.posterior_head(torch.cat([h, features], dim=1))
        q_mean, q_log_std = rearrange(q_out[:, : 2 * self.units], "b (two c) h w -> two b c h w", two=2)
        q_log_std = soft_clamp(q_log_std, LOGVAR_BOUND / 2)
        if self.residual_normal:
            q_mean, q_log_std = p_mean + q_mean, p_log_std + q_log_std
        gaussian = diagonal_gaussian(q_mean, q_log_std, 3)
        if self.flow is None:
            return gaussian
        context, flow = full_precision(q_out[:, 2 * self.units :]), self.flow
        return FlowDistribution(gaussian, lambda z0: flow.transform(z0, context))

    def generate(self, h: Tensor, features: Tensor | None = None, *, temperature: float = 1.0) -> Tensor:
        """The state passed down, without a KL: z_l at the posterior mean given ``features``, or, without them,
        drawn from p(z_l | z_>l) with its spread scaled by ``temperature``."""
        p_mean, p_log_std, residual = self.prior_parts(h)
        if features is None:
            z = p_mean + temperature * p_log_std.exp() * torch.randn_like(p_mean)
        else:
            z = self.posterior(h, features, p_mean, p_log_std).mean.to(h.dtype)  # the stated mean, for a flow
        return h + self.project(z) + residual


def cell(c_in: int, c_out: int, *, zero_last: bool = False, kernel_size: int = 3) -> nn.Sequential:
    """A small convolutional cell: k×k convolution to ``c_out`` (3×3 on maps, 1×1 on vectors), SiLU, 1×1
    convolution. ``zero_last`` starts the output at zero (a prior head that begins as N(0, I) and adds nothing to
    the state)."""
    last = Conv(c_out, c_out, kernel_size=1)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    first = Conv(c_in, c_out, kernel_size=kernel_size, padding=kernel_size // 2)
    return nn.Sequential(first, nn.SiLU(), last)


def kl_split(latent: LatentSample, *, dataset_size: int, estimator: SplitEstimator, samples: int = 1) -> KLSplit:
    """The split of one layer's KL for a batch, from the first of its ``samples`` posterior draws per example.

    dataset_size: N, the number of examples the aggregate posterior is over (the split the batch comes from).
    """
    check_estimator(estimator)
    posterior, prior = diagonal_normal(latent.posterior), diagonal_normal(latent.prior)
    if posterior is None or prior is None or latent.prior.batch_shape != ():
        raise ConfigError("the KL split needs a diagonal Gaussian posterior and an unconditional diagonal prior")
    rows = len(latent.z) // samples  # the first draw of each example: rows "(k b)", k = 0
    z = full_precision(latent.flat_z()[:rows])  # (b, d)
    mean, scale = posterior.loc[:rows], posterior.scale[:rows]
    return split_at(z, mean, scale, prior, dataset_size=dataset_size, estimator=estimator)
