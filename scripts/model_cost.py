"""What a config's model costs per training step, counted on the CPU: parameters, FLOPs, and the memory a GPU
would hold for it. For configs written for a GPU, before one is at hand.

    python scripts/model_cost.py configs/hvae_cifar10.yaml configs/hvae_celeba.yaml

Each config's model is built as ``vae fit`` builds it, and one training step (forward, the objective's loss,
backward) runs on a batch of random images of the config's size, under the config's precision (bf16 autocast
for ``bf16-mixed``, on the CPU here). Counted:

    FLOPs          torch's FlopCounterMode over the step (matrix products and convolutions; 2 per multiply-add)
    activations    the bytes autograd saves for the backward pass (saved_tensors_hooks, each storage once):
                   what a step holds at its peak beside the weights
    state          weights, gradients and Adam's two moments: 16 bytes per float32 parameter
    memory         state + activations + the batch; a GPU adds its CUDA context (about 0.5 GiB) and the
                   allocator's slack

    kernels        the tensor operations the step dispatches (TorchDispatchMode): in eager mode on a GPU, about
                   one kernel launch each

A GPU's step takes at least the longer of two floors: its FLOPs at the throughput it sustains on these layers
(the table uses 300 TFLOP/s, about 30 % of an H100/H200's dense bf16 peak) and its kernels at the few
microseconds each launch costs from Python (the table uses 5 µs). Small models sit on the second floor. Only a
run on the GPU measures the step itself (``vae benchmark --device cuda``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vae.commands.fit import QUICKSTART_DEFAULTS
from vae.commands.parser import SECTIONS
from vae.core.config_file import read_yaml
from vae.core.trust import check_classes
from vae.data.base import ImageDataModule
from vae.training.migration import migrate_config
from vae.training.module import VAEModule


class KernelCount(TorchDispatchMode):
    """Counts the tensor operations dispatched inside it (views and copies included)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def build(config: Path) -> tuple[VAEModule, ImageDataModule, str | None]:
    """The config's model and data module (no files read), from the same classes, arguments and defaults as
    ``vae fit`` (a config in an earlier layout read in today's), judged by the same trust rules first; the model
    built for the data's image shape and context size, as ``vae fit`` links them; and the trainer's precision."""
    settings = migrate_config(read_yaml(config))
    check_classes(settings, SECTIONS)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageDataModule, "data", required=True)
    parser.add_class_arguments(VAEModule, "model")
    parser.link_arguments("data.image_shape", "model.model.init_args.image_shape", apply_on="instantiate")
    parser.link_arguments("data.context_size", "model.model.init_args.context_size", apply_on="instantiate")
    parser.set_defaults({key: value for key, value in QUICKSTART_DEFAULTS.items() if key.startswith("model.")})
    parsed = parser.parse_object({"data": settings["data"], "model": settings.get("model", {})})
    built = parser.instantiate(parsed)
    return built.model, built.data, settings.get("trainer", {}).get("precision")


def cost(config: Path, *, batch_size: int | None) -> dict:
    module, data, precision = build(config)
    batch = batch_size or data.batch_size
    torch.manual_seed(0)
    x = torch.randint(0, 256, (batch, *data.image_shape), dtype=torch.uint8)
    x = x.float() / 255 if data.pixels == "unit" else x
    # Labels as the data gives them, the context of a conditional model (the others ignore them), as in training.
    labels = torch.randint(0, data.context_size, (batch,)) if data.context_size else None
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    bf16 = precision == "bf16-mixed"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    parameters = sum(p.numel() for p in module.parameters())
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    counter, kernels = FlopCounterMode(display=False), KernelCount()
    with counter, kernels:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
            out = module.model(x, samples=module.objective.samples, context=labels, step=0)
            loss = module.objective(out, step=0, training=True).loss
        loss.backward()
    activations = sum(nbytes for pointer, nbytes in saved.items() if pointer not in weights)
    state = 16 * parameters
    return {
        "config": str(config),
        "batch": batch,
        "precision": precision or "32-true",
        "parameters": parameters,
        "flops": counter.get_total_flops(),
        "kernels": kernels.count,
        "activations": activations,
        "memory": state + activations + x.nbytes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--batch-size", type=int, help="instead of the config's data.batch_size")
    args = parser.parse_args(argv)
    for config in args.configs:
        if not config.is_file():
            parser.error(f"config not found: {config}")
    gib = 2**30
    columns = ["config", "batch", "precision", "parameters", "GFLOPs per step", "kernels per step"]
    columns += ["activations", "memory", "compute floor (300 TFLOP/s)", "launch floor (5 µs each)"]
    print(f"| {' | '.join(columns)} |")
    print(f"|{' --- |' * len(columns)}")
    for config in args.configs:
        c = cost(config, batch_size=args.batch_size)
        print(
            f"| {config.name} | {c['batch']} | {c['precision']} | {c['parameters']:,} | {c['flops'] / 1e9:,.0f} "
            f"| {c['kernels']:,} | {c['activations'] / gib:.2f} GiB | {c['memory'] / gib:.2f} GiB "
            f"| {c['flops'] / 300e12 * 1e3:.1f} ms | {c['kernels'] * 5e-6 * 1e3:.1f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
