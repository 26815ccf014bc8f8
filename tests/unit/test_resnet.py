"""The residual encoder/decoder pair: shapes for 28×28, 32×32 and 64×64 images, clear errors otherwise, a finite
loss with a gradient for every parameter inside a real VAE, per-example normalisation and the parameter count. (The
config route, a YAML ``class_path: vae.layers.nets.ResNet`` parsed, judged and built as ``vae fit`` does:
tests/integration/test_resnet_config.py.)"""

import pytest
import torch

from vae.core.errors import ConfigError
from vae.layers.likelihoods import DiscretizedLogisticMixture, Gaussian
from vae.layers.nets.resnet import ResNet, ResNetDecoder, ResNetEncoder
from vae.models.vae import VAE
from vae.objectives.elbo import beta_elbo

TINY = {"blocks": 1, "hidden_dim": 16, "groups": 4}


@pytest.mark.parametrize(
    ("image_shape", "channels", "blocks"),
    [((1, 28, 28), (8, 16), 1), ((3, 32, 32), (8, 8, 16), 1), ((3, 64, 64), (8, 8, 8, 16), 1), ((3, 32, 32), (8,), 0)],
    ids=["28x28x1", "32x32x3", "64x64x3", "no-blocks"],
)
def test_encoder_and_decoder_shapes(image_shape, channels, blocks):
    network = ResNet(channels=channels, blocks=blocks, hidden_dim=16, groups=4)
    encoder = network.make_encoder(image_shape=image_shape)
    decoder = network.make_decoder(image_shape=(5, *image_shape[1:]), latent_dim=3)  # 5 parameter channels per pixel
    features = encoder(torch.rand(2, *image_shape))
    assert features.shape == (2, encoder.out_features) == (2, 16)
    assert decoder(torch.randn(2, 3)).shape == (2, 5, *image_shape[1:])


@pytest.mark.parametrize(
    ("image_shape", "message"),
    [
        ((1, 28, 28), "ResNet with 3 stages needs height and width divisible by 8 (32x32 and 64x64 work), got 28x28: "
         "resize the images or give the network's channels at most 2 stages"),
        ((3, 27, 27), "ResNet with 3 stages needs height and width divisible by 8 (32x32 and 64x64 work), got 27x27: "
         "resize the images"),
    ],
)  # fmt: skip
def test_sizes_it_cannot_take_are_one_line_config_errors_naming_the_sizes_and_the_fix(image_shape, message):
    for make in (
        lambda: ResNet().make_encoder(image_shape=image_shape),
        lambda: ResNet().make_decoder(image_shape=image_shape, latent_dim=4),
    ):
        with pytest.raises(ConfigError) as error:
            make()
        assert str(error.value) == message


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ResNet(channels=()), "one or more positive sizes"),
        (lambda: ResNet(blocks=-1), "blocks must be 0 or more"),
        (lambda: ResNet(hidden_dim=0), "hidden_dim must be positive"),
        (lambda: ResNet(channels=(48, 64)), r"got groups=32 for channels \[48, 64\]: .* a divisor of 16$"),
        (lambda: ResNet(**TINY, channels=(8,)).make_decoder(image_shape=(1, 32, 32), latent_dim=0), "latent_dim"),
    ],
)
def test_bad_settings_are_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_parameter_count_is_the_hand_computed_one():
    """channels (4, 8), one block per stage, hidden 16, 2 groups; a 1×8×8 image, 3 latent dimensions.
    A k×k convolution c→o has o·c·k² + o parameters, a GroupNorm of c channels 2c, a Linear n→m n·m + m."""
    network = ResNet(channels=(4, 8), blocks=1, hidden_dim=16, groups=2)
    block4 = 2 * (2 * 4) + 2 * (4 * 4 * 9 + 4)  # two norms, two 3×3 convolutions: 312
    block8 = 2 * (2 * 8) + 2 * (8 * 8 * 9 + 8)  # 1200
    encoder = (
        (4 * 1 * 16 + 4)  # 4×4 stride-2 convolution 1→4 (8×8 → 4×4)
        + block4
        + 2 * 4  # the pre-activation's norm
        + (8 * 4 * 16 + 8)  # 4×4 stride-2 convolution 4→8 (4×4 → 2×2)
        + block8
        + 2 * 8  # the final norm
        + (8 * 2 * 2 * 16 + 16)  # Linear 32 → 16
    )
    decoder = (
        (3 * 16 + 16) + (16 * 32 + 32)  # Linear 3 → 16 → 8·2·2
        + block8 + 2 * 8 + (8 * 4 * 16 + 4)  # transposed 4×4 convolution 8→4 (2×2 → 4×4)
        + block4 + 2 * 4 + (4 * 1 * 16 + 1)  # 4→1 (4×4 → 8×8)
    )  # fmt: skip
    assert (encoder, decoder) == (2652, 2725)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(network.make_encoder(image_shape=(1, 8, 8))) == encoder
    assert count(network.make_decoder(image_shape=(1, 8, 8), latent_dim=3)) == decoder


@pytest.mark.parametrize(
    ("image_shape", "channels", "likelihood"),
    [
        ((3, 32, 32), (8, 8, 16), DiscretizedLogisticMixture(num_components=2)),
        ((3, 64, 64), (8, 8, 8, 16), Gaussian(learn_sigma=True)),
        ((1, 28, 28), (8, 16), Gaussian(learn_sigma=True)),
    ],
    ids=["32x32x3-logistic", "64x64x3-gaussian", "28x28x1-gaussian"],
)
def test_inside_a_vae_the_loss_is_finite_and_every_parameter_gets_a_gradient(image_shape, channels, likelihood):
    model = VAE(image_shape=image_shape, latent_dim=4, network=ResNet(channels=channels, **TINY), likelihood=likelihood)
    assert isinstance(model.network.encoder, ResNetEncoder) and isinstance(model.network.decoder, ResNetDecoder)
    x = torch.randint(0, 256, (2, *image_shape), dtype=torch.uint8).float() / 255  # 8-bit values in [0, 1]
    out = model(x)
    assert out.params.shape == (2, likelihood.param_channels(image_shape[0]), *image_shape[1:])
    loss = beta_elbo(out.log_px, out.kl).mean().loss
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


def test_each_example_is_normalised_on_its_own():
    """GroupNorm: in training mode an example's features are the same alone (batch size 1) as in a batch."""
    network = ResNet(channels=(8, 16), **TINY)
    encoder = network.make_encoder(image_shape=(3, 32, 32))
    decoder = network.make_decoder(image_shape=(3, 32, 32), latent_dim=4)
    encoder.train(), decoder.train()
    x, z = torch.rand(3, 3, 32, 32), torch.randn(3, 4)
    torch.testing.assert_close(encoder(x[:1]), encoder(x)[:1])
    torch.testing.assert_close(decoder(z[:1]), decoder(z)[:1])
