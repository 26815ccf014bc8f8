"""Encoder/decoder shapes for every supported image size, clear errors otherwise, bounded log-variance."""

import pytest
import torch

from vae.errors import ConfigError
from vae.nets import LOGVAR_BOUND, ConvNet, MLPNet

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
NETWORKS = [ConvNet(channels=(8, 16), hidden_dim=32), MLPNet(hidden_dims=(64, 32))]


@pytest.mark.parametrize("image_shape", SHAPES)
@pytest.mark.parametrize("network", NETWORKS, ids=["conv", "mlp"])
def test_encoder_and_decoder_shapes(network, image_shape):
    encoder = network.encoder(image_shape=image_shape, latent_dim=7)
    decoder = network.decoder(image_shape=image_shape, latent_dim=7)
    moments = encoder(torch.rand(5, *image_shape))
    assert moments.mean.shape == moments.logvar.shape == (5, 7)
    assert decoder(moments.mean).shape == (5, *image_shape)


def test_conv_net_with_more_stages():
    network = ConvNet(channels=(8, 16, 32), hidden_dim=16)
    x = torch.rand(2, 3, 64, 64)
    assert (
        network.decoder(image_shape=(3, 64, 64), latent_dim=4)(
            network.encoder(image_shape=(3, 64, 64), latent_dim=4)(x).mean
        ).shape
        == x.shape
    )


@pytest.mark.parametrize("image_shape", [(1, 30, 30), (3, 28, 26)])
def test_conv_net_rejects_sizes_it_cannot_take(image_shape):
    with pytest.raises(ConfigError, match="divisible by 4"):
        ConvNet().encoder(image_shape=image_shape, latent_dim=4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConvNet(channels=()),
        lambda: ConvNet(hidden_dim=0),
        lambda: MLPNet(hidden_dims=(0,)),
        lambda: ConvNet().encoder(image_shape=(1, 28, 28), latent_dim=0),
    ],
)
def test_bad_network_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize("network", NETWORKS, ids=["conv", "mlp"])
def test_log_variance_stays_bounded_on_extreme_inputs(network):
    encoder = network.encoder(image_shape=(1, 28, 28), latent_dim=4)
    for scale in (1e4, -1e4, 1e8):
        logvar = encoder(torch.rand(3, 1, 28, 28) * scale).logvar
        assert logvar.abs().max() <= LOGVAR_BOUND
        assert torch.isfinite(logvar.exp()).all()
