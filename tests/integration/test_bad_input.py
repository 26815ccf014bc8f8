"""Bad input through the `vae` command (in this process, ``support.run``), table-driven: each case gives one line
naming the problem, a non-zero exit, and leaves every existing file as it was (and writes none). Hostile config
files (deeply nested, an alias bomb, a huge file, binary files) are refused the same way, each within a time
limit."""

import hashlib
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import QUICKSTART, REPO, run
from faults import Payload

TINY_MODEL = ["--model.model.latent_dim", "4", "--model.model.network.channels", "[8, 16]"]
TINY_MODEL += ["--model.model.network.hidden_dim", "32"]
TINY_RUN = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
DSPRITES = REPO / "configs" / "dsprites.yaml"
JOINT = REPO / "configs" / "jointvae_mnist.yaml"


@pytest.fixture(scope="module")
def offline_env_module():
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def existing(tmp_path_factory, offline_env_module):
    """A folder with a finished run (checkpoints, config, pictures, W&B files) and the files the cases use."""
    root = tmp_path_factory.mktemp("existing")
    fit = ["fit", "--config", str(QUICKSTART), *TINY_MODEL, *TINY_RUN, "--trainer.enable_progress_bar", "false"]
    result = run(fit, cwd=root, env={**offline_env_module, "WANDB_DIR": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    (run_folder,) = (root / "runs" / "vae").iterdir()
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
    checkpoint = torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"] = Payload(root / "pwned")
    torch.save(checkpoint, root / "evil.ckpt")
    (root / "untrusted.yaml").write_text(
        "model:\n  model:\n    init_args:\n      network:\n        class_path: faults.PlantedNet\n"
    )
    write_payloads(root, run_folder)
    return root, run_folder.relative_to(root)


TOUCH = "touch pwned"  # what every payload below runs if it is ever built: the cases check pwned never appears


def spec(class_path: str, **init_args) -> dict:
    return {"class_path": class_path, "init_args": init_args}


def model_part(**parts) -> dict:
    """A config's model.model.init_args with these parts."""
    return {"model": {"model": {"init_args": parts}}}


def write_payloads(root: Path, run_folder: Path) -> None:
    """Configs, studies and checkpoints that reach os, subprocess, builtins, importlib and pickle through trusted
    packages, and files a user may hand over by mistake (binary garbage, a key given twice, junk checkpoints)."""
    torch.save(Payload(root / "pwned"), root / "payload.pt")
    yamls = {
        "os_system.yaml": {"model": {"optimizer": spec("torch.os.system", command=TOUCH)}},
        "popen.yaml": model_part(network=spec("vae.commands.compare.subprocess.Popen", args=["touch", "pwned"])),
        "torch_load.yaml": {"model": {"optimizer": spec("torch.load", f="payload.pt", weights_only=False)}},
        "import_module.yaml": {"data": spec("vae.commands.importlib.import_module", name="faults")},
        "pickle_loads.yaml": model_part(likelihood=spec("torch.serialization.pickle.loads", data="x")),
        "builtins_type.yaml": model_part(network=spec("torch.optim.Adam.__class__", name="X", bases=[], dict={})),
        "callback_function.yaml": {
            "trainer": {"callbacks": [spec("pytorch_lightning.callbacks.LambdaCallback", on_fit_start="torch.load")]}
        },
        "evil_study.yaml": {"config": str(QUICKSTART), "weightings": {"a": spec("torch.os.system", command=TOUCH)}},
        "slash_study.yaml": {
            "config": str(QUICKSTART),
            "weightings": {"a/b": spec("vae.objectives.weighting.Constant")},
        },
        "parent_study.yaml": {
            "config": str(QUICKSTART),
            "weightings": {"../x": spec("vae.objectives.weighting.Constant")},
        },
        "not_a_model.yaml": {"model": {"model": spec("vae.layers.nets.ConvNet")}},
        "not_an_objective.yaml": {"model": {"objective": spec("vae.objectives.weighting.Constant", beta=1.0)}},
    }
    for name, content in yamls.items():
        (root / name).write_text(yaml.safe_dump(content))
    evil_run = yaml.safe_load((run_folder / "config.yaml").read_text())
    evil_run["data"] = spec("torch.os.system", command=TOUCH)
    (root / "evil_run.yaml").write_text(yaml.safe_dump(evil_run))
    (root / "garbage.yaml").write_bytes(bytes(range(256)) * 8)
    (root / "twice.yaml").write_text("model:\n  latent_dim: 4\nmodel:\n  kl_samples: 2\n")
    (root / "twice_study.yaml").write_text(
        f"config: {QUICKSTART}\nweightings:\n  a: {{class_path: vae.objectives.weighting.Constant}}\n"
        "  a: {class_path: vae.objectives.weighting.LinearWarmup}\n"
    )
    checkpoint = torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"] = spec("torch.os.system", command=TOUCH)  # plain data, not a pickle
    torch.save(checkpoint, root / "spec.ckpt")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.ckpt")  # a torch file, not a vae fit checkpoint
    torch.save([np.zeros(2)], root / "numpy.ckpt")  # needs numpy's pickled globals
    good = (run_folder / "checkpoints" / "last.ckpt").read_bytes()
    (root / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (root / "zip.ckpt").write_bytes(zip_of_text())


def zip_of_text() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Config files made to hurt the reader, in a folder of their own (the cases name them by absolute path, so the
    50 MB file is not copied for every case): each must be refused in one line, quickly, never parsed to the end."""
    folder = tmp_path_factory.mktemp("hostile")
    depth = 10_000
    (folder / "nested_lists.yaml").write_text("model: " + "[" * depth + "]" * depth + "\n")
    (folder / "nested_maps.yaml").write_text("".join(f"{' ' * i}k{i}:\n" for i in range(500)) + " " * 500 + "x\n")
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (folder / "billion_laughs.yaml").write_text("\n".join(laughs) + "\nmodel: *a9\n")
    many = "".join(f"k{i}: &k{i} {i}\n" for i in range(1_000)) + "all: [" + ", ".join(f"*k{i}" for i in range(1_000))
    (folder / "many_aliases.yaml").write_text(many + "]\n")
    line = "# " + "padding " * 12 + "\n"
    with open(folder / "huge.yaml", "w") as file:
        file.write("seed_everything: 0\n")
        file.write(line * (50_000_000 // len(line) + 1))  # 50 MB of comments: valid YAML, and far too large
    rng = np.random.default_rng(0)
    (folder / "random.yaml").write_bytes(rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    (folder / "control.yaml").write_text("model:\n  compile: \x00\x07\x1b\n")  # UTF-8, but not YAML's characters
    (folder / "picture.yaml").write_bytes(png())
    return folder


def png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


FIT = ["fit", "--config", str(QUICKSTART), *TINY_MODEL]
CASES = {
    "unknown key": ([*FIT, "--model.latent_size", "3"], "unrecognized arguments: --model.latent_size"),
    "unknown model key": ([*FIT, "--model.model.latent_size", "3"], "Option 'latent_size' is not accepted"),
    "abbreviated key": ([*FIT, "--model.lat", "3"], "unrecognized arguments: --model.lat"),
    "abbreviated model key": ([*FIT, "--model.model.lat", "3"], "Option 'lat' is not accepted"),
    "abbreviated section": ([*FIT, "--model.mod", "3"], "unrecognized arguments: --model.mod"),
    "misspelt key": ([*FIT, "--trainer.max_epoch", "3"], "(did you mean --trainer.max_epochs?)"),
    "misspelt class argument": ([*FIT, "--model.objective.weighting.bta", "2"], "is not accepted (did you mean beta?)"),
    "unknown key in a config file": ([*FIT, "--config", "bad.yaml"], "model.no_such_key"),
    "wrong type": ([*FIT, "--model.model.latent_dim", "many"], "model.model"),
    "missing config file": ([*FIT, "--config", "no/such/config.yaml"], "File does not exist"),
    "latent_dim zero": ([*FIT, "--model.model.latent_dim", "0"], "latent_dim must be a positive integer"),
    "latent_dim negative": ([*FIT, "--model.model.latent_dim", "-3"], "latent_dim must be a positive integer"),
    "negative beta": (
        [*FIT, "--model.objective.weighting.beta", "-1"],
        "Constant beta (the KL weight) must be 0 or more",
    ),
    "unknown weighting": ([*FIT, "--model.objective.weighting", "Sigmoid"], "model.objective"),
    "unknown prior": ([*FIT, "--model.model.prior", "Laplace"], "model.model"),
    "empty mixture": (
        [*FIT, "--model.model.prior", "GaussianMixture", "--model.model.prior.num_components", "0"],
        "GaussianMixture num_components must be at least 1",
    ),
    "analytic KL to a mixture prior": (
        [*FIT, "--config", str(REPO / "configs" / "priors" / "mixture.yaml"), "--model.model.kl_estimator", "analytic"],
        "kl_estimator 'analytic' needs a closed-form KL, and prior GaussianMixture has none",
    ),
    "unknown kl estimator": ([*FIT, "--model.model.kl_estimator", "exact"], "model.model"),
    "misspelled network option": ([*FIT, "--model.model.network.chanels", "[8]"], "Option 'chanels' is not accepted"),
    "image size the network cannot take": (
        [*FIT, "--model.model.network.channels", "[8, 8, 8]"],
        "needs height and width divisible by 8",
    ),
    "batch size zero": ([*FIT, "--data.batch_size", "0"], "batch_size must be a positive integer"),
    "unknown nonfinite policy": ([*FIT, "--guard.nonfinite", "ignore"], "guard.nonfinite"),
    "IWAE samples zero": (
        [*FIT, "--model.objective", "vae.objectives.IWAE", "--model.objective.samples", "0"],
        "samples",
    ),
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
        [*FIT, "--model.model.latent_dim", "8", "--ckpt_path", "last"],
        "model.model.latent_dim cannot change when resuming (the checkpoint runs/vae/",
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
    # The model's and the objective's settings moved: every old key is one line naming the new one.
    **{
        f"old key --{old}": ([*FIT, f"--{old}", value], f"--{old} is now {new}")
        for old, value, new in [
            ("model.latent_dim", "8", "--model.model.latent_dim"),
            ("model.network", "vae.layers.nets.MLPNet", "--model.model.network"),
            ("model.network.channels", "[8]", "--model.model.network.channels"),
            ("model.likelihood", "Gaussian", "--model.model.likelihood"),
            ("model.prior", "LearnedGaussian", "--model.model.prior"),
            ("model.kl_estimator", "mc", "--model.model.kl_estimator"),
            ("model.kl_samples", "2", "--model.model.kl_samples"),
            ("model.image_shape", "[1, 28, 28]", "set from the data"),
            ("model.weighting", "Constant", "--model.objective.weighting"),
            ("model.weighting.beta", "4", "--model.objective.weighting.beta"),
            ("model.penalty", "BetaTCVAE", "--model.objective.penalty"),
            ("model.kl_balancing_steps", "10", "--model.objective.kl_balancing_steps"),
            ("model.kl_split", "mss", "--model.objective.kl_split"),
            ("model.importance_samples", "5", "--model.objective vae.objectives.IWAE --model.objective.samples K"),
            ("model.grad_clip", "1.0", "--guard.grad_clip"),
            ("model.grad_skip", "adaptive", "--guard.grad_skip"),
            ("model.nonfinite", "skip", "--guard.nonfinite"),
        ]
    },
    # A section names a class of the kind it builds: a model under model.model, an objective under model.objective.
    "a network as the model": (
        [*FIT, "--model.model", "vae.layers.nets.ConvNet"],
        "vae.layers.nets.ConvNet is not a subclass of LatentVariableModel",
    ),
    "a network as the model, in a config": (
        [*FIT, "--config", "not_a_model.yaml"],
        "vae.layers.nets.ConvNet is not a subclass of LatentVariableModel",
    ),
    "a weighting as the objective": (
        [*FIT, "--model.objective", "vae.objectives.weighting.Constant"],
        "vae.objectives.weighting.Constant is not a subclass of Objective",
    ),
    "a weighting as the objective, in a config": (
        [*FIT, "--config", "not_an_objective.yaml"],
        "vae.objectives.weighting.Constant is not a subclass of Objective",
    ),
    "a conditional model on data without labels": (
        ["fit", "--config", str(DSPRITES), "--model.model", "vae.models.ConditionalVAE"],
        "ConditionalVAE",
    ),
    "IWAE on a JointVAE": (
        ["fit", "--config", str(JOINT), "--model.objective", "vae.objectives.IWAE"],
        "IWAE objective needs exact log densities",
    ),
    # A config can run no code, however the path is spelt (decided on the object the path reaches).
    "config: os.system through torch": ([*FIT, "--config", "os_system.yaml"], "it is the function posix.system"),
    "command line: os.system through vae": (
        [*FIT, "--model.optimizer", "vae.training.runs.os.system"],
        "refusing vae.training.runs.os.system: it is the function posix.system",
    ),
    "config: subprocess through vae": (
        [*FIT, "--config", "popen.yaml"],
        "vae.commands.compare.subprocess.Popen is subprocess.Popen, which is not from a trusted module",
    ),
    "config: torch.load of a pickle": (
        [*FIT, "--config", "torch_load.yaml"],
        "refusing torch.load: it is the function torch.serialization.load",
    ),
    "config: importlib through vae": (
        [*FIT, "--config", "import_module.yaml"],
        "it is the function importlib.import_module",
    ),
    "config: pickle through torch": ([*FIT, "--config", "pickle_loads.yaml"], "it is the function _pickle.loads"),
    "config: builtins through torch": (
        [*FIT, "--config", "builtins_type.yaml"],
        "torch.optim.Adam.__class__ is builtins.type, which is not from a trusted module",
    ),
    "config: a function as a callback's argument": (
        [*FIT, "--config", "callback_function.yaml"],
        "on_fit_start: refusing torch.serialization.load: it is the function torch.serialization.load",
    ),
    "checkpoint: a spec that names os.system": (
        ["evaluate", "spec.ckpt", "--config", "{run}/config.yaml"],
        "model.model: refusing torch.os.system: it is the function posix.system",
    ),
    "evaluate: a run config whose data names os.system": (
        ["evaluate", "{run}/checkpoints/last.ckpt", "--config", "evil_run.yaml"],
        "refusing torch.os.system: it is the function posix.system",
    ),
    "compare: a study that names os.system": (["compare", "--study", "evil_study.yaml"], "function posix.system"),
    "compare: a flag that names subprocess": (
        ["compare", "--config", str(QUICKSTART), "--weighting", "a=vae.commands.compare.subprocess.run(args=x)"],
        "it is the function subprocess.run",
    ),
    # Files that are not what they should be.
    "binary config file": ([*FIT, "--config", "garbage.yaml"], "garbage.yaml: it is not a YAML text file"),
    "a key given twice in a config": ([*FIT, "--config", "twice.yaml"], "the key 'model' is given twice"),
    "evaluate: binary config file": (
        ["evaluate", "{run}/checkpoints/last.ckpt", "--config", "garbage.yaml"],
        "it is not a YAML text file",
    ),
    "compare: binary study file": (["compare", "--study", "garbage.yaml"], "it is not a YAML text file"),
    "compare: binary base config": (
        ["compare", "--config", "garbage.yaml", "--weighting", "a=Constant(beta=1)"],
        "it is not a YAML text file",
    ),
    "compare: a run name given twice in a study": (["compare", "--study", "twice_study.yaml"], "is given twice"),
    "compare: a run name given twice as flags": (
        ["compare", "--config", str(QUICKSTART), "--weighting", "a=Constant(beta=1)", "--weighting", "a=Constant()"],
        "the run name 'a' is given twice",
    ),
    "compare: a run name with a slash": (["compare", "--study", "slash_study.yaml"], "run name 'a/b': use letters"),
    "compare: a run name that leaves --out": (["compare", "--study", "parent_study.yaml"], "run name '../x'"),
    "junk checkpoint: a torch file of something else": (
        ["evaluate", "foreign.ckpt", "--config", "{run}/config.yaml"],
        "foreign.ckpt is not a vae fit checkpoint",
    ),
    "junk checkpoint: truncated": ([*FIT, "--ckpt_path", "truncated.ckpt"], "truncated.ckpt: not a torch checkpoint"),
    "junk checkpoint: a zip of something else": (
        ["evaluate", "zip.ckpt", "--config", "{run}/config.yaml"],
        "cannot load the checkpoint zip.ckpt",
    ),
    "junk checkpoint: numpy inside": (
        ["evaluate", "numpy.ckpt", "--config", "{run}/config.yaml"],
        "refusing the checkpoint numpy.ckpt: it carries a pickled numpy",
    ),
    # Config files made to hurt the reader: refused in one line before they are parsed (vae.core.config_file).
    "hostile: 10,000 nested lists": ([*FIT, "--config", "{hostile}/nested_lists.yaml"], "nested deeper than"),
    "hostile: 500 nested mappings": ([*FIT, "--config", "{hostile}/nested_maps.yaml"], "nested deeper than"),
    "hostile: a billion laughs": ([*FIT, "--config", "{hostile}/billion_laughs.yaml"], "aliases"),
    "hostile: a thousand aliases": ([*FIT, "--config", "{hostile}/many_aliases.yaml"], "aliases"),
    "hostile: a 50 MB config": ([*FIT, "--config", "{hostile}/huge.yaml"], "larger than a config file may be"),
    "hostile: random bytes": ([*FIT, "--config", "{hostile}/random.yaml"], "it is not a YAML text file"),
    "hostile: control characters": ([*FIT, "--config", "{hostile}/control.yaml"], "control.yaml"),
    "hostile: a picture": ([*FIT, "--config", "{hostile}/picture.yaml"], "it is not a YAML text file"),
    "hostile: a checkpoint as the config": ([*FIT, "--config", "{run}/checkpoints/last.ckpt"], "last.ckpt"),
    "hostile: /dev/zero as the config": ([*FIT, "--config", "/dev/zero"], "/dev/zero"),
    "evaluate: hostile run config": (
        ["evaluate", "{run}/checkpoints/last.ckpt", "--config", "{hostile}/billion_laughs.yaml"],
        "aliases",
    ),
    "compare: hostile study": (["compare", "--study", "{hostile}/nested_lists.yaml"], "nested deeper than"),
    "compare: huge base config": (
        ["compare", "--config", "{hostile}/huge.yaml", "--weighting", "a=Constant(beta=1)"],
        "larger than a config file may be",
    ),
    # Settings that Lightning (or the machine) cannot honour.
    "max_epochs negative": ([*FIT, "--trainer.max_epochs", "-3"], "`max_epochs` must be a non-negative integer"),
    "val_check_interval zero": ([*FIT, "--trainer.val_check_interval", "0"], "val_check_interval must be positive"),
    "check_val_every_n_epoch zero": ([*FIT, "--trainer.check_val_every_n_epoch", "0"], "must be 1 or more, got 0"),
    "save_top_k below -1": ([*FIT, "--checkpoint.save_top_k", "-5"], "Invalid value for save_top_k=-5"),
    "accelerator tpu without one": ([*FIT, "--trainer.accelerator", "tpu"], "trainer: Requirement 'torch_xla"),
    "latent_dim too large to allocate": (
        [*FIT, "--model.model.latent_dim", "1000000000"],
        "the model would have 98,000,055,409 parameters",
    ),
    "WANDB_MODE online without a key": ([*FIT], "WANDB_MODE=online, but W&B has no API key", {"WANDB_MODE": "online"}),
    "WANDB_MODE misspelt": ([*FIT], "WANDB_MODE=onlin is not a W&B mode", {"WANDB_MODE": "onlin"}),
    "evaluate: WANDB_MODE online without a key": (
        ["evaluate", "{run}/checkpoints/last.ckpt", "--samples", "2", "--limit", "1"],
        "WANDB_MODE=online, but W&B has no API key",
        {"WANDB_MODE": "online"},
    ),
    "predict is not a command": (["predict", "--config", str(QUICKSTART)], "invalid choice: 'predict'"),
    "test without a checkpoint": (["test", "--config", str(QUICKSTART)], "vae test needs --ckpt_path"),
    "evaluate: a read-only output folder": (
        ["evaluate", "{run}/checkpoints/last.ckpt", "--out", "/sys/vae-results"],
        "--out: cannot write in /sys",
    ),
}
if not torch.cuda.is_available():  # on a machine with a GPU these are not mistakes
    CASES["accelerator gpu without one"] = ([*FIT, "--trainer.accelerator", "gpu"], "trainer: No supported gpu backend")
    CASES["evaluate: --device cuda without one"] = (
        ["evaluate", "{run}/checkpoints/last.ckpt", "--device", "cuda"],
        "--device cuda: there is no such CUDA device here",
    )
SECONDS = 60  # the most any case may take (a hostile file must be refused, not parsed for minutes)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@contextmanager
def time_limit(seconds: int):
    """A TimeoutError in this (the main) thread if the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def outcomes(existing, hostile, tmp_path_factory, offline_env_module):
    """Every case run once, in this process, each in a fresh copy of the folder: case → (result, changed, ran)."""
    source, run_folder = existing
    found = {}
    for case, (args, _, *extra) in CASES.items():
        extra_env = extra[0] if extra else {}
        work = tmp_path_factory.mktemp("case") / "work"
        shutil.copytree(source, work, symlinks=True)
        before = snapshot(work)
        args = [arg.replace("{run}", str(run_folder)).replace("{hostile}", str(hostile)) for arg in args]
        with time_limit(SECONDS):
            result = run(args, cwd=work, env={**offline_env_module, "WANDB_DIR": str(work), **extra_env})
        after = snapshot(work)
        changed = sorted(set(before.items()) ^ set(after.items()))
        found[case] = result, changed, (work / "pwned").exists()
        shutil.rmtree(work.parent)
    return found


def test_the_table_keeps_every_case():
    """The 71 cases this table had before the models and objectives became objects (73 without a GPU), and the new
    ones: 4 keys of the new layout, 17 old keys, 6 classes of the wrong kind or models the data or objective cannot
    take, 13 hostile config files."""
    assert len(CASES) >= 71 + 4 + 17 + 6 + 13


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_gives_one_line_a_nonzero_exit_and_touches_nothing(case, outcomes):
    result, changed, payload_ran = outcomes[case]
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and CASES[case][1] in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not changed  # every existing file as it was, and none added
    assert not payload_ran
