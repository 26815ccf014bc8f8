"""``vae compare``: one run per KL weighting, everything else equal, then a table and the rate–distortion picture.

    vae compare --config configs/quickstart.yaml --study configs/studies/weightings.yaml --out runs/compare/w
    vae compare --config configs/quickstart.yaml --weighting 'beta4=Constant(beta=4)' \\
                --weighting 'warmup=LinearWarmup(steps=300)' --name quick --out runs/compare/quick
    vae compare ... --sweep          # write a W&B sweep for `wandb agent` on any number of machines instead

A study file names the study, optionally the base config and extra arguments for every run, and the
weightings (run name → class_path/init_args, as under ``model.objective.weighting``):

    name: weightings
    config: configs/quickstart.yaml
    args: [--trainer.max_epochs, "20"]
    weightings:
      beta-1: {class_path: vae.objectives.weighting.Constant, init_args: {beta: 1.0}}
      warmup: {class_path: vae.objectives.weighting.LinearWarmup, init_args: {steps: 600}}

A run may also carry a penalty (``vae.objectives.penalties``) and a model: under ``runs:``, each run is a mapping
with ``weighting``, ``penalty`` and/or ``model`` (what ``model.objective.weighting``, ``model.objective.penalty`` and
``model.model`` take; a model's init_args are merged over the base config's), as in
``configs/studies/disentanglement.yaml`` and ``configs/studies/quantizers.yaml``:

    runs:
      beta-4: {weighting: {class_path: vae.objectives.weighting.Constant, init_args: {beta: 4.0}}}
      tcvae: {penalty: {class_path: vae.objectives.penalties.BetaTCVAE, init_args: {beta: 6.0}}}
      fsq: {model: {class_path: vae.models.VQVAE, init_args: {quantizer: {class_path: ...FSQ, init_args: {...}}}}}

Each run is the real ``vae fit`` in its own process (same seed, data and budget), logged to W&B in one group
named after the study. The output folder gets ``results.csv``, ``results.md``, ``rate_distortion.png``,
``kl_per_dimension.png``, ``training_curves.png``, the runs (``runs/``) and their logs (``logs/``). The table
carries each run's KL split (``val/kl_split/{mi,tc,dwkl}``) where logged, the model's own metrics over the
validation split where it has them (``val/<group>/<name>``: a VQ model's ``codebook/usage``), and, when the data has
known factors
(``vae.data.factors``), the disentanglement metrics of each run's last checkpoint (``points`` factor draws per
metric, ``--points`` or ``points:`` in the study file), plotted in ``kl_split.png`` and ``disentanglement.png``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from vae.core.config_file import load_yaml, read_yaml
from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.core.spec import is_spec
from vae.core.trust import build, resolve_class
from vae.models.base import LatentVariableModel
from vae.objectives.penalties import Penalty
from vae.objectives.weighting import Weighting as WeightingModule
from vae.training.tracking import RunHistory, read_history, run_file

Weighting = dict[str, object]  # {"class_path": ..., "init_args": {...}}


@dataclass(frozen=True)
class Study:
    name: str
    config: Path
    weightings: dict[str, Weighting]
    args: list[str] = field(default_factory=list)
    penalties: dict[str, Weighting] = field(default_factory=dict)  # run name → its penalty, where it has one
    models: dict[str, Weighting] = field(default_factory=dict)  # run name → its model, where it has one
    points: int = 1000  # factor draws per disentanglement metric, for data with known factors


@dataclass(frozen=True)
class RunResult:
    """One run's final validation numbers (nats per example) and where it lives."""

    name: str
    weighting: str
    recon: float
    kl: float
    elbo: float
    active_units: float | None  # None: the model has no latent layers to count (a diffusion model)
    wall_time: float
    kl_per_dim: list[float]
    run_file: Path
    kl_per_layer: dict[str, float] = field(default_factory=dict)  # a hierarchy's, by layer name
    penalty: str = ""
    kl_split: dict[str, float] = field(default_factory=dict)  # mi, tc, dwkl where logged
    disentanglement: dict[str, float] = field(default_factory=dict)  # for data with known factors
    model: str = ""  # the run's own model, where it has one
    bits_per_dim: float | None = None  # −elbo in bits per dimension, where logged
    model_metrics: dict[str, float] = field(default_factory=dict)  # the model's own (codebook/usage, ...)


FLAG = re.compile(r"^\s*([\w.\-]+)\s*=\s*([\w.]+)\s*\((.*)\)\s*$")


def parse_weighting_flag(text: str) -> tuple[str, Weighting]:
    """``name=Class(key=value, ...)`` → (name, {"class_path": ..., "init_args": {...}}); values are YAML."""
    match = FLAG.match(text)
    if match is None:
        raise ConfigError(f"--weighting {text!r} is not NAME=Class(key=value, ...), e.g. 'beta4=Constant(beta=4)'")
    name, cls, args = match.groups()
    init_args = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--weighting {text!r}: {part!r} is not key=value")
        init_args[key.strip()] = load_yaml(value, f"--weighting {text!r}")
    class_path = cls if "." in cls else f"vae.objectives.weighting.{cls}"
    return name, {"class_path": class_path, "init_args": init_args}


def load_study(path: Path | None, *, config: Path | None, flags: Sequence[str], name: str | None) -> Study:
    """The study from a file and/or flags; flags add to (or replace) the file's weightings."""
    data: dict = {}
    if path is not None:
        data = read_yaml(path) or {}  # a run name given twice in the file is an error, not a dropped run
        if not isinstance(data, dict) or not isinstance(data.get("weightings", {}), dict):
            raise ConfigError(f"{path} must be a mapping with a 'weightings' mapping of run name → weighting")
    weightings = dict(data.get("weightings", {}))
    penalties: dict[str, Weighting] = {}
    models: dict[str, Weighting] = {}
    runs = data.get("runs", {})
    if not isinstance(runs, dict):
        raise ConfigError(f"{path}: 'runs' must map each run name to its weighting, penalty and/or model")
    constant = {"class_path": "vae.objectives.weighting.Constant", "init_args": {"beta": 1.0}}
    for run, choices in runs.items():
        if not isinstance(choices, dict) or not set(choices) <= {"weighting", "penalty", "model"} or not choices:
            raise ConfigError(
                f"{path}: run {run!r} must be a mapping with 'weighting', 'penalty' and/or 'model', got {choices!r}"
            )
        if run in weightings:
            raise ConfigError(f"{path}: the run name {run!r} is under both 'weightings' and 'runs'; give it once")
        weightings[run] = choices.get("weighting", constant)
        if "penalty" in choices:
            penalties[run] = choices["penalty"]
        if "model" in choices:
            models[run] = choices["model"]
    from_flags = [parse_weighting_flag(flag) for flag in flags]
    names = [name for name, _ in from_flags]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ConfigError(f"--weighting: the run name {twice[0]!r} is given twice; give every run its own name")
    weightings.update(from_flags)  # a flag with a file's run name replaces that run's weighting
    if len(weightings) < 1:
        raise ConfigError("no weightings to compare: give --study FILE or --weighting NAME=Class(...)")
    for run in weightings:
        check_run_name(str(run))
    for run, weighting in weightings.items():  # every weighting builds, before any run starts
        if not is_spec(weighting):
            raise ConfigError(f"weighting {run!r}: give class_path (and init_args), got {weighting!r}")
        build(weighting, WeightingModule, f"weighting {run!r}")
    for run, penalty in penalties.items():
        if not is_spec(penalty):
            raise ConfigError(f"penalty of {run!r}: give class_path (and init_args), got {penalty!r}")
        build(penalty, Penalty, f"penalty of {run!r}")
    for run, model in models.items():  # judged on the class it names (a model is built once the data is known)
        if not is_spec(model):
            raise ConfigError(f"model of {run!r}: give class_path (and init_args), got {model!r}")
        resolve_class(str(model["class_path"]), LatentVariableModel, f"model of {run!r}")
    points = data.get("points", 1000)
    if not isinstance(points, int) or points < 2:
        raise ConfigError(f"{path}: points must be an integer of at least 2, got {points!r}")
    base = config or (find_beside(Path(data["config"]), path) if "config" in data and path else None)
    if base is None:
        raise ConfigError("no base config: give --config FILE (or 'config:' in the study file)")
    if not base.is_file():
        raise ConfigError(f"the base config {base} does not exist")
    if not isinstance(read_yaml(base), dict):
        raise ConfigError(f"the base config {base} is not a mapping of config keys")
    study_name = name or data.get("name") or (path.stem if path else "study")
    return Study(
        name=str(study_name),
        config=base,
        weightings=weightings,
        args=[str(a) for a in data.get("args", [])],
        penalties=penalties,
        models=models,
        points=points,
    )


RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_run_name(name: str) -> None:
    """A run name becomes a file name (its log) and a W&B run name: letters, digits, '_', '.', '+', '-', starting
    with a letter or digit, so no name can reach outside the output folder (``a/b``, ``../x``)."""
    if not RUN_NAME.match(name):
        raise ConfigError(
            f"run name {name!r}: use letters, digits, '_', '.', '+' and '-', starting with a letter or digit "
            "(a run name becomes a file name)"
        )


def find_beside(config: Path, study_file: Path) -> Path:
    """A study file's ``config:``: relative to the current folder, else to the study file's folder or a parent
    of it (so ``configs/quickstart.yaml`` works from the repository root and from anywhere else)."""
    if config.is_absolute() or config.is_file():
        return config
    for folder in study_file.resolve().parents:
        if (folder / config).is_file():
            return folder / config
    return config


def vae_command() -> list[str]:
    script = Path(sys.executable).with_name("vae")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vae.commands.fit"]


def fit_command(study: Study, name: str, weighting: Weighting, out: Path, run_id: str) -> list[str]:
    """The ``vae fit`` command of one run: the base config, the study's arguments, the weighting, W&B."""
    return [
        *vae_command(),
        "fit",
        "--config",
        str(study.config),
        *study.args,
        "--model.objective.weighting",
        json.dumps(weighting),
        *(["--model.objective.penalty", json.dumps(study.penalties[name])] if name in study.penalties else []),
        *(["--model.model", json.dumps(study.models[name])] if name in study.models else []),
        "--trainer.default_root_dir",
        str(out / "runs"),
        "--trainer.logger.init_args.save_dir",
        str(out / "runs"),
        "--trainer.logger.init_args.group",
        study.name,
        "--trainer.logger.init_args.name",
        name,
        "--trainer.logger.init_args.id",
        run_id,
        "--trainer.enable_progress_bar",
        "false",
    ]


def cpu_threads(jobs: int) -> int | None:
    """CPU threads for each of ``jobs`` runs at a time: the cores shared out (at least one each), so that parallel
    runs do not oversubscribe them (torchrun sets 1 for its processes for the same reason); None for one run at a
    time, or where the user set OMP_NUM_THREADS."""
    if jobs == 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // jobs)


def run_environment(gpu: int | None, threads: int | None) -> dict[str, str]:
    """The environment of one run: this one, with its GPU and its share of the CPU threads."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_one(
    study: Study, name: str, weighting: Weighting, out: Path, gpu: int | None, threads: int | None = None
) -> RunResult:
    run_id = f"{re.sub(r'[^a-z0-9]+', '-', f'{study.name}-{name}'.lower())}-{uuid.uuid4().hex[:6]}"
    env = run_environment(gpu, threads)
    log = out / "logs" / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(
            fit_command(study, name, weighting, out, run_id), stdout=f, stderr=subprocess.STDOUT, env=env
        ).returncode
    wall = time.perf_counter() - start
    if code != 0:
        lines = log.read_text().strip().splitlines()
        raise UserError(f"run {name!r} failed (exit {code}): {lines[-1] if lines else 'no output'}; its log: {log}")
    path = run_file(out / "runs", run_id)
    history = read_history(path)
    result = summarise(name, weighting, history, wall, path, study.penalties.get(name), study.models.get(name))
    scores = score_run(study, out, run_id)
    return replace(result, disentanglement=scores) if scores else result


def score_run(study: Study, out: Path, run_id: str) -> dict[str, float]:
    """The disentanglement metrics of a run's last checkpoint, if the study's data has known factors; else none."""
    from vae.commands.common import load_data, read_run_config
    from vae.commands.evaluate import score_disentanglement
    from vae.data.factors import FactorDataModule
    from vae.training.checkpoint_io import load_module

    config_file = next((out / "runs").glob(f"*/{run_id}/config.yaml"), None)
    checkpoint = next((out / "runs").glob(f"*/{run_id}/checkpoints/last.ckpt"), None)
    if config_file is None or checkpoint is None:
        return {}
    data = load_data(read_run_config(config_file), config_file, batch_size=500)
    if not isinstance(data, FactorDataModule):
        return {}
    module = load_module(checkpoint)
    return score_disentanglement(module.model, data, points=study.points, seed=0)


def summarise(
    name: str,
    weighting: Weighting,
    history: RunHistory,
    wall: float,
    run_file: Path,
    penalty: Weighting | None = None,
    model: Weighting | None = None,
) -> RunResult:
    def last(key: str) -> float:
        values = history.values(key)
        if not values:
            raise UserError(f"run {name!r} logged no {key}: it needs at least one validation epoch")
        return float(values[-1])

    dims = sorted(k for k in history.series if k.startswith("val/kl_dim/"))
    layers = sorted(  # z_L … z_1, by the layer's number
        (k for k in history.series if k.startswith("val/kl/")), key=lambda k: -int(re.sub(r"\D", "", k) or 0)
    )
    split = {
        name: last(f"val/kl_split/{name}") for name in ("mi", "tc", "dwkl") if history.values(f"val/kl_split/{name}")
    }
    grouped = [k.removeprefix("val/") for k in history.series if k.startswith("val/") and k.count("/") == 2]
    own = sorted(k for k in grouped if k.split("/")[0] not in ("kl", "kl_dim", "kl_split", "active_units", "images"))
    return RunResult(
        name=name,
        weighting=describe(weighting),
        model=describe(model) if model else "",
        model_metrics={k: last(f"val/{k}") for k in own},
        penalty=describe(penalty) if penalty else "",
        kl_split=split,
        recon=last("val/recon"),
        kl=last("val/kl"),
        elbo=last("val/elbo"),
        active_units=last("val/active_units") if history.values("val/active_units") else None,
        bits_per_dim=last("val/bits_per_dim") if history.values("val/bits_per_dim") else None,
        wall_time=wall,
        kl_per_dim=[last(k) for k in dims],
        run_file=run_file,
        kl_per_layer={k.removeprefix("val/kl/"): last(k) for k in layers},
    )


def describe(spec: Weighting) -> str:
    """``Class(key=value, ...)`` of a class_path/init_args spec, nested specs the same way."""
    arguments = dict(spec.get("init_args") or {})  # type: ignore[arg-type]
    init_args = ", ".join(f"{k}={describe(v) if is_spec(v) else v}" for k, v in arguments.items())
    return f"{str(spec['class_path']).rsplit('.', 1)[-1]}({init_args})"


def run_study(study: Study, out: Path, *, jobs: int = 1, gpus: int = 0) -> list[RunResult]:
    """Every run, one after another (jobs=1) or ``jobs`` at a time, spread over ``gpus`` GPUs if any."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    names = list(study.weightings)
    at_once = min(jobs, len(names))
    threads = cpu_threads(at_once)
    if threads is not None:
        print(f"{at_once} runs at a time, {threads} CPU thread{'s' if threads > 1 else ''} each", flush=True)

    def launch(index: int) -> RunResult:
        name = names[index]
        choice = {
            "weighting": study.weightings[name],
            **({"penalty": study.penalties[name]} if name in study.penalties else {}),
            **({"model": study.models[name]} if name in study.models else {}),
        }
        print(f"[{index + 1}/{len(names)}] {name}: {json.dumps(choice)}", flush=True)
        result = run_one(study, name, study.weightings[name], out, index % gpus if gpus else None, threads)
        numbers = f"ELBO {result.elbo:.2f}, recon {result.recon:.2f}, KL {result.kl:.2f}"
        print(f"    {name}: {numbers} ({result.wall_time:.0f} s)", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(launch, index) for index in range(len(names))]
        try:
            return [future.result() for future in futures]
        except BaseException:  # a failed run stops the study now, not after the runs still queued
            pool.shutdown(wait=False, cancel_futures=True)
            raise


COLUMNS = ("name", "weighting", "penalty", "model", "recon", "kl", "elbo", "bits_per_dim", "active_units", "wall_time")
SPLIT = ("mi", "tc", "dwkl")


def write_tables(results: list[RunResult], out: Path) -> None:
    """results.csv and results.md: one row per run, with the KL split and the disentanglement metrics where any run
    has them."""
    split = any(r.kl_split for r in results)
    metrics = list(dict.fromkeys(name for r in results for name in {**r.model_metrics, **r.disentanglement}))
    extra = [*(f"kl_split_{name}" for name in SPLIT if split), *metrics]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*COLUMNS, *extra])
        for r in results:
            row = asdict(r)
            values = {**{f"kl_split_{k}": v for k, v in r.kl_split.items()}, **r.model_metrics, **r.disentanglement}
            writer.writerow(
                [row[c] if isinstance(row[c], str) else "" if row[c] is None else f"{row[c]:.4f}" for c in COLUMNS]
                + [f"{values[c]:.4f}" if c in values else "" for c in extra]
            )
    layered = any(r.kl_per_layer for r in results)  # a hierarchy: each layer's KL too
    penalised = any(r.penalty for r in results)
    modelled = any(r.model for r in results)
    header = "| run | weighting |" + (" penalty |" if penalised else "") + (" model |" if modelled else "")
    header += " recon (nats) | KL (nats) | ELBO (nats) | bits/dim | active units | wall time (s) |"
    header += (" KL per layer (nats) |" if layered else "") + (" MI | TC | DWKL |" if split else "")
    header += "".join(f" {name} |" for name in metrics)
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        cells = [r.name, f"`{r.weighting}`"] + ([f"`{r.penalty}`" if r.penalty else "—"] if penalised else [])
        cells += [f"`{r.model}`" if r.model else "—"] if modelled else []
        bits = "—" if r.bits_per_dim is None else f"{r.bits_per_dim:.4f}"
        units = "n/a" if r.active_units is None else f"{r.active_units:.0f}"
        cells += [f"{r.recon:.2f}", f"{r.kl:.2f}", f"{r.elbo:.2f}", bits, units, f"{r.wall_time:.0f}"]
        if layered:
            cells.append(", ".join(f"{name} {kl:.2f}" for name, kl in r.kl_per_layer.items()))
        if split:
            cells += [f"{r.kl_split[name]:.2f}" if name in r.kl_split else "—" for name in SPLIT]
        found = {**r.model_metrics, **r.disentanglement}
        cells += [f"{found[name]:.3f}" if name in found else "—" for name in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot_bars(results: list[RunResult], values: list[dict[str, float]], out: Path, *, title: str, ylabel: str) -> None:
    """Grouped bars: one group per name in ``values``' dicts, one bar per run."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(dict.fromkeys(name for v in values for name in v))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) + 2), 4))
    width = 0.8 / len(results)
    for i, (r, v) in enumerate(zip(results, values)):
        ax.bar(np.arange(len(names)) + i * width, [v.get(n, 0.0) for n in names], width, label=r.name)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot(results: list[RunResult], out: Path, study: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Rate–distortion: KL (rate) against recon (distortion); −ELBO = recon + KL is constant on lines of slope −1.
    fig, ax = plt.subplots(figsize=(6.5, 5))
    kls, recons = [r.kl for r in results], [r.recon for r in results]
    span = max(max(kls) - min(kls), max(recons) - min(recons), 1.0)
    x0, x1 = max(0.0, min(kls) - 0.3 * span), max(kls) + 0.3 * span
    y0, y1 = min(recons) - 0.3 * span, max(recons) + 0.3 * span
    levels: list[float] = []
    for level in sorted(r.recon + r.kl for r in results):  # one dotted line per distinct −ELBO
        if levels and level - levels[-1] < 0.04 * span:
            continue
        levels.append(level)
        ax.plot([x0, x1], [level - x0, level - x1], ls=":", color="0.7", lw=1)
        x = max(x0, level - y1)  # where the line enters the plot (left edge or top), so the label is inside
        ax.annotate(
            f"−ELBO {level:.1f}", (x, level - x), fontsize=7, color="0.5", xytext=(3, -10), textcoords="offset points"
        )
    for r in results:
        ax.scatter(r.kl, r.recon, s=45, zorder=3, label=f"{r.name}: ELBO {r.elbo:.2f}")
    ax.legend(fontsize=8, loc="upper right")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="rate: KL (nats)", ylabel="distortion: recon NLL (nats)")
    ax.set_title(f"{study}: rate–distortion (final validation)")
    fig.tight_layout()
    fig.savefig(out / "rate_distortion.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.kl_per_dim:
            ax.plot(range(len(r.kl_per_dim)), sorted(r.kl_per_dim, reverse=True), marker="o", ms=3, label=r.name)
        elif r.kl_per_layer:  # a hierarchy: one point per layer, from the top
            ax.plot(
                list(r.kl_per_layer), list(r.kl_per_layer.values()), marker="s", ms=4, label=f"{r.name} (per layer)"
            )
    ax.set(
        xlabel="latent dimension (sorted by KL), or layer",
        ylabel="KL (nats)",
        title=f"{study}: KL per latent dimension",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "kl_per_dimension.png", dpi=120)
    plt.close(fig)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for r in results:
        history = read_history(r.run_file)
        top.plot(*history.curve("train/recon"), lw=1, label=r.name)
        bottom.plot(*history.curve("train/kl"), lw=1, label=r.name)
    top.set(ylabel="train recon (nats)", title=f"{study}: training curves")
    bottom.set(xlabel="step", ylabel="train KL (nats, raw)")
    top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=120)
    plt.close(fig)

    if any(r.kl_split for r in results):
        splits = [r.kl_split for r in results]
        plot_bars(results, splits, out / "kl_split.png", title=f"{study}: the KL split (validation)", ylabel="nats")
    if any(r.model_metrics for r in results):
        own = [r.model_metrics for r in results]
        plot_bars(results, own, out / "model_metrics.png", title=f"{study}: the models' own metrics", ylabel="value")
    if any(r.disentanglement for r in results):
        scores = [r.disentanglement for r in results]
        plot_bars(results, scores, out / "disentanglement.png", title=f"{study}: disentanglement", ylabel="score")


def sweep_config(study: Study) -> dict:
    """A W&B grid sweep over the study's weightings: `wandb sweep` it, then `wandb agent` on any machine."""
    if study.penalties or study.models:
        raise ConfigError("--sweep grids over weightings only; a study with penalties or models runs with vae compare")
    base = [
        "vae",
        "fit",
        "--config",
        str(study.config.resolve()),
        *study.args,
        "--trainer.logger.init_args.group",
        study.name,
        "${args}",
    ]
    return {
        "name": study.name,
        "method": "grid",
        "metric": {"name": "val/elbo", "goal": "maximize"},
        "parameters": {"model.objective.weighting": {"values": [json.dumps(w) for w in study.weightings.values()]}},
        "command": base,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="the base config every run starts from")
    parser.add_argument("--study", type=Path, help="a YAML file listing the weightings (see vae/commands/compare.py)")
    parser.add_argument("--weighting", action="append", default=[], help="NAME=Class(key=value, ...); repeatable")
    parser.add_argument("--name", help="the study's name (the W&B group); default: the study file's name")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/compare/<name>); must be new or empty")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1); spread over the GPUs")
    parser.add_argument("--sweep", action="store_true", help="write sweep.yaml for W&B agents instead of running")
    parser.add_argument(
        "args", nargs="*", help="extra arguments for every run, after --, e.g. -- --trainer.max_epochs 5"
    )
    args = parser.parse_args(argv)
    try:
        study = load_study(args.study, config=args.config, flags=args.weighting, name=args.name)
        study = replace(study, args=[*study.args, *args.args])
        out = args.out or Path("runs") / "compare" / study.name
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} already holds files: choose another --out (nothing was overwritten)")
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
        out.mkdir(parents=True, exist_ok=True)
        if args.sweep:
            (out / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(study), sort_keys=False))
            print(
                f"W&B sweep written to {out / 'sweep.yaml'}: run `wandb sweep {out / 'sweep.yaml'}`, then "
                "`wandb agent <the sweep id it prints>` on each machine"
            )
            return
        import torch

        results = run_study(study, out, jobs=args.jobs, gpus=torch.cuda.device_count())
        write_tables(results, out)
        plot(results, out, study.name)
    except UserError as error:
        exit_with_error(str(error), command="vae compare")
    print((out / "results.md").read_text().rstrip())
    print(f"table, plots and runs in {out} (W&B group {study.name!r})")
