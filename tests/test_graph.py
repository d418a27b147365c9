"""The causal graph derived from programs: shapes of DAGs, attributes, mutilation, drawing."""

import matplotlib
import networkx as nx
import pyro
import pytest
import torch
import zuko
from scms import Flows, GumbelChild, Linear

import pyro_scm as ps
from pyro_scm import graph as g

matplotlib.use("Agg")


class Program(ps.SCM):
    """An SCM whose edges are given as node -> parents, with loc-scale mechanisms."""

    def __init__(self, parents: dict[str, list[str]]):
        super().__init__()
        self.parents = parents
        self.mechs = torch.nn.ModuleDict(
            {
                n: ps.LocScaleMechanism(loc=lambda *pa: sum(pa) if pa else 0.0, scale=1.0)
                for n in parents
            }
        )

    def model(self):
        values = {}
        for node, pa in self.parents.items():
            values[node] = pyro.sample(node, self.mechs[node](*(values[p] for p in pa)))


@pytest.mark.parametrize(
    "parents",
    [
        {"a": [], "b": ["a"], "c": ["b"]},  # chain
        {"a": [], "b": ["a"], "c": ["a"]},  # fork
        {"a": [], "b": [], "c": ["a", "b"]},  # collider
        {"a": [], "b": ["a"], "c": ["a", "b"], "d": ["c", "a"]},  # skip edges
    ],
)
def test_graph_is_derived_from_the_program(parents):
    scm = Program(parents)
    expected = {(p, n) for n, pa in parents.items() for p in pa}
    assert set(scm.graph.edges) == expected
    assert list(scm.graph.nodes) == list(parents)
    assert scm.nodes == list(parents)


def test_transformed_parents_keep_their_edges():
    class Transformed(ps.SCM):
        def __init__(self):
            super().__init__()
            self.x = ps.LocScaleMechanism()
            self.y = ps.LocScaleMechanism()
            self.z = ps.FlowMechanism(zuko.flows.MAF(features=1, context=1))

        def model(self):
            x = pyro.sample("x", self.x())
            y = pyro.sample("y", self.y())
            pyro.sample("z", self.z(torch.tanh(2 * x) + 0 * y.detach()))

    assert set(Transformed().graph.edges) == {("x", "z"), ("y", "z")}


def test_node_attributes_and_vector_nodes():
    graph = Flows().graph
    assert graph.nodes["c"]["event_shape"] == (2,)
    assert graph.nodes["a"]["event_shape"] == ()
    assert graph.nodes["a"]["mechanism"] == "flow"
    assert set(graph.edges) == {("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")}
    cat = GumbelChild().graph
    assert cat.nodes["c"]["mechanism"] == "categorical"
    assert cat.nodes["c"]["num_classes"] == 2
    assert cat.nodes["x"]["num_classes"] is None


def test_graph_is_cached():
    scm = Linear()
    assert scm.graph is scm.graph


def test_ancestors_descendants_and_mutilation():
    graph = Flows().graph
    assert g.descendants(graph, ["b"]) == {"c", "d"}
    assert g.ancestors(graph, ["c"]) == {"a", "b"}
    cut = g.mutilate(graph, ["c"])
    assert set(cut.edges) == {("a", "b"), ("c", "d")}
    assert set(graph.edges) == {("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")}


def test_check_acyclic_names_the_cycle():
    with pytest.raises(ps.errors.GraphError, match="cycle"):
        g.check_acyclic(nx.DiGraph([("x", "y"), ("y", "z"), ("z", "x")]))
    g.check_acyclic(nx.DiGraph([("x", "y")]))


def test_check_matches_lists_the_differences():
    derived = Linear().graph
    g.check_matches(derived, nx.DiGraph([("x", "y"), ("y", "z"), ("x", "z")]))
    with pytest.raises(ps.errors.GraphError, match=r"not in the program \[\('z', 'x'\)\]"):
        g.check_matches(derived, nx.DiGraph([("x", "y"), ("y", "z"), ("z", "x")]))
    with pytest.raises(ps.errors.GraphError, match=r"not declared \[\('x', 'z'\)\]"):
        g.check_matches(derived, nx.DiGraph([("x", "y"), ("y", "z")]))


def test_plot_graph_returns_a_figure():
    fig = ps.plot_graph(Linear().graph, intervened=["x"])
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 1
