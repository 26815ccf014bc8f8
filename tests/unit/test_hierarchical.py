"""Hierarchical VAEs: per-layer KLs against exact references, the objective's terms, the top layer's priors, the
pictures, the architecture's one-line errors, and checkpoints written before the latent-layer abstraction. (Training
through a Trainer and the `vae` commands: tests/integration/test_hierarchical_training.py.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import DATA
from torch.distributions import kl_divergence

from vae.core.errors import ConfigError
from vae.core.kl import monte_carlo_kl
from vae.layers.likelihoods import Bernoulli
from vae.layers.priors import GaussianMixture, LearnedGaussian, StandardNormal, VampPrior
from vae.models.hierarchical import HierarchicalVAE
from vae.objectives.elbo import ELBO, IWAE, balance
from vae.objectives.weighting import Constant, FreeBits, LinearWarmup
from vae.training.checkpoint_io import load_module
from vae.training.module import VAEModule

SMALL = {"latent_channels": (6, 4, 3), "resolutions": (1, 2, 4), "width": 8, "stem_channels": (), "blocks": 1}


def small_model(layout: dict = SMALL, **kwargs) -> HierarchicalVAE:
    torch.manual_seed(0)
    parts = {"prior": StandardNormal(), "kl_estimator": "auto", "kl_samples": 1, **kwargs}
    return HierarchicalVAE(image_shape=(1, 8, 8), likelihood=Bernoulli(), **layout, **parts)


def images(n: int = 6) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 1, 8, 8).bernoulli()


def test_layers_are_named_from_the_top_and_shaped_by_their_resolution():
    model = small_model()
    out = model(images())
    assert list(out.latents) == ["z3", "z2", "z1"] == list(model.layer_names)
    assert [tuple(layer.z.shape[1:]) for layer in out.latents.values()] == [(6, 1, 1), (4, 2, 2), (3, 4, 4)]
    assert [layer.kl_per_unit.shape[1] for layer in out.latents.values()] == [6, 4, 3]  # per channel
    assert [layer.positions for layer in model.layers] == [1, 4, 16]


@torch.no_grad()
def test_each_layers_kl_is_the_closed_form_summed_over_its_units_and_matches_monte_carlo():
    """Each layer's KL is Σ over (c, h, w) of the element-wise Gaussian KL from torch.distributions (a mean over
    units would be smaller by the layer's size, and fails), and agrees with a 4,000-sample Monte-Carlo estimate
    of the same pair within 4 standard errors."""
    model = small_model()
    with torch.no_grad():  # a posterior away from the prior: every KL clearly positive
        for layer in model.below:
            layer.posterior_head[-1].bias.normal_(0, 0.5)
    out = model(images())
    for name, layer in out.latents.items():
        reference = kl_divergence(layer.posterior.base_dist, layer.prior.base_dist)  # element-wise
        summed = reference.flatten(1).sum(dim=1)
        torch.testing.assert_close(layer.kl, summed, rtol=1e-5, atol=1e-5)
        assert (summed > 0).all() and not torch.allclose(layer.kl, reference.flatten(1).mean(dim=1))
        torch.testing.assert_close(layer.kl_per_unit.sum(dim=1), layer.kl, rtol=1e-5, atol=1e-5)
        mc = monte_carlo_kl(layer.posterior, layer.prior, num_samples=4000)
        assert ((mc.kl - layer.kl).abs() <= 4 * mc.stderr).all(), name


def test_per_layer_terms_sum_to_the_total_and_the_elbo_is_unweighted():
    model = small_model()
    out = model(images())
    loss = ELBO(weighting=Constant(beta=3.0))(out, step=0, training=True)
    per_layer = [loss.terms[f"kl/{name}"] for name in model.layer_names]
    torch.testing.assert_close(sum(per_layer), loss.terms["kl"])
    torch.testing.assert_close(loss.terms["elbo"], -loss.terms["recon"] - loss.terms["kl"])
    torch.testing.assert_close(loss.loss, loss.terms["recon"] + 3.0 * loss.terms["kl"])


def test_kl_balancing_weighs_layers_by_their_kl_per_element_during_its_steps_only():
    model = small_model()
    out = model(images())
    objective = ELBO(weighting=LinearWarmup(start=0.5, end=1.0, steps=100), kl_balancing_steps=10)
    parts = out.kl_parts()
    coefficients = balance(parts)
    torch.testing.assert_close(torch.stack(list(coefficients.values())).mean(), torch.tensor(1.0))
    per_element = {n: (kl.mean() + 0.01) / parts.sizes[n] for n, kl in parts.per_layer.items()}
    ratio = coefficients["z1"] / coefficients["z3"]
    torch.testing.assert_close(ratio, (per_element["z1"] / per_element["z3"]).detach())
    balanced = objective(out, step=5, training=True)
    beta = 0.5 + 0.5 * 5 / 100
    expected = -out.log_px.mean() + beta * sum(coefficients[n] * kl.mean() for n, kl in parts.per_layer.items())
    torch.testing.assert_close(balanced.loss, expected)
    assert set(balanced.weights) >= {"kl_weight", "kl_balance/z1", "kl_balance/z2", "kl_balance/z3"}
    after = objective(out, step=10, training=True)  # past its steps: the plain weighted KL
    torch.testing.assert_close(after.loss, -out.log_px.mean() + (0.5 + 0.5 * 10 / 100) * out.kl.mean())
    assert not any(key.startswith("kl_balance") for key in after.weights)
    validation = objective(out, step=5, training=False)  # never in validation
    assert not any(key.startswith("kl_balance") for key in validation.weights)


def test_free_bits_per_layer_frees_each_whole_layer_below_its_floor():
    model = small_model()
    out = model(images())
    parts = out.kl_parts()
    floor = float(parts.per_layer["z1"].mean().detach()) + 1.0  # above z1's KL, so z1 is free
    result = FreeBits(floor=floor, per="layer")(out.log_px, parts, step=0, training=True)
    means = torch.stack([kl.mean() for kl in parts.per_layer.values()])
    torch.testing.assert_close(result.loss, -out.log_px.mean() + means.clamp_min(floor).sum())
    per_unit = FreeBits(floor=0.0)(out.log_px, parts, step=0, training=True)  # units of every layer, floor 0
    torch.testing.assert_close(per_unit.loss, -out.log_px.mean() + out.kl.mean(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("prior", "estimator"),
    [
        (StandardNormal, "analytic"),
        (LearnedGaussian, "analytic"),
        (lambda: GaussianMixture(num_components=3), "mc"),
        (lambda: VampPrior(num_pseudo_inputs=4), "mc"),
    ],
    ids=["standard", "learned", "mixture", "vamp"],
)
def test_every_prior_works_on_the_top_layer(prior, estimator):
    model = small_model(prior=prior())
    assert model.top.kl_estimator == estimator and model.kl_estimator == estimator
    out = model(images())
    assert torch.isfinite(out.kl).all()
    (out.kl - out.log_px).mean().backward()
    assert all(p.grad is not None for p in model.top.prior.parameters())
    assert model.sample(3).shape == (3, 1, 8, 8)


@torch.no_grad()
def test_importance_weights_use_every_layer_and_tighten_the_bound():
    model = small_model()
    x = images(4)
    out = model(x, samples=3)
    assert out.log_px.shape == (12,) and out.log_w().shape == (3, 4)
    log_ratio = sum(layer.log_ratio() for layer in out.latents.values())
    torch.testing.assert_close(out.log_w().flatten(), out.log_px - log_ratio)
    torch.manual_seed(0)
    elbo = torch.stack([model.log_weights(x, 1)[0] for _ in range(200)]).mean()
    iwae = torch.stack([torch.logsumexp(model.log_weights(x, 50), 0) - math.log(50) for _ in range(20)]).mean()
    assert iwae > elbo


def test_the_iwae_objective_trains_a_hierarchy_from_one_pass_with_k_samples():
    module = VAEModule(model=HierarchicalVAE(image_shape=(1, 8, 8), **SMALL), objective=IWAE(samples=5))
    out = module.model(images(4), samples=module.objective.samples)
    assert out.samples == 5 and out.log_px.shape == (20,)
    loss = module.objective(out, step=0, training=True)
    torch.testing.assert_close(loss.loss, -loss.terms["iwae"])
    split = {name for name in module.objective.term_names() if name.startswith("kl_split/")}  # validation and test
    assert split == {"kl_split/mi", "kl_split/tc", "kl_split/dwkl"}
    assert set(module.objective.term_names()) - split == set(loss.terms)
    validation = module.objective(out, step=0, training=False, dataset_size=100)  # the split as well
    assert set(module.objective.term_names()) == set(validation.terms)
    loss.loss.backward()
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)


@torch.no_grad()
def test_samples_at_temperatures_and_reconstructions_keeping_the_top_layers():
    model = small_model()
    x = images(4)
    torch.manual_seed(3)
    cold = model.sample(4, temperature=0.0)
    torch.manual_seed(4)
    assert torch.equal(cold, model.sample(4, temperature=0.0))  # no spread: no randomness left
    full = model.reconstruct(x)
    assert torch.equal(full, model.reconstruct(x))  # posterior means all the way down
    torch.manual_seed(5)
    top_only = model.reconstruct(x, keep=1)
    torch.manual_seed(6)
    assert not torch.equal(top_only, model.reconstruct(x, keep=1))  # the layers below come from the prior


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (dict(resolutions=(1, 2)), "one resolution per latent layer"),
        (dict(resolutions=(4, 2, 1)), "non-decreasing"),
        (dict(resolutions=(1, 1, 3)), "resolution 3 does not divide the working size"),
        (dict(resolutions=(2, 3, 4)), "resolution 2 does not divide the next layer's, 3"),
        (dict(stem_channels=(8, 8, 8)), "divisible by 16"),
    ],
)
def test_architecture_errors_are_one_line(layout, message):
    with pytest.raises(ConfigError, match=message) as error:
        small_model({**SMALL, **layout})
    assert "\n" not in str(error.value) and str(error.value).startswith("HierarchicalVAE ")


@torch.no_grad()
def test_resampling_between_resolutions_is_learned_not_pooled():
    """A vector layer must see the whole map and write a spatial pattern into it. Going up from 1×1, two states'
    difference varies over positions (nearest upsampling would copy one value to every position); going down to
    1×1, a map and its mirror image, which have the same average, give different features (pooling would not)."""
    model = small_model()
    h = torch.randn(2, 8, 1, 1)
    up = model.resize(h, 2)
    assert up.shape == (2, 8, 2, 2)
    difference = up[0] - up[1]
    assert float(difference.flatten(1).std(dim=1).min()) > 1e-3  # per channel, across the four positions
    e = torch.randn(1, 8, 2, 2)
    mirrored = e.flip(-1)
    torch.testing.assert_close(e.mean(dim=(-2, -1)), mirrored.mean(dim=(-2, -1)))
    assert not torch.allclose(model.downsample[-1](e), model.downsample[-1](mirrored), atol=1e-4)


def test_widths_per_resolution_set_the_state_at_each_resolution():
    """``widths`` gives the state other channels at the resolutions it names (the vectors wider than the maps); the
    resampling between resolutions changes the channels, and vector layers use 1×1 convolutions."""
    model = small_model({**SMALL, "widths": {1: 12, 2: 10}})
    out = model(images())
    assert out.log_px.shape == (6,)
    assert model.initial.shape == (12, 1, 1)
    assert [layer.width for layer in model.below] == [10, 8]
    assert model.below[0].prior_head[0].kernel_size == (3, 3)  # a 2×2 map
    assert model.top.head[0].kernel_size == (1, 1)  # a vector
    with pytest.raises(ConfigError, match="widths names resolution 3"):
        small_model({**SMALL, "widths": {3: 16}})


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (dict(latent_channels=()), r"latent_channels must be one or more positive sizes, got \(\)"),
        (dict(latent_channels=(6, 0, 3)), r"latent_channels must be one or more positive sizes, got \(6, 0, 3\)"),
        (dict(resolutions=(0, 2, 4)), "resolutions must be positive"),
        (dict(width=0), "width and stem_channels must be positive, blocks 0 or more"),
        (dict(blocks=-1), "width and stem_channels must be positive, blocks 0 or more"),
        (dict(stem_channels=(0,)), "width and stem_channels must be positive, blocks 0 or more"),
        (dict(widths={1: 0}), r"widths must be positive, got \{1: 0\}"),
    ],
    ids=["no layers", "empty layer", "resolution 0", "width 0", "negative blocks", "empty stem", "width 0 at 1"],
)
def test_bad_layouts_are_one_line_config_errors(layout, message):
    """The layouts no hierarchy can have, refused before any weight is made (the old single-layer ``latent_dim``
    is no argument of a hierarchy: each layer's size is in ``latent_channels``)."""
    with pytest.raises(ConfigError, match=message) as error:
        small_model({**SMALL, **layout})
    assert "\n" not in str(error.value) and str(error.value).startswith("HierarchicalVAE ")
    with pytest.raises(TypeError, match="latent_dim"):
        HierarchicalVAE(image_shape=(1, 8, 8), latent_dim=8, **SMALL)


def written_before(name: str) -> tuple[dict, VAEModule, torch.Tensor]:
    """tests/data/<name>.json's numbers, <name>.ckpt loaded, and the three seeded images they were computed on."""
    expected = json.loads((DATA / f"{name}.json").read_text())
    module = load_module(DATA / f"{name}.ckpt").eval()
    g = torch.Generator().manual_seed(0)
    return expected, module, torch.rand(3, 1, 28, 28, generator=g).round()


def test_a_checkpoint_written_before_the_latent_layers_loads_with_the_same_numbers():
    """tests/data/single-layer-v0.ckpt was written by the single-layer VAE before the posterior head and the prior
    moved into the latent layer (MLPNet, 2 latent dimensions, a learned Gaussian prior, GECO): it loads, and gives
    the numbers that version computed (tests/data/single-layer-v0.json)."""
    expected, module, x = written_before("single-layer-v0")
    with torch.no_grad():
        moments = module.model.posterior(x)
        z = torch.tensor([[0.5, -1.0], [1.5, 0.25], [0.0, 0.0]])
        decoded = module.model.decode(z).sum(dim=(1, 2, 3))
        kl = module.model.latent.regularizer(moments.distribution(), module.model.prior_distribution()).kl
    torch.testing.assert_close(moments.mean, torch.tensor(expected["posterior_mean"]))
    torch.testing.assert_close(moments.logvar, torch.tensor(expected["posterior_logvar"]))
    torch.testing.assert_close(decoded, torch.tensor(expected["decoded_sum"]))
    torch.testing.assert_close(kl, torch.tensor(expected["kl"]))
    assert float(module.objective.weighting.multiplier) == pytest.approx(expected["geco_multiplier"])


def test_a_hierarchy_written_before_learned_resampling_loads_with_the_same_numbers_and_its_optimizer():
    """tests/data/topdown-v0.ckpt was written (3 steps of hvae_quickstart at width 8) when TopDown pooled down and
    upsampled by nearest neighbour between resolutions: it loads with the resampling weights that compute exactly
    those, gives the numbers that version computed (tests/data/topdown-v0.json), and its Adam state loads into
    today's optimizer, each saved moment on its parameter, the new resampling parameters without state."""
    expected, module, x = written_before("topdown-v0")
    with torch.no_grad():
        top = module.model.top_posterior(x)
        reconstruction = module.model.reconstruct(x).sum(dim=(1, 2, 3))
        torch.manual_seed(0)
        output = module.model(x)
    torch.testing.assert_close(top.mean, torch.tensor(expected["top_posterior_mean"]))
    torch.testing.assert_close(reconstruction, torch.tensor(expected["reconstruction_sum"]))
    torch.testing.assert_close(output.log_px, torch.tensor(expected["log_px"]))
    for name, kl in expected["kl_per_layer"].items():
        torch.testing.assert_close(output.latents[name].kl, torch.tensor(kl))

    checkpoint = torch.load(DATA / "topdown-v0.ckpt", weights_only=True)
    saved = checkpoint["optimizer_states"][0]["state"]
    module.on_load_checkpoint(checkpoint)
    optimizer = module.configure_optimizers()
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    names = [name for name, _ in module.named_parameters()]
    stem = optimizer.state[module.model.stem[0].weight]
    assert len(saved) == len(names) - 4  # the two resampling convolutions' weights and biases are new
    assert any(torch.equal(stem["exp_avg"], state["exp_avg"]) for state in saved.values())
    assert module.model.downsample[0].weight not in optimizer.state
    assert module.model.upsample["7"].weight not in optimizer.state
    module.train()
    loss = module.objective(module.model(x), step=0, training=True).loss
    loss.backward()
    optimizer.step()  # the saved moments have today's shapes (3×3 kernels on 1×1 maps are 1×1 now)
    for parameter, state in optimizer.state.items():
        assert state["exp_avg"].shape == parameter.shape
