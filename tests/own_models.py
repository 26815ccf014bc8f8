"""Models written outside the package, as a user writes their own: each is one class whose constructor is its config,
built on the model interface (``vae.models.base``) and the package's parts, with no edit anywhere in ``vae/``.
A config names them by class path (``own_models.LaplaceVAE``) once the module is trusted
(VAE_TRUSTED_MODULES=own_models).

    LaplaceVAE    one latent vector with a Laplace posterior against a Laplace(0, 1) prior: the KL in closed form
                  (torch.distributions registers it), or Monte Carlo
    Autoencoder   a plain, deterministic autoencoder: no latent layer, so its KL term is zero; it has no posterior
                  density (no importance-weighted log-likelihood) and no prior to sample from
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor, nn
from torch.distributions import Independent, Laplace

from vae.core.kl import KLEstimator, KLRegularizer, register_kl, resolve_estimator
from vae.core.pixels import as_unit
from vae.layers.latents import LatentLayer, LatentSample
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets import MLPNet, Network
from vae.models.base import Capabilities, Encoding, LatentVariableModel, ModelOutput, Term, inferring


@register_kl(Laplace, Laplace)
def laplace_kl(p: Laplace, q: Laplace) -> Tensor:
    """D_KL(Laplace(μ₁, b₁) ‖ Laplace(μ₂, b₂)) = log(b₂/b₁) + |μ₁ − μ₂|/b₂ + (b₁/b₂)·exp(−|μ₁ − μ₂|/b₁) − 1."""
    distance = (p.loc - q.loc).abs()
    return (q.scale / p.scale).log() + distance / q.scale + p.scale / q.scale * (-distance / p.scale).exp() - 1


def laplace(loc: Tensor, scale: Tensor) -> Independent:
    return Independent(Laplace(loc, scale, validate_args=False), 1, validate_args=False)


class LaplaceLatent(LatentLayer):
    """q(z|h) = Laplace(μ(h), b(h)) per dimension, against p(z) = Laplace(0, 1)."""

    def __init__(self, *, features: int, latent_dim: int, kl_estimator: KLEstimator, kl_samples: int) -> None:
        super().__init__()
        self.name, self.units, self.positions = "z", latent_dim, 1
        self.head = nn.Linear(features, 2 * latent_dim)
        self.register_buffer("zero", torch.zeros(latent_dim))
        self.regularizer = KLRegularizer(estimator=kl_estimator, num_samples=kl_samples)
        self.kl_estimator = resolve_estimator(self.posterior(torch.zeros(1, features)), self.prior(), kl_estimator)

    def posterior(self, h: Tensor) -> Independent:
        loc, raw = self.head(h).chunk(2, dim=-1)
        return laplace(loc, nn.functional.softplus(raw) + 1e-4)

    def prior(self) -> Independent:
        return laplace(self.zero, torch.ones_like(self.zero))

    def forward(self, h: Tensor, *, samples: int = 1) -> LatentSample:
        if samples > 1:
            h = repeat(h, "b f -> (k b) f", k=samples)
        posterior, prior = self.posterior(h), self.prior()
        result = self.regularizer(posterior, prior)
        mean = posterior.base_dist.loc
        return LatentSample(
            z=result.z,
            kl=result.kl,
            kl_per_unit=result.kl_per_dim,
            posterior_mean=mean.unsqueeze(-1),
            posterior=posterior,
            prior=prior,
            estimator=result.estimator,
        )


class LaplaceVAE(LatentVariableModel):
    """A VAE whose latent vector has a Laplace posterior and prior.

    latent_dim: the latent dimensions; network: the encoder/decoder pair (MLPNet((64,)) by default); likelihood:
    p(x|z) (Bernoulli by default); kl_estimator / kl_samples: the closed form ("auto") or Monte Carlo ("mc").
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        latent_dim: int = 8,
        network: Network | None = None,
        likelihood: Likelihood | None = None,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        network = MLPNet(hidden_dims=(64,)) if network is None else network
        likelihood = Bernoulli() if likelihood is None else likelihood
        self.record(network=network, likelihood=likelihood)
        self.network = self.bind_network(network, likelihood, code_dim=latent_dim)
        self.latent = LaplaceLatent(
            features=network.features, latent_dim=latent_dim, kl_estimator=kl_estimator, kl_samples=kl_samples
        )
        self.likelihood = likelihood

    @property
    def layers(self) -> list[LatentLayer]:
        return [self.latent]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(kl_per_dimension=True, continuous_code=True)

    def prior_distribution(self) -> Independent:
        return self.latent.prior()

    def forward(self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None):
        x = as_unit(x)
        latent = self.latent(self.network.encoder(x), samples=samples)
        params = self.network.decoder(latent.z).float()
        if samples > 1:
            x = repeat(x, "b c h w -> (k b) c h w", k=samples)
        return ModelOutput(self.likelihood.log_prob(params, x), {"z": latent}, params, samples)

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        posterior = self.latent.posterior(self.network.encoder(as_unit(x)))
        return Encoding(mean=posterior.mean, variance=posterior.variance)

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.network.decoder(z))

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        return self.decode(temperature * self.latent.prior().sample(torch.Size([n])))

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x).mean)


class Autoencoder(LatentVariableModel):
    """A plain autoencoder: z = encoder(x), deterministic, decoded to p(x|z); no latent layer, so the KL is zero and
    the ELBO is the reconstruction log-likelihood. It has no posterior density and no prior: no importance-weighted
    log-likelihood, and sampling needs a prior trained on its codes (``needs_trained_prior``).

    A loss term of its own: ``code_norm``, ‖z‖² per example, weighted ``code_weight`` (keeping the codes near the
    origin, where a prior fitted later would look for them), handed to the objective in ``ModelOutput.terms``."""

    term_names = ("code_norm",)

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        code_dim: int = 8,
        code_weight: float = 1e-3,
        network: Network | None = None,
        likelihood: Likelihood | None = None,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        self.code_weight = code_weight
        network = MLPNet(hidden_dims=(64,)) if network is None else network
        likelihood = Bernoulli() if likelihood is None else likelihood
        self.record(network=network, likelihood=likelihood)
        self.network = self.bind_network(network, likelihood, code_dim=code_dim)
        self.head = nn.Linear(network.features, code_dim)
        self.likelihood = likelihood

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(posterior_density=False, iwae_training=False, needs_trained_prior=True)

    def code(self, x: Tensor) -> Tensor:
        return self.head(self.network.encoder(as_unit(x)))

    def forward(self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None):
        x = as_unit(x)
        z = self.code(x)
        params = self.network.decoder(z).float()
        norm = z.float().square().sum(dim=1)
        if samples > 1:
            x, params = (repeat(t, "b c h w -> (k b) c h w", k=samples) for t in (x, params))
            norm = repeat(norm, "b -> (k b)", k=samples)
        terms = {"code_norm": Term(norm, weight=self.code_weight)}
        return ModelOutput(self.likelihood.log_prob(params, x), {}, params, samples, terms=terms)

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        z = self.code(x)
        return Encoding(mean=z, variance=torch.zeros_like(z))

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.network.decoder(z))

    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        from vae.core.errors import ConfigError

        raise ConfigError("an Autoencoder has no prior to sample from: train a prior on its codes first")

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        return self.decode(self.code(x))
