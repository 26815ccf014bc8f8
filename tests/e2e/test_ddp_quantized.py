"""VQ under DDP with two real CPU processes (gloo): the codebook's EMA statistics after training steps equal the
single-process update computed on both processes' batches together (identical buffers alone would prove nothing:
DDP's broadcast_buffers copies process 0's over the other's); k-means initialisation and dead-code restarts are the
same on both; the codebook usage counted on each process's share is the sum over both. And through Lightning
(ddp_spawn), a VQ model's validation metrics on two processes are the single process's."""

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_trainer
from einops import rearrange
from torch.nn.parallel import DistributedDataParallel

from vae.data.embedded import EmbeddedMNIST
from vae.layers.quantizers import VectorQuantizer
from vae.models.quantized import VQVAE, CodeUsage
from vae.training.module import VAEModule

DIGITS = (1, 28, 28)
STEPS = 3
BUFFERS = ("codebook", "cluster_size", "embed_sum", "unused_steps", "restarts", "initialized")


def model(*, kmeans_init: bool = False, restart_after: int = 0) -> VQVAE:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(codebook_size=32, dim=4, kmeans_init=kmeans_init, restart_after=restart_after)
    return VQVAE(image_shape=DIGITS, quantizer=quantizer, channels=(8, 8), blocks=1)


def batches() -> list[torch.Tensor]:
    """STEPS global batches of 16 real digits, binarized."""
    data = EmbeddedMNIST(batch_size=16 * STEPS, binarize="static")
    data.setup("fit")
    images = next(iter(data.train_dataloader()))[0].float() / 255
    return list(images.chunk(STEPS))


def train(vq: torch.nn.Module, inner: VQVAE, global_batches: list[torch.Tensor], rank: int, world: int) -> None:
    """STEPS SGD steps, each on this process's share of the global batch (its rank's rows)."""
    optimizer = torch.optim.SGD(vq.parameters(), lr=0.01)
    inner.train()
    for x in global_batches:
        share = x[rank::world]
        out = vq(share)
        loss = (-out.log_px + sum(t.weight * t.value for t in out.terms.values())).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def worker(rank: int, world: int, init: str, folder: str, kmeans_init: bool, restart_after: int) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        inner = model(kmeans_init=kmeans_init, restart_after=restart_after)
        global_batches = batches()
        train(DistributedDataParallel(inner), inner, global_batches, rank, world)
        usage = CodeUsage(codebook_size=32)
        with torch.no_grad():
            inner.eval()
            for x in global_batches:
                usage.update(inner(x[rank::world]))
        local = usage.counts.clone()  # this process's counts; compute() reduces them over both processes
        counts = {name: float(value) for name, value in usage.compute().items()} | {"local": local}
        quantizer = inner.quantizer
        state = {name: getattr(quantizer, name).detach().clone() for name in BUFFERS}
        torch.save({"state": state, "usage": counts}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(tmp_path: Path, **settings) -> list[dict]:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(worker, args=(2, init, str(tmp_path), settings["kmeans_init"], settings["restart_after"]), nprocs=2)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def test_ema_statistics_under_ddp_equal_the_single_process_update_on_both_batches_together(tmp_path):
    ranks = spawn(tmp_path, kmeans_init=False, restart_after=0)
    reference = model()
    global_batches = batches()
    # One process on the global batch: the gradient of the mean loss over it is DDP's average of the two halves' means.
    first = reference.quantizer
    with torch.no_grad():
        vectors = rearrange(reference.encoder(global_batches[0]), "b d h w -> (b h w) d")
    codebook = first.codebook.clone()
    assignment = torch.cdist(vectors, codebook).argmin(dim=1)
    counts = torch.bincount(assignment, minlength=32).float()
    sums = torch.zeros(32, 4).index_add_(0, assignment, vectors)
    n = first.decay * first.cluster_size + (1 - first.decay) * counts  # the closed form of the first step
    m = first.decay * first.embed_sum + (1 - first.decay) * sums
    train(reference, reference, global_batches[:1], 0, 1)
    torch.testing.assert_close(reference.quantizer.cluster_size, n, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reference.quantizer.embed_sum, m, rtol=1e-5, atol=1e-6)
    reference = model()
    train(reference, reference, global_batches, 0, 1)
    for name in ("codebook", "cluster_size", "embed_sum"):
        for rank in ranks:
            torch.testing.assert_close(rank["state"][name], getattr(reference.quantizer, name), rtol=1e-4, atol=1e-5)
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name
    # Had each process updated from its own half only, the counts would be about half as large.
    assert reference.quantizer.cluster_size.sum() == pytest.approx(float(ranks[0]["state"]["cluster_size"].sum()))


def test_kmeans_initialisation_restarts_and_usage_are_the_same_on_both_processes(tmp_path):
    ranks = spawn(tmp_path, kmeans_init=True, restart_after=1)
    for name in BUFFERS:
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name
    assert bool(ranks[0]["state"]["initialized"]) and int(ranks[0]["state"]["restarts"]) > 0
    # Usage counted on each process's share, reduced over both: the numbers of the summed counts, on both.
    local = [rank["usage"]["local"] for rank in ranks]
    assert not torch.equal(local[0], local[1]) and int(local[0].sum()) == 16 * STEPS // 2 * 49
    counts = local[0] + local[1]
    frequencies = counts / counts.sum()
    perplexity = math.exp(float(-torch.special.xlogy(frequencies, frequencies).sum()))
    for rank in ranks:
        assert rank["usage"]["codebook/usage"] == pytest.approx(float((counts > 0).double().mean()), rel=1e-6)
        assert rank["usage"]["codebook/unused"] == int((counts == 0).sum())
        assert rank["usage"]["codebook/perplexity"] == pytest.approx(perplexity, rel=1e-5)


def validate(root: Path, devices: int) -> dict[str, float]:
    pl.seed_everything(0, verbose=False)
    module = VAEModule(model=model(kmeans_init=True))
    data = EmbeddedMNIST(batch_size=32, val_size=333, binarize="static")
    trainer = tiny_trainer(root, devices=devices, strategy="ddp_spawn" if devices > 1 else "auto")
    trainer.validate(module, datamodule=data)
    return {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}


def test_validation_metrics_of_a_vq_model_on_two_processes_are_the_single_process_s(tmp_path):
    """A VQ model is deterministic: on two processes (167 + 166 images) every validation metric, usage included,
    is the one process's over all 333."""
    one, two = validate(tmp_path / "one", 1), validate(tmp_path / "two", 2)
    for name in ("val/codebook/usage", "val/codebook/unused", "val/codebook/perplexity", "val/kl", "val/recon"):
        assert two[name] == pytest.approx(one[name], rel=1e-5), name
    assert one["val/kl"] == pytest.approx(49 * math.log(32), rel=1e-6)
