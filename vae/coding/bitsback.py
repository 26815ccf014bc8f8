"""Bits-back coding with asymmetric numeral systems (BB-ANS: Townsend, Bird & Barber 2019; HiLLoC for hierarchies:
Townsend et al. 2020): a trained latent-variable model with a discrete likelihood as a lossless compressor, whose rate
is the negative ELBO it was trained on.

The coder keeps a stack of bits (constriction's ``AnsCoder``: last in, first out). To add an image x:

    1. pop  ẑ under Q(ẑ | x)     decoding ẑ from the stack takes −log Q(ẑ|x) bits off it: the bits back
    2. push x under p(x | ẑ)     −log p(x|ẑ) bits on: the reconstruction term
    3. push ẑ under P(ẑ)         −log P(ẑ) bits on

so the stack grows by −log p(x|ẑ) − log P(ẑ) + log Q(ẑ|x), whose mean over ẑ ~ Q is the reconstruction term plus the
KL: the negative ELBO, with discretized latents, in bits. A hierarchy pops its layers from the top down (each given the
ones above: ``LatentVariableModel.walk``) and pushes them back under their priors in reverse. Decoding runs the steps
backwards: pop ẑ under P (the layers from the top), pop x under p(x|ẑ), push ẑ under Q(ẑ|x), which puts back exactly
the bits step 1 took.

Discretization (HiLLoC's dynamic discretization): each Gaussian latent is cut into K = 2^latent_bits buckets of equal
mass under its own prior p(z_l | z_>l), which the decoder knows when it reaches the layer, so P(bucket) = 1/K; a
bucket stands for the point at its middle quantile, and Q(bucket) is the posterior's mass in it. Categorical latents are
coded as they are; a deterministic code (a quantized model's) is pushed under its prior with nothing popped.

Initial bits: the first pop needs bits on the stack before anything was pushed. The stack starts with seeded random
words, 1.25·D·latent_bits bits for D latent dimensions (D·latent_bits is the most a posterior over K buckets takes on
average), paid once per file; on decoding they must come back exactly, a check of the whole run. Images go a batch at a
time (every network pass batched); a batch is only as large as the stack can pay for (1.25·D·latent_bits an image), so
the batches grow from one image to ``batch_size`` as the stack does. The margin covers a batch's pops on average; a
pop that finds the stack short still decodes a value (the coder pads it), and the result is as lossless, only dearer.

Every probability is computed in float64 from the networks' float32 outputs (the logistics' CDF in float32) and
quantized by constriction; decoding needs the very same numbers, so everything that shapes a computation is part of the
file (``vae.coding.container``): the batches, the rows of a pixel table (``pixel_rows``) and of a bucket table
(``table_elements``), the thread count; and the decoded images are checked against the digests of the originals.

Axes: b images, c channels, h height, w width, d latent dimensions, k values (buckets, codes, grey levels).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from vae.coding.tables import (
    CATEGORICAL,
    TABLE_ELEMENTS,
    AnsCoder,
    CodingError,
    Latent,
    code_symbols,
    information,
    normalised_rows,
)
from vae.core.errors import ConfigError
from vae.models.base import LatentVariableModel, LayerLaw, inference

PIXEL_ROWS = 8  # images per pixel table by default: bounds the memory of a mixture's tables (rows·k·h·w·256)
MARGIN = 1.25  # the stack holds this many times the most a batch's pops can take on average (D·latent_bits each)


@dataclass(frozen=True)
class Costs:
    """What each image put on the stack, in bits (b,), from the probabilities it was coded with.

    bits_back: −log2 Q(ẑ|x), taken off the stack by the pop (0 for a deterministic code).
    latents: −log2 P(ẑ), pushed.
    pixels: −log2 p(x|ẑ), pushed.
    """

    bits_back: np.ndarray
    latents: np.ndarray
    pixels: np.ndarray

    @property
    def net(self) -> np.ndarray:
        """pixels + latents − bits back: the single-sample negative ELBO with discretized latents, in bits."""
        return self.pixels + self.latents - self.bits_back

    @classmethod
    def joined(cls, parts: list[Costs]) -> Costs:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("bits_back", "latents", "pixels")))


@dataclass(frozen=True)
class Coded:
    """A coded stack: its words (uint32), the batch sizes in coding order, the initial words it started from, each
    batch's 16-bit checksum of its values (an early stop), a digest of all the values (the guarantee), and what every
    image cost."""

    words: np.ndarray
    batches: list[int]
    initial_words: int
    checksums: list[int]
    digest: str
    costs: Costs


def seeded_words(count: int, seed: int) -> np.ndarray:
    """``count`` seeded random 32-bit words (the last one nonzero, as the coder needs of its top word)."""
    words = np.random.default_rng(seed).integers(0, 2**32, size=count, dtype=np.uint32)
    if count:
        words[-1] |= np.uint32(1)
    return words


def value_bytes(symbols: Tensor) -> bytes:
    return symbols.to(torch.int16).cpu().numpy().tobytes()


def checksum(symbols: Tensor) -> int:
    """A batch's 16-bit checksum: the low half of the CRC-32 of its values (int16 bytes, (b, c, h, w) order)."""
    return zlib.crc32(value_bytes(symbols)) & 0xFFFF


def digest(symbols: Tensor) -> str:
    """SHA-256 of all the values (int16 bytes, (n, c, h, w) order), its first 128 bits in hex."""
    return hashlib.sha256(value_bytes(symbols)).hexdigest()[:32]


def deterministic(threads: int, device: torch.device) -> None:
    """The settings that make the model's numbers repeatable, as compressing and decompressing both need (the command
    restores the caller's on return): the thread count, deterministic algorithms, and on CUDA cuBLAS's fixed
    workspace and no cuDNN autotuning."""
    torch.set_num_threads(threads)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def machine() -> dict[str, str]:
    """What the model's numbers depend on beyond the file: the versions of torch and constriction, the CPU's vector
    extension."""
    return {
        "torch": torch.__version__,
        "constriction": importlib.metadata.version("constriction"),
        "cpu": torch.backends.cpu.get_cpu_capability(),
    }


class BitsBackCoder:
    """Codes images under a trained model by bits-back coding (see the module's docstring).

    model: a model whose latents a coder can choose (``LatentVariableModel.walk``; ``coding_refusal`` says why not)
        and whose likelihood is discrete (``Likelihood.levels``).
    latent_bits: each Gaussian latent is cut into 2^latent_bits buckets of equal prior mass.
    batch_size: the most images per network pass (the first batches are as large as the stack can pay for).
    seed: the seed of the initial words.
    pixel_rows / table_elements: images per pixel table, and entries per latent table, computed at once: they bound
        the memory and shape the computation, so decoding takes the ones coding took (the file records them).
    """

    def __init__(
        self,
        model: LatentVariableModel,
        *,
        latent_bits: int = 10,
        batch_size: int = 64,
        seed: int = 0,
        pixel_rows: int = PIXEL_ROWS,
        table_elements: int = TABLE_ELEMENTS,
    ) -> None:
        if not 1 <= latent_bits <= 16:
            raise ConfigError(f"latent_bits must be in [1, 16], got {latent_bits}")
        if min(batch_size, pixel_rows, table_elements) < 1:
            raise ConfigError(
                f"batch_size, pixel_rows and table_elements must be positive, got {batch_size}, {pixel_rows} and "
                f"{table_elements}"
            )
        refusal = model.coding_refusal()
        if refusal is not None:
            raise ConfigError(f"this model cannot be coded: {refusal}")
        self.levels = model.likelihood.discrete_levels()  # a continuous likelihood is refused here
        self.model, self.latent_bits, self.batch_size, self.seed = model, latent_bits, batch_size, seed
        self.pixel_rows, self.table_elements = pixel_rows, table_elements
        self.device = next(iter(model.parameters())).device
        self._latent_dims: int | None = None

    def latent(self, law: LayerLaw, rows: int) -> Latent:
        return Latent(law, rows, self.latent_bits, table_elements=self.table_elements)

    def unit(self, symbols: Tensor) -> Tensor:
        """Values (b, c, h, w) as the images the model reads: v / (levels − 1), float32."""
        return symbols.float() / (self.levels - 1)

    def latent_dims(self) -> int:
        """The latent dimensions coded with bits back per image (their number sets the initial bits): a walk with
        every latent at its middle bucket, which also refuses a layer this coder cannot take, in one line."""
        if self._latent_dims is not None:
            return self._latent_dims
        dims = 0

        def probe(law: LayerLaw) -> Tensor:
            nonlocal dims
            latent = self.latent(law, 1)
            dims += latent.dims if law.code is None else 0
            if law.code is not None:
                return law.code
            return latent.value(np.full(latent.size, latent.buckets // 2, dtype=np.int32))

        with inference(self.model):
            self.model.walk(1, x=torch.zeros(1, *self.model.image_shape, device=self.device), choose=probe)
        self._latent_dims = dims
        return dims

    def encode(self, symbols: Tensor, *, progress: Callable[[int], None] | None = None) -> Coded:
        """Code values (n, c, h, w) (``Likelihood.symbols`` of the images) on a new stack; ``progress`` is told each
        batch's size as it is done."""
        need = MARGIN * self.latent_dims() * self.latent_bits  # the most one image's pop can take, with a margin
        count = max(1, math.ceil(need / 32))
        coder = AnsCoder(seeded_words(count, self.seed), seal=False)
        costs, checksums, batches, start = [], [], [], 0
        with inference(self.model):
            while start < len(symbols):
                room = int(coder.num_bits() // need) if need else self.batch_size
                size = min(self.batch_size, len(symbols) - start, max(1, room))
                batch = symbols[start : start + size].to(self.device)
                costs.append(self.encode_batch(coder, batch))
                checksums.append(checksum(batch))
                batches.append(size)
                start += size
                if progress is not None:
                    progress(size)
        return Coded(
            words=coder.get_compressed(),
            batches=batches,
            initial_words=count,
            checksums=checksums,
            digest=digest(symbols),
            costs=Costs.joined(costs) if costs else Costs(*(np.zeros(0),) * 3),
        )

    def encode_batch(self, coder: AnsCoder, symbols: Tensor) -> Costs:
        n = len(symbols)
        x = self.unit(symbols)
        chosen: list[tuple[Latent, np.ndarray]] = []
        back = np.zeros(n)

        def choose(law: LayerLaw) -> Tensor:
            nonlocal back
            latent = self.latent(law, n)
            if law.code is not None:
                indices = code_symbols(law.code)
            else:
                indices, bits = latent.pop_posterior(coder)
                back = back + bits
            chosen.append((latent, indices))
            return latent.value(indices)

        params = self.model.walk(n, x=x, choose=choose)
        pixels = self.push_pixels(coder, params, x, symbols)
        latents = np.zeros(n)
        for latent, indices in reversed(chosen):
            latents = latents + latent.push_prior(coder, indices)
        return Costs(bits_back=back, latents=latents, pixels=pixels)

    def image_chunks(self, n: int) -> list[slice]:
        """The images of a batch whose pixel tables are computed and coded at once."""
        step = self.pixel_rows
        return [slice(start, min(start + step, n)) for start in range(0, n, step)]

    def pixel_table(self, params: Tensor, x: Tensor, channel: int) -> np.ndarray:
        """p(x_c | ẑ, x_<c) of a chunk, (b·h·w, levels) float64."""
        table = self.model.likelihood.value_table(params, x, channel)
        return normalised_rows(rearrange(table, "b h w k -> (b h w) k"), f"the pixels of channel {channel}")

    def push_pixels(self, coder: AnsCoder, params: Tensor, x: Tensor, symbols: Tensor) -> np.ndarray:
        bits = np.zeros(len(x))
        for channel in reversed(range(x.shape[1])):  # the decoder pops channel 0 first
            for rows in reversed(self.image_chunks(len(x))):
                table = self.pixel_table(params[rows], x[rows], channel)
                values = rearrange(symbols[rows, channel], "b h w -> (b h w)").cpu().numpy().astype(np.int32)
                coder.encode_reverse(values, CATEGORICAL, table)
                bits[rows] += information(table, values, rows.stop - rows.start)
        return bits

    def pop_pixels(self, coder: AnsCoder, params: Tensor, n: int) -> tuple[Tensor, Tensor]:
        c, h, w = self.model.image_shape
        symbols = torch.zeros(n, c, h, w, dtype=torch.long, device=self.device)
        x = torch.zeros(n, c, h, w, device=self.device)
        for channel in range(c):
            for rows in self.image_chunks(n):
                values = coder.decode(CATEGORICAL, self.pixel_table(params[rows], x[rows], channel))
                decoded = rearrange(torch.as_tensor(values, dtype=torch.long), "(b h w) -> b h w", h=h, w=w)
                symbols[rows, channel] = decoded.to(self.device)
                x[rows, channel] = self.unit(symbols[rows, channel])
        return symbols, x

    def decode(
        self,
        words: np.ndarray,
        *,
        batches: list[int],
        initial_words: int,
        checksums: list[int] | None = None,
        digest_of_values: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """The values coded in ``words`` (n, c, h, w), the batches decoded last first; a ``CodingError`` where a batch's
        checksum, the values' digest or the initial words do not come back."""
        coder = AnsCoder(np.ascontiguousarray(words, dtype=np.uint32), seal=False)
        decoded: list[Tensor] = []
        with inference(self.model):
            for index in reversed(range(len(batches))):
                symbols = self.decode_batch(coder, batches[index])
                if checksums is not None and checksum(symbols) != checksums[index]:
                    raise CodingError(
                        f"batch {index + 1} of {len(batches)} decoded to other images than were coded: this machine "
                        "computes the model's probabilities differently (another torch, CPU kind or device), or the "
                        "file was damaged"
                    )
                decoded.append(symbols.cpu())
                if progress is not None:
                    progress(len(symbols))
        values = torch.cat(decoded[::-1]) if decoded else torch.zeros(0, *self.model.image_shape, dtype=torch.long)
        if digest_of_values is not None and digest(values) != digest_of_values:
            raise CodingError("the images decoded differ from those coded (their SHA-256 differs)")
        if not np.array_equal(coder.get_compressed(), seeded_words(initial_words, self.seed)):
            raise CodingError("the initial bits did not come back after decoding: the file does not match this model")
        return values

    def decode_batch(self, coder: AnsCoder, n: int) -> Tensor:
        popped: list[np.ndarray] = []

        def from_prior(law: LayerLaw) -> Tensor:
            latent = self.latent(law, n)
            indices = latent.pop_prior(coder)
            popped.append(indices)
            return latent.value(indices)

        params = self.model.walk(n, x=None, choose=from_prior)
        symbols, x = self.pop_pixels(coder, params, n)
        replay: Iterator[np.ndarray] = iter(popped)
        chosen: list[tuple[Latent, np.ndarray]] = []

        def again(law: LayerLaw) -> Tensor:
            latent, indices = self.latent(law, n), next(replay)
            if law.code is not None and not np.array_equal(code_symbols(law.code), indices):
                raise CodingError(
                    f"layer {law.name}: the decoded images do not encode to the decoded codes: the file does not match "
                    "this model, or this machine computes it differently"
                )
            chosen.append((latent, indices))
            return latent.value(indices)

        self.model.walk(n, x=x, choose=again)
        for latent, indices in reversed(chosen):
            if latent.law.code is None:
                latent.push_posterior(coder, indices)
        return symbols
