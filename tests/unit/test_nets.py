"""Encoder/decoder shapes for every supported image size, clear errors otherwise, bounded log-variance."""

import pytest
import torch
from torch import nn

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND
from vae.layers.latents import GaussianLatent
from vae.layers.nets.conv import Conv, ConvNet, ConvTranspose
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import StandardNormal
from vae.models.hierarchical import HierarchicalVAE
from vae.models.vae import VAE

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
NETWORKS = [ConvNet(channels=(8, 16), hidden_dim=32), MLPNet(hidden_dims=(64, 32))]


def posterior_head(encoder, image_shape, latent_dim):
    """The latent layer the VAE puts on an encoder's features: q(z|x)'s moments from ``latent.moments``."""
    head = nn.Linear(encoder.out_features, 2 * latent_dim)
    return GaussianLatent(name="z", shape=(latent_dim,), head=head, prior=StandardNormal(), image_shape=image_shape)


@pytest.mark.parametrize("image_shape", SHAPES)
@pytest.mark.parametrize("network", NETWORKS, ids=["conv", "mlp"])
def test_encoder_and_decoder_shapes(network, image_shape):
    encoder = network.make_encoder(image_shape=image_shape)
    decoder = network.make_decoder(image_shape=image_shape, latent_dim=7)
    features = encoder(torch.rand(5, *image_shape))
    assert features.shape == (5, encoder.out_features)
    moments = posterior_head(encoder, image_shape, 7).moments(features)
    assert moments.mean.shape == moments.logvar.shape == (5, 7)
    assert decoder(moments.mean).shape == (5, *image_shape)


def test_conv_net_with_more_stages():
    network = ConvNet(channels=(8, 16, 32), hidden_dim=16)
    x = torch.rand(2, 3, 64, 64)
    encoder = network.make_encoder(image_shape=(3, 64, 64))
    latent = posterior_head(encoder, (3, 64, 64), 4)
    assert network.make_decoder(image_shape=(3, 64, 64), latent_dim=4)(latent.moments(encoder(x)).mean).shape == x.shape


@pytest.mark.parametrize("image_shape", [(1, 30, 30), (3, 28, 26)])
def test_conv_net_rejects_sizes_it_cannot_take(image_shape):
    with pytest.raises(ConfigError, match="divisible by 4"):
        ConvNet().make_encoder(image_shape=image_shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConvNet(channels=()),
        lambda: ConvNet(hidden_dim=0),
        lambda: MLPNet(hidden_dims=(0,)),
        lambda: ConvNet().make_decoder(image_shape=(1, 28, 28), latent_dim=0),
    ],
)
def test_bad_network_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize(
    "make",
    [lambda: ConvNet(channels=(8, 16), hidden_dim=32), lambda: MLPNet(hidden_dims=(64, 32))],
    ids=["conv", "mlp"],
)
def test_a_network_binds_once_making_both_halves(make):
    """``bind`` makes the encoder for the images and the decoder from codes to the likelihood's channels; a network
    given to a second model is a one-line error, not two models sharing weights. What is no network is refused."""
    network = make()
    assert network.bind(image_shape=(1, 28, 28), code_dim=7, out_channels=2) is network
    assert network.features == network.encoder.out_features == 32
    assert network.encoder(torch.rand(3, 1, 28, 28)).shape == (3, 32)
    assert network.decoder(torch.randn(3, 7)).shape == (3, 2, 28, 28)
    with pytest.raises(ConfigError, match="already part of a model: give each model a network of its own") as error:
        VAE(image_shape=(1, 28, 28), latent_dim=7, network=network)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="VAE's network must be an encoder/decoder pair .*got HierarchicalVAE"):
        VAE(image_shape=(1, 28, 28), network=HierarchicalVAE(image_shape=(1, 28, 28)))


@pytest.mark.parametrize("network", NETWORKS, ids=["conv", "mlp"])
def test_log_variance_stays_bounded_on_extreme_inputs(network):
    encoder = network.make_encoder(image_shape=(1, 28, 28))
    latent = posterior_head(encoder, (1, 28, 28), 4)
    for scale in (1e4, -1e4, 1e8):
        logvar = latent.moments(encoder(torch.rand(3, 1, 28, 28) * scale)).logvar
        assert logvar.abs().max() <= LOGVAR_BOUND
        assert torch.isfinite(logvar.exp()).all()


@pytest.mark.parametrize(
    ("make", "reference", "shape", "dense"),
    [
        (lambda: Conv(6, 5, kernel_size=7, stride=7), nn.Conv2d, (3, 6, 7, 7), True),  # a map to a vector
        (lambda: Conv(6, 5, kernel_size=1), nn.Conv2d, (3, 6, 1, 1), True),  # 1×1 on a vector
        (lambda: Conv(6, 5, kernel_size=3, padding=1), nn.Conv2d, (3, 6, 1, 1), False),  # padded
        (lambda: Conv(6, 5, kernel_size=2, stride=2), nn.Conv2d, (3, 6, 4, 6), False),  # a larger map
        (lambda: ConvTranspose(6, 5, kernel_size=7, stride=7), nn.ConvTranspose2d, (3, 6, 1, 1), True),  # to a map
        (lambda: ConvTranspose(6, 5, kernel_size=3, stride=3, bias=False), nn.ConvTranspose2d, (3, 6, 1, 1), True),
        (lambda: ConvTranspose(6, 5, kernel_size=2, stride=2), nn.ConvTranspose2d, (3, 6, 1, 2), False),
        (lambda: ConvTranspose(6, 5, kernel_size=3, dilation=2), nn.ConvTranspose2d, (3, 6, 1, 1), False),
        (lambda: ConvTranspose(6, 5, 2, stride=3, output_padding=1), nn.ConvTranspose2d, (3, 6, 1, 1), False),
    ],
)
def test_convolutions_computed_as_dense_layers_give_the_convolutions_numbers(make, reference, shape, dense):
    """Where the kernel covers the whole map, ``Conv``/``ConvTranspose`` compute the dense layer it is (no
    convolution runs), elsewhere the convolution: the outputs and every gradient equal torch's convolution with
    the same weights (float64, to 1e-12)."""
    torch.manual_seed(0)
    ours = make().double()
    theirs = reference(
        ours.in_channels, ours.out_channels, ours.kernel_size, stride=ours.stride, padding=ours.padding,
        dilation=ours.dilation, bias=ours.bias is not None,
        **({"output_padding": ours.output_padding} if reference is nn.ConvTranspose2d else {}),
    ).double()  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    with torch.profiler.profile() as profile:
        y_ours = ours(x)
    ran_convolution = any(event.name == "aten::convolution" for event in profile.events())
    assert ran_convolution is not dense
    y_theirs = theirs(x)
    assert y_ours.shape == y_theirs.shape
    torch.testing.assert_close(y_ours, y_theirs, rtol=0, atol=1e-12)
    weights = torch.randn_like(y_ours)
    ours_grads = torch.autograd.grad((y_ours * weights).sum(), [x, *ours.parameters()])
    theirs_grads = torch.autograd.grad((y_theirs * weights).sum(), [x, *theirs.parameters()])
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
