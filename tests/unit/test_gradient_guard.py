"""The gradient guard: clipping, skipping above a fixed or an adaptive threshold, never stalling, state saved. The
``Guard`` callback on a real Trainer: tests/integration/test_gradient_skipping.py."""

from __future__ import annotations

import math

import pytest

from vae.core.errors import ConfigError
from vae.training.guards import GradientGuard, Guard


def test_a_fixed_threshold_skips_above_it_and_clipping_caps_the_rest():
    guard = GradientGuard(clip=5.0, skip=10.0)
    decisions = [guard.decide(norm) for norm in (3.0, 7.0, 12.0, 9.0)]
    assert [d.skip for d in decisions] == [False, False, True, False]
    assert [d.clip_to for d in decisions] == [5.0, 5.0, 5.0, 5.0] and decisions[0].threshold == 10.0
    assert int(guard.skipped) == 1 and int(guard.seen) == 4


def test_no_threshold_stalls_training_even_when_every_norm_exceeds_it():
    """VDVAE's fixed threshold skips every update once the norms outgrow it (vdvae issue 25): here at most
    ``max_consecutive`` are skipped in a row, and the next is taken, clipped to the threshold."""
    guard = GradientGuard(skip=1.0, max_consecutive=3)
    decisions = [guard.decide(50.0) for _ in range(8)]
    assert [d.skip for d in decisions] == [True, True, True, False, True, True, True, False]
    assert decisions[3].clip_to == 1.0


def test_the_adaptive_threshold_skips_a_spike_and_follows_a_lasting_rise():
    guard = GradientGuard(skip="adaptive", factor=5.0, decay=0.9, warmup=10)
    for _ in range(10):  # warm-up: nothing skipped, the average learns log 2
        assert not guard.decide(2.0).skip
    assert guard.threshold() == pytest.approx(10.0)
    assert guard.decide(100.0).skip  # a spike, 50× the typical norm
    assert not guard.decide(2.0).skip
    # The norms rise 20-fold for good: a few updates are skipped, then the threshold has followed them.
    skipped = [guard.decide(40.0).skip for _ in range(40)]
    assert 0 < sum(skipped) <= 5 and not any(skipped[-30:])
    assert guard.threshold() > 40.0


def test_the_guard_state_survives_a_checkpoint():
    guard = GradientGuard(skip="adaptive", warmup=2)
    for norm in (1.0, 3.0, 300.0):
        guard.decide(norm)
    restored = GradientGuard(skip="adaptive", warmup=2)
    restored.load_state_dict(guard.state_dict())
    assert restored.threshold() == guard.threshold() and int(restored.skipped) == 1
    assert math.isclose(float(restored.log_norm_average), float(guard.log_norm_average))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip": 0.0}, "grad_clip must be positive"),
        ({"skip": -1.0}, "grad_skip must be"),
        ({"skip": "auto"}, "grad_skip"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GradientGuard(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grad_clip": 0.0}, "grad_clip must be positive"),
        ({"grad_skip": "auto"}, "grad_skip"),
        ({"nonfinite": "ignore"}, "guard.nonfinite must be 'stop' or 'skip'"),
    ],
)
def test_the_guard_callbacks_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        Guard(**kwargs)
    assert "\n" not in str(error.value)
