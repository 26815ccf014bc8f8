"""The plain progress line (vae.training.progress.LineProgressBar): one line per epoch with that epoch's numbers."""

import io
import re

from vae.training.progress import LineProgressBar


class Stream(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_the_epoch_line_shows_this_epochs_numbers_only_and_only_where_enabled():
    class Trained:
        current_epoch, global_step, loggers = 3, 280, []
        progress_bar_metrics = {"train/elbo": -112.414, "val/elbo": -5.0}

    out = Stream()
    bar = LineProgressBar(stream=out)
    bar.on_train_epoch_start(Trained, None)
    bar.on_train_epoch_end(Trained, None)  # no validation this epoch: the last one's numbers are not shown
    assert re.fullmatch(r"epoch 3, step 280, 0\.\d s: train/elbo -112\.41\n", out.getvalue())
    bar.validated = True
    assert bar.epoch_line(Trained, None).endswith(": train/elbo -112.41, val/elbo -5.00")
    bar.disable()  # what Lightning does on every process but the first
    bar.on_train_epoch_end(Trained, None)
    assert not bar.is_enabled and out.getvalue().count("\n") == 1
