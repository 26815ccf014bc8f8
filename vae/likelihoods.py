"""Decoder likelihoods p(x|z): each turns the decoder's output into log p(x|z) per example.

log p(x|z) is in nats, summed over every pixel and channel (units contract), shape (b,).

    Bernoulli(logits ℓ):    log p(x|z) = Σ_i [ x_i log σ(ℓ_i) + (1 − x_i) log σ(−ℓ_i) ]
    Gaussian(mean m, σ):    log p(x|z) = Σ_i [ −(x_i − m_i)² / (2σ²) − log σ − ½ log 2π ]

The Bernoulli is a proper likelihood for binary images; on grey levels in [0, 1] it is the usual
cross-entropy, which is not a normalised density over [0, 1] (compare likelihoods on binarized data,
or use the Gaussian). The Gaussian's σ is fixed, or one learned scalar shared by all pixels
(the σ-VAE of Rivera et al. 2021), kept above ``min_sigma``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from vae.errors import ConfigError


class Likelihood(nn.Module, ABC):
    """Base class: a decoder output ``params`` of the image's shape defines p(x|z)."""

    @abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) per example, (b,), summed over channels and pixels."""

    @abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """E[x|z], clamped to the image range [0, 1] for display."""


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with the decoder's output as logits."""

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_px = -F.binary_cross_entropy_with_logits(params, x, reduction="none")  # (b, c, h, w)
        return reduce(log_px, "b c h w -> b", "sum")

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


class Gaussian(Likelihood):
    """Independent Gaussian pixels with the decoder's output as the mean and a shared σ.

    sigma: the fixed σ, or the initial σ when ``learn_sigma`` is true.
    learn_sigma: learn one σ for all pixels by maximum likelihood, never below ``min_sigma``.
    """

    def __init__(self, *, sigma: float = 0.1, learn_sigma: bool = False, min_sigma: float = 1e-3) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"Gaussian likelihood sigma must be positive, got {sigma}")
        if not 0 < min_sigma <= sigma:
            raise ConfigError(f"Gaussian likelihood min_sigma must be in (0, sigma], got {min_sigma}")
        self.min_sigma = min_sigma
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)), requires_grad=learn_sigma)

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp().clamp_min(self.min_sigma)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        sigma = self.sigma
        log_px = -0.5 * ((x - params) / sigma).square() - sigma.log() - 0.5 * math.log(2 * math.pi)
        return reduce(log_px, "b c h w -> b", "sum")

    def mean(self, params: Tensor) -> Tensor:
        return params.clamp(0.0, 1.0)
