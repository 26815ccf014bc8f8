"""A run's files read back without training: the metrics.csv every run writes (a resumed step keeps its later value;
another CSV is refused), and ``vae.load``'s one-line errors where there is no checkpoint. (On a real run:
tests/integration/test_workflow.py.)"""

import pytest

import vae
from vae.core.errors import ConfigError, DataError
from vae.training.metrics_file import has_curves, read_metrics


def test_a_missing_checkpoint_or_an_empty_run_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint not found"):
        vae.load(tmp_path / "nothing.ckpt")
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        vae.load(tmp_path)


def test_a_resumed_step_keeps_its_later_value(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,metric,value\n10,train/kl,5.0\n20,train/kl,4.0\n20,train/kl,3.5\n30,val/elbo,-90.0\n")
    assert read_metrics(path) == {"train/kl": [(10, 5.0), (20, 3.5)], "val/elbo": [(30, -90.0)]}
    assert has_curves(read_metrics(path)) and not has_curves({"val/elbo": [(30, -90.0)]})  # a curve: 2 points
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a run's metrics.csv"):
        read_metrics(tmp_path / "other.csv")
