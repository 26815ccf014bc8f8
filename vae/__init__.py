"""A VAE framework on torch, Lightning, W&B and einops, built on the theory of KL divergence."""

from vae.core.kl import (
    KLRegularizer,
    KLResult,
    Regularized,
    bernoulli_kl,
    categorical_kl,
    diagonal_gaussian_kl,
    full_gaussian_kl,
    kl_divergence,
    monte_carlo_kl,
)
from vae.data.base import ImageDataModule
from vae.data.embedded import EmbeddedMNIST
from vae.data.folder import ImageFolder
from vae.data.standard import CIFAR10, MNIST, CelebA, FashionMNIST
from vae.layers.discrete import BernoulliLatent, CategoricalLatent
from vae.layers.latents import GaussianLatent, LatentSample, TopDownLatent
from vae.layers.likelihoods import Bernoulli, Gaussian, Likelihood
from vae.layers.nets.conv import ConvNet
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import GaussianMixture, LearnedGaussian, StandardNormal, VampPrior
from vae.models.base import Encoding, LatentVariableModel, ModelOutput
from vae.models.conditional import Conditional, ConditionalVAE
from vae.models.hierarchical import TopDown, TopDownVAE
from vae.models.joint import Joint, JointVAE
from vae.models.vae import VAE
from vae.objectives.elbo import ELBO, IWAE, ELBOTerms, Loss, Objective, beta_elbo
from vae.training.checkpoints import load
from vae.training.module import VAEModule

__all__ = [
    "load",
    "Encoding",
    "VAE",
    "Bernoulli",
    "ConvNet",
    "ELBOTerms",
    "CIFAR10",
    "CelebA",
    "EmbeddedMNIST",
    "FashionMNIST",
    "ImageFolder",
    "MNIST",
    "Gaussian",
    "ImageDataModule",
    "KLRegularizer",
    "Likelihood",
    "MLPNet",
    "KLResult",
    "GaussianMixture",
    "LearnedGaussian",
    "StandardNormal",
    "VampPrior",
    "Regularized",
    "VAEModule",
    "ModelOutput",
    "LatentVariableModel",
    "GaussianLatent",
    "LatentSample",
    "TopDownLatent",
    "TopDown",
    "TopDownVAE",
    "Conditional",
    "ConditionalVAE",
    "Joint",
    "JointVAE",
    "CategoricalLatent",
    "BernoulliLatent",
    "ELBO",
    "IWAE",
    "Loss",
    "Objective",
    "beta_elbo",
    "bernoulli_kl",
    "categorical_kl",
    "diagonal_gaussian_kl",
    "full_gaussian_kl",
    "kl_divergence",
    "monte_carlo_kl",
]
