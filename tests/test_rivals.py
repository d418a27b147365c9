"""Rivals of a chosen flow: the counterfactual spread over starts decides, bad input fails."""

import math
import time
import warnings

import networkx as nx
import pandas as pd
import pytest
import torch

import pyro_scm as ps
import pyro_scm.selection as selection
from pyro_scm.errors import ArgumentError, FitWarning, MechanismError
from pyro_scm.mechanisms import DiffusionMechanism, FlowMechanism, LocScaleMechanism
from pyro_scm.selection import _lower, _permuted, _spread, select_mechanisms

FAST = {"epochs": 6, "batch_size": 100, "lr": 1e-2, "progress": False, "workers": 1}


def _skewed(n=600, seed=0):
    """x -> s with log-normal noise: the likelihood picks a flow for s."""
    g = torch.Generator().manual_seed(seed)
    x, v = torch.randn(n, generator=g), torch.randn(n, generator=g)
    return pd.DataFrame({"x": x.numpy(), "s": (x + torch.exp(0.8 * v)).numpy()})


GRAPH = nx.DiGraph([("x", "s")])


def _fitted(**kw):
    frame = _skewed()
    scm = ps.SCM.from_graph(GRAPH, frame, hidden=(8,), transforms=1)
    return scm, scm.fit(frame, **{**FAST, **kw})


def test_a_stable_flow_trains_no_rival_and_records_its_spread():
    scm, history = _fitted(instability=math.inf)
    info = scm.selection["s"]
    assert info["kind"] == info["flow"] == "nsf"
    assert set(info["spread"]) == {"nsf"} and 0 <= info["spread"]["nsf"] < math.inf
    assert "diffusion" not in set(history.kind)
    assert isinstance(scm.mechanisms[scm.order.index("s")], FlowMechanism)
    assert "spread" not in scm.selection["x"]  # a regression kind has one start: no spread


def test_an_unstable_flow_trains_its_rivals_and_keeps_the_lower_spread():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        scm, history = _fitted(instability=0.0)
    info = scm.selection["s"]
    rows = history[(history.node == "s") & (history.kind == "diffusion")]
    assert set(rows.start) == {0, 1, 2}  # `restarts` starts of the rival
    assert set(info["spread"]) == {"nsf", "diffusion"}
    mechanism = scm.mechanisms[scm.order.index("s")]
    if info["kind"] == "diffusion":
        assert info["spread"]["diffusion"] < info["spread"]["nsf"]
        assert isinstance(mechanism, DiffusionMechanism) and not caught
    else:
        assert info["kind"] == "nsf" and isinstance(mechanism, FlowMechanism)
        assert [str(w.message)[:16] for w in caught] == ["node 's' keeps i"]


def test_an_unstable_flow_that_keeps_its_place_warns_naming_the_node(monkeypatch):
    monkeypatch.setattr(selection, "_lower", lambda reference, other, tolerance: False)
    with pytest.warns(FitWarning) as caught:
        scm, _ = _fitted(instability=0.0)
    info = scm.selection["s"]
    assert info["kind"] == "nsf" and set(info["spread"]) == {"nsf", "diffusion"}
    (message,) = [str(w.message) for w in caught]
    assert "node 's' keeps its nsf flow" in message and "instability=0" in message
    assert f"spread {info['spread']['nsf']:.3g}" in message
    rival = round(info["spread"]["diffusion"], 3)
    assert f"lower by 2 standard errors ({{'diffusion': {rival}}})" in message
    # a stable flow, below the threshold, warns nothing (warnings are errors in the tests)
    monkeypatch.undo()
    _fitted(instability=math.inf)


def test_a_rival_that_wins_is_installed_at_its_best_start(monkeypatch, tmp_path):
    monkeypatch.setattr(selection, "_lower", lambda reference, other, tolerance: True)
    scm, _ = _fitted(instability=0.0)
    info = scm.selection["s"]
    assert info["kind"] == "diffusion" and info["flow"] == "nsf" and info["members"] == 1
    assert len(info["starts"]) == 3
    assert info["start"] == max(range(3), key=info["starts"].__getitem__)
    mechanism = scm.mechanisms[scm.order.index("s")]
    assert isinstance(mechanism, DiffusionMechanism) and not mechanism.training
    assert scm.graph.nodes["s"]["selection"]["kind"] == "diffusion"
    # "starts" is minus the held-out loss of each start: the installed one's is recorded
    frame = _skewed()
    perm = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))[:60]
    x, s = (torch.tensor(frame[c].to_numpy(), dtype=torch.float32)[perm] for c in "xs")
    with torch.no_grad():
        loss = float(mechanism(x).loss(s).mean())
    assert abs(-loss - info["starts"][info["start"]]) < 1e-4
    # a saved model loads into one built with the chosen kinds
    path = tmp_path / "rival.pt"
    scm.save(path)
    kinds = {n: i["kind"] for n, i in scm.selection.items()}
    again = ps.SCM.from_graph(GRAPH, frame, mechanism=kinds, hidden=(8,), transforms=1)
    again.load(path)
    factual = {"x": torch.randn(10), "s": torch.randn(10)}
    with torch.no_grad():
        assert torch.allclose(
            scm.counterfactual(factual, do={"x": 1.0})["s"],
            again.counterfactual(factual, do={"x": 1.0})["s"],
        )


def test_no_rivals_without_restarts_or_with_rivals_off():
    scm, history = _fitted(instability=0.0, restarts=1)  # one start: nothing to compare, no warning
    assert scm.selection["s"]["kind"] == "nsf" and "diffusion" not in set(history.kind)
    assert "spread" not in scm.selection["s"]
    with pytest.warns(FitWarning, match=r"node 's' keeps its nsf flow .*rivals=\(\) trains none"):
        scm, history = _fitted(instability=0.0, rivals=())
    assert scm.selection["s"]["kind"] == "nsf" and "diffusion" not in set(history.kind)


def test_an_image_node_keeps_its_flow(monkeypatch):
    # a rival that cannot model the node's event is skipped, the flow stays
    def refuse(kind, node, *args, **kwargs):
        if kind == "diffusion":
            raise MechanismError(f"mechanism 'diffusion' of node {node!r} takes scalar nodes")
        return make(kind, node, *args, **kwargs)

    import pyro_scm.mechanisms.factory as factory

    make = factory.make_mechanism
    monkeypatch.setattr(factory, "make_mechanism", refuse)
    with pytest.warns(FitWarning, match=r"node 's' keeps .*no rival in \('diffusion',\) can model"):
        scm, history = _fitted(instability=0.0)
    assert scm.selection["s"]["kind"] == "nsf" and "diffusion" not in set(history.kind)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rivals": "diffusion"}, MechanismError),
        ({"rivals": ("nsf",)}, MechanismError),
        ({"rivals": ("diffusion", "diffusion")}, MechanismError),
        ({"instability": -0.1}, ArgumentError),
        ({"instability": float("nan")}, ArgumentError),
    ],
)
def test_bad_rival_arguments_fail_before_training(kwargs, error):
    frame = _skewed(100)
    scm = ps.SCM.from_graph(GRAPH, frame, mechanism="anm", hidden=(4,))
    before = {k: v.clone() for k, v in scm.state_dict().items()}
    with pytest.raises(error, match=r"rivals|instability"):
        select_mechanisms(scm, frame, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in scm.state_dict().items())
    auto = ps.SCM.from_graph(GRAPH, frame)
    with pytest.raises(error, match=r"rivals|instability"):
        auto.fit(frame, **FAST, **kwargs)
    assert auto.pending_selection is not None  # nothing ran


def test_permuted_queries_shuffle_each_parent_on_its_own():
    a, b = torch.arange(50.0), torch.arange(50.0) + 100
    qa, qb, c = _permuted((a, b, 3.0), 50, seed=0, node="y")
    assert c == 3.0  # not a per-unit tensor: passed through
    assert torch.equal(qa.sort().values, a) and torch.equal(qb.sort().values, b)
    assert not torch.equal(qa, a) and not torch.equal(qa - 100, qb - 200)  # own permutations
    again = _permuted((a, b, 3.0), 50, seed=0, node="y")
    assert torch.equal(again[0], qa) and again[2] == 3.0
    assert not torch.equal(_permuted((a,), 50, seed=0, node="z")[0], qa)


def _shifted(shift: float) -> LocScaleMechanism:
    """x = pa + shift + u: its counterfactual at pa' is x + pa' - pa whatever the shift."""
    return LocScaleMechanism(lambda pa: pa + shift, lambda pa: torch.ones_like(pa))


def _sloped(slope: float) -> LocScaleMechanism:
    """x = slope · pa + u: its counterfactual x + slope · (pa' - pa) depends on the slope."""
    return LocScaleMechanism(lambda pa: slope * pa, lambda pa: torch.ones_like(pa))


def test_spread_is_the_variance_of_the_starts_counterfactuals_over_the_nodes_variance():
    g = torch.Generator().manual_seed(1)
    pa, x = torch.randn(400, generator=g), 2 * torch.randn(400, generator=g)
    query = pa.flip(0)
    # starts that agree on every counterfactual have no spread, whatever else differs
    same = _spread([_shifted(0.0), _shifted(1.0), _shifted(-3.0)], x, (pa,), (query,))
    assert torch.allclose(same, torch.zeros(400), atol=1e-5)
    # slopes 0, 1, 2: answers x + k·d with d = pa' - pa, variance over k of k·d is d²
    spread = _spread([_sloped(0.0), _sloped(1.0), _sloped(2.0)], x, (pa,), (query,))
    assert torch.allclose(spread, (query - pa) ** 2 / x.var(), rtol=1e-4)
    broken = _spread([_sloped(0.0), _sloped(math.inf)], x, (pa,), (query,))
    assert bool(torch.isinf(broken[query != pa]).all())


def test_lower_needs_the_difference_beyond_tolerance_standard_errors():
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(500, generator=g)
    assert _lower(noise + 1.0, noise, 2.0)  # lower by 1 with no spread of the difference
    assert not _lower(noise, noise + 1.0, 2.0)
    same = torch.rand(500, generator=g)
    assert not _lower(noise, same, 2.0)  # two draws of one distribution: not significant
    assert _lower(torch.full((5,), math.inf), noise[:5], 2.0)
    assert not _lower(noise[:5], torch.full((5,), math.inf), 2.0)


def test_rivals_train_the_same_whatever_the_global_rng_and_the_workers():
    # a diffusion rival's training draws (t, ε) come from its own seeded generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)  # whether the flow keeps its place
        torch.manual_seed(1)
        one, h1 = _fitted(instability=0.0)
        torch.manual_seed(2)
        two, h2 = _fitted(instability=0.0, workers=2)
    assert one.selection["s"]["spread"] == two.selection["s"]["spread"]
    assert one.selection["s"]["starts"] == two.selection["s"]["starts"]
    rows = (h1.kind == "diffusion").to_numpy()
    assert (h1[rows][["train", "val"]].to_numpy() == h2[rows][["train", "val"]].to_numpy()).all()


def test_a_budget_spent_before_the_rivals_warns_for_the_flow_and_the_budget(monkeypatch):
    # a clock that stands still until the flow's restarts have trained, then jumps past budget_s
    now = [0.0]
    clock = type("Clock", (), {"perf_counter": lambda: now[0], "process_time": time.process_time})
    rounds = []

    def train(*args, **kwargs):
        out = real(*args, **kwargs)
        rounds.append(len(args[2]))
        now[0] = 1e9 if len(rounds) == 2 else now[0]  # after the restarts' round
        return out

    real = selection._train
    monkeypatch.setattr(selection, "time", clock)
    monkeypatch.setattr(selection, "_train", train)
    with pytest.warns(FitWarning) as caught:
        scm, history = _fitted(instability=0.0, budget_s=1e6)
    assert len(rounds) == 2 and "diffusion" not in set(history.kind)  # no rival round
    assert scm.selection["s"]["kind"] == "nsf" and history.attrs["budget_hit"]
    budget, flow = sorted(str(w.message) for w in caught)
    assert budget.startswith("budget_s=1e+06 ran out") and "skipped: the rivals of 's'" in budget
    assert "stopped while still improving" not in budget
    assert "node 's' keeps its nsf flow" in flow and "budget_s ran out before its rivals" in flow
