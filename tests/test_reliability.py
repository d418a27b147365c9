"""Thread model, determinism and global state (issue 11, items 8 and 9)."""

import subprocess
import sys
import threading

import pyro
import pyro.poutine as poutine
import pytest
import torch
from scms import A, B, C, D, E, GumbelChild, Linear

import pyro_scm as ps
from pyro_scm import validation


def _closed_form(f, value):
    u_y, u_z = (f["y"] - A * f["x"]) / B, (f["z"] - C * f["y"] - D * f["x"]) / E
    y = A * value + B * u_y
    return C * y + D * value + E * u_z


def test_many_threads_querying_one_scm_get_right_answers():
    scm = Linear()
    g = torch.Generator().manual_seed(0)
    f = {k: torch.randn(32, generator=g) for k in "xyz"}
    threads, errors = 8, []

    def work(i: int) -> None:
        for _ in range(6):
            try:
                cf = scm.counterfactual(f, do={"x": float(i)})
                if not torch.allclose(cf["z"][0], _closed_form(f, float(i)), atol=1e-4):
                    errors.append(f"thread {i}: wrong value")
                s = scm.do({"x": float(i)}).sample(16)
                if not torch.equal(s["x"], torch.full((16, 1), float(i))):
                    errors.append(f"thread {i}: wrong sample")
            except Exception as e:
                errors.append(f"thread {i}: {type(e).__name__}: {e}")

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []


def test_the_lock_is_reentrant_and_held_during_a_query():
    held = []

    class Probe(ps.SCM):
        def __init__(self):
            super().__init__()
            self.x = ps.LocScaleMechanism()

        def model(self):
            # another thread cannot take the lock while this query runs
            t = threading.Thread(target=lambda: held.append(validation.LOCK.acquire(timeout=0)))
            t.start()
            t.join()
            pyro.sample("x", self.x())

    with validation.LOCK:  # re-entrant: a query inside a held lock runs
        Probe().sample(2)
    assert held and not any(held)


def test_the_first_query_equals_later_ones_under_one_seed():
    pyro.set_rng_seed(0)
    first = Linear().sample(5)["y"]
    scm = Linear()
    _ = scm.graph
    pyro.set_rng_seed(0)
    assert torch.equal(first, scm.sample(5)["y"])


def test_graph_derivation_leaves_the_global_rng_alone():
    scm = GumbelChild()  # construction draws initial weights; derivation must draw nothing
    state = torch.get_rng_state()
    _ = scm.graph
    assert torch.equal(state, torch.get_rng_state())


def test_import_keeps_torch_distribution_validation():
    code = (
        "import torch; D = torch.distributions.Distribution\n"
        "for v in (True, False):\n"
        "    D.set_default_validate_args(v)\n"
        "    import sys\n"
        "    for m in [m for m in sys.modules if m.startswith(('zuko', 'pyro_scm'))]:\n"
        "        del sys.modules[m]\n"
        "    import pyro_scm\n"
        "    assert D._validate_args is v, v\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("setting", [True, False])
def test_queries_keep_torch_distribution_validation(setting):
    D = torch.distributions.Distribution
    old = D._validate_args
    try:
        D.set_default_validate_args(setting)
        Linear().sample(3)
        Linear().counterfactual({k: torch.zeros(2) for k in "xyz"}, do={"x": 1.0})
        Linear().backtrack({k: torch.zeros(2) for k in "xyz"}, {"y": 1.0})
        assert D._validate_args is setting
    finally:
        D.set_default_validate_args(old)


def test_a_query_inside_a_user_trace_or_condition_is_unaffected():
    f = {k: torch.tensor([0.5, -1.0]) for k in "xyz"}
    plain = Linear().counterfactual(f, do={"x": 1.0})["z"]
    with poutine.trace() as tracer, poutine.condition(data={"y": torch.tensor(100.0)}):
        inside = Linear().counterfactual(f, do={"x": 1.0})["z"]
        sampled = Linear().do({"x": 1.0}).sample(4)["y"]
    torch.testing.assert_close(inside, plain)
    assert not bool((sampled == 100.0).any())
    assert len(tracer.trace.nodes) == 0  # the query's sites stay inside it (documented)
