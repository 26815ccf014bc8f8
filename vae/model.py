"""The VAE: encoder → KL-to-prior regularizer → decoder → likelihood.

Axes: b batch, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.distributions import Distribution

from vae.errors import ConfigError
from vae.kl import Estimator, KLEstimator, KLRegularizer, Regularized, resolve_estimator
from vae.likelihoods import Likelihood
from vae.nets import ConvNet, GaussianMoments, Network
from vae.nets.common import full_precision
from vae.priors import Prior, StandardNormal


@dataclass(frozen=True)
class LogWeights:
    """For K samples z_k ~ q(z|x) of each example: log p(x|z_k), log p(z_k) and log q(z_k|x), each (K, b).

    Their combination log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x) is the log importance weight:
    E_q[w] = p(x), which the IWAE bound and the importance-weighted log-likelihood are built on.
    """

    log_px: Tensor
    log_pz: Tensor
    log_qz: Tensor

    @property
    def log_w(self) -> Tensor:
        return self.log_px + self.log_pz - self.log_qz


@dataclass(frozen=True)
class VAEOutput:
    """One forward pass: the posterior's moments, the regularizer's output, the decoder's output and
    log p(x|z) per example (b,), in nats summed over pixels."""

    moments: GaussianMoments
    latent: Regularized
    params: Tensor
    log_px: Tensor


def as_unit(x: Tensor) -> Tensor:
    """Images as floats in [0, 1]: uint8 pixels k become k/255, floats pass unchanged."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


class VAE(nn.Module):
    """A variational autoencoder with a diagonal Gaussian posterior q(z|x) and a chosen prior p(z).

    image_shape: (channels, height, width) of the images it models.
    latent_dim: the number of latent dimensions.
    network: the encoder/decoder architecture (``ConvNet`` or ``MLPNet``).
    likelihood: p(x|z) given the decoder's output (``vae.likelihoods``: Bernoulli, Gaussian, discretized
        logistic and its mixture); the decoder outputs ``likelihood.param_channels(c)`` channels per pixel.
    prior: p(z), one of ``vae.priors`` (N(0, I) by default).
    kl_estimator / kl_samples: how the regularizer computes D_KL(q(z|x) ‖ p(z)); "auto" is the closed form
        where the prior has one and Monte Carlo where it does not. ``self.kl_estimator`` is the one in use.
    """

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
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.encoder = network.encoder(image_shape=self.image_shape, latent_dim=latent_dim)
        c, h, w = self.image_shape  # the decoder outputs the likelihood's parameters at every pixel
        self.decoder = network.decoder(image_shape=(likelihood.param_channels(c), h, w), latent_dim=latent_dim)
        self.likelihood = likelihood
        self.prior = prior.build(latent_dim=latent_dim, image_shape=self.image_shape)
        self.kl_estimator: Estimator = self.check_estimator(kl_estimator, name=type(prior).__name__)
        self.regularizer = KLRegularizer(estimator=self.kl_estimator, num_samples=kl_samples)

    def check_estimator(self, estimator: KLEstimator, *, name: str) -> Estimator:
        """Resolve "auto" now, and reject "analytic" for a prior without a closed form before any training."""
        zeros = torch.zeros(1, self.latent_dim)
        with torch.no_grad():
            posterior, prior = GaussianMoments(zeros, zeros).distribution(), self.prior_distribution()
        try:
            return resolve_estimator(posterior, prior, estimator)
        except ConfigError as error:
            if estimator != "analytic":
                raise
            raise ConfigError(
                f"kl_estimator 'analytic' needs a closed-form KL, and prior {name} has none: use 'auto' or 'mc'"
            ) from error

    def prior_distribution(self) -> Distribution:
        """p(z), event shape (d,)."""
        return self.prior(self.encoder)

    def forward(self, x: Tensor) -> VAEOutput:
        """x: images (b, c, h, w), floats in [0, 1] or uint8 (read as k/255)."""
        x = as_unit(x)
        moments = self.encoder(x)
        latent = self.regularizer(moments.distribution(), self.prior_distribution())
        params = full_precision(self.decoder(latent.z))  # (b, param channels, h, w); float32 under autocast
        return VAEOutput(moments=moments, latent=latent, params=params, log_px=self.likelihood.log_prob(params, x))

    def log_weights(self, x: Tensor, num_samples: int) -> LogWeights:
        """log p(x|z_k), log p(z_k), log q(z_k|x) for ``num_samples`` reparameterised z_k ~ q(z|x) per example."""
        x = as_unit(x)
        posterior = self.encoder(x).distribution()  # batch (b,), event (d,)
        z = posterior.rsample(torch.Size([num_samples]))  # (k, b, d)
        params = full_precision(self.decoder(rearrange(z, "k b d -> (k b) d")))
        log_px = self.likelihood.log_prob(params, repeat(x, "b c h w -> (k b) c h w", k=num_samples))
        return LogWeights(
            log_px=rearrange(log_px, "(k b) -> k b", k=num_samples),
            log_pz=self.prior_distribution().log_prob(z),
            log_qz=posterior.log_prob(z),
        )

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """E[x|z] for given latents z (b, d): draw z from ``prior_distribution()`` for samples of the model."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at the posterior mean z = E[z|x]."""
        return self.likelihood.mean(self.decoder(self.encoder(x).mean))
