"""JointVAE (Dupont 2018): one encoder, a continuous Gaussian code z and discrete codes beside it
(``vae.layers.discrete``: categorical c, Bernoulli b), decoded together, each code's KL pushed towards its own
capacity (``vae.objectives.weighting.Capacities``). With ``continuous: false`` it is a purely discrete VAE.

    q(z, c, b | x) = q(z | x) q(c | x) q(b | x),   p(z, c, b) = p(z) p(c) p(b),   p(x | z, c, b)
    ELBO = E_q[log p(x | z, c, b)] − KL_z − KL_c − KL_b

Axes: b batch, k samples per example, d continuous dimensions, f code features, s steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import repeat
from torch import Tensor, nn
from torch.distributions import Distribution

from vae.core.errors import ConfigError
from vae.core.gaussian import GaussianMoments, full_precision
from vae.core.kl import KLEstimator
from vae.core.pixels import as_unit
from vae.layers.discrete import BernoulliLatent, CategoricalLatent, DiscreteLatent, DiscretePrior, Temperature
from vae.layers.latents import GaussianLatent, LatentLayer, LatentSample
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets import ConvNet, Network
from vae.layers.priors import Prior, StandardNormal
from vae.models import pictures
from vae.models.base import Capabilities, Encoding, LatentVariableModel, ModelOutput, inferring, renamed_keys


class JointVAE(LatentVariableModel):
    """JointVAE (Dupont 2018): one encoder, a continuous Gaussian code z of ``latent_dim`` dimensions against
    ``prior``, and discrete codes beside it, decoded together. Its layers are "z" (continuous), "c" (categorical)
    and "b" (Bernoulli), those it has.

    network: the encoder/decoder pair (``ConvNet`` by default, ``MLPNet``); the decoder reads [z, c, b].
    continuous: whether there is the continuous code z (False: a purely discrete VAE; ``latent_dim`` unused).
    categories / variables: the categorical code c, ``variables`` variables of ``categories`` categories (0: none).
    bernoulli: the Bernoulli code b, this many binary units (0: none).
    discrete_prior: "uniform" (the KL is log K − H(q) per variable) or "learned" (logits trained with the model).
    temperature / min_temperature / anneal_rate: the relaxation's temperature τ(t) = max(min_temperature,
        temperature·exp(−anneal_rate·t)) at global step t; anneal_rate 0 (the default) keeps JointVAE's τ = 0.67.
    straight_through: decode the hard one-hot draw in training, with the relaxed draw's gradient.
    likelihood, prior, kl_estimator, kl_samples: as for ``VAE`` (the estimator applies to every layer).

    Each layer's KL is logged raw (``{stage}/kl/z``, ``kl/c``, ``kl/b``); ``vae.objectives.weighting.Capacities``
    gives each its own capacity, as JointVAE trains. The IWAE objective is refused: training decodes the relaxation,
    whose density is not the discrete model's (``vae evaluate``'s importance-weighted log-likelihood draws exact
    samples, so it estimates the discrete model's own log p(x)).
    """

    RENAMED = {"encoder.": "network.encoder.", "decoder.": "network.decoder."}  # before the network held both

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        latent_dim: int = 10,
        network: Network | None = None,
        likelihood: Likelihood | None = None,
        prior: Prior | None = None,
        continuous: bool = True,
        categories: int = 10,
        variables: int = 1,
        bernoulli: int = 0,
        discrete_prior: DiscretePrior = "uniform",
        temperature: float = 0.67,
        min_temperature: float = 0.5,
        anneal_rate: float = 0.0,
        straight_through: bool = False,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        if categories < 0 or bernoulli < 0 or variables < 1:
            raise ConfigError("JointVAE categories and bernoulli must be 0 or more, variables at least 1")
        if categories == 1:
            raise ConfigError("JointVAE categories must be 0 (no categorical code) or at least 2")
        if not continuous and not categories and not bernoulli:
            raise ConfigError("JointVAE has no latent code: set continuous true, categories or bernoulli")
        if discrete_prior not in ("uniform", "learned"):
            raise ConfigError(f"JointVAE discrete_prior must be 'uniform' or 'learned', got {discrete_prior!r}")
        if continuous and latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")
        self.temperature = Temperature(start=temperature, minimum=min_temperature, rate=anneal_rate)
        network = ConvNet() if network is None else network
        likelihood = Bernoulli() if likelihood is None else likelihood
        prior = StandardNormal() if prior is None else prior
        self.record(network=network, likelihood=likelihood, prior=prior)
        self.likelihood = likelihood
        discrete = {"prior": discrete_prior, "straight_through": straight_through, "kl_estimator": kl_estimator}
        categorical = {"categories": categories, "variables": variables}
        layers: list[DiscreteLatent] = []
        # The code the decoder reads: z, then c's one-hot variables, then b's units.
        code_dim = (latent_dim if continuous else 0) + categories * variables + bernoulli
        self.network = self.bind_network(network, likelihood, code_dim=code_dim)
        features = network.features
        self.continuous: GaussianLatent | None = None
        if continuous:
            self.continuous = GaussianLatent(
                name="z",
                shape=(latent_dim,),
                head=nn.Linear(features, 2 * latent_dim),
                prior=prior,
                image_shape=self.image_shape,
                kl_estimator=kl_estimator,
                kl_samples=kl_samples,
            )
        if categories:
            layers.append(CategoricalLatent(name="c", **categorical, in_features=features, **discrete))
        if bernoulli:
            layers.append(BernoulliLatent(name="b", units=bernoulli, in_features=features, **discrete))
        self.discrete = nn.ModuleList(layers)
        self.code_dim = code_dim
        if self.continuous is not None:
            self.continuous.resolve(kl_estimator, self.posterior)

    @property
    def capabilities(self) -> Capabilities:
        """Training decodes relaxed samples: no IWAE training; the exact samples give a posterior density."""
        top = self.layers[0]
        return Capabilities(
            iwae_training=False,
            kl_split=top.kl_splits,
            kl_per_dimension=len(self.layers) == 1 and top.factorises,
        )

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        return renamed_keys(state, self.RENAMED, prefix)

    @property
    def layers(self) -> list[LatentLayer]:
        return ([self.continuous] if self.continuous is not None else []) + list(self.discrete)

    def networks(self) -> list[nn.Module]:
        return [self.network.encoder, self.network.decoder]

    def posterior(self, x: Tensor) -> GaussianMoments:
        """q(z|x)'s moments, (b, d), for images in [0, 1] (what a VampPrior on z is made of)."""
        assert self.continuous is not None
        return self.continuous.moments(self.network.encoder(x))

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        if samples > 1 and self.training:
            raise ConfigError(
                "JointVAE trains on relaxed samples, whose density is not the model's: it cannot train on the IWAE "
                "bound (its importance-weighted log-likelihood outside training draws exact samples)"
            )
        x = as_unit(x)
        h = self.network.encoder(x)
        latents: dict[str, LatentSample] = {}
        if self.continuous is not None:
            latents["z"] = self.continuous(h, encode=self.posterior, samples=samples)
        temperature = self.temperature.at(step if self.training else None)
        for layer in self.discrete:
            latents[layer.name] = layer(h, samples=samples, temperature=temperature)
        params = full_precision(self.network.decoder(torch.cat([latent.z for latent in latents.values()], dim=1)))
        if samples > 1:
            x = repeat(x, "b c h w -> (k b) c h w", k=samples)
        settings = {"temperature": temperature} if self.training and len(self.discrete) else {}
        return ModelOutput(self.likelihood.log_prob(params, x), latents, params, samples, settings)

    def codes(self, x: Tensor) -> dict[str, Tensor]:
        """Each layer's code of images x (in [0, 1]): z at its posterior mean, each discrete variable at its most
        probable outcome."""
        h = self.network.encoder(x)
        codes = {} if self.continuous is None else {"z": self.continuous.moments(h).mean}
        return codes | {layer.name: layer.mode(h) for layer in self.discrete}

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        """z's posterior mean and variance, then each discrete layer's expected code (a categorical's outcome
        probabilities, a Bernoulli unit's q(1)) and its variance p(1 − p), side by side, (b, code features)."""
        h = self.network.encoder(as_unit(x))
        means, variances = [], []
        if self.continuous is not None:
            moments = self.continuous.moments(h)
            means.append(moments.mean)
            variances.append(moments.logvar.exp())
        for layer in self.discrete:
            p = layer.code(layer.posterior_log_probs(h).exp())
            means.append(p)
            variances.append(p * (1 - p))
        return Encoding(mean=torch.cat(means, dim=1), variance=torch.cat(variances, dim=1))

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        """E[x | z, c, b] for codes side by side (b, code features)."""
        return self.likelihood.mean(self.network.decoder(z))

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        parts = [layer.sample_prior(n, temperature=temperature) for layer in self.discrete]
        if self.continuous is not None:
            parts.insert(0, self.continuous.sample_prior(n, encode=self.posterior, temperature=temperature))
        return self.decode(torch.cat(parts, dim=1))

    @inferring
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
        to 0 and then 1."""
        grids = super().pictures(x, nrow=nrow, seed=seed, num_samples=num_samples)
        x = as_unit(x)
        codes = self.codes(x)
        if self.continuous is not None:
            kl = self.continuous(self.network.encoder(x), encode=self.posterior).kl_per_unit  # None for a mixture prior
            d = codes["z"].shape[1]
            order = pictures.ranked_dimensions(kl.mean(dim=0) if kl is not None else torch.arange(d, 0, -1).float())
            bounds = pictures.prior_range(self)
            rows, values = [], []
            for dim in order:  # every dimension, the most informative first
                z = repeat(codes["z"][0], "d -> s d", s=9).clone()
                z[:, dim] = torch.linspace(float(bounds[0, dim]), float(bounds[1, dim]), 9, device=z.device)
                rows.append(self.decode(self.join(codes, 0, {"z": z})))
                values.append(z[:, dim].cpu())
            kls = kl.mean(dim=0).tolist() if kl is not None else None
            names = [f"z{dim}" + ("" if kls is None else f"  KL {kls[dim]:.2f}") for dim in order]
            caption = "z's traversals, the discrete codes held"
            grids["traversals"] = pictures.swept(torch.cat(rows), torch.stack(values), names, steps=9, caption=caption)
        for layer in self.discrete:
            categorical = isinstance(layer, CategoricalLatent)
            if layer.units == 1:  # rows: images; columns: the categories
                varied = [(i, layer.outcomes(0, codes[layer.name][i])) for i in range(min(nrow, len(x)))]
                names = [f"image {i}" for i, _ in varied]
            else:  # rows: the variables of the first image; columns: their outcomes
                varied = [(0, layer.outcomes(v, codes[layer.name][0])) for v in range(min(nrow, layer.units))]
                names = [f"{layer.name}{v}" for v in range(len(varied))]
            rows = [self.decode(self.join(codes, i, {layer.name: code})) for i, code in varied]
            columns = [f"{layer.name}={k}" for k in range(layer.categories)] if categorical else ["0", "1"]
            grids["categories" if categorical else "bits"] = pictures.labelled(
                pictures.grid(torch.cat(rows), layer.categories), cell=x.shape[-2:], rows=names, columns=columns
            )
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
