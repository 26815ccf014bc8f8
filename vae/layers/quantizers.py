"""Quantizers: a map of encoder outputs z_e, (b, d, h, w), to codes from a finite set, one index per position (per
codebook, for residual VQ), and the quantized map z_q that the decoder reads.

    VectorQuantizer  the nearest of K learned d-vectors (VQ-VAE, van den Oord et al. 2017), learned by an exponential
                     moving average of the vectors assigned to each code (``learning="ema"``, Razavi et al.'s
                     VQ-VAE-2 setting) or by the codebook loss ‖sg(z_e) − z_q‖² (``"loss"``); with k-means
                     initialisation, restarts of dead codes, cosine-similarity codes and the rotation trick
    FSQ              finite scalar quantization (Mentzer et al. 2023): each of d dimensions bounded and rounded to L_i
                     levels, Π L_i codes and no codebook that could collapse
    ResidualVQ       Q vector quantizers in sequence, each coding what the ones before it left (Zeghidour et al. 2021)

Every quantizer returns a ``Quantized``: z_q with the gradient the decoder's loss sends back to the encoder (the
straight-through estimator z_e + sg(z_q − z_e), or the rotation trick of Fifty et al. 2024), the indices, and the
squared quantization error ‖z_e − sg(z_q)‖² per example (summed over positions and dimensions): the commitment term,
weighted ``commitment_weight`` (0.25, as in the VQ-VAE paper).

EMA update, with N_k the number of vectors assigned to code k in the batch (over every process, under DDP) and S_k
their sum (γ the decay, ε the smoothing):

    n_k ← γ n_k + (1 − γ) N_k      m_k ← γ m_k + (1 − γ) S_k      e_k = m_k / ñ_k,  ñ_k = (n_k + ε) n / (n + K ε),
    n = Σ_k n_k

Under DDP the counts and sums are summed over processes before the update, so every process applies the update of
the whole global batch and the codebooks stay identical (DDP's ``broadcast_buffers`` alone would copy process 0's
statistics over the others and discard theirs); k-means initialisation and restarts are computed on process 0 and
broadcast.

Axes: b batch, d code dimensions, h height, w width, n vectors (b·h·w), k codes, q codebooks (depth).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent

from vae.core.errors import ConfigError
from vae.core.kl import Estimator
from vae.core.spec import Configurable
from vae.layers.latents import LatentLayer, LatentSample

Learning = Literal["ema", "loss"]
Gradient = Literal["straight_through", "rotation"]


@dataclass(frozen=True)
class Quantized:
    """z: the quantized map with its gradient to z_e, (b, d, h, w); indices: (b, q, h, w), int64; error: ‖z_e −
    sg(z_q)‖² per example, (b,); codebook: ‖sg(z_e) − z_q‖² per example (b,), the loss that learns a codebook
    trained by gradient (None otherwise)."""

    z: Tensor
    indices: Tensor
    error: Tensor
    codebook: Tensor | None = None


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def summed_over_processes(tensor: Tensor) -> Tensor:
    """The tensor summed over every process (itself in a single process)."""
    if distributed():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def from_first_process(tensor: Tensor) -> Tensor:
    """Process 0's value of the tensor, on every process (in place)."""
    if distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def full_precision_block(tensor: Tensor) -> torch.autocast:
    """A block where autocast is off on the tensor's device: quantization runs in float32."""
    return torch.autocast(tensor.device.type, enabled=False)


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """z_q in the forward pass, the identity's gradient to z_e."""
    return z_e + (z_q - z_e).detach()


def rotated(z_e: Tensor, z_q: Tensor, eps: float = 1e-6) -> Tensor:
    """The rotation trick (Fifty et al. 2024): z_q = λ R z_e with R the rotation that takes ẑ_e to ẑ_q and λ =
    ‖z_q‖/‖z_e‖, both held constant, so the gradient reaching z_e is rotated and scaled as z_e was, rather than
    copied. Vectors along the last axis, (n, d):

        R e = e − 2 (r·e) r + 2 (ê·e) q̂,   r = (ê + q̂) / ‖ê + q̂‖
    """
    e_norm = z_e.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = z_q.norm(dim=-1, keepdim=True)
    e_hat, q_hat = (z_e / e_norm).detach(), (z_q / q_norm.clamp_min(eps)).detach()
    r = F.normalize(e_hat + q_hat, dim=-1, eps=eps)
    rotation = z_e - 2 * (z_e * r).sum(-1, keepdim=True) * r + 2 * (z_e * e_hat).sum(-1, keepdim=True) * q_hat
    return (q_norm / e_norm).detach() * rotation


def kmeans(vectors: Tensor, k: int, *, iterations: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """k centres of ``vectors`` (n, d): k-means++ seeding (each next centre drawn with probability ∝ its squared
    distance to the nearest centre so far; Arthur & Vassilvitskii 2007), then Lloyd's algorithm; a centre left with
    no vectors keeps its place. Draws come from ``generator`` (on the CPU)."""
    points = vectors.detach().float().cpu()
    first = int(torch.randint(len(points), (1,), generator=generator))
    centres = [points[first]]
    nearest = (points - points[first]).square().sum(dim=1)
    for _ in range(k - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(points[pick])
        nearest = torch.minimum(nearest, (points - points[pick]).square().sum(dim=1))
    centre = torch.stack(centres)
    for _ in range(iterations):
        assignment = torch.cdist(points, centre).argmin(dim=1)
        counts = torch.bincount(assignment, minlength=k).to(points.dtype)
        sums = torch.zeros_like(centre).index_add_(0, assignment, points)
        moved = counts > 0
        centre[moved] = sums[moved] / counts[moved, None]
    return centre.to(device=vectors.device, dtype=vectors.dtype)


class Quantizer(Configurable, nn.Module, ABC):
    """A quantizer: ``dim`` code dimensions per position in, one of ``codebook_size`` codes per position and codebook
    out, ``depth`` codebooks; ``term_names``, the loss terms it hands the model ("commitment", "codebook")."""

    dim: int
    codebook_size: int
    depth: int = 1
    commitment_weight: float = 0.0
    restart_after: int = 0  # steps a code may go unused before it is restarted (0: never)
    term_names: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, z_e: Tensor) -> Quantized:
        """z_e (b, d, h, w) → its ``Quantized``; in training mode the codebook learns from it."""

    @abstractmethod
    def lookup(self, indices: Tensor) -> Tensor:
        """indices (b, q, h, w) → z_q (b, d, h, w)."""

    @property
    def restarted(self) -> int:
        """The dead codes restarted since training began (0 for a quantizer that never restarts)."""
        return 0


class VectorQuantizer(Quantizer):
    """The nearest of ``codebook_size`` learned ``dim``-vectors at each position.

    learning: "ema" (the codebook follows the moving average of its assigned vectors, ``decay``) or "loss" (the
        codebook is a parameter trained by the codebook loss ‖sg(z_e) − z_q‖², weighted 1).
    commitment_weight: the weight of ‖z_e − sg(z_q)‖², which keeps the encoder near its codes (0.25).
    kmeans_init: set the codebook by k-means (``kmeans_iterations`` steps) on the first training batch's vectors.
    restart_after: a code no vector was assigned to for this many training steps in a row is re-seeded from a random
        vector of the current batch (0: never).
    cosine: compare and store unit vectors (cosine similarity; with a small ``dim``, the low-dimensional, normalised
        codes of ViT-VQGAN, Yu et al. 2022).
    gradient: "straight_through" (z_e + sg(z_q − z_e)) or "rotation" (the rotation trick).
    """

    def __init__(
        self,
        *,
        codebook_size: int = 512,
        dim: int = 64,
        learning: Learning = "ema",
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_weight: float = 0.25,
        kmeans_init: bool = False,
        kmeans_iterations: int = 10,
        restart_after: int = 0,
        cosine: bool = False,
        gradient: Gradient = "straight_through",
    ) -> None:
        super().__init__()
        if codebook_size < 2:
            raise ConfigError(f"a codebook needs at least 2 codes, got codebook_size {codebook_size}")
        if dim < 1:
            raise ConfigError(f"the code dimension must be a positive integer, got dim {dim}")
        if learning not in ("ema", "loss"):
            raise ConfigError(f"learning must be 'ema' or 'loss', got {learning!r}")
        if not 0 < decay < 1:
            raise ConfigError(f"the EMA decay must lie strictly between 0 and 1, got {decay}")
        if commitment_weight < 0 or restart_after < 0 or kmeans_iterations < 1:
            raise ConfigError(
                "commitment_weight and restart_after must be 0 or more and kmeans_iterations positive, got "
                f"{commitment_weight}, {restart_after} and {kmeans_iterations}"
            )
        if gradient not in ("straight_through", "rotation"):
            raise ConfigError(f"gradient must be 'straight_through' or 'rotation', got {gradient!r}")
        self.codebook_size, self.dim = codebook_size, dim
        self.learning, self.decay, self.eps = learning, decay, eps
        self.commitment_weight = commitment_weight
        self.kmeans_init, self.kmeans_iterations = kmeans_init, kmeans_iterations
        self.restart_after, self.cosine, self.gradient = restart_after, cosine, gradient
        self.term_names = ("commitment", "codebook") if learning == "loss" else ("commitment",)
        codebook = torch.randn(codebook_size, dim)
        codebook = F.normalize(codebook, dim=1) if cosine else codebook
        if learning == "ema":
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(codebook_size))  # each code: one vector, itself
            self.register_buffer("embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps learned from

    def generator(self) -> torch.Generator:
        """The random draws of this training step (k-means' starting centres, the vectors restarted codes take):
        seeded by the step, which the checkpoint keeps, so a resumed run draws what an unbroken one does."""
        return torch.Generator().manual_seed(1_000_003 * int(self.steps) + 17)

    @property
    def restarted(self) -> int:
        return int(self.restarts)

    def _apply(self, fn, recurse: bool = True):
        """As ``nn.Module._apply`` (``.to``, ``.half``, ...), with the EMA statistics and the codebook buffer kept in
        float32 when the model is cast to half precision (``precision: bf16-true``): a moving average in bf16 stalls."""
        super()._apply(fn, recurse)
        for name, tensor in self._buffers.items():
            if tensor is not None and tensor.is_floating_point() and tensor.dtype != torch.float32:
                self._buffers[name] = tensor.float()
        return self

    def prepared(self, vectors: Tensor) -> Tensor:
        """The vectors as they are compared with the codes: unit vectors for cosine codes."""
        return F.normalize(vectors, dim=-1) if self.cosine else vectors

    def codes(self) -> Tensor:
        """The codebook as the vectors are compared with it: unit vectors for cosine codes (a codebook learned by
        gradient moves off the sphere between steps), (k, d) in float32."""
        return self.prepared(self.codebook.float())

    def nearest(self, vectors: Tensor) -> Tensor:
        """The index of the nearest code of each vector (n, d) → (n,), in float32 (never under autocast: the
        distances ‖v‖² − 2 v·e + ‖e‖² cancel, and 8 bits of mantissa would pick the wrong code)."""
        codebook = self.codes()
        distances = (
            vectors.square().sum(1, keepdim=True) - 2 * vectors @ codebook.t() + codebook.square().sum(1)[None]
        )  # (n, k)
        return distances.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        z = F.embedding(indices[:, 0], self.codes())  # (b, h, w, d)
        return rearrange(z, "b h w d -> b d h w")

    def quantize(self, vectors: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Vectors (n, d), in float32 → (indices (n,), codes (n,) with no gradient to the vectors, the codebook loss
        per vector or None); in training mode the codebook learns from them first."""
        vectors = self.prepared(vectors)
        if self.training:
            self.learn(vectors.detach())
        indices = self.nearest(vectors.detach())
        codes = F.embedding(indices, self.codes())
        codebook_loss = None
        if self.learning == "loss":
            codebook_loss = (vectors.detach() - codes).square().sum(dim=1)
        return indices, codes.detach() if codebook_loss is None else codes, codebook_loss

    @torch.no_grad()
    def learn(self, vectors: Tensor) -> None:
        """One training step's codebook update from this process's vectors (n, d): k-means initialisation on the
        first, then (EMA) the moving averages, and the restart of codes unused for ``restart_after`` steps."""
        if not bool(self.initialized):
            centres = kmeans(vectors, self.codebook_size, iterations=self.kmeans_iterations, generator=self.generator())
            self.codebook.data.copy_(from_first_process(self.prepared(centres)))
            if self.learning == "ema":
                self.embed_sum.copy_(self.codebook)
                self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
        indices = self.nearest(vectors)
        counts = summed_over_processes(torch.bincount(indices, minlength=self.codebook_size).to(vectors.dtype))
        if self.learning == "ema":
            sums = summed_over_processes(torch.zeros_like(self.embed_sum).index_add_(0, indices, vectors))
            self.ema_update(counts, sums)
        if self.restart_after:
            self.restart(vectors, counts)
        self.steps.add_(1)

    @torch.no_grad()
    def ema_update(self, counts: Tensor, sums: Tensor) -> None:
        """The EMA update from the global batch's counts N_k (k,) and sums S_k (k, d)."""
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.prepared(self.embed_sum / smoothed[:, None]))

    @torch.no_grad()
    def restart(self, vectors: Tensor, counts: Tensor) -> None:
        """Re-seed the codes no vector was assigned to for ``restart_after`` steps from random vectors of the batch
        (process 0's, so every process restarts the same codes to the same vectors)."""
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = self.unused_steps >= self.restart_after
        n_dead = int(dead.sum())
        if not n_dead:
            return
        picks = torch.randint(len(vectors), (n_dead,), generator=self.generator()).to(vectors.device)
        seeds = from_first_process(vectors[picks].contiguous())
        self.codebook.data[dead] = seeds
        if self.learning == "ema":
            self.embed_sum[dead] = seeds
            self.cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0
        self.restarts.add_(n_dead)

    def forward(self, z_e: Tensor) -> Quantized:
        with full_precision_block(z_e):
            return self.quantized(z_e)

    def quantized(self, z_e: Tensor) -> Quantized:
        b, _, h, w = z_e.shape
        vectors = rearrange(z_e.float(), "b d h w -> (b h w) d")
        indices, codes, codebook_loss = self.quantize(vectors)
        vectors = self.prepared(vectors)
        error = reduce((vectors - codes.detach()).square(), "(b n) d -> b", "sum", b=b)
        moved = rotated(vectors, codes) if self.gradient == "rotation" else straight_through(vectors, codes)
        z = rearrange(moved, "(b h w) d -> b d h w", b=b, h=h, w=w).to(z_e.dtype)
        indices = rearrange(indices, "(b h w) -> b 1 h w", b=b, h=h, w=w)
        codebook = None if codebook_loss is None else reduce(codebook_loss, "(b n) -> b", "sum", b=b)
        return Quantized(z=z, indices=indices, error=error, codebook=codebook)


class ResidualVQ(Quantizer):
    """``depth`` vector quantizers in sequence (residual VQ): the first codes z_e, each next one what is left,
    z_q = Σ_i q_i; every codebook has ``codebook_size`` codes of ``dim`` dimensions and the options of
    ``VectorQuantizer`` (cosine codes excepted: residuals are not unit vectors). The commitment term is the final
    error ‖z_e − sg(z_q)‖²."""

    def __init__(
        self,
        *,
        depth: int = 4,
        codebook_size: int = 256,
        dim: int = 64,
        learning: Learning = "ema",
        decay: float = 0.99,
        commitment_weight: float = 0.25,
        kmeans_init: bool = False,
        restart_after: int = 0,
        gradient: Gradient = "straight_through",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"residual VQ needs at least one codebook, got depth {depth}")
        self.stages = nn.ModuleList(
            VectorQuantizer(
                codebook_size=codebook_size,
                dim=dim,
                learning=learning,
                decay=decay,
                commitment_weight=commitment_weight,
                kmeans_init=kmeans_init,
                restart_after=restart_after,
            )
            for _ in range(depth)
        )
        self.depth, self.codebook_size, self.dim = depth, codebook_size, dim
        self.commitment_weight, self.gradient, self.restart_after = commitment_weight, gradient, restart_after
        self.term_names = self.stages[0].term_names

    @property
    def restarted(self) -> int:
        return sum(stage.restarted for stage in self.stages)

    def lookup(self, indices: Tensor) -> Tensor:
        return sum(stage.lookup(indices[:, i : i + 1]) for i, stage in enumerate(self.stages))  # type: ignore[return-value]

    def forward(self, z_e: Tensor) -> Quantized:
        with full_precision_block(z_e):
            return self.quantized(z_e)

    def quantized(self, z_e: Tensor) -> Quantized:
        b, _, h, w = z_e.shape
        vectors = rearrange(z_e.float(), "b d h w -> (b h w) d")
        residual, total = vectors, torch.zeros_like(vectors)
        indices, codebook_losses = [], []
        for stage in self.stages:
            index, codes, codebook_loss = stage.quantize(residual.detach())
            indices.append(index)
            total = total + codes
            residual = residual - codes.detach()
            if codebook_loss is not None:
                codebook_losses.append(codebook_loss)
        error = reduce((vectors - total.detach()).square(), "(b n) d -> b", "sum", b=b)
        moved = rotated(vectors, total) if self.gradient == "rotation" else straight_through(vectors, total)
        z = rearrange(moved, "(b h w) d -> b d h w", b=b, h=h, w=w).to(z_e.dtype)
        codebook = reduce(torch.stack(codebook_losses).sum(0), "(b n) -> b", "sum", b=b) if codebook_losses else None
        indices_map = rearrange(torch.stack(indices), "q (b h w) -> b q h w", b=b, h=h, w=w)
        return Quantized(z=z, indices=indices_map, error=error, codebook=codebook)


class FSQ(Quantizer):
    """Finite scalar quantization (Mentzer et al. 2023): dimension i of z_e is bounded to L_i levels and rounded,

        bounded_i = tanh(z_i + s_i) · h_i − o_i,   h_i = (L_i − 1)(1 + 10⁻³)/2,  o_i = ½ for even L_i (else 0),
        s_i = atanh(o_i / h_i),   q_i = round(bounded_i) ∈ {−⌊L_i/2⌋, ..., L_i − 1 − ⌊L_i/2⌋}

    with the straight-through gradient of round (the identity with respect to the bounded value), and z_q = q / ⌊L/2⌋
    in [−1, 1]. The code index is the mixed-radix number of the digits q_i + ⌊L_i/2⌋. ``levels``: L per dimension,
    e.g. [8, 5, 5, 5] for 1,000 codes (the paper's recommendations: [8, 6, 5] ≈ 2⁸, [8, 5, 5, 5] ≈ 2¹⁰, [7, 5, 5, 5,
    5] ≈ 2¹², [8, 8, 8, 6, 5] ≈ 2¹⁴). There is no codebook, hence nothing to learn, collapse or restart; the squared
    quantization error is reported but weighted 0."""

    def __init__(self, *, levels: tuple[int, ...] = (8, 5, 5, 5)) -> None:
        super().__init__()
        levels = tuple(int(level) for level in levels)
        if not levels or min(levels) < 2:
            raise ConfigError(f"FSQ needs one or more levels of at least 2 each, got levels {list(levels)}")
        self.levels, self.dim, self.codebook_size = levels, len(levels), math.prod(levels)
        level = torch.tensor(levels, dtype=torch.float64)
        half = (level - 1) * (1 + 1e-3) / 2
        offset = torch.where(level % 2 == 0, 0.5, 0.0)
        basis = torch.cumprod(torch.tensor((1, *levels[:-1]), dtype=torch.long), dim=0)
        self.register_buffer("span", half.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half).float(), persistent=False)
        self.register_buffer("width", (level // 2).float(), persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def bound(self, z: Tensor) -> Tensor:
        """Each dimension (the last axis) squashed into its levels' range, (..., d)."""
        return torch.tanh(z + self.shift) * self.span - self.offset

    def quantize(self, vectors: Tensor) -> Tensor:
        """Vectors (n, d) → integer levels q (n, d), with the straight-through gradient to the bounded value."""
        bounded = self.bound(vectors)
        return straight_through(bounded, bounded.round())

    def indices_of(self, levels: Tensor) -> Tensor:
        """Integer levels q (..., d) → code indices (...,)."""
        return ((levels.round() + self.width).long() * self.basis).sum(dim=-1)

    def levels_of(self, indices: Tensor) -> Tensor:
        """Code indices (...,) → integer levels q (..., d), the inverse of ``indices_of``."""
        level = torch.tensor(self.levels, device=indices.device)
        return ((indices[..., None] // self.basis) % level).float() - self.width

    def lookup(self, indices: Tensor) -> Tensor:
        z = self.levels_of(indices[:, 0]) / self.width  # (b, h, w, d)
        return rearrange(z, "b h w d -> b d h w")

    def forward(self, z_e: Tensor) -> Quantized:
        with full_precision_block(z_e):
            return self.quantized(z_e)

    def quantized(self, z_e: Tensor) -> Quantized:
        b, _, h, w = z_e.shape
        vectors = rearrange(z_e.float(), "b d h w -> (b h w) d")
        levels = self.quantize(vectors)
        error = reduce((self.bound(vectors) - levels.detach()).square(), "(b n) d -> b", "sum", b=b)
        indices = rearrange(self.indices_of(levels.detach()), "(b h w) -> b 1 h w", b=b, h=h, w=w)
        z = rearrange(levels / self.width, "(b h w) d -> b d h w", b=b, h=h, w=w).to(z_e.dtype)
        return Quantized(z=z, indices=indices, error=error)


class PointMass(Distribution):
    """The posterior of a deterministic encoder over codes: all its mass on one code sequence (b, n), so
    log q(c) = 0 at it (−inf elsewhere) and its entropy is 0."""

    arg_constraints: dict = {}

    def __init__(self, codes: Tensor) -> None:
        self.codes = codes
        super().__init__(batch_shape=codes.shape[:1], event_shape=codes.shape[1:], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        hit = (value == self.codes).all(dim=-1)
        return torch.where(hit, 0.0, -math.inf).to(torch.float32)

    def entropy(self) -> Tensor:
        return torch.zeros(self.codes.shape[:1], device=self.codes.device)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self.codes.expand(*sample_shape, *self.codes.shape)


def tokens_of(indices: Tensor) -> Tensor:
    """Code indices (b, q, h, w) as one sequence per example, position by position and, within a position, codebook
    by codebook: (b, h·w·q). The order a prior over the codes reads them in."""
    return rearrange(indices, "b q h w -> b (h w q)")


def indices_of(tokens: Tensor, *, depth: int, height: int, width: int) -> Tensor:
    """The inverse of ``tokens_of``: (b, h·w·q) → (b, q, h, w)."""
    return rearrange(tokens, "b (h w q) -> b q h w", q=depth, h=height, w=width)


class CodeLatent(LatentLayer):
    """A quantized latent layer: a deterministic one-hot posterior over the codes of ``quantizer`` at each of the
    grid's ``positions``, against a prior over the code sequences (``tokens_of``): the uniform prior, or a learned one
    whose log-probabilities of each code given the codes before it are handed in (``prior_logits``).

        D_KL(q ‖ p) = −H(q) − E_q[log p(c)] = −log p(c)          (H(q) = 0 for a one-hot posterior)
                    = n · q · log K                               for the uniform prior: a constant

    A deterministic encoder gets no bits back, so the ELBO with this KL is a loose bound on log p(x) by
    construction; with a learned prior, −log p(c) is the rate of the codes in nats."""

    factorises = False

    def __init__(self, *, quantizer: Quantizer, grid: tuple[int, int]) -> None:
        super().__init__()
        self.name, self.quantizer, self.grid = "codes", quantizer, tuple(grid)
        self.units, self.positions = quantizer.dim, grid[0] * grid[1]
        self.kl_estimator: Estimator = "analytic"
        self.length = self.positions * quantizer.depth  # codes per example
        self.register_buffer("uniform", torch.zeros(quantizer.codebook_size), persistent=False)

    @property
    def kl_description(self) -> str:
        return "closed form: −log p(codes) of a one-hot posterior (log K per code under the uniform prior)"

    def uniform_prior(self) -> Distribution:
        return Independent(Categorical(logits=self.uniform.expand(self.length, -1)), 1, validate_args=False)

    def forward(
        self, z_e: Tensor, *, prior: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[LatentSample, Quantized]:
        """z_e (b, d, h, w) → the layer's ``LatentSample`` (z: the quantized map; event: the code sequence (b, n))
        and the quantizer's output; ``prior``: a learned prior, from code sequences (b, n) to the logits (b, n, K) of
        each code given the codes before it (None: the uniform prior)."""
        quantized = self.quantizer(z_e)
        tokens = tokens_of(quantized.indices)
        if prior is None:
            judge = self.uniform_prior()
        else:
            judge = Independent(Categorical(logits=prior(tokens).float()), 1, validate_args=False)
        posterior = PointMass(tokens)
        kl = -judge.log_prob(tokens)
        latent = LatentSample(
            z=quantized.z,
            kl=kl,
            kl_per_unit=None,
            posterior_mean=rearrange(quantized.z.detach().float(), "b d h w -> b d (h w)"),
            posterior=posterior,
            prior=judge,
            estimator="analytic",
            event=tokens,
        )
        return latent, quantized
