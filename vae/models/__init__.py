"""Models, one file each, all ``LatentVariableModel``s (``vae.models.base``): a model's constructor is its config.

VAE               one Gaussian latent vector (``vae.models.vae``)
HierarchicalVAE   top-down inference over several latent layers (``vae.models.hierarchical``)
ConditionalVAE    p(x | y) given a label or context vector (``vae.models.conditional``)
JointVAE          a continuous code beside categorical and Bernoulli codes (``vae.models.joint``)
VQVAE             a grid of quantized codes: VQ, FSQ or residual VQ (``vae.models.quantized``)
CodePrior         a learned prior over a trained VQVAE's codes, the second stage (``vae.models.code_prior``)
VDM               a variational diffusion model: diffusion as the infinitely deep VAE (``vae.models.diffusion``)
"""

from vae.models.base import Capabilities, Encoding, LatentVariableModel, ModelOutput, Term
from vae.models.code_prior import CodePrior
from vae.models.conditional import ConditionalVAE
from vae.models.diffusion import VDM
from vae.models.hierarchical import HierarchicalVAE
from vae.models.joint import JointVAE
from vae.models.quantized import VQVAE
from vae.models.vae import VAE

__all__ = [
    "VAE",
    "VDM",
    "VQVAE",
    "Capabilities",
    "CodePrior",
    "ConditionalVAE",
    "Encoding",
    "HierarchicalVAE",
    "JointVAE",
    "LatentVariableModel",
    "ModelOutput",
    "Term",
]
