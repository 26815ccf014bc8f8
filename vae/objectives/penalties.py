"""Penalties on the latent code that disentangling VAEs add to the weighted ELBO; the ELBO objective's ``penalty``.

    BetaTCVAE(alpha, beta, gamma)    α·mi + β·tc + γ·dwkl in place of the KL      (Chen et al. 2018)
    FactorVAE(gamma)                 + γ·TC, the TC estimated by a discriminator   (Kim & Mnih 2018)
    DIPVAE(kind, lambda_od, lambda_d) + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²  (Kumar et al. 2018)

Each acts on the model's top latent layer (the single layer's z, or the top of a hierarchy), and adds to the loss
the weighting makes (``vae.objectives.weighting``), so every weighting still composes with it: with the default
Constant(beta=1) weighting the β-TCVAE loss is exactly recon + α·mi + β·tc + γ·dwkl, and with a weighting w(t) it is
recon + w(t)·KL + (α − 1)·mi + (β − 1)·tc + (γ − 1)·dwkl (disentanglement_lib writes β-TCVAE the same way,
KL + (β − 1)·tc).

Logged raw beside their weights (``{stage}/<name>``, the weights at training steps):

    BetaTCVAE   kl_split/{mi,tc,dwkl} (the split of ``vae.core.split``)   kl_split/{mi,tc,dwkl}_weight
    FactorVAE   factor_vae/tc, factor_vae/discriminator_loss, factor_vae/discriminator_accuracy
                                                                           factor_vae/tc_weight
    DIPVAE      dip/off_diagonal, dip/diagonal                              dip/off_diagonal_weight, dip/diagonal_weight

Axes: b batch, d latent dimensions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn
from torch.func import functional_call

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.core.spec import Configurable
from vae.core.split import KLSplit
from vae.layers.latents import LatentSample, diagonal_normal


@dataclass(frozen=True)
class Penalized:
    """loss: the scalar added to the loss; terms: raw batch means, logged at every stage; weights: beside them."""

    loss: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, float] = field(default_factory=dict)


class Penalty(Configurable, nn.Module, ABC):
    """A penalty on the top latent layer: a module whose constructor takes its hyperparameters; the objective calls
    ``bind`` once with the top layer's number of units (what a discriminator's input size needs).

    needs_split: whether it reads the top layer's KL split (estimated at every step with the objective's ``kl_split``
    estimator); term_names: the raw terms it returns."""

    needs_split: bool = False
    needs_diagonal_posterior: bool = False  # reads the top layer's posterior means and variances (a diagonal Gaussian)
    term_names: tuple[str, ...] = ()
    units: int | None = None  # set by bind

    def bind(self, *, units: int) -> Penalty:
        """Make what depends on the top layer's ``units`` (none by default); once."""
        if self.units is not None:
            raise ConfigError(f"this {type(self).__name__} is already bound to a model: give each objective its own")
        self.units = units
        self.build(units=units)
        return self

    def build(self, *, units: int) -> None:
        """The parameters for a top layer of ``units`` units (none by default)."""

    @abstractmethod
    def forward(self, top: LatentSample, split: KLSplit | None, *, samples: int, training: bool) -> Penalized:
        """top: the top layer's sample ((k b) rows for ``samples`` draws each); split: its KL split if asked."""

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups with optimizer settings of their own (FactorVAE's discriminator); none by default."""
        return []


def first_draw(top: LatentSample, samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """z, the posterior mean and its variance at the first draw of each example, each (b, d)."""
    posterior = diagonal_normal(top.posterior)
    if posterior is None:
        raise ConfigError("a disentangling penalty needs a top latent layer with a diagonal Gaussian posterior")
    rows = len(top.z) // samples
    return top.flat_z()[:rows], posterior.loc[:rows], posterior.scale[:rows] ** 2


# --- β-TCVAE -----------------------------------------------------------------------------------------------


class BetaTCVAE(Penalty):
    """β-TCVAE (Chen et al. 2018): the KL's three parts weighted α (mutual information), β (total correlation) and
    γ (dimension-wise KL), each estimated on the batch with the objective's ``kl_split`` estimator
    (``vae.core.split``: "mss", minibatch-stratified sampling, by default; "mws", minibatch-weighted, as in the
    paper's main runs). The dataset size N is the training split's. Chen et al. use α = γ = 1 and β from 1 to 10."""

    needs_split = True
    term_names = ("kl_split/mi", "kl_split/tc", "kl_split/dwkl")

    def __init__(self, *, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0) -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not value >= 0:
                raise ConfigError(f"BetaTCVAE {name} must be 0 or more, got {value}")
        self.weights = {"mi": alpha, "tc": beta, "dwkl": gamma}

    def forward(self, top: LatentSample, split: KLSplit | None, *, samples: int, training: bool) -> Penalized:
        if split is None:
            raise ConfigError(
                "BetaTCVAE needs the KL split of the top layer: a diagonal Gaussian prior on it (N(0, I) or a learned "
                "Gaussian), the objective's kl_split 'mss' or 'mws', and the training split's size (train through the "
                "vae command or a Trainer)"
            )
        loss = sum((weight - 1.0) * getattr(split, name).mean() for name, weight in self.weights.items())
        weights = {f"kl_split/{name}_weight": weight for name, weight in self.weights.items()}
        return Penalized(loss=torch.as_tensor(loss, device=split.mi.device), terms=split.terms(), weights=weights)


# --- FactorVAE ---------------------------------------------------------------------------------------------


def permute_dims(z: Tensor) -> Tensor:
    """Each dimension of the batch shuffled on its own, (b, d): a sample of Π_j q(z_j) from one of q(z)."""
    b, d = z.shape
    order = torch.argsort(torch.rand(b, d, device=z.device), dim=0)
    return torch.gather(z, 0, order)


class FactorVAE(Penalty):
    """FactorVAE (Kim & Mnih 2018): + γ·TC, with TC = D_KL(q(z) ‖ Π_j q(z_j)) estimated by the density-ratio trick:
    a discriminator D tells samples of q(z) (class 0) from samples of Π_j q(z_j) (class 1, each dimension of the
    batch permuted on its own), and TC ≈ E_q(z)[log D_0(z) − log D_1(z)] (its two logits' difference).

    The discriminator (``hidden`` units, ``depth`` hidden layers, leaky ReLU 0.2: the paper's 6 × 1000) learns on the
    same steps as the model, with its own Adam settings (``lr``, ``betas``: the paper's 1e-4, (0.5, 0.9)) as a
    parameter group of the run's optimizer (Adam keeps its state per parameter, so this is a second Adam optimizer
    stepped with the first). Its loss, 0.5·(CE(D(z), 0) + CE(D(z̃), 1)), reaches only its own parameters (z is
    detached), and the model's γ·TC reaches only the model (D's parameters are detached there).
    Kim & Mnih use γ = 35 on dSprites (10 to 100 in disentanglement_lib's study) and lr 1e-4 for the model.
    """

    term_names = ("factor_vae/tc", "factor_vae/discriminator_loss", "factor_vae/discriminator_accuracy")

    def __init__(
        self,
        *,
        gamma: float = 35.0,
        hidden: int = 1000,
        depth: int = 6,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
    ) -> None:
        super().__init__()
        if not gamma >= 0:
            raise ConfigError(f"FactorVAE gamma must be 0 or more, got {gamma}")
        if hidden < 1 or depth < 1:
            raise ConfigError(f"FactorVAE hidden and depth must be positive, got {hidden} and {depth}")
        if not lr > 0 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"FactorVAE lr must be positive and betas in [0, 1), got {lr} and {betas}")
        self.gamma, self.hidden, self.depth, self.lr, self.betas = gamma, hidden, depth, lr, tuple(betas)

    def build(self, *, units: int) -> None:
        layers: list[nn.Module] = [nn.Linear(units, self.hidden)]
        for _ in range(self.depth - 1):
            layers += [nn.LeakyReLU(0.2), nn.Linear(self.hidden, self.hidden)]
        self.discriminator = nn.Sequential(*layers, nn.LeakyReLU(0.2), nn.Linear(self.hidden, 2))

    def optimizer_groups(self) -> list[dict]:
        return [{"params": list(self.discriminator.parameters()), "lr": self.lr, "betas": self.betas}]

    def forward(self, top: LatentSample, split: KLSplit | None, *, samples: int, training: bool) -> Penalized:
        z = full_precision(top.flat_z()[: len(top.z) // samples])  # (b, d), the first draw: any posterior will do
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (z,))  # the model's gradient only
        tc = (logits[:, 0] - logits[:, 1]).mean()
        real, permuted = z.detach(), permute_dims(z.detach())  # the discriminator's gradient only
        labels = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        d_logits = self.discriminator(torch.cat([real, permuted]))
        d_loss = F.cross_entropy(d_logits, labels)  # = 0.5·(CE on q(z) + CE on Π_j q(z_j)) for equal halves
        accuracy = (d_logits.argmax(dim=1) == labels).float().mean()
        terms = {
            "factor_vae/tc": tc.detach(),
            "factor_vae/discriminator_loss": d_loss.detach(),
            "factor_vae/discriminator_accuracy": accuracy,
        }
        return Penalized(loss=self.gamma * tc + d_loss, terms=terms, weights={"factor_vae/tc_weight": self.gamma})


# --- DIP-VAE -----------------------------------------------------------------------------------------------


def dip_covariance(mean: Tensor, variance: Tensor, kind: Literal["i", "ii"]) -> Tensor:
    """C (d, d): the batch covariance (1/b) of the posterior means, plus the mean posterior variance on the diagonal
    for kind "ii"."""
    centred = mean - reduce(mean, "b d -> 1 d", "mean")
    covariance = torch.einsum("bi,bj->ij", centred, centred) / len(mean)
    if kind == "ii":
        covariance = covariance + torch.diag(reduce(variance, "b d -> d", "mean"))
    return covariance


class DIPVAE(Penalty):
    """DIP-VAE (Kumar et al. 2018): the covariance C of the aggregate posterior pushed towards I,

        + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²

    kind "i": C = Cov_batch[μ(x)], the covariance of the posterior means; kind "ii": C = Cov_batch[μ(x)] +
    E_batch[diag σ²(x)], the covariance of z under q(z). lambda_d None is the paper's advice: 10·λ_od for "i",
    λ_od for "ii". disentanglement_lib's study: λ_od in 1 to 50.
    """

    term_names = ("dip/off_diagonal", "dip/diagonal")
    needs_diagonal_posterior = True

    def __init__(
        self, *, kind: Literal["i", "ii"] = "ii", lambda_od: float = 10.0, lambda_d: float | None = None
    ) -> None:
        super().__init__()
        if kind not in ("i", "ii"):
            raise ConfigError(f"DIPVAE kind must be 'i' or 'ii', got {kind!r}")
        if not lambda_od >= 0 or (lambda_d is not None and not lambda_d >= 0):
            raise ConfigError(f"DIPVAE lambda_od and lambda_d must be 0 or more, got {lambda_od}, {lambda_d}")
        self.kind, self.lambda_od = kind, lambda_od
        self.lambda_d = lambda_d if lambda_d is not None else lambda_od * (10.0 if kind == "i" else 1.0)

    def forward(self, top: LatentSample, split: KLSplit | None, *, samples: int, training: bool) -> Penalized:
        _, mean, variance = first_draw(top, samples)
        covariance = dip_covariance(full_precision(mean), full_precision(variance), self.kind)
        diagonal = torch.diagonal(covariance)
        off_diagonal = (covariance**2).sum() - (diagonal**2).sum()
        on_diagonal = ((diagonal - 1.0) ** 2).sum()
        loss = self.lambda_od * off_diagonal + self.lambda_d * on_diagonal
        terms = {"dip/off_diagonal": off_diagonal.detach(), "dip/diagonal": on_diagonal.detach()}
        weights = {"dip/off_diagonal_weight": self.lambda_od, "dip/diagonal_weight": self.lambda_d}
        return Penalized(loss=loss, terms=terms, weights=weights)
