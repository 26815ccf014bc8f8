"""The VAE: encoder → KL-to-prior regularizer → decoder → likelihood.

Axes: b batch, c channels, h height, w width, d latent dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae.kl import KLEstimator, KLRegularizer, Regularized
from vae.likelihoods import Likelihood
from vae.nets import ConvNet, GaussianMoments, Network


@dataclass(frozen=True)
class VAEOutput:
    """One forward pass: the posterior's moments, the regularizer's output, the decoder's output and
    log p(x|z) per example (b,), in nats summed over pixels."""

    moments: GaussianMoments
    latent: Regularized
    params: Tensor
    log_px: Tensor


class VAE(nn.Module):
    """A variational autoencoder with a diagonal Gaussian posterior and an N(0, I) prior.

    image_shape: (channels, height, width) of the images it models.
    latent_dim: the number of latent dimensions.
    network: the encoder/decoder architecture (``ConvNet`` or ``MLPNet``).
    likelihood: p(x|z) given the decoder's output (``Bernoulli`` or ``Gaussian``).
    kl_estimator / kl_samples: how the regularizer computes D_KL(q(z|x) ‖ p(z)).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: int = 16,
        network: Network = ConvNet(),
        likelihood: Likelihood,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.encoder = network.encoder(image_shape=self.image_shape, latent_dim=latent_dim)
        self.regularizer = KLRegularizer(estimator=kl_estimator, num_samples=kl_samples)
        self.decoder = network.decoder(image_shape=self.image_shape, latent_dim=latent_dim)
        self.likelihood = likelihood

    def forward(self, x: Tensor) -> VAEOutput:
        moments = self.encoder(x)
        latent = self.regularizer(moments.mean, moments.logvar)
        params = self.decoder(latent.z)  # (b, c, h, w)
        return VAEOutput(moments=moments, latent=latent, params=params, log_px=self.likelihood.log_prob(params, x))

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """E[x|z] for given latents z (b, d): draw z ~ N(0, I) for samples from the model."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at the posterior mean z = E[z|x]."""
        return self.likelihood.mean(self.decoder(self.encoder(x).mean))
