"""The Sachs data read from cdt's files: shape, transforms, graphs, and the error without cdt."""

from __future__ import annotations

import importlib.util

import networkx as nx
import numpy as np
import pytest

from pyro_scm.datasets import sachs
from pyro_scm.errors import DataError

# cdt's own import fails without its heavy dependencies, so skip on its files, not its import.
needs_cdt = pytest.mark.skipif(
    importlib.util.find_spec("cdt") is None, reason="cdt not installed (pip install --no-deps cdt)"
)


@needs_cdt
def test_raw_table_and_cdt_graph():
    frame, graph = sachs.load_sachs(log=False)
    assert frame.shape == (7466, 11) and list(frame.columns) == sachs.SACHS_NODES
    assert frame.to_numpy().min() == 1.0 and frame.to_numpy().max() == 9058.0
    assert frame.iloc[0].tolist()[:3] == [26.4, 13.2, 8.82]
    assert graph.number_of_edges() == 18 and set(graph.nodes) == set(sachs.SACHS_NODES)
    assert ("praf", "pmek") in graph.edges and ("pmek", "praf") not in graph.edges
    assert not nx.is_directed_acyclic_graph(graph)  # PIP3 -> plcg -> PIP2 -> PIP3


@needs_cdt
def test_log_and_standardize():
    raw, _ = sachs.load_sachs(log=False)
    logged, _ = sachs.load_sachs()
    np.testing.assert_allclose(logged.to_numpy(), np.log(raw.to_numpy()))
    std, _ = sachs.load_sachs(standardize=True)
    np.testing.assert_allclose(std.mean().to_numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(std.std(ddof=0).to_numpy(), 1.0, rtol=1e-10)


@needs_cdt
def test_dag_graph():
    _, graph = sachs.load_sachs(graph="dag")
    assert graph.number_of_edges() == 17 and nx.is_directed_acyclic_graph(graph)
    assert set(graph.nodes) == set(sachs.SACHS_NODES)
    with pytest.raises(DataError, match="dag"):
        sachs.load_sachs(graph="full")


def test_missing_cdt_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(sachs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(sachs.SachsUnavailableError, match="pip install --no-deps cdt") as info:
        sachs.load_sachs()
    assert isinstance(info.value, DataError) and isinstance(info.value, ImportError)
