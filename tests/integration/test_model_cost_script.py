"""scripts/model_cost.py as a user runs it: a row of the table per config, a conditional model's among them (it is
given labels, as in training). Its counts against exact ones: tests/unit/test_model_cost.py."""

import importlib.util

from conftest import QUICKSTART, REPO

spec = importlib.util.spec_from_file_location("model_cost", REPO / "scripts" / "model_cost.py")
model_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_cost)


def test_the_script_prints_a_row_per_config(capsys):
    model_cost.main([str(QUICKSTART), str(REPO / "configs" / "cvae_quickstart.yaml"), "--batch-size", "4"])
    lines = capsys.readouterr().out.splitlines()
    for name in ("quickstart.yaml", "cvae_quickstart.yaml"):
        (row,) = [line for line in lines if line.startswith(f"| {name} ")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:3] == ["4", "32-true"] and int(cells[5].replace(",", "")) > 100
