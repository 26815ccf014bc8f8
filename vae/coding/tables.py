"""What the bits-back coder codes with: each latent layer's law as tables of probabilities (``Latent``: a diagonal
Gaussian cut into buckets of equal prior mass, or a categorical as it is), computed and coded a few MiB at a time, and
the bits each value costs under them. The coder itself is ``vae.coding.bitsback``.

Axes: b examples, d latent dimensions, k values (buckets, codes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import constriction
import numpy as np
import torch
from einops import rearrange, reduce
from torch import Tensor
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Distribution, Independent, Normal

from vae.core.errors import ConfigError, UserError
from vae.models.base import LayerLaw

AnsCoder = constriction.stream.stack.AnsCoder  # a native module: its submodules are attributes, not importable
Uniform = constriction.stream.model.Uniform
# constriction's quantization of a categorical: every value keeps a nonzero probability.
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
TABLE_ELEMENTS = 1 << 20  # latent-table entries computed and coded at once by default (8 MiB of float64)
SMALLEST = 2.0**-24  # the least probability constriction's categorical gives a value (its 24-bit precision)


class CodingError(UserError):
    """A file that does not decode to what was coded: another model's numbers, or damage the checksum missed."""


def bucket_masses(edges: Tensor) -> Tensor:
    """Φ(e_{i+1}) − Φ(e_i) between increasing edges (n, K + 1), Φ the standard normal CDF: (n, K), accurate in both
    tails (above 0 as Φ(−e_i) − Φ(−e_{i+1}), where Φ(e) is too near 1 to subtract), from erfc (Φ(e) = ½ erfc(−e/√2):
    four times faster than ndtr in float64)."""
    scaled = edges * -math.sqrt(0.5)
    lower = torch.special.erfc(scaled)  # 2Φ(e)
    upper = torch.special.erfc(scaled.neg_())  # 2Φ(−e)
    masses = torch.where(edges[:, :-1] > 0, upper[:, :-1] - upper[:, 1:], lower[:, 1:] - lower[:, :-1])
    return masses.mul_(0.5)


def value_bits(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """−log2 of each value's probability under its row of ``table`` (n, k), (n,): at most 24 bits, as constriction
    gives every value at least 2⁻²⁴ (a table's float zero is coded at that)."""
    return -np.log2(np.maximum(table[np.arange(len(values)), values], SMALLEST))


def information(table: np.ndarray, values: np.ndarray, rows: int) -> np.ndarray:
    """``value_bits`` summed per example: (rows,)."""
    return reduce(value_bits(table, values), "(b d) -> b", "sum", b=rows)


def normalised_rows(p: Tensor, what: str) -> np.ndarray:
    """Rows of probabilities (n, k) that sum to 1 up to rounding, as the float64 array constriction takes (it scales
    each row to sum to 1 exactly, and gives every value a nonzero probability); a one-line error for NaN or inf."""
    if not bool(torch.isfinite(p).all()):
        raise CodingError(f"the model gives non-finite probabilities (NaN or inf) for {what}: its weights cannot code")
    return p.double().clamp_min(0).cpu().numpy()


def code_symbols(code: Tensor) -> np.ndarray:
    """A deterministic code's values as the coder's symbols, flattened (b·d,) int32."""
    return code.reshape(-1).cpu().numpy().astype(np.int32)


class Latent:
    """One layer's law (``LayerLaw``) for b examples, ready to code: a diagonal Gaussian cut into 2^bits buckets of
    equal prior mass, or a categorical over its values as it is. Tables are computed and coded ``table_elements``
    entries at a time (``table_rows``): the coder takes the rows in order either way, and memory stays bounded."""

    def __init__(self, law: LayerLaw, rows: int, bits: int, *, table_elements: int = TABLE_ELEMENTS) -> None:
        self.law, self.rows, self.bits, self.table_elements = law, rows, bits, table_elements
        prior = law.prior
        normal = prior.base_dist if isinstance(prior, Independent) else prior
        if isinstance(normal, Normal):
            self.kind, self.event = "gaussian", tuple(prior.event_shape)
            self.buckets = 2**bits
            self.p_loc, self.p_scale = self.flat_gaussian(prior)
            self.dims = self.p_loc.shape[1]
        elif isinstance(prior, TorchCategorical):
            self.kind, self.event = "categorical", tuple(prior.batch_shape[1:])
            self.buckets = prior.probs.shape[-1]
            self.dims = int(np.prod(self.event, dtype=np.int64))
        else:
            raise ConfigError(
                f"layer {law.name}'s prior is a {type(prior).__name__}: bits-back coding needs a prior that factorizes "
                "per dimension (a diagonal Gaussian or a categorical)"
            )
        posterior = law.posterior
        if posterior is not None:
            family = TorchCategorical if self.kind == "categorical" else Normal
            inner = posterior.base_dist if isinstance(posterior, Independent) else posterior
            if not isinstance(inner, family):
                raise ConfigError(
                    f"layer {law.name}'s posterior is a {type(posterior).__name__}: bits-back coding needs a posterior "
                    f"of its prior's family ({'categorical' if self.kind == 'categorical' else 'a diagonal Gaussian'}) "
                    "that factorizes per dimension"
                )
        self._posterior_flat: tuple[Tensor, Tensor] | None = None

    def flat_gaussian(self, d: Distribution) -> tuple[Tensor, Tensor]:
        """A diagonal Gaussian's means and scales, flattened (b·d,) float64, broadcast over the batch."""
        normal = d.base_dist if isinstance(d, Independent) else d
        shape = (self.rows, *d.event_shape)
        loc = torch.broadcast_to(normal.loc, shape).double()
        scale = torch.broadcast_to(normal.scale, shape).double()
        return rearrange(loc, "b ... -> b (...)"), rearrange(scale, "b ... -> b (...)")

    @property
    def size(self) -> int:
        """Latent dimensions coded for all b examples."""
        return self.rows * self.dims

    def table_rows(self) -> list[slice]:
        """The rows (example × dimension) of a table computed and coded at once."""
        step = max(1, self.table_elements // self.buckets)
        return [slice(start, min(start + step, self.size)) for start in range(0, self.size, step)]

    def posterior_table(self, rows: slice) -> np.ndarray:
        """Q(value | x) for these rows of (example × dimension), (rows, k) float64."""
        posterior = self.law.posterior
        if posterior is None:
            raise ConfigError(f"layer {self.law.name} has no posterior here")
        what = f"layer {self.law.name}'s posterior"
        if self.kind == "categorical":
            return normalised_rows(rearrange(posterior.probs, "b ... k -> (b ...) k")[rows], what)
        if self._posterior_flat is None:  # once per layer: the edges in the posterior's units, and the quantiles
            q_loc, q_scale = (rearrange(t, "b d -> (b d)") for t in self.flat_gaussian(posterior))
            p_loc, p_scale = (rearrange(t, "b d -> (b d)") for t in (self.p_loc, self.p_scale))
            self._posterior_flat = ((p_loc - q_loc) / q_scale, p_scale / q_scale)
            edges = torch.arange(self.buckets + 1, dtype=torch.float64, device=q_loc.device) / self.buckets
            self._quantiles = torch.special.ndtri(edges)  # Φ⁻¹(j/K), ±∞ at the ends
        shift, ratio = (t[rows] for t in self._posterior_flat)
        # The bucket edges μ_p + σ_p Φ⁻¹(j/K) in the posterior's standard units, (rows, K + 1).
        edges = torch.addcmul(shift[:, None], ratio[:, None], self._quantiles)
        return normalised_rows(bucket_masses(edges), what)

    def prior_table(self, rows: slice) -> np.ndarray:
        """P(value) for these rows of a categorical layer, (rows, k) float64 (a Gaussian layer's buckets are
        uniform)."""
        probs = rearrange(self.law.prior.probs, "b ... k -> (b ...) k")
        return normalised_rows(
            torch.broadcast_to(probs, (self.size, self.buckets))[rows], f"layer {self.law.name}'s prior"
        )

    def value(self, indices: np.ndarray) -> Tensor:
        """The latent that the chosen values stand for, in the prior's event shape: a bucket's middle quantile
        μ_p + σ_p Φ⁻¹((i + ½)/K), or a categorical's index."""
        device = self.law.prior.mean.device if self.kind == "gaussian" else self.law.prior.probs.device
        index = torch.as_tensor(indices, dtype=torch.long, device=device)
        if self.kind == "categorical":
            return index.reshape(self.rows, *self.event)
        middle = torch.special.ndtri((index.double() + 0.5) / self.buckets)
        z = self.p_loc + self.p_scale * rearrange(middle, "(b d) -> b d", b=self.rows)
        return z.float().reshape(self.rows, *self.event)

    def pop(self, coder: AnsCoder, table: Callable[[slice], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Values popped under ``table``'s rows, (b·d,), and the bits they took per example, (b,)."""
        indices, bits = np.empty(self.size, dtype=np.int32), np.empty(self.size)
        for rows in self.table_rows():
            probabilities = table(rows)
            indices[rows] = coder.decode(CATEGORICAL, probabilities)
            bits[rows] = value_bits(probabilities, indices[rows])
        return indices, reduce(bits, "(b d) -> b", "sum", b=self.rows)

    def push(self, coder: AnsCoder, table: Callable[[slice], np.ndarray], indices: np.ndarray) -> np.ndarray:
        """Push the values under ``table``'s rows, the pops' inverse (the last rows first); their bits per example."""
        bits = np.empty(self.size)
        for rows in reversed(self.table_rows()):
            probabilities = table(rows)
            coder.encode_reverse(indices[rows], CATEGORICAL, probabilities)
            bits[rows] = value_bits(probabilities, indices[rows])
        return reduce(bits, "(b d) -> b", "sum", b=self.rows)

    def pop_posterior(self, coder: AnsCoder) -> tuple[np.ndarray, np.ndarray]:
        return self.pop(coder, self.posterior_table)

    def push_posterior(self, coder: AnsCoder, indices: np.ndarray) -> None:
        self.push(coder, self.posterior_table, indices)

    def push_prior(self, coder: AnsCoder, indices: np.ndarray) -> np.ndarray:
        """Push the values under the prior; their bits per example, (b,)."""
        if self.kind == "gaussian":  # equal-mass buckets: uniform, latent_bits each
            coder.encode_reverse(indices, Uniform(self.buckets))
            return np.full(self.rows, float(self.dims * self.bits))
        return self.push(coder, self.prior_table, indices)

    def pop_prior(self, coder: AnsCoder) -> np.ndarray:
        if self.kind == "gaussian":
            return coder.decode(Uniform(self.buckets), self.size)
        return self.pop(coder, self.prior_table)[0]
