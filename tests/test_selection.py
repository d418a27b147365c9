"""Per-node mechanism selection: the right class wins, choices are recorded, bad input fails."""

import networkx as nx
import pandas as pd
import pyro
import pytest
import torch

import pyro_scm as ps
from pyro_scm.errors import (
    ArgumentError,
    DataError,
    FitWarning,
    MechanismError,
    PersistenceError,
    UnknownNodeError,
)
from pyro_scm.selection import _choose, select_mechanisms

FAST = {"epochs": 30, "batch_size": 100, "lr": 1e-2, "progress": False}


def _frame(n=1200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, u, v = (torch.randn(n, generator=g) for _ in range(3))
    additive = torch.tanh(x) + 0.3 * u  # an ANM
    skewed = x + torch.exp(0.8 * v)  # additive but log-normal noise: only a flow fits it
    return pd.DataFrame({"x": x.numpy(), "a": additive.numpy(), "s": skewed.numpy()})


def test_auto_picks_anm_for_gaussian_noise_and_a_flow_for_skewed_noise():
    frame = _frame()
    graph = nx.DiGraph([("x", "a"), ("x", "s")])
    scm = ps.SCM.from_graph(graph, frame, hidden=(16,), transforms=2)  # "auto" is the default
    assert scm.pending_selection["nodes"] == ["x", "a", "s"]
    history = scm.fit(frame, **FAST)
    chosen = {n: i["kind"] for n, i in history.attrs["selection"].items()}
    assert chosen["a"] == "anm" and chosen["s"] == "nsf", history.attrs["selection"]
    assert set(history.columns) == {"epoch", "node", "kind", "start", "train", "val"}
    assert set(history[history.node == "s"].kind) == {"anm", "locscale", "nsf"}
    # the chosen flow got two more starts, the chosen ANM of a child four more fits, the root
    # (nothing to average: its ANM is a constant) none
    assert set(history[(history.node == "s") & (history.kind == "nsf")].start) == {0, 1, 2}
    assert set(history[(history.node == "a") & (history.kind == "anm")].start) == set(range(5))
    assert set(history[history.node == "x"].start) == {0}
    assert len(scm.selection["s"]["starts"]) == 3 and len(scm.selection["a"]["starts"]) == 5
    assert scm.selection["a"]["members"] == 5 and scm.selection["x"]["members"] == 1
    info = scm.graph.nodes["s"]["selection"]
    assert info["scores"]["nsf"] > info["scores"]["anm"] + 0.1
    assert scm.graph.nodes["a"]["mechanism"] == "anm"
    assert scm.graph.nodes["s"]["mechanism"] == "flow"
    assert scm.pending_selection is None and scm.selection == history.attrs["selection"]
    again = scm.fit(frame, **FAST)  # a second fit trains the chosen kinds
    assert "kind" not in again.columns


def test_select_mechanisms_on_a_hand_written_program_replaces_its_modules():
    class Program(ps.SCM):
        def __init__(self):
            super().__init__()
            self.x = ps.LocScaleMechanism()
            self.a = ps.LocScaleMechanism(loc=lambda x: x)  # fixed: replaced by a learned one

        def model(self):
            x = pyro.sample("x", self.x())
            pyro.sample("a", self.a(x))

    frame = _frame()[["x", "a"]]
    scm = Program()
    history = select_mechanisms(scm, frame, nodes=["a"], kinds=("anm", "nsf"), hidden=(16,), **FAST)
    assert set(history.attrs["selection"]) == {"a"}
    kind = scm.graph.nodes["a"]["selection"]["kind"]
    assert scm.graph.nodes["a"]["mechanism"] == {"nsf": "flow"}.get(kind, kind)
    assert isinstance(scm.a, (ps.LocScaleMechanism, ps.FlowMechanism)) and scm.a.training is False
    x = torch.tensor(frame.x.to_numpy()[:50], dtype=torch.float32)
    a = torch.tanh(x) + 0.3 * torch.randn(50)
    cf = scm.counterfactual({"x": x, "a": a}, do={"x": 0.5})
    assert ((cf["a"][0] - a) - (torch.tanh(torch.tensor(0.5)) - torch.tanh(x))).abs().mean() < 0.2


def test_budget_stops_the_loop():
    frame = _frame(400)
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "a")]), frame[["x", "a"]], hidden=(8,))
    with pytest.warns(FitWarning) as caught:
        history = scm.fit(frame[["x", "a"]], budget_s=1e-6, **FAST)
    assert history.epoch.max() == 0 and history.attrs["budget_hit"]
    assert set(history.attrs["selection"]) == {"x", "a"}
    # one warning names what the budget cut: every candidate after its first epoch
    (message,) = [str(w.message) for w in caught]
    assert message.startswith("budget_s=1e-06 ran out before the selection ended")
    assert all(f"'{n}/{k}'" in message for n in "xa" for k in ("anm", "locscale", "nsf"))


def test_one_standard_error_rule():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(500, generator=g)
    scores = {"anm": base - 0.01, "nsf": base + 0.001 * torch.randn(500, generator=g)}
    assert _choose(scores, ("anm", "nsf"), tolerance=1.0)["kind"] == "nsf"  # 0.01 >> 1 SE
    assert _choose(scores, ("anm", "nsf"), tolerance=1e6)["kind"] == "anm"
    scores["nsf"] = torch.full((500,), float("nan"))
    assert _choose(scores, ("anm", "nsf"), tolerance=0.0)["kind"] == "anm"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kinds": "nsf"}, MechanismError),
        ({"kinds": ("nsf", "glow")}, MechanismError),
        ({"kinds": ("nsf", "nsf")}, MechanismError),
        ({"nodes": ["zz"]}, UnknownNodeError),
        ({"val_fraction": 0.0}, DataError),
        ({"budget_s": 0}, DataError),
        ({"tolerance": -1.0}, DataError),
        ({"lr_decay": 2.0}, DataError),
    ],
)
def test_bad_selection_arguments_fail_before_training(kwargs, error):
    frame = _frame(100)[["x", "a"]]
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "a")]), frame, mechanism="anm", hidden=(4,))
    before = {k: v.clone() for k, v in scm.state_dict().items()}
    with pytest.raises(error):
        select_mechanisms(scm, frame, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in scm.state_dict().items())


def test_bad_candidates_in_from_graph():
    frame = _frame(50)[["x", "a"]]
    with pytest.raises(MechanismError, match="candidates"):
        ps.SCM.from_graph(nx.DiGraph([("x", "a")]), frame, candidates=("glow",))


def test_auto_on_a_vector_node():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 2, generator=g)
    data = {"a": a, "b": torch.stack([a.sum(-1), a[:, 0]], -1) + 0.1 * torch.randn(300, 2)}
    scm = ps.SCM.from_graph(nx.DiGraph([("a", "b")]), data, hidden=(4,), transforms=1)
    history = scm.fit(data, **{**FAST, "epochs": 2})
    assert set(history.attrs["selection"]) == {"a", "b"}
    assert scm.counterfactual({k: v[:3] for k, v in data.items()}, do={"a": 0.0})["b"].shape == (
        1,
        3,
        2,
    )


def _hidden_layers(module: torch.nn.Module) -> list[int]:
    """Output sizes of the Linear layers of ``module`` but the last (its hidden layers)."""
    return [m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear)][:-1]


def _mechanism(scm, node: str) -> torch.nn.Module:
    return scm.mechanisms[scm.order.index(node)]


def test_hidden_defaults_per_kind_and_an_explicit_hidden_for_all():
    from pyro_scm.builders import DEFAULT_HIDDEN, default_hidden

    frame = _frame(200)
    graph = nx.DiGraph([("x", "a"), ("x", "s")])
    kinds = {"x": "anm", "a": "anm", "s": "locscale"}
    scm = ps.SCM.from_graph(graph, frame, mechanism=kinds)
    assert _hidden_layers(_mechanism(scm, "a").loc) == list(DEFAULT_HIDDEN["anm"]) == [64, 64, 64]
    assert _hidden_layers(_mechanism(scm, "s").scale) == list(default_hidden("locscale"))
    flow = _mechanism(ps.SCM.from_graph(graph, frame, mechanism="nsf"), "a")
    widths = [m.out_features for m in flow.modules() if hasattr(m, "out_features")]
    assert widths.count(64) == 2 * 3  # 3 transforms, each conditioner with two hidden layers
    small = ps.SCM.from_graph(graph, frame, mechanism={**kinds, "s": "nsf"}, hidden=(8,))
    assert _hidden_layers(_mechanism(small, "a").loc) == [8]
    widths = [
        m.out_features for m in _mechanism(small, "s").modules() if hasattr(m, "out_features")
    ]
    assert 8 in widths and 64 not in widths
    from pyro_scm.datasets import learned_scm, load_synthetic

    syn = load_synthetic("dcm-chain", "nonlinear")
    bench = learned_scm(syn, syn.sample(50, seed=0), "anm")  # the benchmarks' models too
    assert _hidden_layers(_mechanism(bench, "x2").loc) == [64, 64, 64]
    # "auto" candidates follow the same rule
    auto = ps.SCM.from_graph(graph, frame)
    assert auto.pending_selection["hidden"] is None
    auto.fit(frame, epochs=1, progress=False, batch_size=100)
    chosen = auto.graph.nodes["a"]["selection"]["kind"]
    mechanism = _mechanism(auto, "a")
    layers = _hidden_layers(mechanism.loc) if chosen != "nsf" else None
    assert chosen == "nsf" or layers == list(default_hidden(chosen))


@pytest.mark.parametrize("hidden", [(0,), (64, -1), "64", (2.5,), 64, (True,)])
def test_bad_hidden_fails_before_training(hidden):
    frame = _frame(100)
    graph = nx.DiGraph([("x", "a")])
    with pytest.raises(ArgumentError, match="hidden"):
        ps.SCM.from_graph(graph, frame[["x", "a"]], mechanism="anm", hidden=hidden)
    with pytest.raises(ArgumentError, match="hidden"):
        ps.SCM.from_graph(graph, frame[["x", "a"]], hidden=hidden)  # "auto"


def test_a_candidates_initial_weights_depend_on_the_seed_node_and_kind_only():
    frame = _frame(300)[["x", "s"]]
    graph = nx.DiGraph([("x", "s")])
    fast = {**FAST, "epochs": 2}

    def nsf_rows(kinds, global_seed, seed=0):
        torch.manual_seed(global_seed)
        scm = ps.SCM.from_graph(graph, frame, hidden=(8,), transforms=1, candidates=kinds)
        history = scm.fit(frame, seed=seed, workers=1, **fast)
        rows = history[(history.node == "s") & (history.kind == "nsf") & (history.start == 0)]
        return rows[["train", "val"]].to_numpy()

    reference = nsf_rows(("anm", "nsf"), global_seed=0)
    # other kinds beside it and another global RNG state: the same start, the same training
    assert (nsf_rows(("locscale", "nsf"), global_seed=1) == reference).all()
    assert (nsf_rows(("anm", "locscale", "nsf"), global_seed=2) == reference).all()
    assert not (nsf_rows(("anm", "nsf"), global_seed=0, seed=1) == reference).all()
    scm = ps.SCM.from_graph(graph, frame, hidden=(8,), transforms=1)
    state = torch.random.get_rng_state()
    select_mechanisms(scm, frame, workers=1, **fast)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone


def test_restarts_keep_the_kind_and_install_the_best_held_out_start():
    frame = _frame()[["x", "s"]]
    graph = nx.DiGraph([("x", "s")])
    fast = {**FAST, "workers": 1}

    def fitted(restarts, **kw):
        scm = ps.SCM.from_graph(graph, frame, hidden=(16,), transforms=2)
        history = scm.fit(frame, restarts=restarts, **{**fast, **kw})
        return scm, history

    one, h1 = fitted(1)
    three, h3 = fitted(3)
    info = three.selection["s"]
    assert info["kind"] == one.selection["s"]["kind"] == "nsf"  # the kind is chosen on one start
    assert info["scores"] == one.selection["s"]["scores"] and len(info["starts"]) == 3
    assert info["start"] == max(range(3), key=info["starts"].__getitem__)
    assert one.selection["s"]["starts"] == info["starts"][:1] and one.selection["s"]["start"] == 0
    assert len(set(info["starts"])) == 3  # the starts differ
    # the first start trains exactly as without restarts (same split, batches and weights)
    nsf = (h3.node == "s") & (h3.kind == "nsf")
    first = h3[nsf & (h3.start == 0)][["train", "val"]].to_numpy()
    assert (first == h1[(h1.node == "s") & (h1.kind == "nsf")][["train", "val"]].to_numpy()).all()
    # the installed mechanism is the chosen start: its held-out score on the split's
    # validation units (the first tenth of the seed's permutation) is the recorded one
    perm = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))[:120]
    x, y = (torch.tensor(frame[c].to_numpy(), dtype=torch.float32)[perm] for c in "xs")
    with torch.no_grad():
        lp = three.mechanisms[three.order.index("s")](x).log_prob(y).mean()
    assert abs(float(lp) - info["starts"][info["start"]]) < 1e-4
    # the same with two workers (each start trains independently)
    two, h2 = fitted(3, workers=2)
    assert two.selection["s"]["starts"] == info["starts"]
    assert len(h2.attrs["worker_cpu_s"]) == 2


@pytest.mark.parametrize("restarts", [0, 1.5, True, "3"])
def test_restarts_must_be_a_positive_int(restarts):
    frame = _frame(300)[["x", "s"]]
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "s")]), frame)
    with pytest.raises(ArgumentError, match="restarts"):
        scm.fit(frame, restarts=restarts, **FAST)
    assert scm.pending_selection is not None  # nothing ran


def test_no_restarts_once_the_budget_is_spent():
    frame = _frame(300)[["x", "s"]]
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "s")]), frame, hidden=(8,), transforms=1)
    with pytest.warns(FitWarning) as caught:
        history = scm.fit(frame, budget_s=1e-6, **FAST)
    assert set(history.start) == {0} and all(len(i["starts"]) == 1 for i in scm.selection.values())
    (message,) = [str(w.message) for w in caught]
    kind = scm.selection["s"]["kind"]
    count = {"anm": 4, "nsf": 2}.get(kind)  # members - 1 or restarts - 1 skipped
    assert "skipped" in message if count else "skipped" not in message
    assert count is None or f"{count} more {kind} fits of 's'" in message


def test_a_generous_budget_warns_nothing():
    frame = _frame(300)[["x", "a"]]
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "a")]), frame, hidden=(8,))
    history = scm.fit(frame, budget_s=600, **FAST)  # warnings are errors in the tests
    assert not history.attrs["budget_hit"]


def _additive(n=1200, seed=0):
    frame = _frame(n, seed)[["x", "a"]]
    return frame, nx.DiGraph([("x", "a")])


def test_an_anm_ensemble_averages_the_members_fits():
    frame, graph = _additive()
    fast = {**FAST, "workers": 1}
    one = ps.SCM.from_graph(graph, frame, hidden=(16,))
    h1 = one.fit(frame, members=1, **fast)
    three = ps.SCM.from_graph(graph, frame, hidden=(16,))
    h3 = three.fit(frame, members=3, **fast)
    info, single = three.selection["a"], one.selection["a"]
    assert info["kind"] == single["kind"] == "anm" and info["members"] == 3
    assert single["members"] == 1 and single["start"] == 0 and "score" not in single
    assert info["start"] is None and len(set(info["starts"])) == 3  # the fits differ
    mechanism = three.mechanisms[three.order.index("a")]
    assert isinstance(mechanism, ps.LocScaleMechanism) and mechanism.members == 3
    assert mechanism.kind == "anm" and mechanism.fitted and not mechanism.training
    assert three.graph.nodes["a"]["mechanism"] == "anm"
    # the first fit trains exactly as without members (same split, batches and weights)
    rows = (h3.node == "a") & (h3.kind == "anm") & (h3.start == 0)
    reference = h1[(h1.node == "a") & (h1.kind == "anm")][["train", "val"]].to_numpy()
    assert (h3[rows][["train", "val"]].to_numpy() == reference).all()
    # the recorded score is the ensemble's held-out log-likelihood (first tenth of the split)
    perm = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))[:120]
    x, a = (torch.tensor(frame[c].to_numpy(), dtype=torch.float32)[perm] for c in "xa")
    with torch.no_grad():
        lp = mechanism(x).log_prob(a).mean()
    assert abs(float(lp) - info["score"]) < 1e-4
    # off the training support the mean errs less than its members do on average (the
    # members' errors partly cancel), and member 0 is the single fit
    far = torch.linspace(2.5, 3.5, 50)
    with torch.no_grad():
        nets = mechanism.loc.nets
        assert torch.equal(nets[0](far), one.mechanisms[one.order.index("a")].loc(far))
        members = torch.stack([(net(far) - torch.tanh(far)).square().mean() for net in nets])
        error = (mechanism(far).generate(torch.zeros(50)) - torch.tanh(far)).square().mean()
    assert error < members.mean() and members.std() > 0, (error, members)
    # the same with two workers (each fit's initial weights are seeded by its start)
    two = ps.SCM.from_graph(graph, frame, hidden=(16,))
    two.fit(frame, members=3, **{**fast, "workers": 2})
    assert two.selection["a"]["starts"] == info["starts"]
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in three.state_dict().items())


def test_an_ensembles_counterfactual_is_the_mean_of_its_members_counterfactuals():
    g = torch.Generator().manual_seed(1)
    fits = [ps.LocScaleMechanism.learned(2, (), (8,), heteroscedastic=False) for _ in range(4)]
    x, y = torch.randn(200, 1, generator=g), torch.randn(200, generator=g)
    value = torch.sin(3 * x[:, 0]) + y + 0.1 * torch.randn(200, generator=g)
    for f in fits:
        f.prepare(value, x, y)
    mean = ps.LocScaleMechanism.ensemble(fits, value, x, y)
    x_cf = torch.randn(200, 1, generator=g)

    def counterfactual(m):
        with torch.no_grad():
            return m(x_cf, y).generate(m(x, y).abduct(value))

    members = torch.stack([counterfactual(f) for f in fits]).mean(0)
    assert torch.allclose(counterfactual(mean), members, atol=1e-5)
    # the scale is the root mean square residual of the mean
    with torch.no_grad():
        loc = torch.stack([f(x, y).generate(torch.zeros(200)) for f in fits]).mean(0)
        sigma = mean(x, y).generate(torch.ones(200)) - loc
    assert torch.allclose(sigma, (value - loc).square().mean().sqrt().expand(200), atol=1e-4)
    assert not mean.fitted  # its members were not fitted
    assert ps.LocScaleMechanism.ensemble([f.mark_fitted() for f in fits], value, x, y).fitted


@pytest.mark.parametrize(
    "fits",
    [
        [],
        [ps.LocScaleMechanism.learned(2, (), (8,))],  # heteroscedastic: not an ANM
        [ps.LocScaleMechanism.learned(0, (), (8,), heteroscedastic=False)],  # a root
        [ps.LocScaleMechanism(loc=lambda a: a)],
        [
            ps.LocScaleMechanism.learned(2, (), (8,), heteroscedastic=False),
            ps.LocScaleMechanism.learned(3, (), (8,), heteroscedastic=False),
        ],
    ],
)
def test_an_ensemble_needs_anms_of_one_layout(fits):
    with pytest.raises(MechanismError):
        ps.LocScaleMechanism.ensemble(fits, torch.zeros(5), torch.zeros(5, 2))


@pytest.mark.parametrize("members", [0, 1.5, True, "3"])
def test_members_must_be_a_positive_int(members):
    frame, graph = _additive(300)
    scm = ps.SCM.from_graph(graph, frame)
    with pytest.raises(ArgumentError, match="members"):
        scm.fit(frame, members=members, **FAST)
    assert scm.pending_selection is not None  # nothing ran
    with pytest.raises(ArgumentError, match="members"):
        ps.SCM.from_graph(graph, frame, mechanism="anm", members=members)
    with pytest.raises(ArgumentError, match="members"):
        ps.LocScaleMechanism.learned(1, (), (8,), heteroscedastic=False, members=members)


def test_bad_ensemble_layouts_in_from_graph():
    frame, graph = _additive(300)
    with pytest.raises(UnknownNodeError):
        ps.SCM.from_graph(graph, frame, mechanism="anm", members={"zz": 2})
    with pytest.raises(ArgumentError, match="'x'"):  # a root has no loc network to average
        ps.SCM.from_graph(graph, frame, mechanism="anm", members={"x": 2})
    with pytest.raises(ArgumentError, match="'a'"):
        ps.SCM.from_graph(graph, frame, mechanism={"a": "nsf"}, members={"a": 2})
    with pytest.raises(ArgumentError, match="members"):
        ps.LocScaleMechanism.learned(0, (), (8,), heteroscedastic=False, members=2)
    # an int applies to the ANMs with parents only
    scm = ps.SCM.from_graph(graph, frame, mechanism="anm", members=3, hidden=(8,))
    assert [m.members for m in scm.mechanisms] == [1, 3]


def test_a_saved_ensemble_loads_into_a_model_built_with_its_members(tmp_path):
    frame, graph = _additive(600)
    # one candidate kind: the test is about the layout of an ensemble, not about which kind
    # 600 units select (a flow can win there, by an amount that depends on the CPU's rounding)
    scm = ps.SCM.from_graph(graph, frame, hidden=(16,), candidates=("anm",))
    scm.fit(frame, members=3, **FAST)
    assert scm.selection["a"]["kind"] == "anm" and scm.selection["a"]["members"] == 3
    path = tmp_path / "selected.pt"
    scm.save(path)
    kinds = {n: i["kind"] for n, i in scm.selection.items()}
    members = {n: i["members"] for n, i in scm.selection.items()}
    again = ps.SCM.from_graph(graph, frame, mechanism=kinds, members=members, hidden=(16,))
    again.load(path)
    factual = {"x": torch.randn(20), "a": torch.randn(20)}
    assert torch.equal(
        scm.counterfactual(factual, do={"x": 1.0})["a"],
        again.counterfactual(factual, do={"x": 1.0})["a"],
    )
    plain = ps.SCM.from_graph(graph, frame, mechanism=kinds, hidden=(16,))
    with pytest.raises(PersistenceError, match=r"'a': members is 3 .* but 1"):
        plain.load(path)
