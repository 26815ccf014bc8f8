"""Encoder/decoder shapes for every supported image size, clear errors otherwise, bounded log-variance."""

import pytest
import torch
from torch import nn

from vae.errors import ConfigError
from vae.latents import GaussianLatent
from vae.nets import LOGVAR_BOUND, ConvNet, MLPNet
from vae.priors import StandardNormal

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
NETWORKS = [ConvNet(channels=(8, 16), hidden_dim=32), MLPNet(hidden_dims=(64, 32))]


def posterior_head(encoder, image_shape, latent_dim):
    """The latent layer the VAE puts on an encoder's features: q(z|x)'s moments from ``latent.moments``."""
    head = nn.Linear(encoder.out_features, 2 * latent_dim)
    return GaussianLatent(name="z", shape=(latent_dim,), head=head, prior=StandardNormal(), image_shape=image_shape)


@pytest.mark.parametrize("image_shape", SHAPES)
@pytest.mark.parametrize("network", NETWORKS, ids=["conv", "mlp"])
def test_encoder_and_decoder_shapes(network, image_shape):
    encoder = network.encoder(image_shape=image_shape)
    decoder = network.decoder(image_shape=image_shape, latent_dim=7)
    features = encoder(torch.rand(5, *image_shape))
    assert features.shape == (5, encoder.out_features)
    moments = posterior_head(encoder, image_shape, 7).moments(features)
    assert moments.mean.shape == moments.logvar.shape == (5, 7)
    assert decoder(moments.mean).shape == (5, *image_shape)


def test_conv_net_with_more_stages():
    network = ConvNet(channels=(8, 16, 32), hidden_dim=16)
    x = torch.rand(2, 3, 64, 64)
    encoder = network.encoder(image_shape=(3, 64, 64))
    latent = posterior_head(encoder, (3, 64, 64), 4)
    assert network.decoder(image_shape=(3, 64, 64), latent_dim=4)(latent.moments(encoder(x)).mean).shape == x.shape


@pytest.mark.parametrize("image_shape", [(1, 30, 30), (3, 28, 26)])
def test_conv_net_rejects_sizes_it_cannot_take(image_shape):
    with pytest.raises(ConfigError, match="divisible by 4"):
        ConvNet().encoder(image_shape=image_shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConvNet(channels=()),
        lambda: ConvNet(hidden_dim=0),
        lambda: MLPNet(hidden_dims=(0,)),
        lambda: ConvNet().decoder(image_shape=(1, 28, 28), latent_dim=0),
    ],
)
def test_bad_network_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize("network", NETWORKS, ids=["conv", "mlp"])
def test_log_variance_stays_bounded_on_extreme_inputs(network):
    encoder = network.encoder(image_shape=(1, 28, 28))
    latent = posterior_head(encoder, (1, 28, 28), 4)
    for scale in (1e4, -1e4, 1e8):
        logvar = latent.moments(encoder(torch.rand(3, 1, 28, 28) * scale)).logvar
        assert logvar.abs().max() <= LOGVAR_BOUND
        assert torch.isfinite(logvar.exp()).all()
