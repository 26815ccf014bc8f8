"""The pictures: grid layouts, the prior range of traversals, ranking by KL, interpolation end points."""

import numpy as np
import pytest
import torch

from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import LearnedGaussian
from vae.models.pictures import (
    all_pictures,
    interpolations,
    latent_scatter,
    manifold,
    prior_range,
    projection,
    ranked_dimensions,
    reconstructions,
    samples,
    sweeps,
    traversals,
)
from vae.models.vae import VAE

PAD = 2


def tile(grid: torch.Tensor, row: int, col: int, size: int = 28) -> torch.Tensor:
    """The image at (row, col) of a make_grid grid (padding 2)."""
    top, left = PAD + row * (size + PAD), PAD + col * (size + PAD)
    return grid[:, top : top + size, left : left + size]


@pytest.fixture
def vae():
    return VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(16,)), likelihood=Bernoulli()).eval()


def test_sample_grid_is_seeded(vae):
    a, b = samples(vae, num=16, nrow=4, seed=3), samples(vae, num=16, nrow=4, seed=3)
    assert a.shape == (3, 4 * 30 + 2, 4 * 30 + 2) and torch.equal(a, b)
    assert not torch.equal(a, samples(vae, num=16, nrow=4, seed=4))


def test_reconstructions_put_each_input_row_above_its_outputs(vae):
    x = torch.rand(8, 1, 28, 28)
    grid = reconstructions(vae, x, nrow=4)
    assert grid.shape[1] == 4 * 30 + 2  # 2 rows of inputs, 2 of reconstructions
    torch.testing.assert_close(tile(grid, 0, 1)[0], x[1, 0])
    torch.testing.assert_close(tile(grid, 2, 0)[0], x[4, 0])
    torch.testing.assert_close(tile(grid, 1, 1)[0], vae.reconstruct(x[1:2])[0, 0])


def test_traversals_sweep_the_prior_range_of_the_most_informative_dimensions(vae):
    low, high = prior_range(vae)
    assert torch.allclose(low, torch.full((4,), -2.326), atol=0.1) and torch.allclose(high, -low, atol=0.15)
    learned = VAE(
        image_shape=(1, 28, 28),
        latent_dim=4,
        network=MLPNet(hidden_dims=(16,)),
        likelihood=Bernoulli(),
        prior=LearnedGaussian(),
    )
    with torch.no_grad():
        learned.latent.prior.mean.fill_(5.0)
    assert (prior_range(learned)[0] > 2.0).all()  # the learned prior's range, not N(0, 1)'s
    assert ranked_dimensions(torch.tensor([0.1, 3.0, 0.0, 1.0])) == [1, 3, 0, 2]


def test_interpolations_start_and_end_at_the_encoded_images_shown_beside_them(vae):
    """Each row: image 2i, the decodes from its code (t = 0) to image 2i + 1's (t = 1), then image 2i + 1; the
    columns are labelled below the grid (the grid itself keeps its place at the top left)."""
    x = torch.rand(4, 1, 28, 28)
    grid = interpolations(vae, x, pairs=2, steps=5)
    means = vae.posterior(x).mean
    torch.testing.assert_close(tile(grid, 0, 0)[0], x[0, 0])  # the end point itself
    torch.testing.assert_close(tile(grid, 0, 1)[0], vae.decode(means[0:1])[0, 0])
    torch.testing.assert_close(tile(grid, 1, 5)[0], vae.decode(means[3:4])[0, 0])
    torch.testing.assert_close(tile(grid, 1, 6)[0], x[3, 0])
    assert grid.shape[2] == 2 + 7 * 30 and grid.shape[1] > 2 + 2 * 30  # 7 columns; their labels below
    assert (grid[:, 2 + 2 * 30 :, :] < 0.5).any()  # the column labels' text, below the grid


def test_traversal_rows_are_named_by_dimension_and_kl_and_sorted_by_it(vae):
    """The labels are drawn beside the grid: its right margin holds a row label per dimension, the bottom one the
    values swept; the rows are the dimensions by decreasing KL."""
    x = torch.rand(2, 1, 28, 28)
    kl = torch.tensor([0.1, 3.0, 0.0, 1.0])
    picture = traversals(vae, x, kl, dims=3, steps=5)
    images, _ = sweeps(vae, x, [1, 3, 0], steps=5)
    torch.testing.assert_close(tile(picture, 2, 4)[0], images[14, 0])  # row 2: dimension 0, the last value
    width, height = 2 + 5 * 30, 2 + 3 * 30
    assert picture.shape[1] > height and picture.shape[2] > width  # labels: right of the rows, below the columns
    right, below = picture[:, :height, width:], picture[:, height:, :width]
    assert (right < 0.5).any() and (below < 0.5).any()  # dark text on the white margins
    plain = traversals(vae, x, None, dims=2, steps=5)  # without KLs: the dimensions in their order
    torch.testing.assert_close(tile(plain, 1, 0)[0], sweeps(vae, x, [1], steps=5)[0][0, 0])


def test_all_pictures(vae):
    grids = all_pictures(vae, torch.rand(16, 1, 28, 28), torch.rand(4), num_samples=16, nrow=4)
    assert set(grids) == {"samples", "reconstructions", "traversals", "interpolations"}
    top = grids["traversals"][:, : 4 * 30 + 2, : 9 * 30 + 2]  # one row per latent dimension (4), 9 values each
    assert (top == 0.5).any() and grids["traversals"].shape[1] > 4 * 30 + 2  # the grid, then its column labels


def test_the_manifold_decodes_a_grid_over_the_prior_quantiles_z1_across_and_z2_down():
    torch.manual_seed(0)
    vae = VAE(image_shape=(1, 28, 28), latent_dim=2, network=MLPNet(hidden_dims=(16,)), likelihood=Bernoulli()).eval()
    with torch.no_grad():
        for parameter in vae.network.decoder.parameters():
            parameter.mul_(8)  # decodes that differ clearly from one z to the next
    picture = manifold(vae, steps=5)
    assert picture.shape[1] > 2 + 5 * 30 and picture.shape[2] > 2 + 5 * 30  # z2's labels right, z1's below
    bounds = prior_range(vae, low=0.05, high=0.95)  # the quantiles it sweeps, ±1.645 for N(0, 1)
    torch.testing.assert_close(bounds[1], torch.full((2,), 1.645), rtol=0, atol=0.03)
    z1, z2 = (torch.linspace(float(bounds[0, d]), float(bounds[1, d]), 5) for d in range(2))
    tiles = {(row, column): tile(picture, row, column)[0] for row in range(5) for column in range(5)}
    for (row, column), image in tiles.items():
        z = torch.stack([z1[column], z2[4 - row]])[None]  # z1 across, z2 down (high at the top)
        torch.testing.assert_close(image, vae.decode(z)[0, 0], rtol=0, atol=1e-5)  # batched vs alone: float32
    assert (tiles[0, 0] - tiles[4, 4]).abs().max() > 0.1 and (tiles[0, 4] - tiles[4, 0]).abs().max() > 0.1


def test_the_scatter_projects_onto_the_principal_axes():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    coords = torch.randn(400, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1, 0.1])
    means = coords @ basis.T + 3.0  # most spread along basis[:, 0], then basis[:, 1]
    points, how = projection(means, "pca")
    assert how == "PCA"
    centred = (means - means.mean(dim=0)).numpy()
    _, _, v = np.linalg.svd(centred, full_matrices=False)  # numpy's principal axes, the reference
    expected = torch.from_numpy(centred @ v[:2].T)
    torch.testing.assert_close(points.abs(), expected.abs(), rtol=0, atol=1e-8)  # up to each axis's sign
    assert abs(float(torch.from_numpy(v[0]) @ basis[:, 0])) > 0.99  # the axis of most spread is found
    two = torch.randn(50, 2, dtype=torch.float64)
    assert projection(two)[0].equal(two) and projection(two)[1] == "z"  # a 2-D latent is drawn as it is
    image = latent_scatter(means.float(), torch.arange(400) % 10, method="pca")
    assert image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
