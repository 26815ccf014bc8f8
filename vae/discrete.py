"""Discrete latents: categorical and Bernoulli codes trained through the Gumbel-softmax / Concrete relaxation (Jang
et al. 2017; Maddison et al. 2017) and judged exactly, and JointVAE (Dupont 2018), which sets them beside a
continuous code.

A discrete layer has n variables of K outcomes each: a categorical variable has K categories, a Bernoulli unit the
K = 2 outcomes (1, 0). From the normalised log-probabilities log π, (b, n, K), and Gumbel noise g it draws

    hard              c = one_hot(argmax_k (log π_k + g_k))   an exact sample of q (the Gumbel-max trick)
    relaxed           c̃ = softmax((log π + g) / τ)           the Concrete sample at temperature τ, → c as τ → 0
    straight-through  c in the forward pass, the gradient of c̃

from the same noise. Training decodes c̃ (or c, straight-through); validation, test, ``vae evaluate`` and sampling
decode the exact c, so every ELBO and log-likelihood reported is the discrete model's own. The temperature follows
the trainer's global step, τ(t) = max(τ_min, τ_0·exp(−r·t)) (Jang et al.), so a resumed run continues exactly.

The KL to the prior p (uniform, or learned logits) per variable, in nats:

    closed form  D_KL(q ‖ p) = Σ_k q_k (log q_k − log p_k), in log space (``vae.kl.kl_from_log_probs``: 0·log 0 = 0,
                 +inf where q_k > 0 = p_k, never nan); to the uniform prior it is log K − H(q)
    Monte Carlo  log q(c) − log p(c) at the hard sample c, unbiased; its gradient by the score function,
                 ∇[log q(c) − log p(c)] + [log q(c) − log p(c)]·∇log q(c), unbiased too, with more variance

The layer's KL estimator is ``model.kl_estimator`` ("auto" is the closed form).

Axes: b batch, n variables, k outcomes (categories), o outcomes, s samples per example, d continuous dimensions.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, OneHotCategorical

from vae import pictures
from vae.errors import ConfigError
from vae.kl import Estimator, KLEstimator, bernoulli_log_probs, kl_from_log_probs
from vae.latents import GaussianLatent, LatentLayer, LatentSample
from vae.likelihoods import Likelihood
from vae.model import LatentVariableModel, ModelOutput
from vae.nets import Architecture, ConvNet, GaussianMoments, Network
from vae.nets.common import full_precision, nested_network
from vae.pixels import as_unit
from vae.priors import Prior

DiscretePrior = Literal["uniform", "learned"]


@dataclass(frozen=True)
class Temperature:
    """τ(t) = max(``minimum``, ``start``·exp(−``rate``·t)) at global step t; ``rate`` 0 keeps ``start``."""

    start: float = 0.67
    minimum: float = 0.5
    rate: float = 0.0

    def __post_init__(self) -> None:
        if not self.start > 0 or not self.minimum > 0 or self.rate < 0:
            raise ConfigError(
                f"the relaxation's temperature and min_temperature must be positive and its anneal_rate 0 or more, "
                f"got {self.start}, {self.minimum} and {self.rate}"
            )
        if self.rate > 0 and self.minimum > self.start:
            raise ConfigError(
                f"min_temperature ({self.minimum}) is above the starting temperature ({self.start}): the annealed "
                "temperature falls from temperature to min_temperature"
            )

    def at(self, step: int | None) -> float:
        """τ at global step ``step`` (None: the end of the schedule)."""
        if self.rate == 0:
            return self.start
        if step is None:
            return self.minimum
        return max(self.minimum, self.start * math.exp(-self.rate * step))


def gumbel_draws(log_probs: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(hard one-hot sample, relaxed sample), both (..., K), from one draw of Gumbel noise."""
    perturbed = log_probs - torch.empty_like(log_probs).exponential_().log()  # log π + g, g = −log E, E ~ Exp(1)
    hard = F.one_hot(perturbed.argmax(dim=-1), log_probs.shape[-1]).to(log_probs.dtype)
    return hard, (perturbed / temperature).softmax(dim=-1)


def score_function(value: Tensor, log_q: Tensor) -> Tensor:
    """``value`` unchanged, with the gradient ∇value + value·∇log q: the unbiased gradient of E_q[value] when the
    sample behind ``value`` was drawn from q without reparameterisation. An infinite value (a sample the prior
    cannot draw) stays infinite, without a nan from inf·0."""
    weight = torch.where(torch.isfinite(value), value.detach(), torch.zeros_like(value))
    return value + weight * (log_q - log_q.detach())


class DiscreteLatent(LatentLayer, ABC):
    """n discrete variables of K outcomes each, read from features by a linear head, against a uniform or a learned
    prior. Subclasses say how the head's outputs become log-probabilities and how a one-hot draw becomes the code
    passed to the decoder."""

    categories: int
    code_features: int

    def __init__(
        self,
        *,
        name: str,
        variables: int,
        categories: int,
        head_features: int,
        in_features: int,
        prior: DiscretePrior,
        straight_through: bool,
        kl_estimator: KLEstimator,
    ) -> None:
        super().__init__()
        if variables < 1:
            raise ConfigError(f"a discrete latent layer needs at least one variable, got {variables}")
        if prior not in ("uniform", "learned"):
            raise ConfigError(f"the discrete prior must be 'uniform' or 'learned', got {prior!r}")
        if kl_estimator not in ("auto", "analytic", "mc"):
            raise ConfigError(f"the KL estimator must be 'auto', 'analytic' or 'mc', got {kl_estimator!r}")
        self.name, self.units, self.categories = name, variables, categories
        self.head = nn.Linear(in_features, head_features)
        self.prior_kind = prior
        prior_logits = torch.zeros(head_features)
        if prior == "learned":
            self.prior_logits = nn.Parameter(prior_logits)
        else:
            self.register_buffer("prior_logits", prior_logits)
        self.straight_through = straight_through
        self.kl_estimator: Estimator = "mc" if kl_estimator == "mc" else "analytic"

    @property
    def kl_description(self) -> str:
        return "closed form" if self.kl_estimator == "analytic" else "Monte Carlo, 1 sample, score-function gradient"

    @abstractmethod
    def log_probs(self, raw: Tensor) -> Tensor:
        """The head's outputs (..., head features) as normalised log-probabilities (..., n, K)."""

    @abstractmethod
    def code(self, one_hot: Tensor) -> Tensor:
        """Draws (b, n, K), hard or relaxed, as the code the decoder reads, (b, code features)."""

    def prior_log_probs(self) -> Tensor:
        """log p per variable, (n, K): uniform (log 1/K), or the learned logits normalised."""
        return self.log_probs(self.prior_logits)

    def posterior_log_probs(self, h: Tensor) -> Tensor:
        """log q(c | x) per variable, (b, n, K), in float32 under autocast."""
        return self.log_probs(full_precision(self.head(h)))

    def forward(self, h: Tensor, *, samples: int = 1, temperature: float = 1.0) -> LatentSample:
        """h: features (b, f). In training the code is the relaxed draw at ``temperature`` (the hard one with
        straight-through); otherwise the exact hard draw. With ``samples`` K, K·b rows laid out "(k b)"."""
        log_q = self.posterior_log_probs(h)
        if samples > 1:
            log_q = repeat(log_q, "b n o -> (s b) n o", s=samples)
        log_p = self.prior_log_probs().expand_as(log_q)
        hard, relaxed = gumbel_draws(log_q, temperature)
        if not self.training:
            draw = hard
        elif self.straight_through:
            draw = hard + relaxed - relaxed.detach()
        else:
            draw = relaxed
        if self.kl_estimator == "analytic":
            kl = kl_from_log_probs(log_q, log_p)  # (b, n)
        else:
            index = hard.argmax(dim=-1, keepdim=True)  # a gather, not hard·log q: 0·(−inf) would be nan
            log_q_c, log_p_c = log_q.gather(-1, index)[..., 0], log_p.gather(-1, index)[..., 0]  # (b, n)
            kl = score_function(log_q_c - log_p_c, log_q_c)
        return LatentSample(
            z=self.code(draw),
            kl=kl.sum(dim=-1),
            kl_per_unit=kl,
            posterior_mean=self.mean(log_q),
            posterior=one_hot_distribution(log_q),
            prior=one_hot_distribution(log_p),
            estimator=self.kl_estimator,
            event=hard,
        )

    def mean(self, log_q: Tensor) -> Tensor:
        """E_q of the code as (b, units, positions), for the latent statistics."""
        return log_q.exp()

    def mode(self, h: Tensor) -> Tensor:
        """The code of the most probable outcome of each variable, (b, code features)."""
        log_q = self.posterior_log_probs(h)
        return self.code(F.one_hot(log_q.argmax(dim=-1), self.categories).to(log_q.dtype))

    def sample_prior(self, n: int, *, temperature: float = 1.0) -> Tensor:
        """n codes drawn from the prior, its log-probabilities divided by ``temperature`` (sharper below 1)."""
        log_p = repeat(self.prior_log_probs() / temperature, "v k -> b v k", b=n)
        return self.code(OneHotCategorical(logits=log_p).sample())

    def outcomes(self, variable: int, base: Tensor) -> Tensor:
        """The code ``base`` (code features,) with one variable set to each of its K outcomes in turn, (K, code
        features)."""
        draws = repeat(self.decode_code(base), "v k -> o v k", o=self.categories).clone()
        draws[:, variable] = torch.eye(self.categories, device=base.device, dtype=base.dtype)
        return self.code(draws)

    @abstractmethod
    def decode_code(self, code: Tensor) -> Tensor:
        """A code (code features,) back to its one-hot draws (n, K)."""


def one_hot_distribution(log_probs: Tensor) -> Independent:
    """n independent one-hot categoricals, batch (b,), event (n, K): their log densities at the hard draw give the
    importance weights."""
    return Independent(OneHotCategorical(logits=log_probs, validate_args=False), 1, validate_args=False)


class CategoricalLatent(DiscreteLatent):
    """``variables`` categorical variables of ``categories`` categories, decoded as their concatenated one-hot
    codes; a single variable clusters the data (its most probable category), which ``vae evaluate`` scores."""

    def __init__(
        self,
        *,
        name: str,
        in_features: int,
        categories: int = 10,
        variables: int = 1,
        prior: DiscretePrior = "uniform",
        straight_through: bool = False,
        kl_estimator: KLEstimator = "auto",
    ) -> None:
        if categories < 2:
            raise ConfigError(f"a categorical latent needs at least 2 categories, got {categories}")
        super().__init__(
            name=name,
            variables=variables,
            categories=categories,
            head_features=variables * categories,
            in_features=in_features,
            prior=prior,
            straight_through=straight_through,
            kl_estimator=kl_estimator,
        )
        self.positions = categories
        self.code_features = variables * categories
        self.clusters = variables == 1

    def log_probs(self, raw: Tensor) -> Tensor:
        return rearrange(raw, "... (n k) -> ... n k", k=self.categories).log_softmax(dim=-1)

    def code(self, one_hot: Tensor) -> Tensor:
        return rearrange(one_hot, "... n k -> ... (n k)")

    def decode_code(self, code: Tensor) -> Tensor:
        return rearrange(code, "(n k) -> n k", k=self.categories)


class BernoulliLatent(DiscreteLatent):
    """``units`` binary units, each Bernoulli with a logit ℓ: the outcomes (1, 0) with log-probabilities
    (log σ(ℓ), log σ(−ℓ)), relaxed as the binary Concrete (the two-outcome Gumbel-softmax); decoded as the units'
    values in {0, 1} (relaxed in (0, 1))."""

    def __init__(
        self,
        *,
        name: str,
        in_features: int,
        units: int,
        prior: DiscretePrior = "uniform",
        straight_through: bool = False,
        kl_estimator: KLEstimator = "auto",
    ) -> None:
        super().__init__(
            name=name,
            variables=units,
            categories=2,
            head_features=units,
            in_features=in_features,
            prior=prior,
            straight_through=straight_through,
            kl_estimator=kl_estimator,
        )
        self.positions = 1
        self.code_features = units

    def log_probs(self, raw: Tensor) -> Tensor:
        return bernoulli_log_probs(raw)

    def code(self, one_hot: Tensor) -> Tensor:
        return one_hot[..., 0]  # the indicator of the outcome 1

    def mean(self, log_q: Tensor) -> Tensor:
        return log_q[..., :1].exp()  # q(1), (b, n, 1)

    def decode_code(self, code: Tensor) -> Tensor:
        return torch.stack([code, 1 - code], dim=-1)


class Joint(Architecture):
    """JointVAE (Dupont 2018), for ``model.network``: one encoder, a continuous Gaussian code z of
    ``model.latent_dim`` dimensions against ``model.prior``, and discrete codes beside it, decoded together.

    network: the encoder/decoder pair (``ConvNet`` by default, ``MLPNet``); the decoder reads [z, c, b].
    continuous: whether there is the continuous code z (False: a purely discrete VAE; ``model.latent_dim`` unused).
    categories / variables: the categorical code c, ``variables`` variables of ``categories`` categories (0: none).
    bernoulli: the Bernoulli code b, this many binary units (0: none).
    discrete_prior: "uniform" (the KL is log K − H(q) per variable) or "learned" (logits trained with the model).
    temperature / min_temperature / anneal_rate: the relaxation's temperature τ(t) = max(min_temperature,
        temperature·exp(−anneal_rate·t)) at global step t; anneal_rate 0 (the default) keeps JointVAE's τ = 0.67.
    straight_through: decode the hard one-hot draw in training, with the relaxed draw's gradient.

    Each layer's KL is logged raw (``{stage}/kl/z``, ``kl/c``, ``kl/b``); ``vae.weighting.Capacities`` gives each
    its own capacity, as JointVAE trains. The IWAE objective is refused: training decodes the relaxation, whose
    density is not the discrete model's (``vae evaluate``'s importance-weighted log-likelihood draws exact samples,
    so it estimates the discrete model's own log p(x)).
    """

    def __init__(
        self,
        *,
        network: Network | None = None,
        continuous: bool = True,
        categories: int = 10,
        variables: int = 1,
        bernoulli: int = 0,
        discrete_prior: DiscretePrior = "uniform",
        temperature: float = 0.67,
        min_temperature: float = 0.5,
        anneal_rate: float = 0.0,
        straight_through: bool = False,
    ) -> None:
        if categories < 0 or bernoulli < 0 or variables < 1:
            raise ConfigError("Joint categories and bernoulli must be 0 or more, variables at least 1")
        if categories == 1:
            raise ConfigError("Joint categories must be 0 (no categorical code) or at least 2")
        if not continuous and not categories and not bernoulli:
            raise ConfigError("Joint has no latent code: set continuous true, categories or bernoulli")
        if discrete_prior not in ("uniform", "learned"):
            raise ConfigError(f"Joint discrete_prior must be 'uniform' or 'learned', got {discrete_prior!r}")
        self.network = nested_network(network, "model.network.init_args.network") if network else ConvNet()
        self.continuous, self.categories, self.variables, self.bernoulli = continuous, categories, variables, bernoulli
        self.discrete_prior, self.straight_through = discrete_prior, straight_through
        self.temperature, self.min_temperature, self.anneal_rate = temperature, min_temperature, anneal_rate
        self.schedule()  # its checks, now

    def schedule(self) -> Temperature:
        return Temperature(start=self.temperature, minimum=self.min_temperature, rate=self.anneal_rate)

    def build(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        likelihood: Likelihood,
        prior: Prior,
        kl_estimator: KLEstimator,
        kl_samples: int,
    ) -> JointVAE:
        return JointVAE(
            architecture=self,
            image_shape=image_shape,
            latent_dim=latent_dim,
            likelihood=likelihood,
            prior=prior,
            kl_estimator=kl_estimator,
            kl_samples=kl_samples,
        )


class JointVAE(LatentVariableModel):
    """The model ``Joint`` describes: layers "z" (continuous), "c" (categorical) and "b" (Bernoulli), those it has."""

    relaxed = True

    def __init__(
        self,
        *,
        architecture: Joint,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        likelihood: Likelihood,
        prior: Prior,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__()
        arch = architecture
        self.image_shape, self.likelihood = tuple(image_shape), likelihood
        self.temperature = arch.schedule()
        self.encoder = arch.network.encoder(image_shape=self.image_shape)
        features = self.encoder.out_features
        self.continuous: GaussianLatent | None = None
        if arch.continuous:
            if latent_dim < 1:
                raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")
            self.continuous = GaussianLatent(
                name="z",
                shape=(latent_dim,),
                head=nn.Linear(features, 2 * latent_dim),
                prior=prior,
                image_shape=self.image_shape,
                kl_estimator=kl_estimator,
                kl_samples=kl_samples,
            )
        discrete = {"prior": arch.discrete_prior, "straight_through": arch.straight_through}
        discrete |= {"kl_estimator": kl_estimator, "in_features": features}
        layers: list[DiscreteLatent] = []
        if arch.categories:
            layers.append(CategoricalLatent(name="c", categories=arch.categories, variables=arch.variables, **discrete))
        if arch.bernoulli:
            layers.append(BernoulliLatent(name="b", units=arch.bernoulli, **discrete))
        self.discrete = nn.ModuleList(layers)
        self.code_dim = (latent_dim if arch.continuous else 0) + sum(layer.code_features for layer in layers)
        c, h, w = self.image_shape
        self.decoder = arch.network.decoder(image_shape=(likelihood.param_channels(c), h, w), latent_dim=self.code_dim)
        if self.continuous is not None:
            self.continuous.resolve(kl_estimator, self.posterior)

    @property
    def layers(self) -> list[LatentLayer]:
        return ([self.continuous] if self.continuous is not None else []) + list(self.discrete)

    def networks(self) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def posterior(self, x: Tensor) -> GaussianMoments:
        """q(z|x)'s moments, (b, d), for images in [0, 1] (what a VampPrior on z is made of)."""
        assert self.continuous is not None
        return self.continuous.moments(self.encoder(x))

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        if samples > 1 and self.training:
            raise ConfigError(
                "the IWAE objective (importance_samples > 1) needs exact log densities, and discrete latents train "
                "on a relaxation: use importance_samples 1 (vae evaluate's log-likelihood uses exact samples)"
            )
        x = as_unit(x)
        h = self.encoder(x)
        latents: dict[str, LatentSample] = {}
        if self.continuous is not None:
            latents["z"] = self.continuous(h, encode=self.posterior, samples=samples)
        temperature = self.temperature.at(step if self.training else None)
        for layer in self.discrete:
            latents[layer.name] = layer(h, samples=samples, temperature=temperature)
        params = full_precision(self.decoder(torch.cat([latent.z for latent in latents.values()], dim=1)))
        if samples > 1:
            x = repeat(x, "b c h w -> (k b) c h w", k=samples)
        settings = {"temperature": temperature} if self.training and len(self.discrete) else {}
        return ModelOutput(self.likelihood.log_prob(params, x), latents, params, samples, settings)

    def codes(self, x: Tensor) -> dict[str, Tensor]:
        """Each layer's code of images x (in [0, 1]): z at its posterior mean, each discrete variable at its most
        probable outcome."""
        h = self.encoder(x)
        codes = {} if self.continuous is None else {"z": self.continuous.moments(h).mean}
        return codes | {layer.name: layer.mode(h) for layer in self.discrete}

    def representation(self, x: Tensor, *, context: Tensor | None = None) -> Tensor:
        """z's posterior mean and the discrete posteriors' probabilities, side by side, (b, d + n·K)."""
        h = self.encoder(as_unit(x))
        parts = [] if self.continuous is None else [self.continuous.moments(h).mean]
        parts += [rearrange(layer.posterior_log_probs(h).exp(), "b n k -> b (n k)") for layer in self.discrete]
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def decode(self, code: Tensor) -> Tensor:
        """E[x | z, c, b] for codes side by side (b, code features)."""
        return self.likelihood.mean(self.decoder(code))

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        parts = [layer.sample_prior(n, temperature=temperature) for layer in self.discrete]
        if self.continuous is not None:
            parts.insert(0, self.continuous.sample_prior(n, encode=self.posterior, temperature=temperature))
        return self.decode(torch.cat(parts, dim=1))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        if keep == 0:
            return self.sample(len(x))
        return self.decode(torch.cat(list(self.codes(as_unit(x)).values()), dim=1))

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
        """Samples and reconstructions, and traversals: ``traversals`` sweeps each of z's dimensions (the largest KL
        on x first) across its prior range, the discrete codes held at the first image's;
        ``categories`` sets a categorical variable to each category in turn (columns), for each of the first images
        (rows; with several variables, one row per variable of the first image); ``bits`` sets each Bernoulli unit
        to 0 and 1."""
        grids = super().pictures(x, nrow=nrow, seed=seed, num_samples=num_samples)
        x = as_unit(x)
        codes = self.codes(x)
        if self.continuous is not None:
            kl = self.continuous(self.encoder(x), encode=self.posterior).kl_per_unit  # None for a mixture prior
            d = codes["z"].shape[1]
            order = pictures.ranked_dimensions(kl.mean(dim=0) if kl is not None else torch.arange(d, 0, -1).float())
            bounds = pictures.prior_range(self)
            rows = []
            for dim in order:  # every dimension, the most informative first
                z = repeat(codes["z"][0], "d -> s d", s=9).clone()
                z[:, dim] = torch.linspace(float(bounds[0, dim]), float(bounds[1, dim]), 9, device=z.device)
                rows.append(self.decode(self.join(codes, 0, {"z": z})))
            grids["traversals"] = pictures.grid(torch.cat(rows), 9)
        for layer in self.discrete:
            picture = "categories" if isinstance(layer, CategoricalLatent) else "bits"
            if layer.units == 1:  # rows: images; columns: the categories
                varied = [(i, layer.outcomes(0, codes[layer.name][i])) for i in range(min(nrow, len(x)))]
            else:  # rows: the variables of the first image; columns: their outcomes
                varied = [(0, layer.outcomes(v, codes[layer.name][0])) for v in range(min(nrow, layer.units))]
            rows = [self.decode(self.join(codes, i, {layer.name: code})) for i, code in varied]
            grids[picture] = pictures.grid(torch.cat(rows), layer.categories)
        return grids

    def prior_distribution(self) -> Distribution:
        """p(z) of the continuous code, event shape (d,)."""
        assert self.continuous is not None
        return self.continuous.prior_distribution(self.posterior)

    def join(self, codes: dict[str, Tensor], index: int, varied: dict[str, Tensor]) -> Tensor:
        """The decoder's input for the rows of ``varied`` (some layers' codes, (s, features) each), the other
        layers held at image ``index``'s codes."""
        steps = len(next(iter(varied.values())))
        held = {name: repeat(code[index], "f -> s f", s=steps) for name, code in codes.items()}
        return torch.cat([varied.get(name, code) for name, code in held.items()], dim=1)
