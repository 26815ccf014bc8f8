"""A VAE framework on torch, Lightning, W&B and einops, built on the theory of KL divergence."""

from vae.data import EmbeddedMNIST, ImageDataModule
from vae.kl import KLRegularizer, MonteCarloKL, Regularized, gaussian_kl, monte_carlo_kl
from vae.likelihoods import Bernoulli, Gaussian, Likelihood
from vae.model import VAE, VAEOutput
from vae.module import VAEModule
from vae.nets import ConvNet, MLPNet
from vae.objectives import ELBOTerms, beta_elbo

__all__ = [
    "VAE",
    "Bernoulli",
    "ConvNet",
    "ELBOTerms",
    "EmbeddedMNIST",
    "Gaussian",
    "ImageDataModule",
    "KLRegularizer",
    "Likelihood",
    "MLPNet",
    "MonteCarloKL",
    "Regularized",
    "VAEModule",
    "VAEOutput",
    "beta_elbo",
    "gaussian_kl",
    "monte_carlo_kl",
]
