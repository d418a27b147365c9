"""Forked workers: results in order, a child's exception and warnings reach the parent, and
parallel mechanism selection trains exactly what one process trains."""

import sys
import warnings

import networkx as nx
import pandas as pd
import pytest
import torch

import pyro_scm as ps
from pyro_scm.errors import ArgumentError, DataError
from pyro_scm.selection import _shares, select_mechanisms
from pyro_scm.workers import can_fork, fork_map, usable_workers

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork workers: Linux only")


@linux
def test_fork_map_returns_every_share_in_order_and_restores_threads():
    threads = torch.get_num_threads()
    out = fork_map(lambda s: (s, torch.arange(s).sum().item(), torch.get_num_threads()), [3, 4, 5])
    assert [o[:2] for o in out] == [(3, 3), (4, 6), (5, 10)]
    assert all(o[2] == max(1, threads // 3) for o in out)
    assert torch.get_num_threads() == threads


@linux
def test_fork_map_reraises_a_child_error_with_its_traceback():
    def fn(s):
        if s == 1:
            raise DataError("bad share 1")
        return s

    with pytest.raises(DataError, match="bad share 1") as info:
        fork_map(fn, [0, 1])
    assert any("in a worker process" in note for note in info.value.__notes__)


@linux
def test_fork_map_replays_child_warnings():
    def fn(s):
        if s:
            warnings.warn(f"share {s} warns", UserWarning, stacklevel=1)
        return s

    with pytest.warns(UserWarning, match="share 1 warns"):
        assert fork_map(fn, [0, 1]) == [0, 1]


@linux
def test_fork_map_reports_a_dead_child():
    def fn(s):
        if s:
            import os

            os._exit(3)
        return s

    with pytest.raises(RuntimeError, match="exit code 3"):
        fork_map(fn, [0, 1])


def test_usable_workers_is_one_off_cpu_and_counts_cpus_on_it():
    assert usable_workers(torch.device("meta")) == 1 and not can_fork(torch.device("meta"))
    if sys.platform.startswith("linux"):
        assert usable_workers(torch.device("cpu")) >= 1 and can_fork(torch.device("cpu"))


def test_shares_split_new_candidates_by_cost_and_keep_the_programs_own():
    cands = dict.fromkeys(["x/mechanism", "a/anm", "a/locscale", "a/nsf", "b/anm", "b/nsf"])
    new = ["a/anm", "a/locscale", "a/nsf", "b/anm", "b/nsf"]
    owner = {k: (*k.split("/"), 0) for k in cands}
    shares = _shares(cands, new, 2, 2, owner)
    assert sorted(k for share in shares for k in share) == sorted(cands)
    assert "x/mechanism" in shares[0]
    assert {"a/nsf", "b/nsf"} & set(shares[0]) and {"a/nsf", "b/nsf"} & set(shares[1])
    assert _shares(cands, new, None, 1, owner) == [list(cands)]
    assert len(_shares(cands, new, 8, 1, owner)) == 5  # explicit workers, one per candidate
    # restarts: the cost is the kind's, read from the owner (not from the key)
    more = {"a/nsf/1": None, "a/nsf/2": None, "b/nsf/1": None, "b/nsf/2": None}
    owner.update({k: (k[0], "nsf", int(k[-1])) for k in more})
    shares = _shares(more, list(more), 2, 2, owner)
    assert [len(share) for share in shares] == [2, 2]


def _frame(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, u, v = (torch.randn(n, generator=g) for _ in range(3))
    return pd.DataFrame(
        {
            "x": x.numpy(),
            "a": (torch.tanh(x) + 0.3 * u).numpy(),
            "s": (x + torch.exp(0.8 * v)).numpy(),
        }
    )


@linux
def test_parallel_selection_equals_one_process():
    frame = _frame()
    graph = nx.DiGraph([("x", "a"), ("x", "s")])
    fast = {"epochs": 6, "batch_size": 100, "lr": 1e-2, "progress": False}
    runs = []
    for workers in (1, 3):
        torch.manual_seed(0)
        scm = ps.SCM.from_graph(graph, frame, hidden=(8,), transforms=1)
        history = select_mechanisms(scm, frame, workers=workers, **fast)
        runs.append((scm, history))
    (one, h1), (par, h3) = runs
    pd.testing.assert_frame_equal(h1, h3)
    assert len(h1.attrs["worker_cpu_s"]) == 1 and len(h3.attrs["worker_cpu_s"]) == 3
    assert all(t > 0 for t in h3.attrs["worker_cpu_s"])
    assert h1.attrs["selection"] == h3.attrs["selection"]
    s1, s3 = one.state_dict(), par.state_dict()
    assert s1.keys() == s3.keys() and all(torch.equal(s1[k], s3[k]) for k in s1)


def test_bad_workers_fail_before_training():
    frame = _frame(100)[["x", "a"]]
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "a")]), frame, hidden=(4,))
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ArgumentError, match="workers"):
            scm.fit(frame, workers=bad, progress=False)
    assert scm.pending_selection is not None


def test_workers_beyond_one_where_forking_is_impossible_fail_before_training(monkeypatch):
    import pyro_scm.selection as selection

    monkeypatch.setattr(selection, "can_fork", lambda device: False)
    frame = _frame(100)[["x", "a"]]
    scm = ps.SCM.from_graph(nx.DiGraph([("x", "a")]), frame, hidden=(4,))
    with pytest.raises(ArgumentError, match="workers=2 trains in forked processes"):
        select_mechanisms(scm, frame, workers=2, progress=False)
    assert scm.pending_selection is not None
    select_mechanisms(scm, frame, workers=1, epochs=1, progress=False)  # one process is fine


def test_selection_defaults_to_the_two_standard_error_rule():
    import inspect

    from pyro_scm.selection import _choose

    assert inspect.signature(select_mechanisms).parameters["tolerance"].default == 2.0
    g = torch.Generator().manual_seed(1)
    base = torch.randn(400, generator=g)
    noise = torch.randn(400, generator=g)
    # nsf better than anm by 1.5 standard errors of the difference
    diff = 1.5 * noise.std() / 400**0.5 + (noise - noise.mean())
    scores = {"anm": base, "nsf": base + diff}
    assert _choose(scores, ("anm", "nsf"), tolerance=1.0)["kind"] == "nsf"
    assert _choose(scores, ("anm", "nsf"), tolerance=2.0)["kind"] == "anm"
