"""Noise schedules of a diffusion model: γ(t), the negative log signal-to-noise ratio of the latent z_t at time
t ∈ [0, 1], with

    q(z_t | x) = N(α_t x, σ_t² I),   α_t² = sigmoid(−γ_t),   σ_t² = sigmoid(γ_t),   SNR(t) = α_t²/σ_t² = exp(−γ_t)

(Kingma, Salimans, Poole & Ho 2021, Variational Diffusion Models). A schedule increases strictly from γ_0 (little
noise) to γ_1 (almost pure noise) and is written

    γ(t) = γ_0 + (γ_1 − γ_0) · s(t),   s(0) = 0,  s(1) = 1,  s strictly increasing,

its endpoints apart from its shape s. The continuous-time diffusion loss depends on the schedule only through its
endpoints (VDM's result, for a network conditioned on γ_t): the endpoints decide the ELBO, the shape only the variance
of its Monte-Carlo estimate. ``LearnedSchedule`` trains its endpoints on the ELBO and its shape to reduce that variance;
``LinearSchedule`` and ``CosineSchedule`` are fixed.

Axes: b the times of a batch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vae.core.errors import ConfigError
from vae.core.spec import Configurable


def check_endpoints(gamma_min: float, gamma_max: float, owner: str) -> None:
    """A schedule must increase: γ_0 < γ_1, both finite (one line otherwise)."""
    if not (math.isfinite(gamma_min) and math.isfinite(gamma_max)) or gamma_min >= gamma_max:
        raise ConfigError(
            f"{owner} must increase from gamma_min (log-SNR −gamma_min at t = 0) to gamma_max, got gamma_min "
            f"{gamma_min} and gamma_max {gamma_max}: give gamma_min < gamma_max (VDM's are −13.3 and 5.0)"
        )


class SquaredGradient(torch.autograd.Function):
    """The identity on s(t) whose backward multiplies the gradient of each example's loss L_i by 2·L_i / mean(L), so
    that what flows to the schedule's shape is the gradient of Σ L_i² (the estimator's second moment, whose
    expectation differs from the variance by (E L)², which the shape cannot change) instead of Σ L_i, divided by the
    batch's mean loss: the same direction, at the scale of the loss's own gradient (so that gradient clipping and
    skipping, which read the total norm, are not set by the thousands of nats an 8-bit image's loss runs to).
    ``losses`` holds L (b,), set after the loss is computed and before the backward pass."""

    @staticmethod
    def forward(ctx, s: Tensor, losses: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        ctx.losses = losses
        return s.view_as(s)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        losses = ctx.losses.get("value")
        if losses is None:  # no loss handed over: the plain gradient
            return grad, None
        scale = 2 * losses / losses.mean().abs().clamp_min(1e-12)
        return grad * scale.reshape(grad.shape).to(grad.dtype), None


class NoiseSchedule(Configurable, nn.Module, ABC):
    """γ(t) = γ_0 + (γ_1 − γ_0)·s(t) on t ∈ [0, 1], strictly increasing, in float32 (float64 for float64 times) even
    under autocast.

    learns_shape: the shape s has parameters of its own, trained to reduce the variance of the diffusion loss.
    """

    learns_shape: bool = False

    @abstractmethod
    def endpoints(self) -> tuple[Tensor, Tensor]:
        """γ_0 and γ_1, scalars."""

    @abstractmethod
    def shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """s(t) and its derivative s′(t), each shaped as t."""

    def forward(self, t: Tensor, *, variance: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """γ(t) and γ′(t), each shaped as t. ``variance``: where a learned shape gets the gradient of the squared loss
        (``SquaredGradient``) rather than of the loss; the endpoints always get the loss's."""
        t = t if t.dtype == torch.float64 else t.float()
        with torch.autocast(t.device.type, enabled=False):
            gamma_0, gamma_1 = (g.to(t.dtype) for g in self.endpoints())
            s, slope = self.shape(t)
            if variance is not None and self.learns_shape and torch.is_grad_enabled():
                s, slope = SquaredGradient.apply(s, variance), SquaredGradient.apply(slope, variance)
            width = gamma_1 - gamma_0
            return gamma_0 + width * s, width * slope

    def gamma(self, t: Tensor) -> Tensor:
        """γ(t) alone."""
        return self(t)[0]


class LinearSchedule(NoiseSchedule):
    """γ(t) = γ_min + (γ_max − γ_min)·t, fixed: the log-SNR falls linearly (VDM's fixed baseline)."""

    def __init__(self, *, gamma_min: float = -13.3, gamma_max: float = 5.0) -> None:
        super().__init__()
        check_endpoints(gamma_min, gamma_max, "LinearSchedule")
        self.gamma_min, self.gamma_max = gamma_min, gamma_max
        self.register_buffer("ends", torch.tensor([gamma_min, gamma_max]), persistent=False)  # on the model's device

    def endpoints(self) -> tuple[Tensor, Tensor]:
        return self.ends[0], self.ends[1]

    def shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return t, torch.ones_like(t)


class CosineSchedule(NoiseSchedule):
    """The cosine schedule (Nichol & Dhariwal 2021) in log-SNR form, fixed, truncated to [γ_min, γ_max]:

        γ(t) = 2·log tan(u(t)),   u(t) = u_0 + (u_1 − u_0)·t,   u_0 = atan(exp(γ_min/2)),  u_1 = atan(exp(γ_max/2))

    (α_t = cos u, σ_t = sin u before the truncation)."""

    def __init__(self, *, gamma_min: float = -13.3, gamma_max: float = 5.0) -> None:
        super().__init__()
        check_endpoints(gamma_min, gamma_max, "CosineSchedule")
        self.gamma_min, self.gamma_max = gamma_min, gamma_max
        self.u_0, self.u_1 = math.atan(math.exp(gamma_min / 2)), math.atan(math.exp(gamma_max / 2))
        self.register_buffer("ends", torch.tensor([gamma_min, gamma_max]), persistent=False)  # on the model's device

    def endpoints(self) -> tuple[Tensor, Tensor]:
        return self.ends[0], self.ends[1]

    def shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        u = self.u_0 + (self.u_1 - self.u_0) * t
        gamma = 2 * torch.log(torch.tan(u))
        # dγ/du = 2 / (sin u cos u) = 4 / sin 2u
        slope = (self.u_1 - self.u_0) * 4 / torch.sin(2 * u)
        width = self.gamma_max - self.gamma_min
        return (gamma - self.gamma_min) / width, slope / width


class LearnedSchedule(NoiseSchedule):
    """VDM's learned schedule: γ_0 and γ_1 are parameters trained on the ELBO (``learn_endpoints``), and the shape
    is a monotone network

        s̃(t) = l₁(t) + l₃(sigmoid(l₂(l₁(t)))),   s(t) = (s̃(t) − s̃(0)) / (s̃(1) − s̃(0))

    whose weights are positive (softplus of the parameters), so that s increases strictly for any parameters (l₁'s
    weight is positive, the rest non-negative). It is trained to reduce the variance of the diffusion loss's estimator
    (its gradient is that of the squared loss, over the mean loss, ``SquaredGradient``); the expected loss does not
    depend on it.

    gamma_min, gamma_max: the endpoints' starting values (VDM's −13.3 and 5.0).
    hidden: the width of l₂ and l₃ (VDM's 1024).
    learn_endpoints: train γ_0 and γ_1 (else they stay at gamma_min and gamma_max).
    """

    learns_shape = True

    def __init__(
        self, *, gamma_min: float = -13.3, gamma_max: float = 5.0, hidden: int = 1024, learn_endpoints: bool = True
    ) -> None:
        super().__init__()
        check_endpoints(gamma_min, gamma_max, "LearnedSchedule")
        if hidden < 1:
            raise ConfigError(f"LearnedSchedule's hidden must be a positive integer, got {hidden}")
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_min)), requires_grad=learn_endpoints)
        # γ_1 = γ_0 + softplus(w): above γ_0 for any parameters
        width = torch.tensor(float(gamma_max - gamma_min))
        self.width = nn.Parameter(width + torch.log(-torch.expm1(-width)), requires_grad=learn_endpoints)
        # Starting near the linear schedule: l₁ the identity, l₂ and l₃ small.
        inverse_one = math.log(math.e - 1)  # softplus⁻¹(1)
        self.w1 = nn.Parameter(torch.tensor(inverse_one))
        self.b1 = nn.Parameter(torch.zeros(()))
        self.w2 = nn.Parameter(torch.randn(hidden) * 0.5 + inverse_one)
        self.b2 = nn.Parameter(-torch.linspace(0.0, 1.0, hidden))  # steps spread over t ∈ [0, 1]
        self.w3 = nn.Parameter(torch.full((hidden,), -8.0))

    def endpoints(self) -> tuple[Tensor, Tensor]:
        return self.gamma_0, self.gamma_0 + F.softplus(self.width)

    def raw(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """s̃(t) and s̃′(t) (computed in closed form: the network is one hidden layer deep)."""
        w1, w2, w3 = (F.softplus(w).to(t.dtype) for w in (self.w1, self.w2, self.w3))
        h = w1 * t + self.b1.to(t.dtype)
        a = torch.sigmoid(h.unsqueeze(-1) * w2 + self.b2.to(t.dtype))  # (..., hidden)
        value = h + (a * w3).sum(dim=-1) / len(w3)
        slope = w1 * (1 + (a * (1 - a) * w2 * w3).sum(dim=-1) / len(w3))
        return value, slope

    def shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ends, _ = self.raw(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        value, slope = self.raw(t)
        span = ends[1] - ends[0]
        return (value - ends[0]) / span, slope / span
