"""Runs written before models and objectives were their own objects: tests/data/<kind>-v1.ckpt (3 steps of `vae fit`
with the code of that time), its run's config.yaml (<kind>-v1.yaml, as that version saved it) and the numbers that
version computed on three seeded images (<kind>-v1.json). Each kind still loads with the same numbers, resumes with its
old config, evaluates, samples and exports; the old layout is read in today's (vae.training.migration)."""

import json
import shutil

import pytest
import torch
import yaml
from conftest import DATA, offline, run

from vae.models import VAE, ConditionalVAE, HierarchicalVAE, JointVAE
from vae.objectives import ELBO, FactorVAE
from vae.objectives.weighting import GECO, Capacities, LinearWarmup
from vae.training.checkpoint_io import load_module
from vae.training.migration import migrate_config, migrate_hparams

KINDS = {  # what each old checkpoint is today: its model, its objective's weighting or penalty
    "single": (VAE, GECO),
    "topdown": (HierarchicalVAE, LinearWarmup),
    "conditional": (ConditionalVAE, None),
    "joint": (JointVAE, Capacities),
    "factor": (VAE, FactorVAE),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_of_the_earlier_layout_loads_as_today_s_model_with_the_same_numbers(kind):
    expected = json.loads((DATA / f"{kind}-v1.json").read_text())
    module = load_module(DATA / f"{kind}-v1.ckpt").eval()
    model_class, part = KINDS[kind]
    assert type(module.model) is model_class and isinstance(module.objective, ELBO)
    if part is not None:
        assert isinstance(module.objective.penalty if part is FactorVAE else module.objective.weighting, part)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)).round()
    labels = torch.tensor([1, 4, 7])
    with torch.no_grad():
        encoding = module.model.encode(x, context=labels)
        decoded = module.model.decode(encoding.mean, context=labels).sum(dim=(1, 2, 3))
        torch.manual_seed(0)
        out = module.model(x, context=labels)
    torch.testing.assert_close(encoding.mean, torch.tensor(expected["encode_mean"]))
    torch.testing.assert_close(encoding.variance, torch.tensor(expected["encode_variance"]))
    torch.testing.assert_close(decoded, torch.tensor(expected["decoded_sum"]))
    torch.testing.assert_close(out.log_px, torch.tensor(expected["log_px"]))
    for name, kl in expected["kl"].items():
        torch.testing.assert_close(out.latents[name].kl, torch.tensor(kl))
    if kind == "single":  # the weighting's state (GECO's multiplier) came along
        assert float(module.objective.weighting.multiplier) == pytest.approx(expected["geco_multiplier"])


def test_the_earlier_hyperparameters_and_config_become_model_objective_and_guard():
    hparams = torch.load(DATA / "conditional-v1.ckpt", weights_only=True)["hyper_parameters"]
    today = migrate_hparams(hparams)
    assert today["model"]["class_path"] == "vae.models.conditional.ConditionalVAE"
    assert today["model"]["init_args"]["context_size"] == 10  # the old `classes`, now the data's context size
    assert today["model"]["init_args"]["network"]["class_path"] == "vae.layers.nets.mlp.MLPNet"
    assert today["objective"]["class_path"] == "vae.objectives.elbo.ELBO"
    config = migrate_config(yaml.safe_load((DATA / "single-v1.yaml").read_text()))
    assert config["model"]["model"]["init_args"]["prior"]["class_path"] == "vae.layers.priors.LearnedGaussian"
    assert config["model"]["objective"]["init_args"]["weighting"]["class_path"] == "vae.objectives.weighting.GECO"
    assert config["guard"] == {"grad_clip": None, "grad_skip": "adaptive", "nonfinite": "stop"}
    assert migrate_config(config) == config  # today's layout passes unchanged


@pytest.fixture
def old_run(tmp_path):
    """An earlier run folder: <kind>-v1's checkpoint as last.ckpt, its config.yaml as that version saved it."""

    def make(kind: str):
        folder = tmp_path / "runs" / kind
        (folder / "checkpoints").mkdir(parents=True)
        shutil.copy(DATA / f"{kind}-v1.ckpt", folder / "checkpoints" / "last.ckpt")
        shutil.copy(DATA / f"{kind}-v1.yaml", folder / "config.yaml")
        return folder

    return make


@pytest.mark.parametrize("kind", KINDS)
def test_an_earlier_run_resumes_with_its_own_config(kind, old_run, tmp_path):
    """`vae fit --config <old config.yaml> --ckpt_path <old last.ckpt>`: read in today's layout (a note says so),
    and trained on from step 3; the weights and the guard's state carried over."""
    folder = old_run(kind)
    args = ["fit", "--config", str(folder / "config.yaml"), "--ckpt_path", str(folder / "checkpoints" / "last.ckpt")]
    args += ["--trainer.default_root_dir", str(folder), "--trainer.max_steps", "5", "--trainer.enable_progress_bar"]
    result = run([*args, "false"], cwd=tmp_path, env=offline(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "in an earlier layout; read in today's" in result.stderr
    resumed = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5
    assert all(
        key.startswith(("model.", "objective.", "latent_stats.", "epoch_means.")) for key in resumed["state_dict"]
    )
    if kind == "single":  # grad_skip adaptive: the guard's count went on from the 3 steps before
        assert int(resumed["callbacks"]["Guard"]["seen"]) == 5


def test_an_earlier_run_evaluates_samples_and_exports(old_run, tmp_path):
    folder = old_run("conditional")
    env = offline(tmp_path)
    evaluated = run(["evaluate", str(folder), "--samples", "4", "--limit", "1", "--no-wandb"], cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "log p(x | y)" in evaluated.stdout
    sampled = run(["sample", str(folder), "--n", "2", "--out", "grid.png"], cwd=tmp_path, env=env)
    assert sampled.returncode == 0 and "10 classes × 2" in sampled.stdout, sampled.stderr[-3000:]
    exported = run(["export", str(folder), "--format", "torchscript", "--out", "out"], cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "out" / "decoder.pt").is_file()
