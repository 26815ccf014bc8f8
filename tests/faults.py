"""Faults planted in real runs by the tests (a config names these classes; VAE_TRUSTED_MODULES=faults)."""

import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch

from vae.layers.nets.conv import ConvNet


class KillAtStep(pl.Callback):
    """SIGKILLs its own process right after training step ``step``: a job killed mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(pl.Callback):
    """Sends its own process ``signal`` (a name: SIGTERM, SIGINT, ...) right after training step ``step``: what a
    scheduler or a user does to a running job."""

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step = step
        self.signal = signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


class PoisonAtStep(pl.Callback):
    """Makes a term non-finite from training step ``step`` on: ``what`` is "weights" (the encoder's first
    weight becomes nan, so the KL and reconstruction are nan) or "gradient" (one gradient becomes inf at that step)."""

    def __init__(self, step: int, what: str = "weights") -> None:
        self.step = step
        self.what = what

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        parameter = next(pl_module.model.network.encoder.parameters())
        if self.what == "weights":
            with torch.no_grad():
                parameter.fill_(float("nan"))
        else:
            parameter.register_hook(lambda grad: grad * float("inf") if trainer.global_step == self.step else grad)


class PlantedNet(ConvNet):
    """A network from outside the trusted modules whose constructor leaves a mark: a config naming it must be
    refused before it is built."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        Path("planted").write_text("built\n")


class Payload:
    """Pickles to a call of os.system that touches ``marker``: what a malicious checkpoint would carry."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
