"""Code examples in the docs run: every block marked ``<!-- run -->`` is executed."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"<!-- run -->\s*```python\n(.*?)```", re.S)


def _blocks():
    for page in sorted(DOCS.glob("*.md")):
        for i, code in enumerate(BLOCK.findall(page.read_text())):
            yield pytest.param(code, id=f"{page.stem}-{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_docs_example_runs(code):
    namespace: dict = {}
    exec(compile(code, "<docs>", "exec"), namespace)


def test_runnable_examples_exist():
    assert len(list(_blocks())) >= 2
