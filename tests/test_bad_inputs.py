"""A registry of bad and adversarial inputs across every public entry point (issue 11).

Each case either asserts the typed :mod:`pyro_scm.errors` class and that the message names the
culprit (node or argument), or asserts the exact correct behaviour. ``CASES`` is the registry;
``test_registry_size`` keeps it at 100 cases or more.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import pyro
import pytest
import torch
import zuko
from scms import Flows, GumbelChild, Linear

import pyro_scm as ps
from pyro_scm import errors
from pyro_scm.infer import BacktrackingWarning

METHODS = ("mode", "langevin", "mala", "hmc", "nuts")
TINY = {"num_samples": 2, "warmup": 2}  # cheap stochastic settings: the cases test checks


@dataclass
class Case:
    """``run()`` raises ``error`` with a message matching ``match``; or, with ``error=None``,
    ``run()`` asserts the correct behaviour itself."""

    name: str
    run: Callable[[], object]
    error: type[Exception] | None = None
    match: str = ""


CASES: list[Case] = []


def case(name: str, error: type[Exception] | None = None, match: str = ""):
    def register(fn):
        CASES.append(Case(name, fn, error, match))
        return fn

    return register


def bad(name: str, error: type[Exception], match: str, run: Callable[[], object]) -> None:
    CASES.append(Case(name, run, error, match))


# -- fixtures -----------------------------------------------------------------------------------


def lin_f(n=4):
    return {"x": torch.zeros(n), "y": torch.zeros(n), "z": torch.zeros(n)}


def gum_f(n=3, c=None):
    c = torch.tensor([0, 1, 0][:n]) if c is None else c
    return {"x": torch.zeros(n), "c": c, "y": torch.zeros(n)}


def flows_f(n=4):
    return {"a": torch.zeros(n), "b": torch.zeros(n), "c": torch.zeros(n, 2), "d": torch.zeros(n)}


class Unfitted(ps.SCM):
    """Flows with random weights that nobody declared: every query must refuse it."""

    def __init__(self):
        super().__init__()
        self.a = ps.FlowMechanism(zuko.flows.MAF(features=1, context=0))
        self.b = ps.LocScaleMechanism(loc=lambda a: a)

    def model(self):
        a = pyro.sample("a", self.a())
        pyro.sample("b", self.b(a))


def frame(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    return pd.DataFrame({"x": x.numpy(), "y": (2 * x + 0.1 * torch.randn(n, generator=g)).numpy()})


def two_node(**kw):
    return ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame(), mechanism="anm", hidden=(4,), **kw)


def program(body, buffer=None):
    """An SCM whose model() is ``body(self)``: x = u, y = 2 x + u / 2."""

    class Program(ps.SCM):
        def __init__(self):
            super().__init__()
            self.x = ps.LocScaleMechanism()
            self.y = ps.LocScaleMechanism(loc=lambda x: 2 * torch.as_tensor(x), scale=0.5)
            if buffer is not None:
                self.register_buffer("k", torch.as_tensor(buffer))

        def model(self):
            body(self)

    return Program()


def x_then_y(convert):
    def body(s):
        x = pyro.sample("x", s.x())
        pyro.sample("y", s.y(convert(x)))

    return program(body)


# -- do / sample --------------------------------------------------------------------------------

bad("do: unknown node", errors.UnknownNodeError, "'w'", lambda: Linear().do({"w": 1.0}))
bad("do: not a dict", errors.InterventionError, "dict", lambda: Linear().do([1.0]))
bad("do: NaN", errors.NonFiniteError, "'x'", lambda: Linear().do({"x": math.nan}).sample(3))
bad("do: inf", errors.NonFiniteError, "'x'", lambda: Linear().do({"x": math.inf}).sample(3))
bad(
    "do: shape",
    errors.InterventionError,
    "'x'.*broadcast",
    lambda: Linear().do({"x": torch.zeros(7)}).sample(3),
)
bad("do: string", errors.InterventionError, "'x'", lambda: Linear().do({"x": "a"}).sample(2))
bad("do: object", errors.InterventionError, "'x'", lambda: Linear().do({"x": {1: 2}}).sample(2))
for _n in (0, -1, 2.5, True, "3", None):
    bad(f"sample: n={_n!r}", errors.ArgumentError, "n must be", lambda n=_n: Linear().sample(n))
bad(
    "do: sample(n=-1)",
    errors.ArgumentError,
    "n must be",
    lambda: Linear().do({"x": 1.0}).sample(-1),
)
bad(
    "do: float on categorical",
    errors.InterventionError,
    "'c'.*class indices",
    lambda: GumbelChild().do({"c": 1.0}).sample(2),
)
bad(
    "do: soft vector on categorical",
    errors.InterventionError,
    "'c'.*not one-hot",
    lambda: GumbelChild().do({"c": torch.tensor([0.3, 0.7])}).sample(2),
)
bad(
    "do: [1, 1] on categorical",
    errors.InterventionError,
    "'c'.*not one-hot",
    lambda: GumbelChild().do({"c": torch.tensor([1.0, 1.0])}).sample(2),
)
bad(
    "do: int [1, 1] rows on categorical",
    errors.InterventionError,
    "'c'",
    lambda: GumbelChild().do({"c": torch.tensor([[1, 1]])}).sample(2),
)
bad(
    "do: class 5 of 2",
    errors.InterventionError,
    r"'c'.*\[0, 1\]",
    lambda: GumbelChild().do({"c": 5}).sample(2),
)
bad("do: class -1", errors.InterventionError, "'c'", lambda: GumbelChild().do({"c": -1}).sample(2))
bad(
    "do: wrong one-hot length",
    errors.InterventionError,
    "'c'.*length 2",
    lambda: GumbelChild().do({"c": torch.tensor([0.0, 0.0, 1.0])}).sample(2),
)
bad(
    "do: meta tensor",
    errors.InterventionError,
    "'x'.*meta",
    lambda: Linear().do({"x": torch.zeros(3, device="meta")}).sample(3),
)
bad(
    "shift: returns a scalar",
    errors.InterventionError,
    "'x'.*shape",
    lambda: Linear().do({"x": lambda x: torch.tensor(3.0)}).sample(4),
)
bad(
    "shift: returns a float",
    errors.InterventionError,
    "'x'.*float",
    lambda: Linear().do({"x": lambda x: 3.0}).sample(4),
)
bad(
    "shift: wrong shape",
    errors.InterventionError,
    "'x'.*shape",
    lambda: Linear().do({"x": lambda x: x[:1]}).sample(4),
)
bad(
    "shift: NaN",
    errors.NonFiniteError,
    "'x'",
    lambda: Linear().do({"x": lambda x: x * math.nan}).sample(4),
)
bad(
    "shift: ndarray",
    errors.InterventionError,
    "'y'.*ndarray",
    lambda: Linear().do({"y": lambda y: y.numpy()}).sample(4),
)
bad(
    "shift: soft categorical",
    errors.InterventionError,
    "'c'.*one-hot",
    lambda: GumbelChild().do({"c": lambda c: c * 0.5}).sample(4),
)
bad(
    "shift: NaN in a counterfactual",
    errors.NonFiniteError,
    "'y'",
    lambda: Linear().counterfactual(lin_f(), do={"y": lambda y: y / 0 * 0}),
)
bad("do: unfitted model", errors.NotFittedError, r"\['a'\]", lambda: Unfitted().sample(3))
bad(
    "do: unfitted interventional",
    errors.NotFittedError,
    "'a'",
    lambda: Unfitted().do({"b": 1.0}).sample(3),
)


@case("do: class index on categorical is one-hot")
def _():
    s = GumbelChild().do({"c": 1}).sample(5)
    assert torch.equal(s["c"], torch.tensor([0.0, 1.0]).expand(5, 1, 2))


@case("do: exact one-hot float row on categorical")
def _():
    s = GumbelChild().do({"c": torch.tensor([1.0, 0.0])}).sample(3)
    assert torch.equal(s["c"][..., 0], torch.ones(3, 1))


@case("do: an int on a continuous node is cast")
def _():
    s = Linear().do({"x": 2}).sample(3)
    assert s["x"].dtype == torch.get_default_dtype() and torch.equal(
        s["x"], torch.full((3, 1), 2.0)
    )


@case("shift: a correct shift moves the value exactly")
def _():
    f = {"x": torch.tensor([0.5, -1.0]), "y": torch.tensor([1.0, 0.0]), "z": torch.zeros(2)}
    cf = Linear().counterfactual(f, do={"x": lambda x: x + 1})
    torch.testing.assert_close(cf["x"][0], f["x"] + 1)


@case("shift: a float64 output is cast to the model's dtype")
def _():
    s = Linear().do({"x": lambda x: x.double()}).sample(3)
    assert s["x"].dtype == torch.get_default_dtype()


# -- counterfactual -----------------------------------------------------------------------------

bad("cf: factual list", errors.DataError, "DataFrame", lambda: Linear().counterfactual([1, 2]))
bad("cf: factual None", errors.DataError, "DataFrame", lambda: Linear().counterfactual(None))
bad(
    "cf: missing node",
    errors.MissingNodeError,
    "'z'",
    lambda: Linear().counterfactual({"x": torch.zeros(2), "y": torch.zeros(2)}),
)
bad(
    "cf: unknown node",
    errors.UnknownNodeError,
    "'w'",
    lambda: Linear().counterfactual({**lin_f(), "w": torch.zeros(4)}),
)
bad(
    "cf: NaN",
    errors.NonFiniteError,
    "'y'.*1 units",
    lambda: Linear().counterfactual({**lin_f(), "y": torch.tensor([0, math.nan, 0, 0])}),
)
bad(
    "cf: inf",
    errors.NonFiniteError,
    "'z'",
    lambda: Linear().counterfactual({**lin_f(), "z": torch.full((4,), -math.inf)}),
)
bad(
    "cf: different lengths",
    errors.DataError,
    "different numbers",
    lambda: Linear().counterfactual({**lin_f(), "z": torch.zeros(5)}),
)
bad(
    "cf: no units",
    errors.DataError,
    "no units",
    lambda: Linear().counterfactual({k: torch.zeros(0) for k in "xyz"}),
)
bad(
    "cf: event shape",
    errors.ShapeError,
    "'c'",
    lambda: Flows().counterfactual({**flows_f(), "c": torch.zeros(4, 3)}),
)
bad(
    "cf: scalar factual",
    errors.ShapeError,
    "'x'",
    lambda: Linear().counterfactual({**lin_f(), "x": torch.tensor(0.0)}),
)
bad(
    "cf: strings",
    errors.DataError,
    "'x'",
    lambda: Linear().counterfactual({**lin_f(), "x": np.array(["a"] * 4, dtype=object)}),
)
bad(
    "cf: meta factual",
    errors.DataError,
    "'x'.*meta",
    lambda: Linear().counterfactual({**lin_f(), "x": torch.zeros(4, device="meta")}),
)
for _v in (0, -1, 1.5, None, True):
    bad(
        f"cf: num_samples={_v!r}",
        errors.ArgumentError,
        "num_samples",
        lambda v=_v: Linear().counterfactual(lin_f(), do={"x": 1.0}, num_samples=v),
    )
for _v in (0, -1, 2.5, "2"):
    bad(
        f"cf: chunk_size={_v!r}",
        errors.ArgumentError,
        "chunk_size",
        lambda v=_v: Linear().counterfactual(lin_f(), do={"x": 1.0}, chunk_size=v),
    )
bad(
    "cf: do not a dict",
    errors.InterventionError,
    "dict",
    lambda: Linear().counterfactual(lin_f(), do=[1.0]),
)
bad(
    "cf: do unknown node",
    errors.UnknownNodeError,
    "'q'",
    lambda: Linear().counterfactual(lin_f(), do={"q": 1.0}),
)
bad(
    "cf: do wrong units",
    errors.InterventionError,
    "'x'",
    lambda: Linear().counterfactual(lin_f(), do={"x": torch.zeros(3)}),
)
bad(
    "cf: soft categorical factual",
    errors.ShapeError,
    "'c'.*not one-hot",
    lambda: GumbelChild().counterfactual(gum_f(2, torch.tensor([[0.3, 0.7], [1.0, 0.0]]))),
)
bad(
    "cf: [1, 1] categorical factual",
    errors.ShapeError,
    "'c'.*not one-hot",
    lambda: GumbelChild().counterfactual(gum_f(2, torch.tensor([[1.0, 1.0], [1.0, 0.0]]))),
)
bad(
    "cf: float class indices",
    errors.ShapeError,
    "'c'.*class indices as ints",
    lambda: GumbelChild().counterfactual(gum_f(3, torch.tensor([0.0, 1.0, 1.0]))),
)
bad(
    "cf: float indices shaped like one row",
    errors.ShapeError,
    "'c'.*shape",
    lambda: GumbelChild().counterfactual(gum_f(2, torch.tensor([0.0, 1.0]))),
)
bad(
    "cf: class index out of range",
    errors.ShapeError,
    r"'c'.*\[0, 1\]",
    lambda: GumbelChild().counterfactual(gum_f(3, torch.tensor([0, 1, 2]))),
)
bad(
    "cf: unfitted",
    errors.NotFittedError,
    "'a'",
    lambda: Unfitted().counterfactual({"a": torch.zeros(2), "b": torch.zeros(2)}),
)
bad(
    "frame: y[0] beside scalar y",
    errors.ShapeError,
    r"'y\[0\]'.*'y'",
    lambda: Linear().counterfactual(
        pd.DataFrame({"x": [0.0], "y": [0.0], "y[0]": [1.0], "z": [0.0]})
    ),
)
bad(
    "frame: only y[0] for scalar y",
    errors.ShapeError,
    r"'y\[0\]'",
    lambda: Linear().counterfactual(pd.DataFrame({"x": [0.0], "y[0]": [1.0], "z": [0.0]})),
)
bad(
    "frame: c[2] beside 2-vector c",
    errors.ShapeError,
    r"'c\[2\]'.*'c'",
    lambda: Flows().counterfactual(
        pd.DataFrame(
            {"a": [0.0], "b": [0.0], "c[0]": [0.0], "c[1]": [0.0], "c[2]": [0.0], "d": [0.0]}
        )
    ),
)
bad(
    "frame: c[1] missing",
    errors.ShapeError,
    r"'c'.*c\[1\]",
    lambda: Flows().counterfactual(
        pd.DataFrame({"a": [0.0], "b": [0.0], "c[0]": [0.0], "d": [0.0]})
    ),
)
bad(
    "frame: unknown column",
    errors.UnknownNodeError,
    "'w'",
    lambda: Linear().counterfactual(pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0], "w": [1.0]})),
)
bad(
    "frame: soft one-hot columns for categorical",
    errors.ShapeError,
    "'c'.*not one-hot",
    lambda: GumbelChild().counterfactual(
        pd.DataFrame({"x": [0.0], "c[0]": [0.5], "c[1]": [0.5], "y": [0.0]})
    ),
)


@case("cf: chunk_size=1 equals one chunk")
def _():
    f = {k: torch.randn(5) for k in "xyz"}
    one = Linear().counterfactual(f, do={"x": 1.0})
    chunked = Linear().counterfactual(f, do={"x": 1.0}, chunk_size=1)
    for k in f:
        torch.testing.assert_close(one[k], chunked[k])


@case("cf: chunk_size larger than the units")
def _():
    f = {k: torch.randn(3) for k in "xyz"}
    _, z = Linear.closed_form(f["x"], f["y"], f["z"], 1.0)
    cf = Linear().counterfactual(f, do={"x": 1.0}, chunk_size=100)
    torch.testing.assert_close(cf["z"][0], z)


@case("cf: to_pandas of a counterfactual is a valid factual")
def _():
    f = {k: torch.randn(4) for k in "xyz"}
    cf = Linear().counterfactual(f, do={"x": 1.0})
    again = Linear().counterfactual(cf.to_pandas())
    for k in f:
        torch.testing.assert_close(again[k][0], cf[k][0])


@case("cf: to_pandas of a categorical counterfactual round-trips")
def _():
    cf = GumbelChild().counterfactual(gum_f(3), do={"c": 1})
    again = GumbelChild().counterfactual(cf.to_pandas())
    assert torch.equal(again["c"][0], cf["c"][0])


@case("cf: a QueryResult is a valid factual")
def _():
    s = Linear().sample(3)
    cf = Linear().counterfactual(s)
    torch.testing.assert_close(cf["y"][0], s["y"][:, 0])


@case("frame: exact one-hot columns for a categorical node")
def _():
    frame = pd.DataFrame({"x": [0.0], "c[0]": [0.0], "c[1]": [1.0], "y": [0.0]})
    assert torch.equal(GumbelChild().counterfactual(frame)["c"][0], torch.tensor([[0.0, 1.0]]))


@case("cf: int one-hot rows are accepted")
def _():
    cf = GumbelChild().counterfactual(gum_f(2, torch.tensor([[0, 1], [1, 0]])))
    assert torch.equal(cf["c"][0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


@case("cf: a pandas category column")
def _():
    frame = pd.DataFrame({"x": [0.0, 0.0], "c": pd.Categorical([1, 0]), "y": [0.0, 0.0]})
    cf = GumbelChild().counterfactual(frame)
    assert torch.equal(cf["c"][0].argmax(-1), torch.tensor([1, 0]))


@case("cf: a read-only numpy factual")
def _():
    x = np.zeros(3)
    x.flags.writeable = False
    cf = Linear().counterfactual({"x": x, "y": np.zeros(3), "z": np.zeros(3)}, do={"x": 1.0})
    assert cf["x"].shape == (1, 3)


@case("cf: a factual given as lists")
def _():
    cf = Linear().counterfactual({"x": [1.0], "y": [2.0], "z": [0.0]}, do={"x": 0.0})
    y, _ = Linear.closed_form(torch.tensor([1.0]), torch.tensor([2.0]), torch.zeros(1), 0.0)
    torch.testing.assert_close(cf["y"][0], y)


# -- backtracking (every method) ----------------------------------------------------------------


def _bt(scm, f, antecedent, method, **kw):
    extra = {} if method == "mode" else TINY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BacktrackingWarning)
        return scm.backtrack(f, antecedent, method=method, **extra, **kw)


for _m in METHODS:
    bad(
        f"backtrack {_m}: unknown antecedent node",
        errors.UnknownNodeError,
        "'w'",
        lambda m=_m: _bt(Linear(), lin_f(), {"w": 1.0}, m),
    )
    bad(
        f"backtrack {_m}: NaN antecedent",
        errors.NonFiniteError,
        "'y'",
        lambda m=_m: _bt(Linear(), lin_f(), {"y": math.nan}, m),
    )
    bad(
        f"backtrack {_m}: unfitted model",
        errors.NotFittedError,
        "'a'",
        lambda m=_m: _bt(Unfitted(), {"a": torch.zeros(2), "b": torch.zeros(2)}, {"b": 1.0}, m),
    )
    bad(
        f"backtrack {_m}: soft categorical antecedent",
        errors.ShapeError,
        "'c'.*not one-hot",
        lambda m=_m: _bt(GumbelChild(), gum_f(), {"c": torch.tensor([0.5, 0.5])}, m),
    )
    bad(
        f"backtrack {_m}: missing factual node",
        errors.MissingNodeError,
        "'z'",
        lambda m=_m: _bt(Linear(), {"x": torch.zeros(2), "y": torch.zeros(2)}, {"y": 1.0}, m),
    )


@case("backtrack mode: the antecedent is met and stored as the antecedent")
def _():
    bt = Linear().backtrack(lin_f(3), {"y": 1.0})
    torch.testing.assert_close(bt["y"][0], torch.ones(3), atol=1e-4, rtol=0)
    idata = bt.to_arviz()
    assert "antecedent_y" in idata.constant_data and "do_y" not in idata.constant_data
    assert idata.constant_data["antecedent_y"].dims == ("unit",)


# -- fit ----------------------------------------------------------------------------------------

FIT_BAD = {
    "lr": (-1, 0, math.nan, math.inf, "1e-3"),
    "batch_size": (0, 2.5, -3),
    "epochs": (0, 1.5),
    "val_fraction": (1.0, -0.1, math.nan),
    "patience": (-1, 0.5),
    "lr_decay": (0.0, 1.0, 2.0),
    "max_decays": (-1,),
    "weight_decay": (-1.0,),
    "seed": ("a", 1.5),
    "progress": ("yes",),
}


def _fit_unchanged(arg: str, value: object) -> None:
    """A failed call leaves a fitted model exactly as it was (no re-standardising)."""
    scm = two_node()
    scm.fit(frame(), epochs=1, progress=False)
    before = {k: v.clone() for k, v in scm.state_dict().items()}
    try:
        scm.fit(frame(60, seed=1) * 3, **{"epochs": 1, "progress": False, arg: value})
    finally:
        for k, v in scm.state_dict().items():
            assert torch.equal(v, before[k]), f"fit({arg}={value!r}) changed {k}"


for _arg, _values in FIT_BAD.items():
    for _v in _values:
        bad(
            f"fit: {_arg}={_v!r}",
            errors.ArgumentError,
            _arg,
            lambda a=_arg, v=_v: _fit_unchanged(a, v),
        )
bad(
    "fit: NaN data",
    errors.NonFiniteError,
    "'y'",
    lambda: two_node().fit(frame().assign(y=math.nan), progress=False),
)
bad(
    "fit: missing node",
    errors.MissingNodeError,
    "'y'",
    lambda: two_node().fit(frame()[["x"]], progress=False),
)
bad("fit: not data", errors.DataError, "DataFrame", lambda: two_node().fit(3, progress=False))
bad(
    "fit: too few units for the split",
    errors.DataError,
    "too few",
    lambda: two_node().fit(frame().iloc[:1], val_fraction=0.5, progress=False),
)


def _inference_mode_fit():
    with torch.inference_mode():
        two_node().fit(frame(), epochs=1, progress=False)


bad("fit: under inference_mode", errors.ArgumentError, "inference_mode", _inference_mode_fit)


@case("fit: under torch.no_grad it still trains")
def _():
    scm = two_node()
    before = {k: v.clone() for k, v in scm.state_dict().items()}
    with torch.no_grad():
        scm.fit(frame(), epochs=2, progress=False)
    assert any(not torch.equal(v, before[k]) for k, v in scm.state_dict().items())


@case("fit: lr=1e8 warns naming the node and keeps finite best weights")
def _():
    scm = two_node()
    with pytest.warns(errors.FitWarning) as record:
        scm.fit(frame(), epochs=30, lr=1e8, progress=False)
    assert all(re.search(r"node '[xy]' stopped", str(w.message)) for w in record)
    assert all(bool(torch.isfinite(v).all()) for v in scm.state_dict().values())
    cf = scm.counterfactual(frame(5), do={"x": 1.0})
    assert bool(torch.isfinite(cf["y"]).all())


@case("fit: a node whose loss explodes keeps weights no worse than its initial ones")
def _():
    from pyro_scm.fitting import mechanism_losses

    scm = two_node()
    data = {k: torch.tensor(v.to_numpy(), dtype=torch.float32) for k, v in frame().items()}
    with torch.no_grad():
        before = {k: float(v) for k, v in mechanism_losses(scm, data).items()}
    with pytest.warns(errors.FitWarning, match="diverged"):
        scm.fit(frame(), epochs=10, lr=1e3, progress=False)
    with torch.no_grad():
        after = {k: float(v) for k, v in mechanism_losses(scm, data).items()}
    assert all(after[k] < before[k] + 0.5 for k in before), (before, after)


@case("fit: an unfitted from_graph model refuses queries until fit")
def _():
    scm = two_node()
    with pytest.raises(errors.NotFittedError, match=r"\['x', 'y'\]"):
        scm.sample(2)
    scm.fit(frame(), epochs=1, progress=False)
    assert scm.sample(2)["y"].shape == (2, 1)


# -- from_graph ---------------------------------------------------------------------------------

bad(
    "from_graph: cycle",
    errors.GraphError,
    "cycle",
    lambda: ps.SCM.from_graph(nx.DiGraph([("x", "y"), ("y", "x")]), frame()),
)
bad(
    "from_graph: node without data",
    errors.MissingNodeError,
    "'z'",
    lambda: ps.SCM.from_graph(nx.DiGraph([("x", "y"), ("y", "z")]), frame()),
)
bad(
    "from_graph: data column not in graph",
    errors.UnknownNodeError,
    "'w'",
    lambda: ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame().assign(w=0.0)),
)
bad(
    "from_graph: unknown mechanism",
    errors.MechanismError,
    "'glow'",
    lambda: ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame(), mechanism="glow"),
)
bad(
    "from_graph: factory returns a module",
    errors.MechanismError,
    "'x'",
    lambda: ps.SCM.from_graph(
        nx.DiGraph([("x", "y")]), frame(), mechanism=lambda n, s, c: torch.nn.Linear(1, 1)
    ),
)
bad(
    "from_graph: categorical unknown node",
    errors.UnknownNodeError,
    "'q'",
    lambda: ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame(), categorical={"q": 2}),
)
bad(
    "from_graph: not data",
    errors.DataError,
    "DataFrame",
    lambda: ps.SCM.from_graph(nx.DiGraph([("x", "y")]), [1, 2]),
)
bad(
    "from_graph: integer column",
    errors.DataError,
    "'k'.*categorical=",
    lambda: ps.SCM.from_graph(
        nx.DiGraph([("k", "y")]),
        pd.DataFrame({"k": [0, 1, 2, 1] * 5, "y": np.zeros(20)}),
        mechanism="anm",
    ),
)
bad(
    "from_graph: bool column",
    errors.DataError,
    "'k'",
    lambda: ps.SCM.from_graph(
        nx.DiGraph([("k", "y")]),
        pd.DataFrame({"k": [True, False] * 5, "y": np.zeros(10)}),
        mechanism="anm",
    ),
)
bad(
    "from_graph: integer array in a dict",
    errors.DataError,
    "'k'",
    lambda: ps.SCM.from_graph(
        nx.DiGraph([("k", "y")]),
        {"k": torch.tensor([0, 1] * 5), "y": torch.zeros(10)},
        mechanism="anm",
    ),
)


@case("from_graph: an integer column declared categorical")
def _():
    data = pd.DataFrame({"k": [0, 1, 2, 1] * 5, "y": np.linspace(0, 1, 20)})
    scm = ps.SCM.from_graph(nx.DiGraph([("k", "y")]), data, mechanism="anm", categorical={"k": 3})
    assert scm.graph.nodes["k"]["num_classes"] == 3


@case("from_graph: an integer column cast to float is continuous")
def _():
    data = pd.DataFrame({"k": np.array([0, 1, 2, 1] * 5, dtype=float), "y": np.zeros(20)})
    scm = ps.SCM.from_graph(nx.DiGraph([("k", "y")]), data, mechanism="anm", hidden=(4,))
    assert scm.graph.nodes["k"]["num_classes"] is None


@case("from_graph: integers with many levels are continuous")
def _():
    data = pd.DataFrame({"k": np.arange(50), "y": np.zeros(50)})
    scm = ps.SCM.from_graph(nx.DiGraph([("k", "y")]), data, mechanism="anm", hidden=(4,))
    assert scm.graph.nodes["k"]["num_classes"] is None


# -- GraphSCM and programs ----------------------------------------------------------------------


def _graph_scm(parents):
    mechanisms = {n: ps.LocScaleMechanism(loc=lambda *p: sum(p, torch.zeros(()))) for n in parents}
    return ps.GraphSCM(parents, mechanisms)


bad("GraphSCM: cycle", errors.GraphError, "'a'.*'b'", lambda: _graph_scm({"a": ["b"], "b": ["a"]}))
bad("GraphSCM: unknown parent", errors.GraphError, "'q'", lambda: _graph_scm({"a": ["q"]}))
bad(
    "GraphSCM: child before parent",
    errors.GraphError,
    "'b'.*'a'",
    lambda: _graph_scm({"b": ["a"], "a": []}),
)
bad(
    "program: parent through .item()",
    errors.GraphError,
    "node 'y'.*\\.item\\(\\)",
    lambda: x_then_y(lambda x: x.item()).graph,
)
bad(
    "program: parent through .numpy()",
    errors.GraphError,
    "'y'.*\\.numpy\\(\\)",
    lambda: x_then_y(lambda x: x.numpy()).graph,
)
bad(
    "program: parent through float()",
    errors.GraphError,
    "node 'y'.*float\\(\\)",
    lambda: x_then_y(float).graph,
)
bad(
    "program: parent rebuilt with torch.tensor",
    errors.GraphError,
    "'y'.*constant",
    lambda: x_then_y(lambda x: torch.tensor(x.tolist())).graph,
)
bad(
    "program: if x > 0",
    errors.GraphError,
    "torch.where",
    lambda: x_then_y(lambda x: x if x > 0 else -x).graph,
)
bad(
    "program: duplicate site",
    errors.GraphError,
    "twice.*'x'",
    lambda: program(lambda s: (pyro.sample("x", s.x()), pyro.sample("x", s.x()))).graph,
)
bad(
    "program: no sample site",
    errors.GraphError,
    "samples no node",
    lambda: program(lambda s: None).graph,
)
bad("program: model() not written", errors.GraphError, "model", lambda: ps.SCM().graph)
bad(
    "program: attribute error in model",
    errors.GraphError,
    "nope",
    lambda: program(lambda s: s.nope).graph,
)
bad(
    "program: a query on a broken program",
    errors.GraphError,
    "'y'",
    lambda: x_then_y(lambda x: x.numpy()).sample(2),
)
bad(
    "program: plain Pyro distribution",
    errors.MechanismError,
    "'x'",
    lambda: program(lambda s: pyro.sample("x", pyro.distributions.Normal(0.0, 1.0))).sample(2),
)


@case("program: ps.constant is an argument, not an edge")
def _():
    scm = program(lambda s: (pyro.sample("x", s.x()), pyro.sample("y", s.y(ps.constant(3.0)))))
    assert list(scm.graph.edges) == []
    assert torch.equal(
        scm.do({"x": 0.0}).sample(2)["y"].sub(6.0).abs().lt(5).all(), torch.tensor(True)
    )


@case("program: a registered buffer is a constant")
def _():
    scm = program(lambda s: (pyro.sample("x", s.x()), pyro.sample("y", s.y(s.k))), buffer=1.0)
    assert list(scm.graph.edges) == []


@case("program: a parent kept as a tensor keeps its edge")
def _():
    assert list(x_then_y(lambda x: x * 1.0).graph.edges) == [("x", "y")]


# -- save / load --------------------------------------------------------------------------------


def _saved(tmp, payload) -> str:
    path = f"{tmp}/m.pt"
    torch.save(payload, path)
    return path


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


SAVE_CASES = [
    (
        "save: missing folder",
        errors.PersistenceError,
        "missing",
        lambda t: Linear().save(f"{t}/missing/m.pt"),
    ),
    (
        "load: no file",
        errors.PersistenceError,
        "no saved model",
        lambda t: Linear().load(f"{t}/none.pt"),
    ),
    (
        "load: not a pyro_scm file",
        errors.PersistenceError,
        "not a pyro_scm",
        lambda t: Linear().load(_saved(t, {"a": 1})),
    ),
    (
        "load: no metadata",
        errors.PersistenceError,
        "metadata",
        lambda t: Linear().load(_saved(t, {"format": "pyro_scm", "format_version": 1})),
    ),
    (
        "load: metadata without class",
        errors.PersistenceError,
        "metadata",
        lambda t: Linear().load(
            _saved(t, {"format": "pyro_scm", "format_version": 1, "metadata": {}, "state_dict": {}})
        ),
    ),
    (
        "load: format version",
        errors.PersistenceError,
        "version",
        lambda t: Linear().load(_saved(t, {"format": "pyro_scm", "format_version": 99})),
    ),
    (
        "load: garbage bytes",
        errors.PersistenceError,
        "readable",
        lambda t: ((t / "g.pt").write_bytes(b"\x00garbage"), Linear().load(t / "g.pt")),
    ),
    (
        "load: another class",
        errors.PersistenceError,
        "Linear",
        lambda t: (Flows().save(f"{t}/f.pt"), Linear().load(f"{t}/f.pt")),
    ),
]


@pytest.mark.parametrize("name,error,match,run", SAVE_CASES, ids=[c[0] for c in SAVE_CASES])
def test_save_load_bad_inputs(name, error, match, run, tmp):
    with pytest.raises(error, match=match):
        run(tmp)


def test_save_load_carries_the_fitted_state(tmp):
    scm = two_node()
    scm.save(f"{tmp}/unfitted.pt")
    loaded = two_node().load(f"{tmp}/unfitted.pt")
    with pytest.raises(errors.NotFittedError):
        loaded.sample(2)
    scm.fit(frame(), epochs=1, progress=False)
    scm.save(f"{tmp}/fitted.pt")
    loaded = two_node().load(f"{tmp}/fitted.pt")
    torch.testing.assert_close(
        loaded.counterfactual(frame(3))["y"], scm.counterfactual(frame(3))["y"]
    )


# -- results, log_prob, mechanisms --------------------------------------------------------------

bad(
    "result: unknown node",
    errors.UnknownNodeError,
    "'q' in result",
    lambda: Linear().sample(2)["q"],
)
bad(
    "log_prob: unfitted",
    errors.NotFittedError,
    "'a'",
    lambda: Unfitted().log_prob({"a": torch.zeros(2), "b": torch.zeros(2)}),
)
bad(
    "log_prob: NaN",
    errors.NonFiniteError,
    "'x'",
    lambda: Linear().log_prob({**lin_f(), "x": torch.full((4,), math.nan)}),
)
bad(
    "log_prob: missing node",
    errors.MissingNodeError,
    "'z'",
    lambda: Linear().log_prob({"x": torch.zeros(2), "y": torch.zeros(2)}),
)
bad(
    "mechanism: negative scale",
    errors.MechanismError,
    "scale",
    lambda: ps.LocScaleMechanism(scale=-1.0),
)
bad(
    "mechanism: zero scale", errors.MechanismError, "scale", lambda: ps.LocScaleMechanism(scale=0.0)
)
bad(
    "mechanism: categorical with wrong context",
    errors.ShapeError,
    "2 context features",
    lambda: ps.CategoricalMechanism(3, context=2)(torch.zeros(4, 3)),
)
bad(
    "mechanism: categorical root given parents",
    errors.ShapeError,
    "context",
    lambda: ps.CategoricalMechanism(3, context=2)(),
)
bad("constant: a string", errors.ArgumentError, "constant", lambda: ps.constant("a"))
bad("mark_fitted: unknown node", errors.UnknownNodeError, "'q'", lambda: Linear().mark_fitted("q"))


@case("result: arviz event dims are named after the node")
def _():
    cf = Flows().counterfactual(flows_f(), do={"c": torch.ones(2)})
    idata = cf.to_arviz()
    assert idata.posterior["c"].dims == ("chain", "draw", "unit", "c_dim_0")
    assert idata.observed_data["c"].dims == ("unit", "c_dim_0")
    assert idata.constant_data["do_c"].dims == ("unit", "c_dim_0")


@case("result: to_pandas of a categorical node gives class indices")
def _():
    table = GumbelChild().do({"c": 1}).sample(3).to_pandas()
    assert table["c"].tolist() == [1, 1, 1]


@case("mark_fitted: declares hand-set weights")
def _():
    scm = Unfitted()
    scm.mark_fitted("a")
    assert scm.sample(2)["b"].shape == (2, 1)


@case("mechanism: fitted by construction when it has no trainable parameters")
def _():
    assert ps.LocScaleMechanism(loc=lambda x: x).fitted
    assert not ps.CategoricalMechanism(2).fitted
    assert ps.CategoricalMechanism(2).requires_grad_(False).fitted


# -- the registry -------------------------------------------------------------------------------


def test_registry_size():
    assert len(CASES) + len(SAVE_CASES) >= 100


@pytest.mark.parametrize("entry", CASES, ids=[c.name for c in CASES])
def test_registry(entry: Case):
    if entry.error is None:
        entry.run()
        return
    with pytest.raises(entry.error, match=entry.match) as info:
        entry.run()
    assert isinstance(info.value, errors.SCMError)
