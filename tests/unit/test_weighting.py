"""KL weightings: values at chosen steps, gradients, GECO's multiplier (across a resume: tests/integration/
test_weighting_resume.py)."""

import pytest
import torch

from vae.core.errors import ConfigError
from vae.layers.latents import KLParts
from vae.objectives.weighting import GECO, Capacity, Constant, Cyclical, FreeBits, LinearWarmup


def terms(b: int = 4, d: int = 6):
    log_px = -torch.rand(b) * 100
    kl_per_dim = torch.rand(b, d)
    return log_px, kl_per_dim.sum(-1), kl_per_dim


def parts(kl, kl_per_dim):
    """The KL of a single-layer model ("z") as a weighting reads it: per example (b,), per dimension (b, d) or None."""
    d = kl_per_dim.shape[-1] if kl_per_dim is not None else 1
    return KLParts(per_layer={"z": kl}, per_unit={"z": kl_per_dim}, sizes={"z": d})


def test_constant_is_the_beta_elbo():
    log_px, kl, per_dim = terms()
    out = Constant(beta=4.0)(log_px, parts(kl, per_dim), step=123, training=True)
    assert out.kl_weight == 4.0
    torch.testing.assert_close(out.loss, (-log_px + 4.0 * kl).mean())


@pytest.mark.parametrize("step,expected", [(0, 0.1), (50, 0.55), (100, 1.0), (5000, 1.0)])
def test_linear_warmup(step, expected):
    assert LinearWarmup(start=0.1, end=1.0, steps=100).beta(step) == pytest.approx(expected)


@pytest.mark.parametrize(
    "step,expected",
    # 1,000 steps, 4 cycles of 250: β rises over the first 125 steps of each cycle, then holds.
    [
        (0, 0.0),
        (62, 2 * 62 / 125),
        (125, 2.0),
        (200, 2.0),
        (250, 0.0),
        (375, 2.0),
        (999, 2.0),
        (1000, 2.0),
        (9999, 2.0),
    ],
)
def test_cyclical(step, expected):
    assert Cyclical(beta=2.0, total_steps=1000, cycles=4, ramp=0.5).beta(step) == pytest.approx(expected)


def test_capacity_targets_a_rising_kl():
    weighting = Capacity(gamma=100.0, max_capacity=20.0, steps=1000)
    assert [weighting.capacity(s) for s in (0, 500, 1000, 2000)] == [0.0, 10.0, 20.0, 20.0]
    log_px, kl, per_dim = terms()
    out = weighting(log_px, parts(kl, per_dim), step=500, training=True)
    torch.testing.assert_close(out.loss, -log_px.mean() + 100.0 * (kl.mean() - 10.0).abs())
    assert out.kl_weight == -100.0 and out.extras == {"capacity": 10.0}  # KL below C: pushed up


def test_free_bits_passes_no_gradient_to_a_dimension_below_its_floor():
    kl_per_dim = torch.tensor([[0.1, 2.0, 0.3, 3.0], [0.2, 2.5, 0.2, 1.0]], requires_grad=True)
    log_px = torch.tensor([-50.0, -60.0])
    out = FreeBits(floor=0.5)(log_px, parts(kl_per_dim.sum(-1), kl_per_dim), step=0, training=True)
    out.loss.backward()
    grad = kl_per_dim.grad
    assert torch.equal(grad[:, [0, 2]], torch.zeros(2, 2))  # batch means 0.15 and 0.25 < 0.5: free
    torch.testing.assert_close(grad[:, [1, 3]], torch.full((2, 2), 0.5))  # d(mean over 2 examples)
    # loss = recon + Σ_d max(0.5, mean KL_d) = 55 + 0.5 + 2.25 + 0.5 + 2.0
    assert out.loss.item() == pytest.approx(55 + 0.5 + 2.25 + 0.5 + 2.0)
    assert out.extras["free_bits_active"] == 0.5


def test_free_bits_groups_and_schedules():
    kl_per_dim = torch.tensor([[0.1, 0.2, 0.9, 0.9]])
    groups = FreeBits(floor=0.5, group_size=2, beta=LinearWarmup(start=0.0, end=1.0, steps=10))
    out = groups(torch.zeros(1), parts(kl_per_dim.sum(-1), kl_per_dim), step=5, training=True)
    assert out.kl_weight == 0.5 and out.loss.item() == pytest.approx(0.5 * (0.5 + 1.8))
    with pytest.raises(ConfigError, match=r"must divide the units of layer z \(4\)"):
        FreeBits(group_size=3)(torch.zeros(1), parts(kl_per_dim.sum(-1), kl_per_dim), step=0, training=True)
    with pytest.raises(ConfigError, match="needs the KL of each latent unit, and layer z has none"):
        FreeBits()(torch.zeros(1), parts(kl_per_dim.sum(-1), None), step=0, training=True)


def test_geco_multiplier_moves_the_right_way_and_only_while_training():
    kl = torch.tensor([10.0])
    geco = GECO(target=50.0, step_size=0.01, alpha=0.5)
    worse = geco(torch.tensor([-80.0]), parts(kl, None), step=0, training=True)  # recon 80 > 50: constraint violated
    assert float(geco.multiplier) > 1.0 and worse.kl_weight < 1.0  # less weight on the KL
    assert float(geco.constraint_average) == 30.0  # the first value, not a decayed 15
    frozen = {k: v.clone() for k, v in geco.state_dict().items()}
    geco(torch.tensor([-10.0]), parts(kl, None), step=1, training=False)  # validation: no update
    assert all(torch.equal(frozen[k], v) for k, v in geco.state_dict().items())
    for step in range(200):  # reconstruction now better than the target
        better = geco(torch.tensor([-20.0]), parts(kl, None), step=step, training=True)
    assert float(geco.multiplier) < 1.0 and better.kl_weight > 1.0
    torch.testing.assert_close(better.loss, torch.tensor(20.0) + better.kl_weight * kl.mean())


@pytest.mark.parametrize(
    "make",
    [
        lambda: Constant(beta=-1),
        lambda: LinearWarmup(steps=0),
        lambda: Cyclical(ramp=0.0),
        lambda: Capacity(gamma=-1),
        lambda: FreeBits(floor=-0.1),
        lambda: GECO(target=10, alpha=1.0),
    ],
)
def test_bad_settings_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()
