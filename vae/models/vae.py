"""The single-layer VAE: encoder → one latent vector z (``GaussianLatent``: a diagonal Gaussian by default, or a full
covariance, or a flow on it) → decoder → likelihood, against a chosen prior p(z).

    ELBO = E_q(z|x)[log p(x|z)] − D_KL(q(z|x) ‖ p(z))

Axes: b batch, k samples per example, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping

from einops import repeat
from torch import Tensor, nn
from torch.distributions import Distribution

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.core.kl import KLEstimator
from vae.core.pixels import as_unit
from vae.layers.latents import GaussianLatent
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets import ConvNet, Network
from vae.layers.posteriors import DiagonalGaussian, Moments, Posterior
from vae.layers.priors import Prior, StandardNormal
from vae.models.base import (
    Capabilities,
    Choose,
    Encoding,
    LatentVariableModel,
    LayerLaw,
    ModelOutput,
    inferring,
    renamed_keys,
)


class VAE(LatentVariableModel):
    """A variational autoencoder with one latent vector z: q(z|x) against a chosen p(z).

    latent_dim: the number of latent dimensions.
    network: the encoder/decoder pair (``ConvNet`` by default, ``ResNet``, ``MLPNet``, ``LinearNet``).
    likelihood: p(x|z) given the decoder's output (``vae.layers.likelihoods``; ``Bernoulli`` by default); the decoder
        outputs ``likelihood.param_channels(c)`` channels per pixel.
    prior: p(z), one of ``vae.layers.priors`` (``StandardNormal``, N(0, I), by default).
    posterior: the family of q(z|x): ``DiagonalGaussian`` (the default) or ``FullCovariance``
        (``vae.layers.posteriors``), or a flow on the diagonal Gaussian, ``Planar``, ``Sylvester`` or ``IAF``
        (``vae.layers.flows``), whose KL is Monte Carlo with log q(z|x) carried through the flow.
    kl_estimator / kl_samples: how the latent layer computes D_KL(q(z|x) ‖ p(z)); "auto" is the closed form where
        the prior has one and Monte Carlo where it does not. ``self.kl_estimator`` is the one in use.
    image_shape, context_size: from the data (``LatentVariableModel``).
    """

    # Keys of checkpoints written before the latent layer owned the posterior head and the prior, and before the
    # network held both halves.
    RENAMED = {
        "encoder.head.linear.": "latent.head.",
        "prior.": "latent.prior.",
        "encoder.": "network.encoder.",
        "decoder.": "network.decoder.",
    }

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        latent_dim: int = 16,
        network: Network | None = None,
        likelihood: Likelihood | None = None,
        prior: Prior | None = None,
        posterior: Posterior | None = None,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")
        network = ConvNet() if network is None else network
        likelihood = Bernoulli() if likelihood is None else likelihood
        prior = StandardNormal() if prior is None else prior
        posterior = DiagonalGaussian() if posterior is None else posterior
        self.record(network=network, likelihood=likelihood, prior=prior, posterior=posterior)
        self.latent_dim = latent_dim
        self.network = self.bind_network(network, likelihood, code_dim=latent_dim)
        self.latent = GaussianLatent(
            name="z",
            shape=(latent_dim,),
            head=nn.Linear(network.features, 2 * latent_dim),
            prior=prior,
            image_shape=self.image_shape,
            kl_estimator=kl_estimator,
            kl_samples=kl_samples,
            posterior=posterior,
            features=network.features,
        )
        self.likelihood = likelihood
        self.latent.resolve(kl_estimator, self.posterior)

    @property
    def layers(self) -> list[GaussianLatent]:
        return [self.latent]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            kl_split=self.latent.kl_splits, kl_per_dimension=self.latent.factorises, continuous_code=True
        )

    def networks(self) -> list[nn.Module]:
        return [self.network.encoder, self.network.decoder]

    def posterior(self, x: Tensor) -> Moments:
        """q(z|x)'s moments, (b, d), for images in [0, 1]: for a flow posterior its stated mean f(μ) and the
        Gaussian's variances."""
        return self.latent.moments(self.network.encoder(x))

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        return Encoding.of(self.posterior(as_unit(x)))

    def prior_distribution(self) -> Distribution:
        """p(z), event shape (d,)."""
        return self.latent.prior_distribution(self.posterior)

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        x = as_unit(x)
        latent = self.latent(self.network.encoder(x), encode=self.posterior, samples=samples)
        params = full_precision(self.network.decoder(latent.z))  # (k·b, param channels, h, w); float32 under autocast
        if samples > 1:
            x = repeat(x, "b c h w -> (k b) c h w", k=samples)
        log_px = self.likelihood.log_prob(params, x)
        return ModelOutput(log_px=log_px, latents={"z": latent}, params=params, samples=samples)

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.network.decoder(z))

    def coding_refusal(self) -> str | None:
        return self.latent.coding_refusal()

    def walk(self, n: int, *, x: Tensor | None, choose: Choose) -> Tensor:
        refusal = self.coding_refusal()
        if refusal is not None:
            raise ConfigError(refusal)
        h = None if x is None else self.network.encoder(as_unit(x))
        prior, posterior = self.latent.laws(h, self.posterior)
        z = choose(LayerLaw(name=self.latent.name, prior=prior, posterior=posterior))
        return full_precision(self.network.decoder(z))

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        return self.decode(self.latent.sample_prior(n, encode=self.posterior, temperature=temperature))

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        if keep == 0:
            return self.sample(len(x))
        return self.decode(self.posterior(as_unit(x)).mean)

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        return renamed_keys(state, self.RENAMED, prefix)
