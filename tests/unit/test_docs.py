"""The code in README.md and docs/kl.md, disentanglement.md, diffusion.md and compression.md runs as written."""

import re

import pytest
from conftest import REPO
from torch.distributions import Exponential

from vae.core.kl import CLOSED_FORMS


def python_blocks(path):
    """The fenced python blocks of a markdown file, dedented."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", path.read_text(), flags=re.S | re.M)
    return [re.sub(rf"^{indent}", "", code, flags=re.M) for indent, code in blocks]


@pytest.mark.parametrize(
    "page", ["README.md", "docs/kl.md", "docs/disentanglement.md", "docs/diffusion.md", "docs/compression.md"]
)
def test_python_examples_run(page):
    blocks = python_blocks(REPO / page)
    assert blocks, f"no python examples found in {page}"
    try:
        for code in blocks:
            if "<run id>" not in code:  # a trained run's example: integration/test_workflow.py runs it on a real run
                exec(compile(code, page, "exec"), {})
    finally:
        CLOSED_FORMS.pop((Exponential, Exponential), None)  # the registration example


def test_docs_show_the_playground_figures():
    text = (REPO / "docs" / "kl.md").read_text()
    for name in re.findall(r"\]\((figures/[^)]+\.png)\)", text):
        assert (REPO / "docs" / name).stat().st_size > 10_000, name
    assert len(re.findall(r"\]\((figures/[^)]+\.png)\)", text)) == 3
