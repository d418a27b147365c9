"""The layering of docs/architecture.md: module-level imports between modules form a DAG."""

import ast
from pathlib import Path

import networkx as nx

import pyro_scm

ROOT = Path(pyro_scm.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in ROOT.rglob("*.py"):
        name = _module(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph.add_node(name)
        for stmt in ast.parse(path.read_text()).body:  # module level only: lazy imports excluded
            if isinstance(stmt, ast.ImportFrom) and stmt.level > 0:
                base = package.rsplit(".", stmt.level - 1)[0] if stmt.level > 1 else package
                target = f"{base}.{stmt.module}" if stmt.module else base
                for alias in stmt.names:
                    sub = f"{target}.{alias.name}"
                    graph.add_edge(
                        name,
                        sub
                        if (ROOT.parent / sub.replace(".", "/")).exists()
                        or (ROOT.parent / (sub.replace(".", "/") + ".py")).exists()
                        else target,
                    )
    return graph


def test_scm_does_not_import_builders():
    graph = _imports()
    assert graph.has_edge("pyro_scm.builders", "pyro_scm.scm")
    assert not nx.has_path(graph, "pyro_scm.scm", "pyro_scm.builders")


def test_no_import_cycle_between_the_library_modules():
    graph = _imports()
    # a package's __init__ re-exporting its own submodules is not a cycle of ideas
    graph.remove_edges_from([(a, b) for a, b in graph.edges if b.startswith(a + ".")])
    assert nx.is_directed_acyclic_graph(graph), nx.find_cycle(graph)
