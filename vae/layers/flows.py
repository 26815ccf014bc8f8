"""Normalizing-flow posteriors: q(z|x) is the law of z = f_K ∘ … ∘ f_1(z₀), z₀ ~ N(μ(x), diag σ²(x)), and

    log q(z | x) = log N(z₀; μ, diag σ²) − Σ_k log |det ∂f_k / ∂z_{k−1}|,

carried with each draw (``vae.layers.posteriors.FlowDistribution``): none of these flows is inverted.

    Planar      f(z) = z + û tanh(wᵀz + b)                       Rezende & Mohamed 2015
                log |det| = log |1 + tanh′(wᵀz + b) wᵀû|; û = u + (m(wᵀu) − wᵀu) w/‖w‖², m(a) = softplus(a) − 1,
                so wᵀû > −1 and f is invertible whatever u, w and b are
    Sylvester   f(z) = z + Q R tanh(R̃ Qᵀz + b)                   van den Berg et al. 2018
                Q (d, M) with orthonormal columns, R and R̃ (M, M) upper triangular with diagonals in (−1, 1) (tanh),
                log |det| = Σ_i log |1 + tanh′(·)_i R_ii R̃_ii| (Sylvester's determinant identity), invertible
                kind "orthogonal":  Q from the encoder, orthonormalised by Björck's iteration Q ← Q(I + ½(I − QᵀQ))
                kind "householder": Q = H_1 ⋯ H_H, H = I − 2vvᵀ/‖v‖², v from the encoder; M = d
                kind "triangular":  Q the identity and the reversal permutation in turn; M = d
    IAF         z ← σ ⊙ z + (1 − σ) ⊙ m, [m, s] = MADE(z, h), σ = sigmoid(s)     Kingma et al. 2016
                m_i and s_i depend on z_<i only (masked weights), so the Jacobian is triangular and
                log |det| = Σ_i log σ_i; h is a context vector from the encoder; the order is reversed between steps

Planar and Sylvester flows are amortized: their parameters are a linear function of the layer's input, per example.
IAF's networks are shared, and only its context comes from the encoder. ``ConvIAF`` is IAF on a feature map (a
hierarchy's layers below the top): masked k×k convolutions over channels, the context a map from the layer's
posterior head.

Axes: s draws per row, b rows, d latent dimensions, m Sylvester's M, p parameters per row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import Tensor, nn
from torch.distributions import Distribution

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.layers.posteriors import FlowDistribution, Moments, Posterior, flat


class FlowPosterior(Posterior, ABC):
    """A flow of ``length`` steps on the diagonal Gaussian posterior; its parameters per row come from the layer's
    input through one linear map (``amortized``) of ``row_parameters`` outputs."""

    density = False

    def __init__(self, *, length: int = 4) -> None:
        super().__init__()
        if length < 1:
            raise ConfigError(f"{type(self).__name__} length must be at least 1 flow step, got {length}")
        self.length = length

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{type(self).__name__.lower()} flow of {self.length} step(s)"

    @abstractmethod
    def row_parameters(self, dim: int) -> int:
        """The parameters each row reads from the layer's input, for a layer of ``dim`` dimensions."""

    def build(self, *, dim: int, features: int) -> None:
        if features < 1:
            raise ConfigError(f"{type(self).__name__} reads its parameters from the layer's input: give its size")
        self.amortized = nn.Linear(features, self.row_parameters(dim))

    def extra(self, h: Tensor) -> Tensor:
        return self.amortized(flat(h))

    def distribution(self, moments: Moments, extra: Tensor | None) -> Distribution:
        assert extra is not None
        params = full_precision(extra)
        return FlowDistribution(moments.distribution(), lambda z0: self.transform(z0, params))

    @abstractmethod
    def transform(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Draws z₀ (s, b, d) and the rows' parameters (b, p) → f(z₀) (s, b, d) and log |det ∂f/∂z₀| (s, b)."""


class Planar(FlowPosterior):
    """``length`` planar flows (2d + 1 parameters each per row: u, w, b), invertible for any parameters."""

    def row_parameters(self, dim: int) -> int:
        return self.length * (2 * dim + 1)

    def transform(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        d = z.shape[-1]
        log_det = z.new_zeros(z.shape[:-1])
        for step in rearrange(params, "b (k p) -> k b p", k=self.length):
            u, w, b = step[:, :d], step[:, d : 2 * d], step[:, 2 * d :]
            wu = (w * u).sum(dim=-1, keepdim=True)
            w_u_hat = F.softplus(wu) - 1.0  # wᵀû = m(wᵀu) > −1
            u_hat = u + (w_u_hat - wu) * w / w.square().sum(dim=-1, keepdim=True).clamp_min(1e-12)
            t = torch.tanh((z * w).sum(dim=-1, keepdim=True) + b)  # (s, b, 1)
            log_det = log_det + torch.log1p((1.0 - t.square()) * w_u_hat).squeeze(-1)
            z = z + u_hat * t
        return z, log_det


SylvesterKind = Literal["orthogonal", "householder", "triangular"]


def orthonormalise(a: Tensor, *, max_iterations: int = 100) -> Tensor:
    """The columns of a (..., d, M), M ≤ d, made orthonormal by Björck's iteration Q ← Q(I + ½(I − QᵀQ)), from a
    scaled to unit Frobenius norm (so every singular value is in (0, 1] and the iteration converges), run until
    max |QᵀQ − I| ≤ 1e-12 in float64 (1e-6 in lower precision; checked every 5) or ``max_iterations``; all when traced
    or compiled. Differentiable."""
    tolerance = 1e-12 if a.dtype == torch.float64 else 1e-6
    q = a / torch.linalg.matrix_norm(a, keepdim=True)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    # A traced or compiled graph (export, torch.compile) cannot stop on a value: it runs every iteration, which leaves
    # converged columns where they are (orthonormal Q is the iteration's fixed point).
    fixed = torch.jit.is_tracing() or torch.compiler.is_compiling()
    for iteration in range(max_iterations):
        gram = einsum(q, q, "... d i, ... d j -> ... i j")
        # Checked every 5 iterations: each check waits for the device (a host sync on a GPU).
        if not fixed and iteration % 5 == 0 and (gram - eye).abs().max() <= tolerance:
            break
        q = q @ (eye + 0.5 * (eye - gram))
    return q


def householder(v: Tensor) -> Tensor:
    """Q = H_1 ⋯ H_H, H_i = I − 2 v_i v_iᵀ/‖v_i‖², for v (b, H, d): (b, d, d), orthogonal."""
    q = torch.eye(v.shape[-1], dtype=v.dtype, device=v.device).expand(v.shape[0], -1, -1)
    for i in range(v.shape[1]):
        unit = v[:, i] / v[:, i].norm(dim=-1, keepdim=True)
        q = q - 2.0 * einsum(q @ unit.unsqueeze(-1), unit, "b d one, b e -> b d e")
    return q


class Sylvester(FlowPosterior):
    """``length`` Sylvester flows of ``kind`` "orthogonal" (Q with ``size`` M columns, d/2 by default), "householder"
    (``householders`` reflections per step) or "triangular"; R, R̃ and b from the encoder per row, and Q too but for
    the triangular kind."""

    def __init__(
        self, *, length: int = 4, kind: SylvesterKind = "orthogonal", size: int | None = None, householders: int = 8
    ) -> None:
        super().__init__(length=length)
        if kind not in ("orthogonal", "householder", "triangular"):
            raise ConfigError(f"Sylvester kind must be 'orthogonal', 'householder' or 'triangular', got {kind!r}")
        if size is not None and kind != "orthogonal":
            raise ConfigError(f"Sylvester size (M) applies to the orthogonal kind; the {kind} kind has M = d")
        if householders < 1:
            raise ConfigError(f"Sylvester householders must be at least 1, got {householders}")
        self.kind, self.size, self.householders = kind, size, householders

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"{self.kind} Sylvester flow of {self.length} step(s)"

    def columns(self, dim: int) -> int:
        """M: Q's columns."""
        if self.kind != "orthogonal":
            return dim
        size = max(1, dim // 2) if self.size is None else self.size
        if not 1 <= size <= dim:
            raise ConfigError(f"Sylvester size M must be between 1 and the layer's {dim} dimensions, got {size}")
        return size

    def q_parameters(self, dim: int) -> int:
        return {"orthogonal": dim * self.columns(dim), "householder": self.householders * dim, "triangular": 0}[
            self.kind
        ]

    def row_parameters(self, dim: int) -> int:
        m = self.columns(dim)
        return self.length * (2 * m * m + m + self.q_parameters(dim))

    def transform(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        d = z.shape[-1]
        m = self.columns(d)
        log_det = z.new_zeros(z.shape[:-1])
        upper = torch.ones(m, m, dtype=torch.bool, device=z.device).triu(1)
        for k, step in enumerate(rearrange(params, "b (k p) -> k b p", k=self.length)):
            r_raw, rt_raw, rest = step[:, : m * m], step[:, m * m : 2 * m * m], step[:, 2 * m * m :]
            bias, q_raw = rest[:, :m], rest[:, m:]
            r, rt = (self.triangular(rearrange(raw, "b (i j) -> b i j", i=m), upper) for raw in (r_raw, rt_raw))
            q = self.q_matrix(q_raw, z, m, k)  # (b, d, m)
            t = torch.tanh(einsum(rt, q, z, "b i j, b d j, s b d -> s b i") + bias)
            z = z + einsum(q, r, t, "b d i, b i j, s b j -> s b d")
            diagonal = torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(rt, dim1=-2, dim2=-1)  # (b, m)
            log_det = log_det + torch.log1p((1.0 - t.square()) * diagonal).sum(dim=-1)
        return z, log_det

    @staticmethod
    def triangular(raw: Tensor, upper: Tensor) -> Tensor:
        """An upper-triangular (b, m, m) with tanh on its diagonal: R_ii in (−1, 1)."""
        return raw * upper + torch.diag_embed(torch.tanh(torch.diagonal(raw, dim1=-2, dim2=-1)))

    def q_matrix(self, q_raw: Tensor, z: Tensor, m: int, step: int) -> Tensor:
        """Q (b, d, m) of one step, for draws z (s, b, d)."""
        d = z.shape[-1]
        if self.kind == "orthogonal":
            return orthonormalise(rearrange(q_raw, "b (d m) -> b d m", d=d, m=m))
        if self.kind == "householder":
            return householder(rearrange(q_raw, "b (h d) -> b h d", h=self.householders))
        eye = torch.eye(d, dtype=z.dtype, device=z.device)  # the identity, and the reversal every other step
        return (eye.flip(-1) if step % 2 else eye).expand(z.shape[1], d, d)


class Masked(nn.Module):
    """A linear map (``kernel_size`` None) or a k×k convolution over channels whose weight is multiplied by a fixed 0/1
    ``mask`` (out, in): on a feature map, output channel i sees the allowed input channels at every position of its
    window."""

    def __init__(self, mask: Tensor, kernel_size: int | None = None) -> None:
        super().__init__()
        out, inp = mask.shape
        if kernel_size is None:
            self.layer: nn.Module = nn.Linear(inp, out)
            self.register_buffer("mask", mask)
        else:
            self.layer = nn.Conv2d(inp, out, kernel_size, padding=kernel_size // 2)
            self.register_buffer("mask", rearrange(mask, "o i -> o i 1 1"))
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        weight = self.layer.weight * self.mask
        if self.kernel_size is None:
            return F.linear(x, weight, self.layer.bias)
        return F.conv2d(x, weight, self.layer.bias, padding=self.kernel_size // 2)


class MADE(nn.Module):
    """[m, s] = MADE(z, h), with m_i and s_i depending on z_<i only (Germain et al. 2015: each unit has a degree; a
    connection exists only from lower degrees, strictly lower into the outputs) and on the context h, which enters the
    first hidden layer (or the outputs, with no hidden layer: a linear conditioner). ELU between layers. The output's
    weights start at zero and s's bias at 2, so each step starts as z ← 0.88 z.

    On vectors (``kernel_size`` None) z is (…, d) and h (…, context). On feature maps z is (n, d, h, w), the order is
    over channels, every layer a k×k masked convolution and h a (n, context, h, w) map: output channel i sees
    channels < i at every position of its window, so the Jacobian is triangular with channels ordered first (IAF's
    ResNet VAE)."""

    def __init__(self, *, dim: int, hidden: tuple[int, ...], context: int, kernel_size: int | None = None) -> None:
        super().__init__()
        inputs = torch.arange(1, dim + 1)
        degrees, layers = inputs, []
        for width in hidden:
            next_degrees = torch.arange(width) % max(1, dim - 1) + 1
            layers.append(Masked((next_degrees[:, None] >= degrees[None, :]).float(), kernel_size))
            degrees = next_degrees
        outputs = torch.cat([inputs, inputs])
        self.hidden = nn.ModuleList(layers)
        self.output = Masked((outputs[:, None] > degrees[None, :]).float(), kernel_size)
        width = hidden[0] if hidden else 2 * dim
        self.context = nn.Linear(context, width) if kernel_size is None else nn.Conv2d(context, width, 1)
        self.maps = kernel_size is not None
        nn.init.zeros_(self.output.layer.weight)
        with torch.no_grad():
            self.output.layer.bias.copy_(torch.cat([torch.zeros(dim), torch.full((dim,), 2.0)]))

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        if not self.hidden:
            out = self.output(z) + self.context(h)
        else:
            x = F.elu(self.hidden[0](z) + self.context(h))
            for layer in self.hidden[1:]:
                x = F.elu(layer(x))
            out = self.output(x)
        if self.maps:
            m, s = rearrange(out, "n (two d) h w -> two n d h w", two=2)
        else:
            m, s = rearrange(out, "... (two d) -> two ... d", two=2)
        return m, s


def iaf_steps(steps: nn.ModuleList, z: Tensor, context: Tensor, *, axis: int) -> tuple[Tensor, Tensor]:
    """IAF's steps on z, the order reversed along ``axis`` between steps (and the output put back in z's order): f(z)
    and log |det ∂f/∂z|, summed over all but the leading ``axis`` axes."""
    log_det = z.new_zeros(z.shape[:axis])
    for k, made in enumerate(steps):
        if k:
            z = z.flip(axis)  # the next step's order is the reverse: a permutation, |det| = 1
        m, s = made(z, context)
        gate = torch.sigmoid(s)
        z = gate * z + (1.0 - gate) * m
        log_det = log_det + F.logsigmoid(s).flatten(axis).sum(dim=-1)
    if len(steps) % 2 == 0:
        z = z.flip(axis)  # back in the base's order: f(z)_i pairs with z_i (a code's mean with its variance)
    return z, log_det


class ConvIAF(nn.Module):
    """IAF on a feature-map layer of ``channels`` (a hierarchy's layers below the top): ``length`` steps, each a MADE
    of masked k×k convolutions over channels of ``hidden`` widths, given a ``context`` map from the layer's posterior
    head. ``transform`` takes draws (s, n, c, h, w) and the context (n, context, h, w)."""

    def __init__(self, *, channels: int, length: int, hidden: tuple[int, ...], context: int, kernel_size: int) -> None:
        super().__init__()
        self.length = length
        self.steps = nn.ModuleList(
            MADE(dim=channels, hidden=hidden, context=context, kernel_size=kernel_size) for _ in range(length)
        )

    def transform(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        draws = z.shape[0]
        flat, given = rearrange(z, "s n c h w -> (s n) c h w"), repeat(context, "n c h w -> (s n) c h w", s=draws)
        out, log_det = iaf_steps(self.steps, flat, given, axis=1)
        return rearrange(out, "(s n) c h w -> s n c h w", s=draws), rearrange(log_det, "(s n) -> s n", s=draws)


class IAF(FlowPosterior):
    """``length`` inverse autoregressive flow steps, each a MADE of ``hidden`` widths (``()``: a linear conditioner,
    an affine flow) given a ``context`` vector that the encoder computes per row."""

    def __init__(self, *, length: int = 2, hidden: tuple[int, ...] = (320,), context: int = 64) -> None:
        super().__init__(length=length)
        hidden = tuple(hidden)
        if context < 1 or (hidden and min(hidden) < 1):
            raise ConfigError(f"IAF context and hidden widths must be positive, got {context} and {hidden}")
        self.hidden, self.context_size = hidden, context

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"IAF of {self.length} step(s)"

    def row_parameters(self, dim: int) -> int:
        return self.context_size

    def build(self, *, dim: int, features: int) -> None:
        super().build(dim=dim, features=features)
        self.steps = nn.ModuleList(
            MADE(dim=dim, hidden=self.hidden, context=self.context_size) for _ in range(self.length)
        )

    def transform(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return iaf_steps(self.steps, z, params, axis=-1)
