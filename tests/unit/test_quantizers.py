"""The quantizers against exact references: FSQ's bijection, nearest levels and straight-through gradient; the VQ
codebook's EMA update, k-means initialisation and dead-code restarts; the rotation trick; code usage counted on a
known assignment; the rate N·q·log K under the uniform prior."""

import itertools
import math

import pytest
import torch
from einops import rearrange

from vae.core.errors import ConfigError
from vae.layers.quantizers import (
    FSQ,
    CodeLatent,
    ResidualVQ,
    VectorQuantizer,
    indices_of,
    kmeans,
    rotated,
    tokens_of,
)
from vae.models.quantized import VQVAE, CodeUsage

DIGITS = (1, 28, 28)


@pytest.mark.parametrize("levels", [(3, 4), (2, 5), (8, 5, 5, 5), (8, 6, 5)])
def test_fsq_maps_every_code_to_one_index_and_back(levels):
    fsq = FSQ(levels=levels)
    assert fsq.codebook_size == math.prod(levels)
    indices = torch.arange(fsq.codebook_size)
    digits = fsq.levels_of(indices)  # (K, d) integer levels
    assert torch.equal(fsq.indices_of(digits), indices)
    assert len({tuple(row.tolist()) for row in digits}) == fsq.codebook_size  # distinct: a bijection
    for dim, level in enumerate(levels):  # every level of every dimension, and nothing else
        expected = torch.arange(level) - level // 2
        assert torch.equal(digits[:, dim].unique(), expected.float())
    # Quantizing the code's own vector (in the bounded space) gives the code back.
    grid = rearrange(fsq.lookup(rearrange(indices, "(b q h w) -> b q h w", q=1, h=1, w=1)), "b d 1 1 -> b d")
    assert torch.allclose(grid * fsq.width, digits)


@pytest.mark.parametrize("levels", [(3, 4), (8, 5, 5, 5), (2, 7)])
def test_fsq_output_is_the_nearest_level_of_the_bounded_value(levels):
    fsq = FSQ(levels=levels)
    z = torch.randn(4000, len(levels)) * 3
    bounded = fsq.bound(z)
    q = fsq.quantize(z)
    for dim, level in enumerate(levels):
        allowed = (torch.arange(level) - level // 2).float()
        nearest = allowed[(bounded[:, dim, None] - allowed).abs().argmin(dim=1)]
        assert torch.equal(q[:, dim], nearest)
    # With the half-step offset of even L, the bounded range reaches all L levels, and no other.
    sweep = torch.linspace(-10, 10, 2001)[:, None].expand(-1, len(levels))
    for dim, level in enumerate(levels):
        assert torch.equal(fsq.quantize(sweep)[:, dim].unique(), (torch.arange(level) - level // 2).float())


def test_fsq_straight_through_gradient_is_the_identity_of_the_bounded_value():
    fsq = FSQ(levels=(8, 5, 5, 5))
    z = torch.randn(64, 4, requires_grad=True)
    q = fsq.quantize(z)
    upstream = torch.randn_like(q)
    (grad,) = torch.autograd.grad((q * upstream).sum(), z)
    # d q / d bounded = 1, so d q / d z = d bounded / d z = span · (1 − tanh²(z + shift)): not 0 (round's own
    # derivative) and not 1 (the identity to the raw input).
    expected = upstream * fsq.span * (1 - torch.tanh(z.detach() + fsq.shift) ** 2)
    assert torch.allclose(grad, expected, atol=1e-6)
    # Through the model's map z_q = q / ⌊L/2⌋.
    out = fsq(rearrange(z, "(b h w) d -> b d h w", h=4, w=4))
    (grad_map,) = torch.autograd.grad(out.z.sum(), z)
    assert torch.allclose(grad_map, fsq.span * (1 - torch.tanh(z.detach() + fsq.shift) ** 2) / fsq.width, atol=1e-6)


def test_ema_update_equals_its_closed_form_on_a_hand_made_assignment():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(codebook_size=3, dim=2, decay=decay, eps=eps)
    start = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vq.codebook.copy_(start)
    vq.embed_sum.copy_(start)
    vq.cluster_size.fill_(1.0)
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0], [11.0, -1.0], [10.0, 2.0]])  # codes 0, 0, 1, 1, 1
    vq.learn(vectors)
    counts = torch.tensor([2.0, 3.0, 0.0])
    sums = torch.tensor([[1.0, 1.0], [30.0, 2.0], [0.0, 0.0]])
    n = decay * 1.0 + (1 - decay) * counts
    m = decay * start + (1 - decay) * sums
    total = n.sum()
    smoothed = (n + eps) / (total + 3 * eps) * total
    assert torch.allclose(vq.cluster_size, n)
    assert torch.allclose(vq.embed_sum, m)
    assert torch.allclose(vq.codebook, m / smoothed[:, None], atol=1e-6)


def test_dead_code_restarts_reseed_exactly_the_unused_codes_from_the_batch():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=4, dim=2, learning="loss", restart_after=2)
    start = torch.tensor([[0.0, 0.0], [5.0, 0.0], [100.0, 100.0], [-100.0, 100.0]])
    vq.codebook.data.copy_(start)
    vectors = torch.tensor([[0.1, 0.0], [4.9, 0.1], [0.2, -0.1], [5.2, 0.0]])  # only codes 0 and 1 are used
    vq.learn(vectors)
    assert vq.restarted == 0 and torch.equal(vq.codebook.data, start)  # unused for one step: not yet
    vq.learn(vectors)
    assert vq.restarted == 2
    assert torch.equal(vq.codebook.data[:2], start[:2])  # the used codes are untouched
    for code in vq.codebook.data[2:]:  # the dead ones now sit on vectors of the batch
        assert any(torch.equal(code, v) for v in vectors)
    assert torch.equal(vq.unused_steps, torch.zeros(4, dtype=torch.long))


def test_kmeans_initialisation_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vectors = torch.cat([c + 0.1 * torch.randn(200, 2, generator=generator) for c in centres])
    found = kmeans(vectors, 3, iterations=20, generator=torch.Generator().manual_seed(3))
    distance = torch.cdist(centres, found).min(dim=1).values
    assert distance.max() < 0.1
    vq = VectorQuantizer(codebook_size=3, dim=2, kmeans_init=True)
    torch.manual_seed(3)
    vq.learn(vectors)
    assert bool(vq.initialized) and torch.cdist(centres, vq.codebook).min(dim=1).values.max() < 0.2


def test_straight_through_passes_the_gradient_unchanged_and_the_rotation_trick_rotates_it():
    vq = VectorQuantizer(codebook_size=8, dim=4)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z_e)
    assert torch.allclose(out.z, vq.lookup(out.indices), atol=1e-6)
    upstream = torch.randn_like(out.z)
    (grad,) = torch.autograd.grad((out.z * upstream).sum(), z_e)
    assert torch.allclose(grad, upstream)

    e, q = torch.randn(4), torch.randn(4)
    value = rotated(e[None], q[None])[0]
    assert torch.allclose(value, q, atol=1e-5)  # the forward value is the code
    jacobian = torch.autograd.functional.jacobian(lambda v: rotated(v[None], q[None])[0], e)
    scale = q.norm() / e.norm()
    rotation = jacobian / scale  # λ R with R a rotation taking ê to q̂
    assert torch.allclose(rotation @ rotation.T, torch.eye(4), atol=1e-5)
    assert torch.allclose(rotation @ (e / e.norm()), q / q.norm(), atol=1e-5)
    assert torch.linalg.det(rotation) > 0  # a rotation, not a reflection


def test_code_usage_on_a_known_assignment():
    usage = CodeUsage(codebook_size=4, depth=2)
    # two examples, two positions, two codebooks: tokens ordered (position, codebook)
    indices = torch.tensor([[[[0, 1]], [[2, 2]]], [[[0, 0]], [[3, 2]]]])  # (b=2, q=2, h=1, w=2)
    usage.update(tokens_of(indices))
    result = usage.compute()
    # codebook 0 used codes {0, 1} (counts 3, 1); codebook 1 used {2, 3} (counts 3, 1)
    frequencies = torch.tensor([0.75, 0.25])
    perplexity = math.exp(-(frequencies * frequencies.log()).sum().item())
    assert result["codebook/usage"].item() == pytest.approx(0.5)
    assert result["codebook/unused"].item() == 4
    assert result["codebook/perplexity"].item() == pytest.approx(perplexity, rel=1e-6)
    assert torch.equal(indices_of(tokens_of(indices), depth=2, height=1, width=2), indices)


@pytest.mark.parametrize(
    ("quantizer", "per_position"),
    [
        (VectorQuantizer(codebook_size=16, dim=4), math.log(16)),
        (ResidualVQ(depth=3, codebook_size=8, dim=4), 3 * math.log(8)),
        (FSQ(levels=(8, 5, 5, 5)), math.log(1000)),
    ],
)
def test_the_rate_under_the_uniform_prior_is_n_q_log_k_exactly(quantizer, per_position):
    model = VQVAE(image_shape=DIGITS, quantizer=quantizer, channels=(8, 8), blocks=0)
    out = model(torch.rand(3, *DIGITS))
    assert torch.allclose(out.kl.double(), torch.full((3,), 49 * per_position, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(out.log_w()[0], out.log_px - out.kl)  # log q = 0 at the one code, so log w = ELBO


def test_code_latent_log_ratio_is_minus_the_learned_priors_log_probability():
    vq = VectorQuantizer(codebook_size=5, dim=3)
    layer = CodeLatent(quantizer=vq, grid=(2, 2))
    logits = torch.randn(2, 4, 5)
    latent, quantized = layer(torch.randn(2, 3, 2, 2), prior=lambda tokens: logits)
    tokens = tokens_of(quantized.indices)
    expected = -torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0].sum(dim=1)
    assert torch.allclose(latent.kl, expected) and torch.allclose(latent.log_ratio(), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FSQ(levels=(1, 4)),
        lambda: FSQ(levels=()),
        lambda: VectorQuantizer(codebook_size=1),
        lambda: VectorQuantizer(decay=1.0),
        lambda: ResidualVQ(depth=0),
        lambda: VectorQuantizer(gradient="sideways"),
    ],
)
def test_bad_settings_are_one_line_errors(make):
    with pytest.raises(ConfigError) as error:
        make()
    assert "\n" not in str(error.value)


def test_decode_refuses_codes_of_the_wrong_shape_or_range():
    model = VQVAE(image_shape=DIGITS, quantizer=VectorQuantizer(codebook_size=8, dim=2), channels=(8, 8), blocks=0)
    with pytest.raises(ConfigError, match="indices"):
        model.decode(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"\[0, 7\]"):
        model.decode(torch.full((2, 49), 8))
    with pytest.raises(ConfigError, match="prior over its codes"):
        model.sample(4)
    codes = model.encode(torch.rand(2, *DIGITS)).mean
    assert codes.dtype == torch.long and codes.shape == (2, 49)
    assert torch.equal(model.decode(codes), model.decode(codes.float()))


def test_every_combination_of_options_trains_a_step():
    x = torch.rand(4, *DIGITS).bernoulli()
    for learning, cosine, gradient, kmeans_init in itertools.product(
        ("ema", "loss"), (False, True), ("straight_through", "rotation"), (False, True)
    ):
        torch.manual_seed(0)
        quantizer = VectorQuantizer(
            codebook_size=8,
            dim=4,
            learning=learning,
            cosine=cosine,
            gradient=gradient,
            kmeans_init=kmeans_init,
            restart_after=1,
        )
        model = VQVAE(image_shape=DIGITS, quantizer=quantizer, channels=(8, 8), blocks=1).train()
        out = model(x)
        loss = -out.log_px.mean() + sum(t.weight * t.value.mean() for t in out.terms.values())
        loss.backward()
        assert torch.isfinite(loss)
        encoder_grad = next(model.encoder.parameters()).grad
        assert encoder_grad is not None and encoder_grad.abs().sum() > 0  # the gradient reaches the encoder
        if learning == "loss":
            assert quantizer.codebook.grad is not None and "codebook" in out.terms
        if cosine:
            assert torch.allclose(quantizer.codebook.norm(dim=1), torch.ones(8), atol=1e-5)


def test_quantization_runs_in_float32_under_autocast_and_a_half_precision_model():
    """The distances ‖v‖² − 2 v·e + ‖e‖² cancel: in bf16 they would pick other codes. Under autocast the quantizer
    computes in float32, and a model cast to bf16 keeps its EMA statistics in float32."""
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=256, dim=16).eval()
    z = torch.randn(8, 16, 7, 7)
    plain = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = vq(z)
    assert torch.equal(plain.indices, mixed.indices) and mixed.z.dtype == torch.float32
    half = VectorQuantizer(codebook_size=8, dim=4).to(torch.bfloat16).train()
    assert {half.codebook.dtype, half.cluster_size.dtype, half.embed_sum.dtype} == {torch.float32}
    out = half(torch.randn(2, 4, 3, 3, dtype=torch.bfloat16))
    assert out.z.dtype == torch.bfloat16 and half.cluster_size.dtype == torch.float32
