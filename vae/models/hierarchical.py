"""Hierarchical VAEs with top-down inference (LVAE, Sønderby et al. 2016; NVAE, Vahdat & Kautz 2020; VDVAE,
Child 2021): L stochastic layers z_L (top) … z_1 (nearest the data), each a feature map at its own resolution
(a vector is a 1×1 map).

    generative   p(x, z) = p(z_L) Π_{l<L} p(z_l | z_>l) · p(x | z_1..L)
    inference    q(z | x) = q(z_L | x) Π_{l<L} q(z_l | x, z_>l)
    ELBO         E_q[log p(x|z)] − Σ_l E_q[D_KL(q(z_l | x, z_>l) ‖ p(z_l | z_>l))]

A bottom-up pass over x computes features at every resolution; a top-down pass starts from a learned state
and, layer by layer, computes p(z_l | z_>l) and q(z_l | x, z_>l) from the same state (``TopDownLatent``),
draws z_l from q, and adds it to the state; the state, upsampled, is decoded to the likelihood's parameters.
Between resolutions both passes resample with learned weights (``resample``): a stride-f convolution down and
its transpose up, so that a vector layer sees the whole map and writes a spatial pattern into it, where pooling
would see only the map's average and nearest upsampling could write only a constant.
The top layer's prior is the model's ``prior`` (N(0, I) by default; any prior of ``vae.layers.priors``).

Axes: b batch, k samples per example, c channels, h height, w width.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import einsum, repeat
from torch import Tensor, nn
from torch.distributions import Distribution

from vae.core.errors import ConfigError
from vae.core.gaussian import full_precision
from vae.core.kl import KLEstimator
from vae.core.pixels import as_unit
from vae.layers.flows import IAF, ConvIAF
from vae.layers.latents import GaussianLatent, LatentSample, TopDownLatent, cell
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets.conv import Conv, ConvTranspose, down, up
from vae.layers.posteriors import DiagonalGaussian, Moments, Posterior
from vae.layers.priors import Prior, StandardNormal
from vae.models import pictures
from vae.models.base import Capabilities, Choose, Encoding, LatentVariableModel, LayerLaw, ModelOutput, inferring


class ResBlock(nn.Module):
    """h + conv(SiLU(conv(SiLU(h)))), k×k convolutions (3×3 on maps, 1×1 on vectors), the last starting at zero (the
    block starts as identity)."""

    def __init__(self, width: int, kernel_size: int = 3) -> None:
        super().__init__()
        k, pad = kernel_size, kernel_size // 2
        self.body = nn.Sequential(
            nn.SiLU(), Conv(width, width, k, padding=pad), nn.SiLU(), Conv(width, width, k, padding=pad)
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


def residual_blocks(width: int, count: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(width, kernel_size) for _ in range(count)))


def resample(c_in: int, c_out: int, factor: int, *, upward: bool) -> nn.Module:
    """Learned resampling by an integer ``factor``: each f×f patch to one position (a stride-f convolution) or one
    position to an f×f patch (its transpose). From or to 1×1 this is a dense layer over the whole map."""
    kind = ConvTranspose if upward else Conv
    return kind(c_in, c_out, kernel_size=factor, stride=factor)


def check_layout(
    latent_channels: tuple[int, ...],
    resolutions: tuple[int, ...],
    width: int,
    widths: dict[int, int],
    stem_channels: tuple[int, ...],
    blocks: int,
) -> None:
    """One-line errors for a layout no hierarchy can have, each naming the fix."""
    if not latent_channels or min(latent_channels) < 1:
        raise ConfigError(f"HierarchicalVAE latent_channels must be one or more positive sizes, got {latent_channels}")
    if len(resolutions) != len(latent_channels):
        raise ConfigError(
            f"HierarchicalVAE needs one resolution per latent layer: {len(latent_channels)} latent_channels, "
            f"{len(resolutions)} resolutions"
        )
    if min(resolutions) < 1 or list(resolutions) != sorted(resolutions):
        raise ConfigError(
            f"HierarchicalVAE resolutions must be positive and non-decreasing from the top, got {resolutions}"
        )
    for a, b in zip(resolutions[:-1], resolutions[1:]):
        if b % a:
            raise ConfigError(
                f"HierarchicalVAE resolution {a} does not divide the next layer's, {b}: each layer's resolution must "
                f"divide the next one's, e.g. {resolutions[0]} and multiples of it"
            )
    if width < 1 or blocks < 0 or (stem_channels and min(stem_channels) < 1):
        raise ConfigError("HierarchicalVAE width and stem_channels must be positive, blocks 0 or more")
    if widths and min(widths.values()) < 1:
        raise ConfigError(f"HierarchicalVAE widths must be positive, got {widths}")


def working_shape(
    image_shape: tuple[int, ...], stem_channels: tuple[int, ...], resolutions: tuple[int, ...]
) -> tuple[int, int]:
    """(height, width) after the stem, or a one-line error naming the fix."""
    _, height, width = image_shape
    factor = 2 ** (len(stem_channels) + 1)
    if height % factor or width % factor:
        raise ConfigError(
            f"HierarchicalVAE with {len(stem_channels) + 1} stride-2 convolutions needs height and width divisible "
            f"by {factor}, got {height}x{width}: change the model's stem_channels"
        )
    h, w = height // factor, width // factor
    for r in resolutions:
        if h % r or w % (h // r):
            raise ConfigError(
                f"HierarchicalVAE resolution {r} does not divide the working size {h}x{w} ({height}x{width} images "
                f"after the stem): use divisors of {h}"
            )
    return h, w


class HierarchicalVAE(LatentVariableModel):
    """A top-down hierarchical VAE (see the module's docstring).

    latent_channels: the channels of each latent layer, top first (z_L … z_1); a layer at resolution 1 is a vector.
    resolutions: each layer's height, top first, non-decreasing; each divides the working height (below).
    width: the channels of the deterministic state, in both passes.
    widths: other widths at the resolutions named, e.g. ``{1: 256}`` for vector layers wider than the maps (as
        VDVAE's per-resolution widths); the resampling between resolutions changes the channels.
    stem_channels: the stride-2 convolutions from the image to the working resolution, before the last one to
        ``width``: a 28×28 image with ``(32,)`` is worked on at 7×7 (28 → 14 → 7), a 32×32 one with ``()`` at 16×16.
    blocks: residual blocks after each layer in the top-down pass, and at each resolution in the bottom-up pass.
    residual_normal: NVAE's posterior, a shift and scale of the prior: q = N(μ_p + Δμ, (σ_p·Δσ)²).
    likelihood: p(x|z) (``Bernoulli`` by default); prior: the top layer's prior (``StandardNormal`` by default; any
        of ``vae.layers.priors``); kl_estimator / kl_samples: as for ``VAE``, for every layer.
    posterior: the top layer's posterior family, as for ``VAE`` (the diagonal Gaussian by default); a full covariance
        or a flow needs a top layer at resolution 1 (a vector).
    layer_flow: an ``IAF`` (its ``length``, ``hidden`` widths and ``context`` channels) on the posterior of every layer
        below the top, IAF's own setting: masked k×k convolutions over channels, the context map from each layer's
        posterior head; their KLs become Monte Carlo. None (the default): diagonal Gaussians.
    image_shape, context_size: from the data (``LatentVariableModel``).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        latent_channels: tuple[int, ...] = (32, 16, 8),
        resolutions: tuple[int, ...] = (1, 1, 7),
        width: int = 64,
        widths: dict[int, int] | None = None,
        stem_channels: tuple[int, ...] = (32,),
        blocks: int = 1,
        residual_normal: bool = False,
        likelihood: Likelihood | None = None,
        prior: Prior | None = None,
        posterior: Posterior | None = None,
        layer_flow: IAF | None = None,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        latent_channels, resolutions, stem_channels = tuple(latent_channels), tuple(resolutions), tuple(stem_channels)
        widths = dict(widths or {})
        check_layout(latent_channels, resolutions, width, widths, stem_channels, blocks)
        likelihood = Bernoulli() if likelihood is None else likelihood
        prior = StandardNormal() if prior is None else prior
        posterior = DiagonalGaussian() if posterior is None else posterior
        self.record(likelihood=likelihood, prior=prior, posterior=posterior)
        self.likelihood = likelihood
        height, breadth = working_shape(self.image_shape, stem_channels, resolutions)
        self.aspect = breadth // height
        self.resolutions = list(resolutions)

        def width_at(r: int) -> int:
            return widths.get(r, width)

        unused = sorted(set(widths) - {height, *resolutions})
        if unused:
            raise ConfigError(
                f"HierarchicalVAE widths names resolution {unused[0]}, which is in use neither by a layer nor as the "
                f"working height: use the layers' resolutions {sorted(set(resolutions))} or {height}"
            )

        def kernel(r: int) -> int:  # a 3×3 convolution on a 1×1 map uses only its centre
            return 1 if r == 1 and self.aspect == 1 else 3

        # Bottom-up: the stem to the working resolution, then residual blocks at each resolution a layer uses.
        sizes = [self.image_shape[0], *stem_channels, width_at(height)]
        self.stem = nn.Sequential(*(m for a, b in zip(sizes[:-1], sizes[1:]) for m in (down(a, b), nn.SiLU())))
        self.scales = sorted({height, *resolutions}, reverse=True)
        self.encoder_blocks = nn.ModuleList(residual_blocks(width_at(s), blocks, kernel(s)) for s in self.scales)
        steps = list(zip(self.scales[:-1], self.scales[1:]))  # (larger, smaller), from the working resolution up
        self.downsample = nn.ModuleList(resample(width_at(a), width_at(b), a // b, upward=False) for a, b in steps)
        self.upsample = nn.ModuleDict(
            {str(a): resample(width_at(b), width_at(a), a // b, upward=True) for a, b in steps}
        )
        # Top-down: a learned initial state, the layers (top first), residual blocks after each, the output.
        count, top = len(latent_channels), resolutions[0]
        self.initial = nn.Parameter(torch.zeros(width_at(top), top, top * self.aspect))
        names = [f"z{count - i}" for i in range(count)]
        c_top = latent_channels[0]
        self.top = GaussianLatent(
            name=names[0],
            shape=(c_top, top, top * self.aspect),
            head=cell(2 * width_at(top), 2 * c_top, kernel_size=kernel(top)),
            prior=prior,
            image_shape=self.image_shape,
            kl_estimator=kl_estimator,
            kl_samples=kl_samples,
            posterior=posterior,
            features=2 * width_at(top) * top * top * self.aspect,
        )
        self.top_project = Conv(c_top, width_at(top), kernel_size=1)
        context = 0 if layer_flow is None else layer_flow.context_size
        self.below = nn.ModuleList(
            TopDownLatent(
                name=name,
                channels=channels,
                width=width_at(r),
                positions=r * r * self.aspect,
                residual_normal=residual_normal,
                kl_estimator=kl_estimator,
                kl_samples=kl_samples,
                prior_head=cell(width_at(r), 2 * channels + width_at(r), zero_last=True, kernel_size=kernel(r)),
                posterior_head=cell(2 * width_at(r), 2 * channels + context, kernel_size=kernel(r)),
                flow=None
                if layer_flow is None
                else ConvIAF(
                    channels=channels,
                    length=layer_flow.length,
                    hidden=layer_flow.hidden,
                    context=context,
                    kernel_size=kernel(r),
                ),
            )
            for name, channels, r in zip(names[1:], latent_channels[1:], resolutions[1:])
        )
        self.decoder_blocks = nn.ModuleList(residual_blocks(width_at(r), blocks, kernel(r)) for r in self.resolutions)
        self.final_blocks = residual_blocks(width_at(height), blocks)
        out = [width_at(height), *stem_channels[::-1], likelihood.param_channels(self.image_shape[0])]
        ups: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(out[:-1], out[1:])):
            ups += [up(a, b)] + ([nn.SiLU()] if i < len(out) - 2 else [])
        self.output = nn.Sequential(*ups)
        self.working = height
        self.top.resolve(kl_estimator, self.top_posterior)

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        """A checkpoint written by the earlier hierarchy (TopDown), in today's layout, computing what it computed: its
        3×3 convolutions on 1×1 maps become their centres (all a zero-padded 1×1 map ever met), and where the
        resampling was not yet learned (average pooling down, nearest upsampling up) the weights that compute
        exactly those: 1/f² on each channel's own f×f patch down, ones up, no bias."""
        upgraded = dict(state)
        for key, value in self.state_dict(prefix=prefix).items():  # 3×3 on a 1×1 map then, 1×1 now: its centre
            saved = upgraded.get(key)
            if saved is not None and saved.shape[-2:] == (3, 3) and value.shape[-2:] == (1, 1):
                upgraded[key] = saved[..., 1:2, 1:2].clone()
        if any(key.startswith(f"{prefix}downsample.") for key in state):
            return upgraded
        for kind in ("downsample", "upsample"):
            for name, conv in getattr(self, kind).named_children():
                f = conv.kernel_size[0]
                eye = torch.eye(conv.in_channels, dtype=conv.weight.dtype)
                patch = torch.full((f, f), 1.0 / f**2 if kind == "downsample" else 1.0, dtype=conv.weight.dtype)
                upgraded[f"{prefix}{kind}.{name}.weight"] = einsum(eye, patch, "o i, h w -> o i h w")
                upgraded[f"{prefix}{kind}.{name}.bias"] = torch.zeros_like(conv.bias)
        return upgraded

    @property
    def layers(self) -> list[GaussianLatent | TopDownLatent]:
        return [self.top, *self.below]

    @property
    def capabilities(self) -> Capabilities:
        """The code is the top layer's (``encode``), decoded with the layers below at their prior means."""
        return Capabilities(kl_split=self.top.kl_splits, continuous_code=True)

    def prior_distribution(self) -> Distribution:
        """p(z_L), the top layer's prior over its flattened code, event shape (d_L,)."""
        return self.top.prior_distribution(self.top_posterior)

    def networks(self) -> list[nn.Module]:
        return [
            self.stem, *self.encoder_blocks, *self.downsample, *self.upsample.values(), *self.decoder_blocks,
            self.final_blocks, self.output,
        ]  # fmt: skip

    def bottom_up(self, x: Tensor) -> dict[int, Tensor]:
        """The encoder's features at every resolution used, (b, width, r, r·aspect) by resolution r."""
        e = self.encoder_blocks[0](self.stem(x))
        features = {self.scales[0]: e}
        for scale, downsample, block in zip(self.scales[1:], self.downsample, self.encoder_blocks[1:]):
            e = block(downsample(e))
            features[scale] = e
        return features

    def resize(self, h: Tensor, resolution: int) -> Tensor:
        """The top-down state at ``resolution``: itself, or upsampled from the next smaller resolution in use."""
        return h if h.shape[-2] == resolution else self.upsample[str(resolution)](h)

    def start(self, n: int, features: Tensor | None = None) -> Tensor:
        return repeat(self.initial, "c h w -> b c h w", b=n).to(features.dtype if features is not None else None)

    def top_posterior(self, x: Tensor) -> Moments:
        """q(z_L | x)'s moments, flattened (b, d): what a VampPrior on the top layer is made of."""
        e = self.bottom_up(x)[self.resolutions[0]]
        return self.top.moments(torch.cat([self.start(x.shape[0], e), e], dim=1))  # shape, not len: traceable

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        """The top layer's q(z_L | x) (b, d_L): what the layers below are drawn given."""
        moments = self.top_posterior(as_unit(x))
        return Encoding.of(moments)

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None, temperature: float = 0.0) -> Tensor:
        """E[x | z_L] for top-layer codes z (b, d_L), each layer below at its prior mean given the layers above (its
        spread scaled by ``temperature``: 0 by default, so decoding is deterministic)."""
        return self.generate(z.shape[0], top=z, temperature=temperature)

    def decode_state(self, h: Tensor) -> Tensor:
        """The likelihood's parameters from the last top-down state (float32 under autocast)."""
        return full_precision(self.output(self.final_blocks(self.resize(h, self.working))))

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        x = as_unit(x)
        features = self.bottom_up(x)
        if samples > 1:
            features = {r: repeat(e, "b c h w -> (k b) c h w", k=samples) for r, e in features.items()}
        e = features[self.resolutions[0]]
        h = self.start(len(e), e)
        top = self.top(torch.cat([h, e], dim=1), encode=self.top_posterior)
        h = self.decoder_blocks[0](h + self.top_project(top.z.to(h.dtype)))
        latents: dict[str, LatentSample] = {self.top.name: top}
        for layer, resolution, block in zip(self.below, self.resolutions[1:], self.decoder_blocks[1:]):
            h = self.resize(h, resolution)
            latents[layer.name], h = layer(h, features[resolution])
            h = block(h)
        params = self.decode_state(h)
        if samples > 1:
            x = repeat(x, "b c h w -> (k b) c h w", k=samples)
        return ModelOutput(log_px=self.likelihood.log_prob(params, x), latents=latents, params=params, samples=samples)

    def coding_refusal(self) -> str | None:
        if any(layer.flow is not None for layer in self.below):
            return "its layers below the top have IAF posteriors (layer_flow), which do not factorize per dimension"
        return self.top.coding_refusal()

    def walk(self, n: int, *, x: Tensor | None, choose: Choose) -> Tensor:
        """The top-down pass with each layer's z chosen by ``choose`` (HiLLoC's order: from the top, each layer's laws
        given the layers chosen above it)."""
        refusal = self.coding_refusal()
        if refusal is not None:
            raise ConfigError(refusal)
        features = None if x is None else self.bottom_up(as_unit(x))
        h = self.start(n)
        given = None if features is None else torch.cat([h, features[self.resolutions[0]]], dim=1)
        prior, posterior = self.top.laws(given, self.top_posterior)
        z = self.top.unflatten(choose(LayerLaw(name=self.top.name, prior=prior, posterior=posterior)))
        h = self.decoder_blocks[0](h + self.top_project(z.to(h.dtype)))
        for layer, resolution, block in zip(self.below, self.resolutions[1:], self.decoder_blocks[1:]):
            h = self.resize(h, resolution)
            prior, posterior, residual = layer.laws(h, None if features is None else features[resolution])
            z = choose(LayerLaw(name=layer.name, prior=prior, posterior=posterior))
            h = block(layer.descend(h, z, residual))
        return self.decode_state(h)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        features: dict[int, Tensor] | None = None,
        keep: int = 0,
        temperature: float = 1.0,
        top: Tensor | None = None,
    ) -> Tensor:
        """E[x|z] with the top ``keep`` layers at their posterior means given ``features`` (or the top layer at the
        code ``top``, (n, d_L)) and the rest drawn from their priors with the spread scaled by ``temperature``."""
        h = self.start(n)
        if top is not None:
            z = self.top.unflatten(top)
        elif keep > 0 and features is not None:
            e = features[self.resolutions[0]]
            z = self.top.unflatten(self.top.moments(torch.cat([h, e], dim=1)).mean)
        else:
            z = self.top.sample_prior(n, encode=self.top_posterior, temperature=temperature)
        h = self.decoder_blocks[0](h + self.top_project(z))
        for index, (layer, resolution, block) in enumerate(
            zip(self.below, self.resolutions[1:], self.decoder_blocks[1:])
        ):
            h = self.resize(h, resolution)
            given = features[resolution] if features is not None and index + 1 < keep else None
            h = block(layer.generate(h, given, temperature=temperature))
        return self.likelihood.mean(self.decode_state(h))

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        return self.generate(n, temperature=temperature)

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        keep = len(self.layers) if keep is None else keep
        return self.generate(len(x), features=self.bottom_up(as_unit(x)), keep=keep)

    @torch.no_grad()
    def pictures(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        ranking: Tensor | None = None,
        nrow: int = 8,
        seed: int = 0,
        num_samples: int = 64,
    ) -> dict[str, Tensor]:
        """Samples, reconstructions, traversals and interpolations of the top layer's code, rows of samples by
        temperature, and what each layer encodes."""
        grids = super().pictures(x, ranking=ranking, nrow=nrow, seed=seed, num_samples=num_samples)
        grids["temperatures"] = pictures.temperatures(self, nrow=nrow, seed=seed)
        grids["layers"] = pictures.layers(self, x, nrow=min(nrow, len(x)), seed=seed)
        return grids
