"""Training objectives: the ELBO under a KL weighting (with a disentangling penalty), and the IWAE bound.

vae.objectives.elbo        ELBO, IWAE: the one home of the loss
vae.objectives.weighting   how the KL enters the loss at each step: Constant (β), LinearWarmup, Cyclical,
                           Capacity, Capacities, FreeBits, GECO
vae.objectives.penalties   disentangling penalties on the top layer: BetaTCVAE, FactorVAE, DIPVAE
"""

from vae.objectives.elbo import ELBO, IWAE, ELBOTerms, Loss, Objective, beta_elbo
from vae.objectives.penalties import DIPVAE, BetaTCVAE, FactorVAE, Penalty
from vae.objectives.weighting import GECO, Capacities, Capacity, Constant, Cyclical, FreeBits, LinearWarmup, Weighting

__all__ = [
    "DIPVAE",
    "ELBO",
    "GECO",
    "IWAE",
    "BetaTCVAE",
    "Capacities",
    "Capacity",
    "Constant",
    "Cyclical",
    "ELBOTerms",
    "FactorVAE",
    "FreeBits",
    "LinearWarmup",
    "Loss",
    "Objective",
    "Penalty",
    "Weighting",
    "beta_elbo",
]
