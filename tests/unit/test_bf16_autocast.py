"""The fast path changes speed, not results: bf16 autocast keeps the KL and likelihood in float32. Through a real
Trainer (bf16 + channels-last against the default, compiled networks): tests/integration/test_fast_path.py."""

import pytest
import torch

from vae.layers.likelihoods import Bernoulli
from vae.models import VAE, HierarchicalVAE
from vae.objectives.elbo import iwae_bound


def hierarchy() -> HierarchicalVAE:
    return HierarchicalVAE(
        image_shape=(1, 28, 28), latent_channels=(8, 4, 4), resolutions=(1, 7, 7), width=16, stem_channels=(8,)
    )


@pytest.mark.parametrize("hierarchical", [False, True], ids=["single-layer", "hierarchical"])
def test_bf16_autocast_keeps_the_kl_and_likelihood_in_float32(hierarchical):
    torch.manual_seed(0)
    vae = hierarchy() if hierarchical else VAE(image_shape=(1, 28, 28), likelihood=Bernoulli())
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(1)  # the same noise in both passes: a hierarchy's lower KLs depend on the samples above
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vae(x)
        bound = iwae_bound(vae.log_weights(x, 4))
    assert out.kl.dtype == out.log_px.dtype == bound.dtype == torch.float32
    torch.manual_seed(1)
    with torch.no_grad():
        exact = vae(x)  # float32 throughout; the bf16 pass differs by the rounding of the networks only
    assert (out.kl - exact.kl).abs().max() < 0.5
