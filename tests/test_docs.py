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


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.stem)
def test_pages_hold_no_control_characters(page):
    """A page written from a non-raw Python string turns ``\\frac`` into a form feed and
    ``\\text`` into a tab: the math then renders broken. Only newlines and tabs outside math
    may appear."""
    text = page.read_text()
    assert not CONTROL.search(text), f"{page.name}: control character at {CONTROL.search(text)}"
    for math in re.findall(r"\$\$.*?\$\$", text, re.S):
        assert "\t" not in math, f"{page.name}: a tab in {math[:60]!r}"


def test_docstrings_hold_no_control_characters():
    """The same for the docstrings the API reference renders (``"\\frac"`` in a non-raw one)."""
    import importlib
    import inspect
    import pkgutil

    import pyro_scm

    bad = []
    for info in pkgutil.walk_packages(pyro_scm.__path__, "pyro_scm."):
        module = importlib.import_module(info.name)
        objects = [module] + [v for _, v in inspect.getmembers(module) if inspect.isclass(v)]
        objects += [v for _, v in inspect.getmembers(module) if inspect.isfunction(v)]
        for cls in [v for v in objects if inspect.isclass(v)]:
            objects += [v for v in vars(cls).values() if inspect.isfunction(v)]
        bad += [o for o in objects if CONTROL.search(inspect.getdoc(o) or "")]
    assert not bad, f"control characters in the docstrings of {bad}"
