"""The discretized logistic and its PixelCNN++ mixture: proper distributions over the 256 values, against
formulas written out, and trainable in the VAE."""

import math

import pytest
import torch
from einops import rearrange

from vae.layers.likelihoods import DiscretizedLogistic, DiscretizedLogisticMixture, discretized_logistic_log_prob
from vae.layers.nets.conv import ConvNet
from vae.models.vae import VAE

F64 = torch.float64
VALUES = torch.arange(256, dtype=F64) / 255  # every 8-bit value, as the data module delivers it


@pytest.mark.parametrize("mean,log_scale", [(0.0, -2.0), (0.9, -4.0), (-1.3, 0.5), (0.2, -7.0)])
def test_the_256_probabilities_sum_to_one(mean, log_scale):
    log_p = discretized_logistic_log_prob(VALUES, torch.tensor(mean, dtype=F64), torch.tensor(log_scale, dtype=F64))
    # 1e-5: bins whose probability is below 1e-5 use the density-times-width fallback (PixelCNN++).
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-5)
    assert torch.isfinite(log_p).all()


def test_against_the_logistic_cdf_written_out():
    mean, scale = 0.1, 0.05
    cdf = lambda v: 1 / (1 + math.exp(-(v - mean) / scale))  # noqa: E731
    log_p = discretized_logistic_log_prob(
        VALUES, torch.tensor(mean, dtype=F64), torch.tensor(math.log(scale), dtype=F64)
    )
    for k in (0, 100, 140, 255):
        x = 2 * k / 255 - 1
        upper = 1.0 if k == 255 else cdf(x + 1 / 255)
        lower = 0.0 if k == 0 else cdf(x - 1 / 255)
        assert log_p[k].item() == pytest.approx(math.log(upper - lower), rel=1e-6), k


def test_single_logistic_likelihood_sums_over_pixels():
    likelihood = DiscretizedLogistic()
    assert likelihood.param_channels(3) == 6
    params = torch.randn(2, 6, 4, 4, dtype=F64)
    x = torch.randint(0, 256, (2, 3, 4, 4)).double() / 255
    expected = discretized_logistic_log_prob(x, params[:, :3], params[:, 3:].clamp_min(-7)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(likelihood.log_prob(params, x), expected)


def test_mixture_for_grey_images_is_normalised():
    likelihood = DiscretizedLogisticMixture(num_components=3)
    assert likelihood.param_channels(1) == 3 * 3
    params = torch.randn(1, 9, 1, 1, dtype=F64).expand(256, -1, -1, -1)
    x = VALUES.view(256, 1, 1, 1)
    assert torch.logsumexp(likelihood.log_prob(params, x), 0).item() == pytest.approx(0.0, abs=1e-6)


def test_rgb_mixture_couples_the_channels_as_pixelcnn_plus_plus():
    """One pixel, written out: Σ_k π_k P(r | μ_r) P(g | μ_g + α r') P(b | μ_b + β r' + γ g')."""
    likelihood = DiscretizedLogisticMixture(num_components=2)
    assert likelihood.param_channels(3) == 2 * 10
    params = torch.randn(1, 20, 1, 1, dtype=F64)
    x = torch.tensor([30, 200, 120], dtype=F64).view(1, 3, 1, 1) / 255
    per = rearrange(params, "b (k p) h w -> k (b p h w)", k=2)  # per component: logit, 3 μ, 3 log s, 3 α
    r, g = (2 * x[0, :2, 0, 0] - 1).tolist()
    total = []
    for k in range(2):
        mu, log_s, coef = per[k, 1:4], per[k, 4:7].clamp_min(-7), torch.tanh(per[k, 7:10])
        means = torch.stack([mu[0], mu[1] + coef[0] * r, mu[2] + coef[1] * r + coef[2] * g])
        channels = discretized_logistic_log_prob(x[0, :, 0, 0], means, log_s)
        total.append(channels.sum() + torch.log_softmax(per[:, 0], 0)[k])
    assert likelihood.log_prob(params, x).item() == pytest.approx(
        torch.logsumexp(torch.stack(total), 0).item(), rel=1e-10
    )


def test_the_vae_builds_decoders_for_the_likelihood_parameters():
    vae = VAE(
        image_shape=(3, 32, 32),
        network=ConvNet(channels=(16, 32)),
        likelihood=DiscretizedLogisticMixture(num_components=5),
    )
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = vae(x)
    assert out.params.shape == (4, 50, 32, 32) and out.log_px.shape == (4,) and torch.isfinite(out.log_px).all()
    (-out.log_px.mean() + out.kl.mean()).backward()
    assert vae.decode(torch.zeros(2, 16)).shape == (2, 3, 32, 32)
    assert vae.sample(2).shape == (2, 3, 32, 32)
