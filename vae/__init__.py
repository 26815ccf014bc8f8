"""A VAE framework on torch, Lightning, W&B and einops, built on the theory of KL divergence."""

from vae.checkpoints import load
from vae.conditional import Conditional, ConditionalVAE
from vae.data import CIFAR10, MNIST, CelebA, EmbeddedMNIST, FashionMNIST, ImageDataModule, ImageFolder
from vae.discrete import BernoulliLatent, CategoricalLatent
from vae.hierarchical import TopDown, TopDownVAE
from vae.joint import Joint, JointVAE
from vae.kl import (
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
from vae.latents import GaussianLatent, LatentSample, TopDownLatent
from vae.likelihoods import Bernoulli, Gaussian, Likelihood
from vae.model import VAE, Encoding, LatentVariableModel, ModelOutput
from vae.module import VAEModule
from vae.nets import ConvNet, MLPNet
from vae.objectives import ELBO, IWAE, ELBOTerms, Loss, Objective, beta_elbo
from vae.priors import GaussianMixture, LearnedGaussian, StandardNormal, VampPrior

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
