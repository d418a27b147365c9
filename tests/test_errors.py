"""Every documented error: typed, raised before any computation, naming the node at fault."""

import math

import networkx as nx
import pandas as pd
import pyro
import pytest
import torch
from scms import Flows, GumbelChild, Linear

import pyro_scm as ps
from pyro_scm import errors


def _factual(n=5):
    return {"x": torch.zeros(n), "y": torch.zeros(n), "z": torch.zeros(n)}


def test_all_errors_share_a_base_and_builtin_types():
    assert issubclass(errors.UnknownNodeError, errors.SCMError)
    assert issubclass(errors.UnknownNodeError, KeyError)
    assert issubclass(errors.ShapeError, ValueError)
    assert issubclass(errors.MechanismError, TypeError)


def test_unknown_node_in_do():
    with pytest.raises(errors.UnknownNodeError, match=r"'w'.*nodes are"):
        Linear().do({"w": 1.0})
    with pytest.raises(errors.UnknownNodeError, match="'w'"):
        Linear().counterfactual(_factual(), do={"w": 1.0})


def test_unknown_node_in_factual():
    with pytest.raises(errors.UnknownNodeError, match="'w' in factual"):
        Linear().counterfactual({**_factual(), "w": torch.zeros(5)}, do={"x": 1.0})
    frame = pd.DataFrame({**{k: v.numpy() for k, v in _factual().items()}, "w": 0.0})
    with pytest.raises(errors.UnknownNodeError, match="'w'"):
        Linear().counterfactual(frame)


def test_missing_node():
    f = _factual()
    del f["z"]
    with pytest.raises(errors.MissingNodeError, match="'z'"):
        Linear().counterfactual(f, do={"x": 1.0})


def test_wrong_event_shape():
    f = {"a": torch.zeros(4), "b": torch.zeros(4), "c": torch.zeros(4, 3), "d": torch.zeros(4)}
    with pytest.raises(errors.ShapeError, match=r"'c'.*\(4, 3\).*expected \('units', 2\)"):
        Flows().counterfactual(f)
    f["c"] = torch.zeros(4, 2)
    f["a"] = torch.zeros(4, 1)
    with pytest.raises(errors.ShapeError, match="'a'"):
        Flows().counterfactual(f)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_factual_and_data(bad):
    f = _factual()
    f["y"][2] = bad
    with pytest.raises(errors.NonFiniteError, match=r"'y'.*1 units"):
        Linear().counterfactual(f, do={"x": 1.0})
    with pytest.raises(errors.NonFiniteError, match="'y'"):
        Linear().fit(f, progress=False)
    with pytest.raises(errors.NonFiniteError, match="'x'"):
        Linear().do({"x": bad}).sample(3)


def test_inconsistent_units_and_bad_types():
    f = _factual()
    f["z"] = torch.zeros(6)
    with pytest.raises(errors.DataError, match="different numbers of units"):
        Linear().counterfactual(f)
    with pytest.raises(errors.DataError, match="DataFrame"):
        Linear().counterfactual([1, 2, 3])
    with pytest.raises(errors.DataError, match="no units"):
        Linear().counterfactual({k: torch.zeros(0) for k in "xyz"})


def test_intervention_of_the_wrong_shape():
    with pytest.raises(errors.InterventionError, match=r"'x'.*\(3,\).*\(5,\)"):
        Linear().counterfactual(_factual(), do={"x": torch.zeros(3)})
    with pytest.raises(errors.InterventionError, match="'c'"):
        Flows().do({"c": torch.zeros(3)}).sample(4)
    with pytest.raises(errors.InterventionError, match="dict"):
        Linear().do([("x", 1.0)])
    with pytest.raises(errors.InterventionError, match=r"'x'.*number"):
        Linear().do({"x": "high"}).sample(2)


def test_bad_number_of_samples():
    with pytest.raises(errors.ArgumentError, match="n must be an int >= 1"):
        Linear().sample(0)


def test_categorical_index_out_of_range():
    f = {"x": torch.zeros(3), "c": torch.tensor([0, 1, 2]), "y": torch.zeros(3)}
    with pytest.raises(errors.ShapeError, match=r"'c'.*\[0, 1\]"):
        GumbelChild().counterfactual(f)
    with pytest.raises(errors.InterventionError, match="'c'"):
        GumbelChild().do({"c": 5}).sample(2)


def test_cyclic_graph_in_from_graph():
    frame = pd.DataFrame({"x": [0.0, 1.0], "y": [1.0, 0.0]})
    with pytest.raises(errors.GraphError, match="cycle"):
        ps.SCM.from_graph(nx.DiGraph([("x", "y"), ("y", "x")]), frame)


def test_from_graph_checks_nodes_against_data():
    frame = pd.DataFrame({"x": [0.0, 1.0], "y": [1.0, 0.0]})
    with pytest.raises(errors.MissingNodeError, match="'z'"):
        ps.SCM.from_graph(nx.DiGraph([("x", "y"), ("y", "z")]), frame)
    with pytest.raises(errors.UnknownNodeError, match="'y'"):
        ps.SCM.from_graph(nx.DiGraph([("x", "w")]), frame.assign(w=0.0))
    with pytest.raises(errors.MechanismError, match="unknown mechanism 'glow'"):
        ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism="glow")


def test_site_that_is_not_a_mechanism():
    class Plain(ps.SCM):
        def model(self):
            x = pyro.sample("x", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("y", pyro.distributions.Normal(x, 1.0))

    # the graph derives from the log-density of plain Pyro distributions ...
    assert set(Plain().graph.edges) == {("x", "y")}
    # ... but queries need mechanisms
    with pytest.raises(errors.MechanismError, match=r"'x'.*Normal.*not a mechanism"):
        Plain().counterfactual({"x": torch.zeros(2), "y": torch.zeros(2)}, do={"x": 1.0})


def test_model_not_written():
    with pytest.raises(errors.GraphError, match="model"):
        ps.SCM().graph  # noqa: B018


def test_result_unknown_node():
    with pytest.raises(errors.UnknownNodeError, match="'q' in result"):
        Linear().sample(2)["q"]
