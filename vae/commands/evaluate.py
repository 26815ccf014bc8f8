"""``vae evaluate``: a checkpoint's numbers on a split, as a table, a JSON file beside it, and in its W&B run.

    vae evaluate runs/vae/<id>/checkpoints/last.ckpt                    # test split, K = 5000
    vae evaluate runs/vae/<id>/checkpoints/last.ckpt --samples 100 --limit 1000 --images
    vae evaluate runs/vae/<id>/checkpoints/last.ckpt --disentanglement --points 2000   # data with known factors

The log-likelihood is importance-weighted (K = ``--samples``, 5000 by default); a model with no posterior density whose
ELBO is tight (a diffusion model, ``vae.models.VDM``) reports the ELBO averaged over K draws per image (20 by default)
with its Monte-Carlo standard error, beside the standard error over the images that every estimate gets.

The data come from the run's ``config.yaml`` (``<run>/config.yaml``, or ``--config``). The JSON lands beside
the checkpoint (or in ``--out``) as ``<checkpoint>.<split>.k<K>.json`` (never overwriting: a number is added);
``--images`` writes the pictures of ``vae.models.pictures`` beside it too, with the latent means of the split as a
scatter
coloured by label (and, for a 2-D latent, the decoded manifold). The table adds the reconstructions' MSE, PSNR and
SSIM; ``--quality`` the samples' FID, KID and precision/recall (``vae.metrics.quality``) against the split's images,
in the
features of InceptionV3 or of a TorchScript network given as ``--features``. A folder that cannot be written is an error
before the work starts. ``--disentanglement`` adds the β-VAE and FactorVAE scores, MIG, SAP and DCI
(``vae.metrics.disentanglement``) of the top layer's posterior means, for data with known factors
(``vae.data.factors``).
If the run logged to W&B, the numbers go to that run's summary under
``eval/<split>/...`` (resumed by its id; without W&B credentials or a server, offline, as ``vae fit`` does).

Checkpoints are loaded with ``weights_only=True``: tensors and plain data only, so a checkpoint carrying
a pickled object is refused and runs nothing (see ``vae.core.trust``).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from vae.commands.common import check_device, load_data, run_config_of
from vae.core.errors import ArgumentParser, ConfigError, UserError, exit_with_error
from vae.data.factors import FactorDataModule
from vae.metrics.disentanglement import disentanglement_scores, encode, mutual_information, sample_factors
from vae.metrics.likelihood import Evaluation, encode_split, evaluate
from vae.metrics.quality import feature_network, sample_quality
from vae.models.base import LatentVariableModel
from vae.models.pictures import all_pictures, factor_traversals, latent_scatter, manifold
from vae.training.checkpoint_io import checkpoint_of, load_module
from vae.training.console import quiet_console
from vae.training.images import save_grids
from vae.training.resume import run_id_of
from vae.training.runs import check_writable, describe_write_failure, unique_path
from vae.training.tracking import add_to_summary, check_wandb_mode, choose_wandb_mode, run_report

IMPORTANCE_SAMPLES = 5000  # K of the importance-weighted log p(x), by default
ELBO_DRAWS = 20  # draws of the ELBO per image where it is the estimate (a diffusion model's), by default


def log_to_wandb(config: dict, checkpoint: Path, result: Evaluation, images: dict[str, Path]):
    """Add the numbers (and pictures) to the run's W&B summary under ``eval/<split>/``; the W&B run, None if the
    run did not use W&B."""
    numbers = {k: v for k, v in asdict(result).items() if isinstance(v, int | float) and not isinstance(v, bool)}
    numbers |= {f"disentanglement/{name}": value for name, value in (result.disentanglement or {}).items()}
    numbers |= {f"clustering_accuracy/{name}": value for name, value in (result.clustering_accuracy or {}).items()}
    reconstruction = {name: value for name, value in (result.reconstruction or {}).items() if value is not None}
    numbers |= {f"reconstruction/{name}": value for name, value in reconstruction.items()}
    numbers |= {f"quality/{name}": value for name, value in (result.quality or {}).items()}
    numbers |= dict(result.model_metrics or {})
    numbers |= dict(result.kl_terms or {})  # a diffusion model's kl/prior and diffusion
    if len(result.kl_per_layer) > 1:  # a hierarchy: each layer's KL and active units
        numbers |= {f"kl/{name}": kl for name, kl in result.kl_per_layer.items()}
        numbers |= {f"active_units/{name}": n for name, n in result.active_units_per_layer.items()}
    return add_to_summary(config, run_id_of(checkpoint), numbers, images, prefix=f"eval/{result.split}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="vae evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by vae fit, or its run folder")
    parser.add_argument("--config", type=Path, help="the run's config (default: <run>/config.yaml)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument(
        "--samples",
        type=int,
        help=f"draws K per image: importance samples (default {IMPORTANCE_SAMPLES}), or, for a model whose log p(x) is "
        f"its ELBO averaged over draws (a diffusion model), draws of the ELBO (default {ELBO_DRAWS})",
    )
    parser.add_argument("--chunk", type=int, default=100, help="samples per chunk, bounding memory (default 100)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N batches' images, for a quick look")
    parser.add_argument("--images", action="store_true", help="also write the pictures beside the checkpoint")
    parser.add_argument("--out", type=Path, help="folder for the JSON and pictures (default: the checkpoint's)")
    parser.add_argument(
        "--embedding",
        choices=("auto", "pca", "umap"),
        default="auto",
        help="the latent scatter's 2-D projection of a latent of more dimensions (auto: UMAP if installed, else PCA)",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not add the numbers to the run's W&B summary")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    parser.add_argument(
        "--disentanglement", action="store_true", help="also score β-VAE, FactorVAE, MIG, SAP, DCI (data with factors)"
    )
    parser.add_argument("--quality", action="store_true", help="also score samples: FID, KID, precision and recall")
    parser.add_argument(
        "--quality-samples", type=int, default=10_000, help="samples, and real images, for --quality (default 10000)"
    )
    parser.add_argument(
        "--features",
        default="inception",
        help="--quality's feature network: inception (needs torch-fidelity and its weights), or a TorchScript file of "
        "your own network (images (b, c, h, w) in [0, 1] → features (b, d))",
    )
    parser.add_argument("--inception-weights", type=Path, help="a local copy of the Inception weights for --quality")
    parser.add_argument("--no-download", action="store_true", help="never download the Inception weights")
    parser.add_argument(
        "--points",
        type=int,
        default=10_000,
        help="factor draws each disentanglement metric trains on, half as many to test (default 10000, as "
        "disentanglement_lib; 500 take about a minute on 2 CPU cores)",
    )
    args = parser.parse_args(argv)
    quiet_console()
    for name in ("samples", "chunk", "batch_size", "limit", "points", "quality_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    torch.manual_seed(args.seed)
    if args.embedding == "umap" and importlib.util.find_spec("umap") is None:
        parser.error("--embedding umap needs the umap-learn package: pip install umap-learn (or --embedding pca)")
    try:
        device = check_device(args.device)
        if not args.checkpoint.exists():
            raise ConfigError(f"checkpoint {args.checkpoint} does not exist")
        checkpoint = checkpoint_of(args.checkpoint)  # a run folder: its best checkpoint
        out = args.out or checkpoint.parent
        check_writable("--out", out)  # before the work, not after it: nothing computed is lost
        config_path, config = run_config_of(checkpoint, args.config)
        if not args.no_wandb:
            choose_wandb_mode()
            check_wandb_mode()  # an explicit WANDB_MODE that cannot work: said now, not after the work
        features = quality_features(args) if args.quality else None  # missing weights: said now, not after the work
        module = load_module(checkpoint)
        module.model.eval()
        samples = args.samples or (
            ELBO_DRAWS if module.model.capabilities.likelihood_bound else IMPORTANCE_SAMPLES
        )  # the numbers and the pictures of the model as it is used: eval mode
        data = load_data(config, config_path, batch_size=args.batch_size)
        if args.disentanglement and not isinstance(data, FactorDataModule):
            raise ConfigError(
                f"--disentanglement needs data with known factors (vae.data.DSpritesLike, DSprites, Shapes3D); "
                f"the run's data is {type(data).__name__}"
            )
        data.check_files()
        data.setup(args.split)
        loader = {"train": data.train_dataloader, "val": data.val_dataloader, "test": data.test_dataloader}[
            args.split
        ]()
        batches = list(itertools.islice(loader, args.limit)) if args.limit else loader
        result = evaluate(
            module.model, batches, num_samples=samples, chunk_size=args.chunk, split=args.split, device=device
        )
        if args.disentanglement:
            scores = score_disentanglement(module.model, data, points=args.points, seed=args.seed, device=device)
            result = replace(result, disentanglement=scores)
        if features is not None:
            real = quality_data(config, config_path, batch_size=args.batch_size, split=args.split)
            quality = sample_quality(
                module.model,
                real,
                num_samples=args.quality_samples,
                features=features,
                batch_size=args.batch_size,
                seed=args.seed,
                device=device,
            )
            result = replace(result, quality=quality.as_dict())
    except UserError as error:
        exit_with_error(str(error), command="vae evaluate")
    print(result.table())
    numbers = json.dumps({"checkpoint": str(checkpoint), **asdict(result)}, indent=2) + "\n"
    output = unique_path(out / f"{checkpoint.stem}.{args.split}.k{samples}.json")
    try:
        out.mkdir(parents=True, exist_ok=True)
        output.write_text(numbers)
    except OSError as error:
        print(numbers, end="")
        exit_with_error(f"{describe_write_failure(error)}; the numbers are printed above", command="vae evaluate")
    print(f"written: {output}")
    images: dict[str, Path] = {}
    if args.images:
        images_batch, labels = next(iter(data.val_dataloader() if args.split == "train" else loader))
        x, labels = images_batch[:32].to(device), labels[:32].to(device)
        ranking = torch.tensor(result.kl_per_dim) if result.kl_per_dim is not None else None
        grids = all_pictures(module.model, x, ranking, context=labels, nrow=8)
        abilities = module.model.capabilities
        encoded = encode_split(module.model, batches, device=device) if abilities.latent_code else None
        try:
            if encoded is None:
                raise ConfigError("the model has no code of each image")
            grids["latent_scatter"] = latent_scatter(encoded["mean"], encoded["labels"], method=args.embedding)
        except (UserError, ValueError, TypeError) as error:  # UMAP on too few points, say: the rest still gets written
            print(f"latent scatter skipped: {' '.join(str(error).split())[:200]}")
        code = abilities.continuous_code and not abilities.conditional  # one continuous code, decodable as it is
        if code and encoded is not None and encoded["mean"].shape[1] == 2:
            grids["manifold"] = manifold(module.model)
        if code and isinstance(data, FactorDataModule):
            dims = informative_dimensions(module.model, data, points=args.points, seed=args.seed, device=device)
            grids["factor_traversals"] = factor_traversals(module.model, x, dims, factors=list(data.factors.names))
            print("factor traversals: " + ", ".join(f"{n} → z{d}" for n, d in zip(data.factors.names, dims)))
        folder = unique_path(output.with_suffix(""))
        try:
            images = dict(zip(grids, save_grids(grids, folder)))
        except OSError as error:
            exit_with_error(f"{describe_write_failure(error)}; the numbers are in {output}", command="vae evaluate")
        print(f"pictures: {folder}")
    if not args.no_wandb:
        try:
            run = log_to_wandb(config, checkpoint, result, images)
        except UserError as error:
            exit_with_error(f"{error}; the numbers are in {output} (--no-wandb skips W&B)", command="vae evaluate")
        if run is not None:
            print(f"added to the W&B run {run.id} (summary eval/{args.split}/...)")
            print(run_report(run))


def score_disentanglement(
    vae: LatentVariableModel,
    data: FactorDataModule,
    *,
    points: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> dict[str, float]:
    """The disentanglement metrics of a model's codes (its top layer's posterior means) on data with known factors:
    ``points`` factor draws to train each metric on and half as many to test it, images from ``data.images_for``."""
    represent = represent_with(vae, data, device=device, batch_size=batch_size)

    def progress(name: str) -> None:
        print(f"disentanglement: scoring {name}", flush=True)

    scores = disentanglement_scores(
        represent, data.factors.sizes, seed=seed, num_train=points, num_test=max(1, points // 2), progress=progress
    )
    return scores.as_dict()


def represent_with(
    vae: LatentVariableModel, data: FactorDataModule, *, device: torch.device | str, batch_size: int = 500
) -> Callable[[np.ndarray], np.ndarray]:
    """The oracle the metrics call: factor classes (n, F) → the codes of their images (n, d), in batches."""
    vae = vae.eval().to(device)

    @torch.no_grad()
    def represent(classes: np.ndarray) -> np.ndarray:
        codes = []
        for part in torch.from_numpy(np.ascontiguousarray(classes)).split(batch_size):
            codes.append(vae.representation(data.images_for(part).to(device)).double().cpu())
        return torch.cat(codes).numpy()

    return represent


def informative_dimensions(
    vae: LatentVariableModel, data: FactorDataModule, *, points: int, seed: int = 0, device: torch.device | str = "cpu"
) -> list[int]:
    """For each factor, the latent dimension whose code carries the most mutual information about it (as MIG
    measures it, on ``points`` random factor draws)."""
    factors = sample_factors(data.factors.sizes, points, np.random.default_rng(seed))
    codes = encode(represent_with(vae, data, device=device), factors)
    return mutual_information(codes, factors).argmax(axis=0).tolist()


def quality_features(args) -> torch.nn.Module:
    """The feature network of ``--quality``: a TorchScript file given as ``--features``, or InceptionV3 (one-line errors
    for a missing package, weights or file)."""
    if args.features == "inception":
        weights = args.inception_weights or "inception"
        return feature_network(weights, allow_download=not args.no_download)
    path = Path(args.features)
    if not path.is_file():
        raise ConfigError(f"--features {path}: no such file (give inception, or a feature network's TorchScript file)")
    try:
        with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; its files still load
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
            return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"--features {path} is not a TorchScript file (save one with torch.jit.save)") from error


def quality_data(config: dict, source: Path, *, batch_size: int, split: str):
    """The real images ``--quality`` compares samples with: the split's, in grey levels (a binarized run's data
    without binarization: the samples are means, never 0/1 draws)."""
    section = dict(config["data"])
    init = dict(section.get("init_args") or {})
    if init.get("binarize", "none") != "none":  # only a class that takes the setting was given it
        section["init_args"] = {**init, "binarize": "none"}
    data = load_data({**config, "data": section}, source, batch_size=batch_size)
    data.check_files()
    data.setup(split)
    return data.loader(split, shuffle=False)
