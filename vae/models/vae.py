"""TODO docstring."""

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
from vae.layers.latents import GaussianLatent
from vae.layers.likelihoods import Likelihood
from vae.layers.nets.common import Architecture, Network
from vae.layers.nets.conv import ConvNet
from vae.layers.priors import Prior, StandardNormal
from vae.models import pictures
from vae.models.base import Encoding, LatentVariableModel, ModelOutput, inferring


class VAE(LatentVariableModel):
    """A variational autoencoder with one diagonal Gaussian latent vector z: q(z|x) against a chosen p(z).

    image_shape: (channels, height, width) of the images it models.
    latent_dim: the number of latent dimensions.
    network: the encoder/decoder pair (``ConvNet``, ``MLPNet``, ``LinearNet``).
    likelihood: p(x|z) given the decoder's output (``vae.layers.likelihoods``); the decoder outputs
        ``likelihood.param_channels(c)`` channels per pixel.
    prior: p(z), one of ``vae.layers.priors`` (N(0, I) by default).
    kl_estimator / kl_samples: how the latent layer computes D_KL(q(z|x) ‖ p(z)); "auto" is the closed form where
        the prior has one and Monte Carlo where it does not. ``self.kl_estimator`` is the one in use.
    """

    # Keys of checkpoints written before the latent layer owned the posterior head and the prior.
    RENAMED = {"encoder.head.linear.": "latent.head.", "prior.": "latent.prior."}

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: int = 16,
        network: Network = ConvNet(),
        likelihood: Likelihood,
        prior: Prior = StandardNormal(),
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.encoder = network.encoder(image_shape=self.image_shape)
        self.latent = GaussianLatent(
            name="z",
            shape=(latent_dim,),
            head=nn.Linear(self.encoder.out_features, 2 * latent_dim),
            prior=prior,
            image_shape=self.image_shape,
            kl_estimator=kl_estimator,
            kl_samples=kl_samples,
        )
        c, h, w = self.image_shape  # the decoder outputs the likelihood's parameters at every pixel
        self.decoder = network.decoder(image_shape=(likelihood.param_channels(c), h, w), latent_dim=latent_dim)
        self.likelihood = likelihood
        self.latent.resolve(kl_estimator, self.posterior)

    @property
    def layers(self) -> list[GaussianLatent]:
        return [self.latent]

    def networks(self) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def posterior(self, x: Tensor) -> GaussianMoments:
        """q(z|x)'s moments, (b, d), for images in [0, 1]."""
        return self.latent.moments(self.encoder(x))

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        moments = self.posterior(as_unit(x))
        return Encoding.of(moments)

    def prior_distribution(self) -> Distribution:
        """p(z), event shape (d,)."""
        return self.latent.prior_distribution(self.posterior)

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        x = as_unit(x)
        latent = self.latent(self.encoder(x), encode=self.posterior, samples=samples)
        params = full_precision(self.decoder(latent.z))  # (k·b, param channels, h, w); float32 under autocast
        if samples > 1:
            x = repeat(x, "b c h w -> (k b) c h w", k=samples)
        log_px = self.likelihood.log_prob(params, x)
        return ModelOutput(log_px=log_px, latents={"z": latent}, params=params, samples=samples)

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.decoder(z))

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        return self.decode(self.latent.sample_prior(n, encode=self.posterior, temperature=temperature))

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        if keep == 0:
            return self.sample(len(x))
        return self.decode(self.posterior(as_unit(x)).mean)

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
        """Samples and reconstructions, traversals of the ``nrow`` most informative dimensions (by ``ranking``, by
        default in their order) and interpolations."""
        grids = super().pictures(x, context=context, nrow=nrow, seed=seed, num_samples=num_samples)
        ranking = torch.arange(self.latent_dim, 0, -1).float() if ranking is None else ranking
        grids["traversals"] = pictures.traversals(self, x, ranking.to(x.device), dims=min(nrow, self.latent_dim))
        grids["interpolations"] = pictures.interpolations(self, x, pairs=min(4, len(x) // 2))
        return grids

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        upgraded = {}
        for key, value in state.items():
            for old, new in self.RENAMED.items():
                if key.startswith(prefix + old):
                    key = prefix + new + key[len(prefix + old) :]
                    break
            upgraded[key] = value
        return upgraded


def build_model(
    network: Architecture,
    *,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    likelihood: Likelihood,
    prior: Prior,
    kl_estimator: KLEstimator,
    kl_samples: int,
) -> LatentVariableModel:
    """The model ``model.network`` describes: the single-layer ``VAE`` around an encoder/decoder pair, or the
    model an architecture builds itself (a hierarchy)."""
    parts = {"image_shape": image_shape, "likelihood": likelihood, "prior": prior}
    parts |= {"kl_estimator": kl_estimator, "kl_samples": kl_samples}
    if isinstance(network, Network):
        return VAE(latent_dim=latent_dim, network=network, **parts)
    return network.build(latent_dim=latent_dim, **parts)
