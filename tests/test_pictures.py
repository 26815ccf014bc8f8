"""The pictures: grid layouts, the prior range of traversals, ranking by KL, interpolation end points."""

import pytest
import torch

from vae.likelihoods import Bernoulli
from vae.model import VAE
from vae.nets import MLPNet
from vae.pictures import all_pictures, interpolations, prior_range, ranked_dimensions, reconstructions, samples
from vae.priors import LearnedGaussian

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


def test_interpolations_start_and_end_at_the_encoded_images(vae):
    x = torch.rand(4, 1, 28, 28)
    grid = interpolations(vae, x, pairs=2, steps=5)
    means = vae.posterior(x).mean
    torch.testing.assert_close(tile(grid, 0, 0)[0], vae.decode(means[0:1])[0, 0])
    torch.testing.assert_close(tile(grid, 1, 4)[0], vae.decode(means[3:4])[0, 0])


def test_all_pictures(vae):
    grids = all_pictures(vae, torch.rand(16, 1, 28, 28), torch.rand(4), num_samples=16, nrow=4)
    assert set(grids) == {"samples", "reconstructions", "traversals", "interpolations"}
    assert grids["traversals"].shape[1] == 4 * 30 + 2  # one row per latent dimension (4)
