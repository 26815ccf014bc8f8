"""The real `vae` command, in this process: a short training run (the session's quick start, conftest's
``trained_run``) read back from its W&B run file, `vae evaluate` and `vae test` on it, --help, --print_config, and bad
input. (The installed console script itself, in a process of its own: tests/e2e/test_console_script.py.)"""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import QUICKSTART, REPO, new_user, run

from vae.training.tracking import read_history


@pytest.fixture(scope="module")
def fit_run(trained_run, tmp_path_factory):
    """The quick start after 2 short epochs (4 steps each, metrics every 2 steps) on the embedded MNIST subset, as a
    new user runs it (no W&B key, no WANDB_MODE: the command logs offline by itself), and what the fit printed. A
    copy of the session's run (its run folder and its W&B files), since the tests here add to it (evaluations, a test
    part) and the other readers of the session's run must find it as the fit left it."""
    _, root, _ = trained_run
    tmp_path = tmp_path_factory.mktemp("fit")
    shutil.copytree(root / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("*.lock"))
    return tmp_path, (root / "fit.out").read_text()


def test_fit_leaves_checkpoints_images_config_and_sync_line(fit_run):
    tmp_path, stdout = fit_run
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    checkpoints = sorted(p.name for p in (run_folder / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)
    for name in ("samples", "reconstructions", "traversals", "interpolations"):
        assert (run_folder / "images" / f"{name}_epoch000.png").stat().st_size > 1000
        assert (run_folder / "images" / f"{name}_epoch001.png").stat().st_size > 1000
    config = yaml.safe_load((run_folder / "config.yaml").read_text())
    assert config["model"]["model"]["init_args"]["latent_dim"] == 16
    assert "W&B run saved offline; upload it with: wandb sync " in stdout
    assert "best checkpoint (val/elbo = " in stdout
    assert "KL estimator: analytic (closed form)" in stdout


def test_wandb_run_file_holds_separate_raw_terms_and_images(fit_run):
    tmp_path, _ = fit_run
    (run_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = read_history(run_file)
    for key in ("train/recon", "train/kl", "train/elbo", "train/loss", "train/kl_weight"):
        assert len(history.values(key)) == 4, key  # 8 steps, logged every 2
    for key in ("val/recon", "val/kl", "val/elbo", "val/loss", "val/active_units", "val/kl_dim/00"):
        assert len(history.values(key)) == 2, key
    assert set(history.values("train/kl_weight")) == {1.0}
    # The raw KL is positive and the logged ELBO is the unweighted one: elbo = −recon − kl.
    for recon, kl, elbo in zip(history.values("val/recon"), history.values("val/kl"), history.values("val/elbo")):
        assert kl > 0 and recon > 0
        assert elbo == pytest.approx(-recon - kl, rel=1e-5)
    first, last = history.values("val/elbo")
    assert last > first
    for name in ("samples", "reconstructions", "traversals", "interpolations"):
        images = history.values(f"val/images/{name}")
        assert len(images) == 2 and images[0]["_type"] == "images/separated"


def test_evaluate_a_checkpoint_writes_json_pictures_and_the_wandb_summary(fit_run):
    tmp_path, _ = fit_run
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    checkpoint = run_folder / "checkpoints" / "last.ckpt"
    env = new_user(tmp_path / "home")  # the README's command, as a new user runs it: W&B offline by itself
    args = ["evaluate", str(checkpoint), "--samples", "20", "--chunk", "8", "--limit", "2", "--images"]
    result = run(args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "log p(x), importance-weighted, K=20" in result.stdout
    numbers = json.loads((run_folder / "checkpoints" / "last.test.k20.json").read_text())
    assert numbers["num_examples"] == 200 and numbers["split"] == "test"
    assert numbers["log_likelihood"] >= numbers["elbo"] - 1.0  # a tighter bound, up to noise
    assert numbers["bits_per_dim"] == pytest.approx(-numbers["log_likelihood"] / (784 * math.log(2)))
    for name in ("samples", "reconstructions", "traversals", "interpolations"):
        assert (run_folder / "checkpoints" / "last.test.k20" / f"{name}.png").stat().st_size > 1000
    wandb_files = (tmp_path / "runs" / "wandb").glob(f"*-{run_folder.name}/run-*.wandb")
    summaries = [read_history(f).summary for f in wandb_files]
    assert any(s.get("eval/test/log_likelihood") == pytest.approx(numbers["log_likelihood"]) for s in summaries)
    again = run(args, cwd=tmp_path, env=env)  # a second evaluation never overwrites the first
    assert again.returncode == 0 and (run_folder / "checkpoints" / "last.test.k20.2.json").is_file()


def test_test_results_belong_to_the_run_they_test(fit_run):
    """`vae test --config <run>/config.yaml --ckpt_path <checkpoint>`, as the README gives it: the test metrics
    go to the run's own W&B run, the run folder keeps this part's config, and no other run folder appears."""
    tmp_path, _ = fit_run
    (run_folder,) = (tmp_path / "runs" / "vae").iterdir()
    before = len(list((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{run_folder.name}")))
    checkpoint = run_folder / "checkpoints" / "last.ckpt"
    args = ["test", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(checkpoint)]
    result = run([*args, "--trainer.enable_progress_bar", "false"], cwd=tmp_path, env=new_user(tmp_path / "home"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs" / "vae").iterdir()] == [run_folder.name]  # no stray run folder
    parts = sorted((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{run_folder.name}/run-*.wandb"))
    assert len(parts) == before + 1
    assert read_history(parts[-1]).values("test/elbo")  # logged under the tested run's id
    assert (run_folder / "config-test-1.yaml").is_file()


def test_a_prior_without_closed_form_trains_and_its_run_says_kl_estimator_mc(tmp_path, offline_env):
    """The mixture prior layered over the quick start: the W&B run config records the resolved estimator."""
    args = ["fit", "--config", str(QUICKSTART), "--config", str(REPO / "configs" / "priors" / "mixture.yaml")]
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "8", "--trainer.log_every_n_steps", "2"]
    limits += ["--trainer.limit_val_batches", "1"]
    result = run([*args, *limits, "--trainer.enable_progress_bar", "false"], cwd=tmp_path, env=offline_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "KL estimator: mc (Monte Carlo, 1 sample(s))" in result.stdout
    (run_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = read_history(run_file)
    # The run config: the command's sections as given (model.model: the model's class and arguments), the module's
    # parts as built (module: specs with every default filled in), and the KL estimator in use.
    asked = history.config["model"]["model"]
    built = history.config["module"]["model"]
    assert asked["class_path"] == "vae.models.VAE" and built["class_path"] == "vae.models.vae.VAE"
    assert history.config["kl_estimator"] == "mc"  # what was used ...
    assert asked["init_args"]["kl_estimator"] == "auto"  # ... and what was asked
    assert built["init_args"]["prior"]["class_path"] == "vae.layers.priors.GaussianMixture"
    assert built["init_args"]["prior"]["init_args"] == {"num_components": 10}
    assert history.config["module"]["objective"]["class_path"] == "vae.objectives.elbo.ELBO"
    (val_kl,) = history.values("val/kl")
    assert val_kl > 0 and len(history.values("train/kl")) == 4
    assert not history.values("val/kl_dim/00")  # a mixture prior has no per-dimension KL


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir() and not os.environ.get("VAE_REQUIRE_FASHION_MNIST"),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_short_training_on_the_full_fashion_mnist_improves_the_validation_elbo(tmp_path, offline_env):
    """90 steps on the real 55,000 training images, validating on 640 images every 30 steps."""
    config = REPO / "configs" / "fashion_mnist.yaml"
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "90"]
    limits += ["--trainer.val_check_interval", "30", "--trainer.limit_val_batches", "5"]
    result = run(
        ["fit", "--config", str(config), *limits, "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path,
        env=offline_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_file,) = (tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")
    history = read_history(run_file)
    elbo = history.values("val/elbo")
    assert len(elbo) == 3 and elbo[-1] > elbo[0], elbo
    assert history.config["data"]["class_path"] == "vae.data.FashionMNIST"


def test_help_and_print_config(tmp_path, offline_env):
    help_text = run(["fit", "--help"], cwd=tmp_path, env=offline_env)
    assert help_text.returncode == 0 and "--model.model MODEL" in help_text.stdout
    model_help = run(["fit", "--model.model.help", "vae.models.VAE"], cwd=tmp_path, env=offline_env)
    assert model_help.returncode == 0 and "--model.model.latent_dim" in model_help.stdout
    printed = run(
        ["fit", "--config", str(QUICKSTART), "--model.model.latent_dim", "32", "--print_config"],
        cwd=tmp_path,
        env=offline_env,
    )
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert config["model"]["model"]["init_args"]["latent_dim"] == 32
    assert config["data"]["class_path"] == "vae.data.EmbeddedMNIST"
    assert not (tmp_path / "runs").exists()


def test_a_key_of_the_old_layout_names_its_new_key_in_one_line(tmp_path, offline_env):
    old = run(
        ["fit", "--config", str(QUICKSTART), "--model.latent_dim", "32", "--print_config"],
        cwd=tmp_path,
        env=offline_env,
    )
    assert old.returncode == 2 and old.stderr.count("\n") == 1 and "Traceback" not in old.stderr, old.stderr
    assert "--model.latent_dim is now --model.model.latent_dim" in old.stderr
    assert not old.stdout and not (tmp_path / "runs").exists()


def test_training_proceeds_offline_when_wandb_is_unreachable(tmp_path, offline_env):
    """Logged in (an API key) but the server does not answer: the run logs offline and says how to sync."""
    env = {k: v for k, v in offline_env.items() if k != "WANDB_MODE"}
    env.update(WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567", WANDB_BASE_URL="http://127.0.0.1:9")
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    result = run(["fit", "--config", str(QUICKSTART), *limits], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B server 127.0.0.1:9 unreachable: logging offline (upload later with wandb sync)" in result.stderr
    assert "W&B run saved offline; upload it with: wandb sync " in result.stdout
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
