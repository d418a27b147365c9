"""Fitting, from_graph, and persistence: trained models answer queries, saved models reload."""

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from scms import Linear
from torch import nn

import pyro_scm as ps


def _anm_frame(n=1500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    u = torch.randn(n, generator=g)
    y = torch.exp(x / 2) + 0.25 * u
    return pd.DataFrame({"x": x.numpy(), "y": y.numpy()}), x, y, u


@pytest.mark.parametrize("kind", ["maf", "nsf", "locscale", "anm"])
def test_fitted_model_recovers_counterfactuals_of_a_nonlinear_anm(kind, device):
    frame, x, y, u = _anm_frame()
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism=kind, hidden=(32, 32))
    assert scm.graph.nodes["y"]["mechanism"] == {"maf": "flow", "nsf": "flow"}.get(kind, kind)
    scm = scm.to(device)
    history = scm.fit(frame, epochs=25, batch_size=128, lr=3e-3, progress=False)
    assert set(history.columns) == {"epoch", "node", "train", "val"}
    first, last = history[history.node == "y"].val.iloc[0], history[history.node == "y"].val.min()
    assert last < first
    f = {"x": x[:300].to(device), "y": y[:300].to(device)}
    cf = scm.counterfactual(f, do={"x": 1.0})
    truth = torch.exp(torch.tensor(0.5)) + 0.25 * u[:300]
    mse = ((cf["y"][0].cpu() - truth) ** 2).mean().item()
    assert mse < 0.01, mse


def test_fit_stops_early_and_keeps_the_best_weights():
    frame, *_ = _anm_frame(600)
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism="locscale", hidden=(8,))
    history = scm.fit(frame, epochs=200, lr=5e-2, patience=3, progress=False)
    assert history.epoch.max() < 199
    best = history.groupby("node").val.min()
    from pyro_scm.fitting import mechanism_losses

    frame_t = {k: torch.tensor(frame[k].to_numpy()) for k in frame}
    perm = torch.randperm(600, generator=torch.Generator().manual_seed(0))
    val = {k: v[perm[:60]] for k, v in frame_t.items()}
    losses = mechanism_losses(scm, val)
    for node in ("x", "y"):
        assert losses[node].item() == pytest.approx(best[node], rel=1e-4)


def test_fit_without_parameters_returns_an_empty_history():
    frame = pd.DataFrame({k: np.arange(20.0) for k in "xyz"})
    assert Linear().fit(frame, progress=False).empty


def test_vector_and_categorical_nodes_from_a_frame():
    n = 400
    rng = np.random.default_rng(0)
    k = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 2)) + k[:, None]
    frame = pd.DataFrame({"k": pd.Categorical(k), "z[0]": z[:, 0], "z[1]": z[:, 1]})
    scm = ps.SCM.from_graph(nx.DiGraph([("k", "z")]), frame, mechanism="maf", hidden=(16,))
    assert scm.graph.nodes["z"]["event_shape"] == (2,)
    assert scm.graph.nodes["k"]["mechanism"] == "categorical"
    scm.fit(frame, epochs=3, progress=False)
    cf = scm.counterfactual(frame.iloc[:10], do={"k": 2})
    assert cf["z"].shape == (1, 10, 2) and torch.all(cf["k"][..., 2] == 1)


def test_custom_mechanism_factory():
    frame, *_ = _anm_frame(200)

    def factory(node, event_shape, context):
        return ps.LocScaleMechanism.learned(context, event_shape, hidden=(4,))

    scm = ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism=factory)
    assert scm.graph.nodes["y"]["mechanism"] == "locscale"
    with pytest.raises(ps.errors.MechanismError, match="not a pyro_scm Mechanism"):
        ps.SCM.from_graph(
            nx.DiGraph([("x", "y")]), frame, mechanism=lambda *a: torch.nn.Linear(1, 1)
        )


def test_save_load_round_trip_gives_identical_queries(tmp_path):
    frame, x, y, _ = _anm_frame(500)
    graph = nx.DiGraph([("x", "y")])
    scm = ps.SCM.from_graph(graph, frame, mechanism="nsf", hidden=(16,))
    scm.fit(frame, epochs=2, progress=False)
    path = tmp_path / "scm.pt"
    scm.save(path)
    fresh = ps.SCM.from_graph(graph, frame.assign(x=frame.x * 10), mechanism="nsf", hidden=(16,))
    fresh.load(path)
    f = {"x": x[:50], "y": y[:50]}
    a, b = scm.counterfactual(f, do={"x": 0.3}), fresh.counterfactual(f, do={"x": 0.3})
    assert torch.equal(a["y"], b["y"])


def test_load_rejects_mismatched_models_and_corrupt_files(tmp_path):
    frame, *_ = _anm_frame(100)
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism="maf", hidden=(8,))
    path = tmp_path / "scm.pt"
    scm.save(path)
    other = ps.SCM.from_graph(nx.DiGraph([("y", "x")]), frame, mechanism="maf", hidden=(8,))
    with pytest.raises(ps.errors.PersistenceError, match=r"node '.': parents"):
        other.load(path)
    wider = ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism="maf", hidden=(9,))
    with pytest.raises(ps.errors.PersistenceError, match="do not fit"):
        wider.load(path)
    with pytest.raises(ps.errors.PersistenceError, match="holds a"):
        Linear().load(path)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ps.errors.PersistenceError, match="not a readable"):
        scm.load(corrupt)
    with pytest.raises(ps.errors.PersistenceError, match="no saved model"):
        scm.load(tmp_path / "missing.pt")
    torch.save({"format": "pyro_scm", "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(ps.errors.PersistenceError, match="format version 99"):
        scm.load(tmp_path / "future.pt")


def test_fit_argument_errors():
    frame, *_ = _anm_frame(10)
    with pytest.raises(ps.errors.ArgumentError, match="epochs"):
        Linear().fit(frame.assign(z=0.0), epochs=0)
    with pytest.raises(ps.errors.DataError, match="too few"):
        Linear().fit(frame.assign(z=0.0).iloc[:1], val_fraction=0.5)
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(ps.errors.ArgumentError, match="lr_decay"):
            Linear().fit(frame.assign(z=0.0), lr_decay=bad)


def test_plateaus_decay_the_learning_rate_of_that_mechanism_only():
    from pyro_scm.fitting import _EarlyStopping, _param_groups

    mechanisms = {"a": nn.Linear(1, 1), "b": nn.Linear(1, 1)}
    optimizer = torch.optim.Adam(_param_groups(mechanisms), lr=1.0)
    stopper = _EarlyStopping(
        mechanisms, patience=2, optimizer=optimizer, lr_decay=0.5, max_decays=2
    )
    lrs = {g["node"]: g for g in optimizer.param_groups}
    stopper.update("a", 1.0)
    stopper.update("b", 1.0)
    for _ in range(2):
        stopper.update("a", 2.0)
    assert lrs["a"]["lr"] == 0.5 and lrs["b"]["lr"] == 1.0 and stopper.active == ["a", "b"]
    stopper.update("a", 0.5)  # an improvement resets the wait, not the learning rate
    for _ in range(2):
        stopper.update("a", 2.0)
    assert lrs["a"]["lr"] == 0.25 and "a" in stopper.active
    stopper.update("a", 2.0)
    stopper.update("a", 2.0)  # the third plateau: no decays left, it stops
    assert stopper.active == ["b"] and lrs["a"]["lr"] == 0.25


def test_lr_decay_trains_on_past_the_first_plateau_to_a_better_fit():
    frame, *_ = _anm_frame(600)

    def run(**kwargs):
        scm = ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism="anm", hidden=(8,))
        history = scm.fit(frame, epochs=300, lr=5e-2, patience=3, progress=False, **kwargs)
        y = history[history.node == "y"]
        return y.epoch.max(), y.val.min()

    (plain_epochs, plain_best), (decay_epochs, decay_best) = run(), run(lr_decay=0.3)
    assert decay_epochs > plain_epochs and decay_best < plain_best


def test_log_prob_sums_the_mechanisms_densities():
    scm = Linear()
    x, y, z = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    normal = torch.distributions.Normal
    expected = (
        normal(0.0, 1.0).log_prob(x)
        + normal(1.5 * x, 0.5).log_prob(y)
        + normal(-0.8 * y + 0.7 * x, 0.3).log_prob(z)
    )
    torch.testing.assert_close(scm.log_prob({"x": x, "y": y, "z": z}), expected)


def test_adam_is_fused_where_torch_has_a_fused_kernel_and_plain_elsewhere():
    from pyro_scm.fitting import _FUSED, adam

    cpu = [nn.Parameter(torch.zeros(3))]
    opt = adam([{"params": cpu, "node": "x"}], lr=1e-3, weight_decay=0.0)
    assert bool(opt.defaults["fused"]) == ("cpu" in _FUSED)
    meta = [nn.Parameter(torch.zeros(3, device="meta"))]
    assert not adam([{"params": meta}], lr=1e-3, weight_decay=0.0).defaults["fused"]
    # a fused step is the same update as the per-tensor one
    a, b = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(4))
    for p, opt in ((a, adam([{"params": [a]}], 0.1, 0.0)), (b, torch.optim.Adam([b], lr=0.1))):
        p.grad = torch.arange(4.0)
        opt.step()
    assert torch.allclose(a, b)
