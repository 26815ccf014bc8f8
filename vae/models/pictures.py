"""What the latent space learned, as image grids (uint8-ready float tensors in [0, 1], via make_grid), labelled
where a reader needs to know what a row or a column is (``labelled``): the row labels to the right of the grid, the
column labels and a caption below it, so that every image keeps its place from the top-left corner.

    samples          decodes of z drawn from the prior with fixed noise
    reconstructions  rows of inputs, each followed by the row of their reconstructions
    traversals       one row per latent dimension, the most informative first (ranked by KL): the posterior
                     mean of one image with that dimension swept across its prior range (1 % to 99 %); rows named
                     with their dimension and KL, columns with the values swept
    interpolations   one row per pair of images: the first image, decodes along the straight line between their
                     posterior means (t = 0 … 1), the second image
    factor_traversals  for data with known factors: one row per factor, sweeping the latent dimension that carries
                     the most information about it (``vae.commands.evaluate.informative_dimensions``)
    latent_scatter   the latent means of a split coloured by label (a 2-D latent as it is; else PCA, or UMAP where
                     umap-learn is installed)
    manifold         for a 2-D latent: decodes of a grid of z over the prior's 5 % to 95 % quantiles
    heat_map         for quantized codes: how often each code of the codebook was used

and for a hierarchy (in place of traversals and interpolations, which need one latent vector):

    temperatures     one row of samples per temperature (1.0 down to 0.4): each layer's prior spread scaled
    layers           inputs, then their reconstructions keeping the posterior of the top k layers (k = L … 1) and
                     drawing the layers below from the prior: what each layer encodes

Axes: b batch, c channels, h height, w width, d latent dimensions, s steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch
from einops import rearrange, repeat
from torch import Tensor
from torch.distributions import Distribution
from torchvision.utils import make_grid

from vae.core.errors import ConfigError
from vae.core.pixels import as_unit


class Drawable(Protocol):
    """What the pictures ask of a model: the part of the model interface (``vae.models.base``) they draw with. The
    interface's ``pictures`` draws with these functions, so this module stands below it and does not import it."""

    layer_names: tuple[str, ...]

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor: ...

    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor: ...

    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Any: ...

    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor: ...

    def prior_distribution(self) -> Distribution | None: ...

    def pictures(self, x: Tensor, **settings: Any) -> dict[str, Tensor]: ...


PAD = 2  # pixels between the images of a grid


def grid(images: Tensor, nrow: int) -> Tensor:
    return make_grid(images.float().cpu().clamp(0, 1), nrow=nrow, padding=PAD, pad_value=0.5)


def labelled(
    picture: Tensor,
    *,
    cell: tuple[int, int],
    rows: list[str] | None = None,
    columns: list[str] | None = None,
    caption: str | None = None,
) -> Tensor:
    """A grid (3, H, W) with its labels drawn beside it: ``rows`` to the right of each row, ``columns`` below each
    column, ``caption`` under them; white margins, the grid itself untouched in the top-left corner. ``cell``: the
    (height, width) of one image of the grid."""
    from PIL import Image, ImageDraw

    font = label_font()
    height, width = picture.shape[-2:]
    cell_h, cell_w = cell[0] + PAD, cell[1] + PAD

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = font.getbbox(text)
        return right - left, bottom - top

    text_h = max(size("Ag0")[1], 8)
    right = max((size(text)[0] for text in rows or []), default=-6) + 6
    below = (text_h + 4 if columns else 0) + (text_h + 4 if caption else 0)
    canvas = Image.new("RGB", (width + max(right, 0), height + below), "white")  # the labels, drawn around it
    draw = ImageDraw.Draw(canvas)
    ink = (40, 40, 40)
    for r, text in enumerate(rows or []):
        draw.text((width + 3, PAD + r * cell_h + (cell_h - PAD - text_h) // 2), text, fill=ink, font=font)
    for c, text in enumerate(columns or []):
        draw.text((PAD + c * cell_w + (cell_w - PAD - size(text)[0]) // 2, height + 2), text, fill=ink, font=font)
    if caption:
        draw.text((PAD, height + below - text_h - 3), caption, fill=ink, font=font)
    out = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255
    out[:, :height, :width] = picture  # the grid itself, at full precision
    return out


@functools.cache
def label_font() -> Any:
    """The labels' font: DejaVu Sans at 10 px (it ships with matplotlib), else Pillow's own."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), 10)
    except (ImportError, OSError, ValueError):
        try:
            return ImageFont.load_default(size=10)
        except (TypeError, OSError):  # Pillow without FreeType: its small bitmap font
            return ImageFont.load_default()


def value(number: float, spread: float = 1.0) -> str:
    """A short label for a number on a scale of ``spread`` (the distance between neighbouring labels): as many
    decimals as tell neighbours apart (one for steps of 0.1 to 1), never "-0"."""
    decimals = max(0, min(3, -math.floor(math.log10(max(abs(spread), 1e-3)))))
    text = f"{number:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@contextmanager
def seeded(vae: Drawable, seed: int) -> Iterator[None]:
    """A context in which torch's random draws on the model's device start from ``seed`` (and are restored after)."""
    device = next(vae.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def samples(vae: Drawable, *, num: int = 64, nrow: int = 8, seed: int = 0, temperature: float = 1.0) -> Tensor:
    with seeded(vae, seed):
        return grid(vae.sample(num, temperature=temperature), nrow)


@torch.no_grad()
def temperatures(
    vae: Drawable,
    *,
    values: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.4),
    nrow: int = 8,
    seed: int = 0,
) -> Tensor:
    """One row of ``nrow`` samples per temperature, each row from the same seed."""
    rows = []
    for t in values:
        with seeded(vae, seed):
            rows.append(vae.sample(nrow, temperature=t))
    picture = grid(torch.cat(rows), nrow)
    return labelled(picture, cell=rows[0].shape[-2:], rows=[f"T = {t:g}" for t in values], caption="temperature")


@torch.no_grad()
def layers(vae: Drawable, x: Tensor, *, nrow: int = 8, seed: int = 0) -> Tensor:
    """Row 0: the inputs; row k: reconstructions keeping the top L − k + 1 layers' posteriors (the rest drawn from
    the prior)."""
    x = as_unit(x[:nrow])
    rows, names = [x], ["input"]
    with seeded(vae, seed):
        for keep in range(len(vae.layer_names), 0, -1):
            rows.append(vae.reconstruct(x, keep=keep))
            names.append(f"top {keep}: {', '.join(vae.layer_names[:keep])}")
    return labelled(grid(torch.cat(rows), len(x)), cell=x.shape[-2:], rows=names)


@torch.no_grad()
def reconstructions(vae: Drawable, x: Tensor, *, nrow: int = 8, context: Tensor | None = None) -> Tensor:
    """x: (r·nrow, c, h, w) (with their ``context``); each row of inputs is followed by the row of their
    reconstructions."""
    x = as_unit(x)
    pairs = torch.stack([x, vae.reconstruct(x, context=context)])  # (2, n, c, h, w)
    picture = grid(rearrange(pairs, "two (r n) c h w -> (r two n) c h w", n=nrow), nrow)
    return labelled(picture, cell=x.shape[-2:], rows=["input", "reconstruction"] * (len(x) // nrow))


def ranked_dimensions(kl_per_dim: Tensor) -> list[int]:
    """Latent dimensions by decreasing KL (the most informative first)."""
    return torch.argsort(kl_per_dim, descending=True).tolist()


@torch.no_grad()
def prior_range(vae: Drawable, *, low: float = 0.01, high: float = 0.99, num: int = 20_000, seed: int = 0) -> Tensor:
    """Each code dimension's prior quantiles (low, high), (2, d), from the model's ``prior_distribution``: ±2.33
    for N(0, 1), learned priors alike."""
    prior = vae.prior_distribution()
    if prior is None:
        raise ConfigError(f"{type(vae).__name__} has no prior over its code: no prior range to sweep")
    with seeded(vae, seed):
        z = prior.sample(torch.Size([num]))  # (num, d)
    return torch.quantile(z, torch.tensor([low, high], device=z.device, dtype=z.dtype), dim=0)


@torch.no_grad()
def sweeps(vae: Drawable, x: Tensor, dims: list[int], *, steps: int = 9) -> tuple[Tensor, Tensor]:
    """One row per dimension in ``dims``: ``steps`` values across its prior range, the others held at the posterior
    mean of the first image of x; the images (len(dims)·steps, c, h, w) and the values swept (len(dims), steps)."""
    base = vae.encode(as_unit(x[:1])).mean[0]  # (d,)
    bounds = prior_range(vae)
    rows, values = [], []
    for d in dims:
        z = repeat(base, "d -> s d", s=steps).clone()
        z[:, d] = torch.linspace(float(bounds[0, d]), float(bounds[1, d]), steps, device=z.device)
        rows.append(vae.decode(z))
        values.append(z[:, d].cpu())
    return torch.cat(rows), torch.stack(values)


def swept(
    images: Tensor, values: Tensor, names: list[str], *, steps: int, caption: str = "the value each column sets"
) -> Tensor:
    """The grid of ``sweeps`` labelled: each row's name; below the columns, the values they set (where every row
    sweeps the same range), else each row's range beside its name."""
    spread = float((values[:, -1] - values[:, 0]).abs().max()) / max(steps - 1, 1)
    labels = [[value(float(v), spread) for v in row] for row in values]
    shared = float((values - values[:1]).abs().max()) <= spread / 4  # every row sweeps about the same values
    if not shared:
        names = [f"{name}  [{row[0]}, {row[-1]}]" for name, row in zip(names, labels)]
    columns = labels[0] if shared else None
    return labelled(grid(images, steps), cell=images.shape[-2:], rows=names, columns=columns, caption=caption)


@torch.no_grad()
def traversals(vae: Drawable, x: Tensor, kl_per_dim: Tensor | None = None, *, dims: int = 8, steps: int = 9) -> Tensor:
    """Rows: the ``dims`` most informative dimensions (by ``kl_per_dim``, named with it; in their order without it);
    columns: ``steps`` values across the prior range, the others held at the posterior mean of the first image of x."""
    order = list(range(vae.encode(as_unit(x[:1])).mean.shape[1]))
    if kl_per_dim is not None:
        order = ranked_dimensions(kl_per_dim)
    order = order[:dims]
    images, values = sweeps(vae, x, order, steps=steps)
    kl = None if kl_per_dim is None else kl_per_dim.tolist()
    names = [f"z{d}" + ("" if kl is None else f"  KL {kl[d]:.2f}") for d in order]
    return swept(images, values, names, steps=steps, caption="traversals: z set to each column's value")


@torch.no_grad()
def factor_traversals(
    vae: Drawable, x: Tensor, dims: list[int], *, steps: int = 9, factors: list[str] | None = None
) -> Tensor:
    """Rows: for each factor in turn (named ``factors``), the sweep of the latent dimension ``dims[k]`` that carries
    it best."""
    images, values = sweeps(vae, x, dims, steps=steps)
    factors = factors or [f"factor {k}" for k in range(len(dims))]
    names = [f"{name} → z{d}" for name, d in zip(factors, dims)]
    return swept(images, values, names, steps=steps)


@torch.no_grad()
def interpolations(vae: Drawable, x: Tensor, *, pairs: int = 4, steps: int = 10) -> Tensor:
    """Rows: image 2i of x, decodes along the line between the posterior means of images 2i and 2i + 1 (t = 0 … 1),
    and image 2i + 1: the end points are the images themselves, beside their decodes."""
    x = as_unit(x[: 2 * pairs])
    means = vae.encode(x).mean  # (2·pairs, d)
    start, end = means[0::2], means[1::2]  # (pairs, d) each
    t = torch.linspace(0, 1, steps, device=means.device)
    z = start[:, None, :] + t[None, :, None] * (end - start)[:, None, :]  # (pairs, s, d)
    decoded = rearrange(vae.decode(rearrange(z, "b s d -> (b s) d")), "(b s) c h w -> b s c h w", s=steps)
    rows = torch.cat([x[0::2, None].to(decoded), decoded, x[1::2, None].to(decoded)], dim=1)  # (pairs, s + 2, ...)
    columns = ["image", *(value(float(v), 1 / max(steps - 1, 1)) for v in t), "image"]
    picture = grid(rearrange(rows, "b s c h w -> (b s) c h w"), steps + 2)
    return labelled(picture, cell=x.shape[-2:], columns=columns, caption="decoded at t along the line between codes")


@torch.no_grad()
def all_pictures(
    vae: Drawable,
    x: Tensor,
    ranking: Tensor | None = None,
    *,
    context: Tensor | None = None,
    num_samples: int = 64,
    nrow: int = 8,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Every picture of a model (``LatentVariableModel.pictures``), for a batch x of at least 2 images (with its
    ``context``: labels for a conditional model); reconstructions use whole rows of ``nrow``. ``ranking`` orders the
    dimensions of a single latent vector to traverse (the KL per dimension, or any informativeness score)."""
    return vae.pictures(x, context=context, ranking=ranking, nrow=nrow, seed=seed, num_samples=num_samples)


def projection(means: Tensor, method: str = "auto") -> tuple[Tensor, str]:
    """2-D coordinates of latent means (n, d): the means themselves for d ≤ 2; else UMAP (``method`` "umap", or
    "auto" where umap-learn is installed) or PCA (the top two principal components, by SVD)."""
    means = means.double()
    if means.shape[1] <= 2:
        points = means if means.shape[1] == 2 else torch.cat([means, torch.zeros_like(means)], dim=1)
        return points, "z"
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError:
            if method == "umap":
                raise ConfigError("UMAP needs the umap-learn package: pip install umap-learn") from None
        else:
            points = umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(means.numpy())  # seeded
            return torch.from_numpy(points).double(), "UMAP"
    centred = means - means.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, "PCA"


def latent_scatter(means: Tensor, labels: Tensor | None = None, *, method: str = "auto") -> Tensor:
    """The latent means of a split (n, d) as a scatter plot coloured by integer label (n,), an RGB image (3, H, W) in
    [0, 1]: the means themselves for a 2-D latent, else their 2-D projection (``projection``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, how = projection(means.cpu(), method)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    coloured = labels is not None and labels.dim() == 1 and not labels.is_floating_point()
    colours = {"c": labels.cpu().numpy(), "cmap": "tab10"} if coloured else {}
    scatter = ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7, **colours)
    if coloured:
        fig.colorbar(scatter, ax=ax, label="label")
    axis = {"z": "z", "PCA": "PC", "UMAP": "UMAP "}[how]
    ax.set(xlabel=f"{axis}1", ylabel=f"{axis}2")
    ax.set_title(f"latent means of {len(points)} images ({means.shape[1]}-D{'' if how == 'z' else ', ' + how})")
    return figure_image(fig)


def figure_image(fig: Any) -> Tensor:
    """A matplotlib figure as an RGB image (3, H, W) in [0, 1]; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    image = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return rearrange(image, "h w c -> c h w").float() / 255


def curves(x: Tensor, ys: dict[str, Tensor], *, xlabel: str, ylabel: str, title: str) -> Tensor:
    """Curves y(x) on one axis, one per named tensor of ``ys`` (each shaped as x), as an RGB image (3, H, W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, y in ys.items():
        ax.plot(x.double().cpu().numpy(), y.double().cpu().numpy(), label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        ax.legend()
    return figure_image(fig)


@torch.no_grad()
def manifold(vae: Drawable, *, steps: int = 20, low: float = 0.05, high: float = 0.95) -> Tensor:
    """For a 2-D latent: decodes of a ``steps`` × ``steps`` grid of z over the prior's quantiles ``low`` to ``high``
    in each dimension (the standard normal's for models without one prior), z₂ down the rows and z₁ across."""
    device = next(vae.parameters()).device
    prior = vae.prior_distribution()
    if prior is not None and tuple(prior.event_shape) == (2,):  # the model's own prior over its 2-D code
        bounds = prior_range(vae, low=low, high=high)
    else:
        normal = torch.distributions.Normal(0.0, 1.0)
        bounds = repeat(normal.icdf(torch.tensor([low, high])), "two -> two d", d=2).to(device)
    z1 = torch.linspace(float(bounds[0, 0]), float(bounds[1, 0]), steps, device=device)
    z2 = torch.linspace(float(bounds[1, 1]), float(bounds[0, 1]), steps, device=device)  # high at the top
    z = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1)  # (rows, columns, 2): (z1, z2)
    images = vae.decode(rearrange(z, "r c d -> (r c) d"))
    spread = float(z1[-1] - z1[0]) / 2
    columns = [value(float(v), spread) if i in (0, steps // 2, steps - 1) else "" for i, v in enumerate(z1)]
    rows = [f"z2 = {value(float(v), spread)}" if i in (0, steps // 2, steps - 1) else "" for i, v in enumerate(z2)]
    caption = f"z1 across, z2 up: the prior's {low:.0%} to {high:.0%} quantiles"
    return labelled(grid(images, steps), cell=images.shape[-2:], rows=rows, columns=columns, caption=caption)


def heat_map(counts: Tensor, *, cell: int = 8) -> Tensor:
    """How often each code was used, (q, K) counts of q codebooks, as a picture (3, H, W): one panel per codebook,
    the K codes in rows of ⌈√K⌉ cells of ``cell`` pixels, coloured by log(1 + count) on viridis (dark purple: unused;
    yellow: the most used), panels side by side."""
    from matplotlib import colormaps

    depth, size = counts.shape
    side = math.isqrt(size - 1) + 1
    padded = torch.full((depth, side * side), -1.0, dtype=torch.float64)
    padded[:, :size] = counts.double().cpu().log1p()
    top = float(padded.max().clamp_min(1e-12))
    scaled = (padded / top).clamp_min(0).numpy()
    colours = torch.from_numpy(colormaps["viridis"](scaled)[..., :3]).float()  # (q, side², 3)
    colours[padded < 0] = 0.5  # cells past the last code: grey
    panels = rearrange(colours, "q (r c) rgb -> q rgb r c", r=side)
    panels = repeat(panels, "q rgb r c -> q rgb (r y) (c x)", y=cell, x=cell)
    return grid(panels, nrow=depth)
