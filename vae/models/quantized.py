"""The VQ-VAE: a convolutional encoder → a grid of codes from a quantizer (``vae.layers.quantizers``: vector
quantization, FSQ, residual VQ) → a decoder → the likelihood (van den Oord et al. 2017).

    ELBO = log p(x | z_q(x)) − D_KL(q(c|x) ‖ p(c)),   q(c|x) one-hot, so D_KL = −log p(c) = n · q · log K

under the uniform prior p(c) over the codes (n positions, q codebooks of K codes): a constant. The model trains on
the reconstruction term and its own terms: the commitment ‖z_e − sg(z_q)‖² (weighted ``commitment_weight``, 0.25)
and, for a codebook learned by gradient, the codebook loss ‖sg(z_e) − z_q‖². To sample, or to get a likelihood worth
quoting, train a prior over its codes afterwards (``vae.models.code_prior.CodePrior``, the second stage).

Axes: b batch, c channels, h height, w width, d code dimensions, q codebooks, k codes, n positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Categorical
from torchmetrics import Metric

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.core.pixels import as_unit
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets.conv import bottom_shape, down, up
from vae.layers.quantizers import CodeLatent, Quantized, Quantizer, VectorQuantizer, indices_of, tokens_of
from vae.models.base import Capabilities, Choose, Encoding, LatentVariableModel, LayerLaw, ModelOutput, Term, inferring
from vae.models.pictures import heat_map


class Residual(nn.Module):
    """x + conv1×1(SiLU(conv3×3(SiLU(x)))), the VQ-VAE paper's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def encoder(image_shape: tuple[int, int, int], channels: tuple[int, ...], blocks: int, dim: int) -> nn.Sequential:
    """Images (b, c, h, w) → z_e (b, dim, h/2^s, w/2^s): s stride-2 convolutions, residual blocks, a 1×1 projection."""
    sizes = [image_shape[0], *channels]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [down(c_in, c_out)] + ([nn.SiLU()] if i < len(channels) - 1 else [])
    layers += [Residual(channels[-1]) for _ in range(blocks)]
    return nn.Sequential(*layers, nn.SiLU(), nn.Conv2d(channels[-1], dim, 1))


def decoder(out_channels: int, channels: tuple[int, ...], blocks: int, dim: int) -> nn.Sequential:
    """z_q (b, dim, h', w') → the likelihood's parameters (b, out_channels, h, w): the encoder mirrored."""
    sizes = [*channels[::-1], out_channels]
    layers: list[nn.Module] = [nn.Conv2d(dim, channels[-1], 1)]
    layers += [Residual(channels[-1]) for _ in range(blocks)]
    for c_in, c_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.SiLU(), up(c_in, c_out)]
    return nn.Sequential(*layers)


class CodeUsage(Metric):
    """How a split uses the codebook(s): counts of every code over every batch (summed over processes under DDP).

    compute() gives ``codebook/usage``, the share of codes used at least once (the mean over codebooks);
    ``codebook/perplexity``, exp of the entropy of the codes' frequencies (the mean over codebooks; K if all are used
    equally); ``codebook/unused``, the codes never used (summed over codebooks)."""

    full_state_update = False

    def __init__(self, *, codebook_size: int, depth: int = 1) -> None:
        super().__init__()
        self.codebook_size, self.depth = codebook_size, depth
        self.add_state("counts", default=torch.zeros(depth, codebook_size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, out: ModelOutput | Tensor) -> None:
        """Count the codes of a batch: its ``ModelOutput``, or its code sequences (b, n·q)."""
        tokens = out if isinstance(out, Tensor) else out.latents["codes"].event
        codes = rearrange(tokens, "b (n q) -> q (b n)", q=self.depth)
        for q, row in enumerate(codes):
            self.counts[q] += torch.bincount(row, minlength=self.codebook_size).to(self.counts.dtype)

    def compute(self) -> dict[str, Tensor]:
        counts = self.counts
        frequencies = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
        entropy = -torch.special.xlogy(frequencies, frequencies).sum(dim=1)
        return {
            "codebook/usage": (counts > 0).double().mean(dim=1).mean().float(),
            "codebook/perplexity": entropy.exp().mean().float(),
            "codebook/unused": (counts == 0).sum().float(),
        }


class VQVAE(LatentVariableModel):
    """A VQ-VAE: its code is a grid of indices, one per position (and per codebook, for residual VQ).

    quantizer: ``VectorQuantizer`` (by default: 512 codes of 64 dimensions, EMA, commitment 0.25), ``FSQ`` or
        ``ResidualVQ`` (``vae.layers.quantizers``).
    channels: the encoder's stride-2 stages, each halving the resolution: (64, 128) takes 28×28 images to a 7×7 grid
        of codes, 32×32 to 8×8.
    blocks: residual blocks at the grid's resolution, in the encoder and in the decoder.
    likelihood: p(x|z) (``Bernoulli`` by default; ``DiscretizedLogistic(Mixture)`` for 8-bit images).
    image_shape, context_size: from the data (``LatentVariableModel``).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        quantizer: Quantizer | None = None,
        channels: tuple[int, ...] = (64, 128),
        blocks: int = 2,
        likelihood: Likelihood | None = None,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        if not channels or min(channels) < 1 or blocks < 0:
            raise ConfigError(f"channels must be positive sizes and blocks 0 or more, got {channels} and {blocks}")
        quantizer = VectorQuantizer() if quantizer is None else quantizer
        if not isinstance(quantizer, Quantizer):
            raise ConfigError(
                f"VQVAE's quantizer must be one of vae.layers.quantizers (VectorQuantizer, FSQ, ResidualVQ), got "
                f"{type(quantizer).__name__}"
            )
        likelihood = Bernoulli() if likelihood is None else likelihood
        self.record(quantizer=quantizer, likelihood=likelihood)
        _, height, width = bottom_shape(self.image_shape, tuple(channels))
        self.grid = (height, width)
        self.encoder = encoder(self.image_shape, tuple(channels), blocks, quantizer.dim)
        self.decoder = decoder(likelihood.param_channels(self.image_shape[0]), tuple(channels), blocks, quantizer.dim)
        self.latent = CodeLatent(quantizer=quantizer, grid=self.grid)
        self.likelihood = likelihood
        self.term_names = (*quantizer.term_names, *(() if quantizer.term_names else ("quantization_error",)))

    @property
    def quantizer(self) -> Quantizer:
        return self.latent.quantizer

    @property
    def code_vocabulary(self) -> int:
        """The values each element of the code takes: integers 0 to K − 1."""
        return self.quantizer.codebook_size

    @property
    def layers(self) -> list[CodeLatent]:
        return [self.latent]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(iwae_training=False, needs_trained_prior=True, deterministic_encoder=True)

    def networks(self) -> list[nn.Module]:
        return [self.encoder, self.decoder]

    def split_metrics(self) -> Metric:
        return CodeUsage(codebook_size=self.quantizer.codebook_size, depth=self.quantizer.depth)

    def run(self, x: Tensor, *, prior: Callable[[Tensor], Tensor] | None = None) -> tuple[ModelOutput, Quantized]:
        """One pass over images x in [0, 1]; ``prior``: a callable from the code sequences (b, n) to a learned
        prior's logits (b, n, K), or None for the uniform prior."""
        latent, quantized = self.latent(self.encoder(x), prior=prior)
        params = full_precision(self.decoder(latent.z))  # (b, param channels, h, w)
        log_px = self.likelihood.log_prob(params, x)
        terms = {"commitment": Term(quantized.error, weight=self.quantizer.commitment_weight)}
        if quantized.codebook is not None:
            terms["codebook"] = Term(quantized.codebook, weight=1.0)
        if not self.quantizer.term_names:
            terms = {"quantization_error": Term(quantized.error, weight=0.0)}
        restarts = self.training and self.quantizer.restart_after > 0
        settings = {"codes_restarted": float(self.quantizer.restarted)} if restarts else {}
        out = ModelOutput(log_px=log_px, latents={"codes": latent}, params=params, terms=terms, settings=settings)
        return out, quantized

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        if samples != 1:
            raise ConfigError("a VQ model's encoder is deterministic: it draws one sample per image")
        return self.run(as_unit(x))[0]

    @inferring
    def codes(self, x: Tensor) -> Tensor:
        """The code sequences of images x: (b, n·q) integers in [0, K), position by position (``tokens_of``)."""
        return tokens_of(self.quantizer(self.encoder(as_unit(x))).indices)

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        """The code indices as integers (b, n·q), with variance 0 (the encoder is deterministic)."""
        tokens = self.codes(x)
        return Encoding(mean=tokens, variance=torch.zeros(tokens.shape, device=tokens.device))

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        """Images E[x|z] from code sequences (b, n·q) of integers in [0, K) (a float tensor of integers is read as
        one)."""
        tokens = z.round().long() if z.is_floating_point() else z.long()
        if tokens.dim() != 2 or tokens.shape[1] != self.latent.length:
            raise ConfigError(f"codes must be (b, {self.latent.length}) indices, got {tuple(z.shape)}")
        exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch 2.6 and later
        traced = torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting()
        if not traced and tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.quantizer.codebook_size):
            raise ConfigError(f"code indices must lie in [0, {self.quantizer.codebook_size - 1}]")
        indices = indices_of(tokens, depth=self.quantizer.depth, height=self.grid[0], width=self.grid[1])
        return self.likelihood.mean(full_precision(self.decoder(self.quantizer.lookup(indices))))

    def coding_refusal(self) -> str | None:
        return None

    def walk(
        self, n: int, *, x: Tensor | None, choose: Choose, prior: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor:
        """The codes chosen under the uniform prior p(c) = 1/K (one law over all n·q of them), or, given ``prior`` (a
        callable from code sequences (b, i) to logits (b, i, K), a learned prior's), one position at a time, each law
        given the codes before it; given the images x, each law carries x's code (q(c|x) is one-hot)."""
        code = None if x is None else self.codes(x)  # (b, n·q)
        size, length = self.quantizer.codebook_size, self.latent.length
        if prior is None:
            uniform = Categorical(logits=torch.zeros(n, length, size, device=next(self.parameters()).device))
            tokens = choose(LayerLaw(name="codes", prior=uniform, code=code))
        else:
            tokens = torch.zeros(n, length, dtype=torch.long, device=next(self.parameters()).device)
            for i in range(length):  # the same prefix passes coding and decoding: the same numbers
                logits = full_precision(prior(tokens[:, : i + 1])[:, i])  # (b, K): reads the codes before i only
                law = LayerLaw(
                    name=f"codes/{i}", prior=Categorical(logits=logits), code=None if code is None else code[:, i]
                )
                tokens[:, i] = choose(law)
        indices = indices_of(tokens, depth=self.quantizer.depth, height=self.grid[0], width=self.grid[1])
        return full_precision(self.decoder(self.quantizer.lookup(indices)))

    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        raise ConfigError(
            "a VQ model needs a prior over its codes to sample: train one on this run (configs/vq_prior_quickstart.yaml"
            " or vq_prior_fashion_mnist.yaml, with --model.model.init_args.first_stage set to this run) and sample "
            "from the prior's run"
        )

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        return self.decode(self.codes(x))

    @torch.no_grad()
    def pictures(self, x: Tensor, **options) -> dict[str, Tensor]:
        """Reconstructions, and how the codes of x use the codebook, as a heat map (log counts, one panel per
        codebook)."""
        grids = super().pictures(x, **options)
        usage = CodeUsage(codebook_size=self.quantizer.codebook_size, depth=self.quantizer.depth).to(x.device)
        usage.update(self.codes(x))
        grids["code_usage"] = heat_map(usage.counts)
        return grids
