"""Stopping on a scheduler's or a user's signal: a checkpoint mid-epoch, the line that resumes, the shell's exit
status (``StopOnSignal``)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vae.training.runs import last_checkpoint_path
from vae.training.tracking import flush_wandb, wandb_report, wandb_runs


class StopOnSignal(pl.Callback):
    """Stops training cleanly when the job is told to stop, and says so.

    SIGTERM (what SLURM, Kubernetes and most schedulers send before a kill), SIGINT (Ctrl-C), SIGHUP (the
    terminal closed; left alone under nohup) and SIGUSR1/SIGUSR2 (SLURM's ``--signal``) all stop training at the
    next batch: the run's ``last.ckpt`` is written there, mid-epoch (a resumed run continues from that very
    batch), the resume line is printed, the W&B run is marked preempted and finished with the exit code, and
    the process exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the shell's convention
    for a job ended by a signal. A signal during validation ends the run without a new checkpoint (the last one
    is from the end of the previous epoch). A second Ctrl-C stops at once, without a checkpoint.

    Lightning itself catches SIGTERM (under DDP it stops every process at the same step; with one process it
    would wait for the epoch's end); the other signals are passed on to it as a SIGTERM.
    """

    SIGNALS = ("SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue
            self.previous[signum] = signal.signal(signum, self.request_stop)

    def request_stop(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping after this step (Ctrl-C again to stop at once)", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's stop: sets trainer.received_sigterm, tells the others

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if trainer.received_sigterm and trainer.world_size == 1:  # under DDP Lightning stops all ranks together
            raise SIGTERMException

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        last = last_checkpoint_path(trainer)
        if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C, or a first one before training started
            name, code = "a second Ctrl-C" if self.signum is not None else "Ctrl-C", 128 + signal.SIGINT
        else:
            signum = self.signum or signal.SIGTERM
            name, code = signal.Signals(signum).name, 128 + signum
            exception.code = code
        where = f"step {trainer.global_step}, epoch {trainer.current_epoch}"
        if isinstance(exception, SIGTERMException) and trainer.state.stage == RunningStage.TRAINING:
            flush_wandb(trainer)
            trainer.save_checkpoint(last, weights_only=False)
            saved = f"saved {last}"
        else:
            saved = f"the last checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        if trainer.is_global_zero:
            resume = "resume with --ckpt_path last" if last.is_file() else "start it again"
            print("\n".join([f"stopped by {name} at {where}: {saved}; {resume}", *wandb_report(trainer)]), flush=True)
        for run in wandb_runs(trainer):
            run.mark_preempting()
            run.finish(exit_code=code)
