"""Bad input through the real `vae` command, table-driven: each case gives one line naming the problem, a
non-zero exit, and leaves every existing file as it was (and writes none)."""

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import QUICKSTART, REPO
from faults import Payload
from test_cli import run_vae

TINY_MODEL = ["--model.latent_dim", "4", "--model.network.channels", "[8, 16]", "--model.network.hidden_dim", "32"]
TINY_RUN = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


@pytest.fixture(scope="module")
def existing(tmp_path_factory, offline_env_module):
    """A folder with a finished run (checkpoints, config, pictures, W&B files) and the files the cases use."""
    root = tmp_path_factory.mktemp("existing")
    fit = ["fit", "--config", str(QUICKSTART), *TINY_MODEL, *TINY_RUN, "--trainer.enable_progress_bar", "false"]
    result = run_vae(fit, cwd=root, env={**offline_env_module, "WANDB_DIR": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (root / "runs" / "vae").iterdir()
    (root / "bad.yaml").write_text("model:\n  no_such_key: 3\n")
    (root / "a_file").write_text("not a folder\n")
    corrupt = root / "corrupt" / "mnist"
    corrupt.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (corrupt / name).write_bytes(b"\x00\x00\x08\x03 not an idx file")
    (root / "garbage.ckpt").write_bytes(b"not a checkpoint")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["network"] = Payload(root / "pwned")
    torch.save(checkpoint, root / "evil.ckpt")
    (root / "untrusted.yaml").write_text("model:\n  network:\n    class_path: faults.PlantedNet\n")
    return root, run.relative_to(root)


@pytest.fixture(scope="module")
def offline_env_module(tmp_path_factory):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO / "tests")}


FIT = ["fit", "--config", str(QUICKSTART), *TINY_MODEL]
CASES = {
    "unknown key": ([*FIT, "--model.latent_size", "3"], "unrecognized arguments: --model.latent_size"),
    "abbreviated key": ([*FIT, "--model.lat", "3"], "unrecognized arguments: --model.lat"),
    "unknown key in a config file": ([*FIT, "--config", "bad.yaml"], "model.no_such_key"),
    "wrong type": ([*FIT, "--model.latent_dim", "many"], 'Parser key "model.latent_dim"'),
    "missing config file": ([*FIT, "--config", "no/such/config.yaml"], "File does not exist"),
    "latent_dim zero": ([*FIT, "--model.latent_dim", "0"], "latent_dim must be a positive integer"),
    "latent_dim negative": ([*FIT, "--model.latent_dim", "-3"], "latent_dim must be a positive integer"),
    "negative beta": ([*FIT, "--model.weighting.beta", "-1"], "Constant beta (the KL weight) must be 0 or more"),
    "unknown weighting": ([*FIT, "--model.weighting", "Sigmoid"], "model.weighting"),
    "unknown prior": ([*FIT, "--model.prior", "Laplace"], "model.prior"),
    "empty mixture": (
        [*FIT, "--model.prior", "GaussianMixture", "--model.prior.num_components", "0"],
        "GaussianMixture num_components must be at least 1",
    ),
    "analytic KL to a mixture prior": (
        [*FIT, "--config", str(REPO / "configs" / "priors" / "mixture.yaml"), "--model.kl_estimator", "analytic"],
        "kl_estimator 'analytic' needs a closed-form KL, and prior GaussianMixture has none",
    ),
    "unknown kl estimator": ([*FIT, "--model.kl_estimator", "exact"], "model.kl_estimator"),
    "misspelled network option": ([*FIT, "--model.network.chanels", "[8]"], "Option 'chanels' is not accepted"),
    "image size the network cannot take": (
        [*FIT, "--model.network.channels", "[8, 8, 8]"],
        "needs height and width divisible by 8",
    ),
    "batch size zero": ([*FIT, "--data.batch_size", "0"], "batch_size must be a positive integer"),
    "unknown nonfinite policy": ([*FIT, "--model.nonfinite", "ignore"], "model.nonfinite"),
    "missing dataset": (
        ["fit", "--data", "vae.data.MNIST", "--data.root", "nowhere"],
        "MNIST not found: looked in nowhere/mnist, ",
    ),
    "missing image folder": (
        ["fit", "--data", "vae.data.ImageFolder", "--data.path", "no/such/folder"],
        "image folder no/such/folder does",
    ),
    "corrupt dataset file": (["fit", "--data", "vae.data.MNIST", "--data.root", "corrupt"], "corrupt/mnist/"),
    "unwritable output folder": ([*FIT, "--trainer.default_root_dir", "a_file/runs"], "a_file is a file"),
    "untrusted class in a config": ([*FIT, "--config", "untrusted.yaml"], "VAE_TRUSTED_MODULES=faults"),
    "checkpoint not found": ([*FIT, "--ckpt_path", "none.ckpt"], "checkpoint not found: none.ckpt"),
    "nothing to resume": (
        [*FIT, "--trainer.logger.init_args.project", "other", "--ckpt_path", "last"],
        "no run under runs/other has a checkpoints/last.ckpt",
    ),
    "checkpoint from a different model": (
        [*FIT, "--model.latent_dim", "8", "--ckpt_path", "last"],
        "is from a different model (vae.decoder.",
    ),
    "resuming a checkpoint that carries code": ([*FIT, "--ckpt_path", "evil.ckpt"], "carries a pickled posix.system"),
    "evaluate: checkpoint not found": (["evaluate", "none.ckpt"], "checkpoint none.ckpt does not exist"),
    "evaluate: K = 0": (["evaluate", "{run}/checkpoints/last.ckpt", "--samples", "0"], "--samples must be a positive"),
    "evaluate: not a checkpoint": (["evaluate", "garbage.ckpt", "--config", "{run}/config.yaml"], "cannot load"),
    "evaluate: a checkpoint that carries code": (
        ["evaluate", "evil.ckpt", "--config", "{run}/config.yaml"],
        "refusing the checkpoint evil.ckpt: it carries a pickled posix.system",
    ),
    "compare: unknown weighting": (
        ["compare", "--config", str(QUICKSTART), "--weighting", "a=Sigmoid(beta=1)"],
        "Sigmoid",
    ),
    "benchmark: too few steps": (["benchmark", "--steps", "3", "--window", "2"], "at least 3 windows"),
}


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def outcomes(existing, tmp_path_factory, offline_env_module):
    """Every case run once, four at a time (most of each run is starting Python): case → (result, changed)."""
    source, run = existing

    def attempt(case: str):
        work = tmp_path_factory.mktemp("case") / "work"
        shutil.copytree(source, work, symlinks=True)
        before = snapshot(work)
        args = [arg.replace("{run}", str(run)) for arg in CASES[case][0]]
        result = run_vae(args, cwd=work, env={**offline_env_module, "WANDB_DIR": str(work)})
        after = snapshot(work)
        changed = sorted(set(before.items()) ^ set(after.items()))
        return result, changed, (work / "pwned").exists()

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(attempt, CASES)))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_gives_one_line_a_nonzero_exit_and_touches_nothing(case, outcomes):
    result, changed, payload_ran = outcomes[case]
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and CASES[case][1] in lines[0], lines[0]
    assert not changed  # every existing file as it was, and none added
    assert not payload_ran
