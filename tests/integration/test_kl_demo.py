"""The KL playground, `vae kl-demo`, run once in this process as a new user runs it: it prints its numbers and writes
its figures, and each demonstration it computed shows what the theory says (checked on the very results the command
computed with its defaults, seed 0: the same as calling each function with its defaults). A file given as the output
folder is refused in one line."""

import math
import os

import pytest
import torch
from conftest import new_user, run

import vae.commands.kl_demo
from vae.commands.kl_demo import FIGURES, worked_numbers


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    """`vae kl-demo --out <folder>`: its result, what it computed (the Playground its ``run`` returned), and the
    folder of its figures."""
    root = tmp_path_factory.mktemp("kl_demo")
    computed = []

    def keep(*args, **kwargs):
        computed.append(real(*args, **kwargs))
        return computed[-1]

    real = vae.commands.kl_demo.run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vae.commands.kl_demo, "run", keep)
        result = run(["kl-demo", "--out", str(root / "figures")], cwd=root, env=new_user(root / "home"))
    assert result.returncode == 0, result.stderr
    (found,) = computed
    return result, found, root / "figures"


def test_kl_demo_command_prints_numbers_and_writes_figures(playground):
    """The whole playground through the real command, as a new user runs it."""
    result, _, out = playground
    for heading in ("1. Mode covering", "2. Monte Carlo", "3. Maximum likelihood", "4. Worked numbers"):
        assert heading in result.stdout
    for name in FIGURES:
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name


def test_forward_kl_covers_both_modes_and_matches_the_moments(playground):
    """Maximum likelihood of a Gaussian is moment matching: mean ≈ 0, variance 0.5² + 2² = 4.25."""
    fits = playground[1].fits
    assert abs(fits.forward.mean) < 0.1
    assert fits.forward.std == pytest.approx(math.sqrt(4.25), rel=0.02)


def test_reverse_kl_sits_on_one_mode(playground):
    fits = playground[1].fits
    assert fits.reverse.mean == pytest.approx(2.0, abs=0.1)  # it started right of the middle
    assert fits.reverse.std == pytest.approx(0.5, rel=0.1)


def test_each_fit_wins_its_own_direction(playground):
    kl = playground[1].fits.kl
    assert kl["forward KL D(p||q) of the forward fit"] < kl["forward KL D(p||q) of the reverse fit"]
    assert kl["reverse KL D(q||p) of the reverse fit"] < kl["reverse KL D(q||p) of the forward fit"]
    assert all(value > 0 for value in kl.values())


def test_monte_carlo_error_falls_as_one_over_root_n(playground):
    result = playground[1].monte_carlo
    assert len(result.rms_error) == len(result.sample_sizes) == 9
    assert result.exact == pytest.approx(math.log(0.5) + 4.0 - 0.5, rel=1e-12)
    assert result.sigma**2 == pytest.approx(20.5, rel=1e-12)  # Var of 1.5x² − 4x under N(0, 1)
    assert result.slope == pytest.approx(-0.5, abs=0.05)
    # With 200 repeats the RMS error is itself known to about ±5 %: 20 % is four of those.
    for rms, expected in zip(result.rms_error, result.expected):
        assert rms == pytest.approx(expected, rel=0.2)


def test_monte_carlo_error_of_a_categorical_kl_falls_as_one_over_root_n(playground):
    """The discrete latent's KL to its uniform prior: log K − H(q) in closed form, and the MC estimate's error."""
    result = playground[1].categorical_monte_carlo
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    assert result.exact == pytest.approx(math.log(4) + (probs * probs.log()).sum().item(), rel=1e-12)
    assert result.slope == pytest.approx(-0.5, abs=0.05)
    for rms, expected in zip(result.rms_error, result.expected):
        assert rms == pytest.approx(expected, rel=0.2)


def test_nll_minus_kl_stays_at_the_entropy_along_maximum_likelihood(playground):
    trace = playground[1].likelihood
    assert trace.entropy == pytest.approx(0.5 * math.log(2 * math.pi * math.e), rel=1e-12)
    assert trace.steps[-1].theta == pytest.approx(2.0, abs=0.05)
    kls = [s.kl for s in trace.steps]
    assert kls[0] == pytest.approx(2.0) and all(a > b for a, b in zip(kls, kls[1:]))
    # NLL falls by ~2 nats while NLL − KL moves by sampling noise only (~0.01 for 100,000 samples).
    assert trace.steps[0].nll - trace.steps[-1].nll > 1.9
    assert max(abs(gap - trace.entropy) for gap in trace.gaps()) < 0.03


def test_worked_numbers_match_torch_distributions_exactly(playground):
    for rows in (playground[1].numbers, worked_numbers()):
        numbers = {row.name: row for row in rows}
        assert len(numbers) == 8
        assert all(row.error < 1e-12 for row in numbers.values()), {n: r.error for n, r in numbers.items()}
        assert numbers["D(N(0,1)||N(1,0.5^2))"].ours.item() == pytest.approx(2.806853, abs=1e-6)
        assert numbers["D(N(1,0.5^2)||N(0,1))"].ours.item() == pytest.approx(0.818147, abs=1e-6)
        assert numbers["VAE D(N(mu,sigma^2)||N(0,I)) per example"].ours[2].item() == 0.0  # q = p exactly


def test_kl_demo_rejects_a_file_as_output_folder(tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    result = run(["kl-demo", "--out", str(target)], cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --out {target} is a file; give a folder for the figures (see vae kl-demo --help)"
    ]
    assert target.read_text() == "keep me"
