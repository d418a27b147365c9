"""Synthetic SCMs: equations against SCMS.md, laws of the queries, protocols, errors."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from pyro_scm.datasets.synthetic import (
    SYNTHETIC_SCMS,
    SYNTHETIC_VARIANTS,
    UNIFORM_LOW,
    SyntheticSCM,
    intervention_nodes,
    intervention_quantiles,
    intervention_values,
    load_synthetic,
)
from pyro_scm.errors import (
    DataError,
    InterventionError,
    MechanismError,
    MissingNodeError,
    NonFiniteError,
    ShapeError,
    UnknownNodeError,
)

ALL = [(name, variant) for name in SYNTHETIC_SCMS for variant in SYNTHETIC_VARIANTS[name]]
N = 64


def load(name: str, variant: str, seed: int = 0) -> SyntheticSCM:
    return load_synthetic(name, variant, seed=seed, dtype=torch.float64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (100x slower on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=ALL, ids=[f"{n}-{v}" for n, v in ALL])
def scm(request: pytest.FixtureRequest) -> SyntheticSCM:
    return load(*request.param)


# --------------------------------------------------------------------------- reference equations
# Written again from SCMS.md with numpy, independently of the library's torch code.

sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
sp = lambda a: np.log1p(np.exp(a))  # noqa: E731


def L(a, b):
    return sp(a + 1) + sp(b + 0.5) - 3


def laplace_icdf(u, loc, scale):
    t = u - 0.5
    return loc - scale * np.sign(t) * np.log1p(-2 * np.abs(t))


REFERENCE = {
    ("dcm-chain", "nonlinear"): (
        lambda x, u: u[0],
        lambda x, u: (np.exp(x[0] / 2) + u[1] / 4) / 0.65,
        lambda x, u: ((x[1] - 5) ** 3 / 15 + u[2]) / 2.13,
    ),
    ("dcm-chain", "nonadditive"): (
        lambda x, u: u[0],
        lambda x, u: 1 / ((u[1] + x[0]) ** 2 + 0.5) / 0.63,
        lambda x, u: np.sqrt(x[1] + np.abs(u[2])) / (0.1 + x[1]),
    ),
    ("dcm-triangle", "nonlinear"): (
        lambda x, u: u[0],
        lambda x, u: (u[1] + 2 * x[0] ** 2) / 3,
        lambda x, u: (u[2] + 20 / (1 + np.exp(-(x[1] ** 2) + x[0]))) / 2.41,
    ),
    ("dcm-triangle", "nonadditive"): (
        lambda x, u: u[0],
        lambda x, u: (x[0] / ((u[1] + x[0]) ** 2 + 1) + u[1] / 4) / 0.47,
        lambda x, u: (np.abs(u[2]) + 0.3) * (-x[0] + x[1] / 2 + np.abs(u[2]) / 5) ** 2 / 0.93,
    ),
    ("dcm-diamond", "nonlinear"): (
        lambda x, u: u[0],
        lambda x, u: (x[0] ** 2 + u[1] / 2) / 1.5,
        lambda x, u: (x[1] ** 2 - 2 / (1 + np.exp(-x[0])) + u[2] / 2) / 1.27,
        lambda x, u: (x[2] / (np.abs(x[1] + x[2]) + 0.5) + u[3] / 5) / 0.54,
    ),
    ("dcm-diamond", "nonadditive"): (
        lambda x, u: u[0],
        lambda x, u: (
            (np.sqrt(np.abs(x[0])) * (np.abs(u[1]) + 0.1) / 2 + np.abs(x[0]) + u[1] / 5) / 0.83
        ),
        lambda x, u: 6 / (1 + (np.abs(u[2]) + 0.5) * np.exp(-x[1] + x[0])),
        lambda x, u: ((x[2] + x[1] + u[3] / 4 - 7) ** 2 - 20) / 7.27,
    ),
    ("dcm-y", "nonlinear"): (
        lambda x, u: u[0],
        lambda x, u: u[1],
        lambda x, u: (-(x[1] ** 2) + 4 / (1 + np.exp(-x[0] - x[1])) + u[2] / 2) / 1.83,
        lambda x, u: (20 / (1 + np.exp(x[2] ** 2 / 2 - x[2])) + u[3]) / 3.26,
    ),
    ("dcm-y", "nonadditive"): (
        lambda x, u: u[0],
        lambda x, u: u[1],
        lambda x, u: (x[0] - 2 * x[1] - 2) * (np.abs(u[2]) + 0.2) / 2.87,
        lambda x, u: 1 / (np.abs(u[3] + 2 * x[2]) + 0.5) / 0.43,
    ),
    ("cnf-chain-3", "lin"): (
        lambda x, u: u[0],
        lambda x, u: 10 * x[0] - u[1],
        lambda x, u: 0.25 * x[1] + 2 * u[2],
    ),
    ("cnf-chain-3", "nlin"): (
        lambda x, u: u[0],
        lambda x, u: np.exp(x[0] / 2) + u[1] / 4,
        lambda x, u: (x[1] - 5) ** 3 / 15 + u[2],
    ),
    ("cnf-chain-4", "lin"): (
        lambda x, u: u[0],
        lambda x, u: 5 * x[0] - u[1],
        lambda x, u: -0.5 * x[1] - 1.5 * u[2],
        lambda x, u: x[2] + u[3],
    ),
    ("cnf-chain-5", "lin"): (
        lambda x, u: u[0],
        lambda x, u: 10 * x[0] - u[1],
        lambda x, u: 0.25 * x[1] + 2 * u[2],
        lambda x, u: x[2] + u[3],
        lambda x, u: -x[3] + u[4],
    ),
    ("cnf-collider", "lin"): (
        lambda x, u: u[0],
        lambda x, u: 2 - u[1],
        lambda x, u: 0.25 * x[1] - 0.5 * x[0] + 0.5 * u[2],
    ),
    ("cnf-fork", "lin"): (
        lambda x, u: u[0],
        lambda x, u: 2 - u[1],
        lambda x, u: 0.25 * x[1] - 1.5 * x[0] + 0.5 * u[2],
        lambda x, u: x[2] + 0.25 * u[3],
    ),
    ("cnf-fork", "nlin"): (
        lambda x, u: u[0],
        lambda x, u: u[1],
        lambda x, u: 4 / (1 + np.exp(-x[0] - x[1])) - x[1] ** 2 + u[2] / 2,
        lambda x, u: 20 / (1 + np.exp(x[2] ** 2 / 2 - x[2])) + u[3],
    ),
    ("cnf-triangle", "lin"): (
        lambda x, u: u[0] + 1,
        lambda x, u: 10 * x[0] - u[1],
        lambda x, u: 0.5 * x[1] + x[0] + u[2],
    ),
    ("cnf-triangle", "nlin"): (
        lambda x, u: u[0],
        lambda x, u: 2 * x[0] ** 2 + u[1],
        lambda x, u: 20 / (1 + np.exp(-(x[1] ** 2) + x[0])) + u[2],
    ),
    ("cnf-simpson", "nlin"): (
        lambda x, u: u[0],
        lambda x, u: sp(1 - x[0]) + math.sqrt(3 / 20) * u[1],
        lambda x, u: np.tanh(2 * x[1]) + 1.5 * x[0] - 1 + np.tanh(u[2]),
        lambda x, u: (x[2] - 4) / 5 + 3 + u[3] / math.sqrt(10),
    ),
    ("cnf-simpson", "symprod"): (
        lambda x, u: u[0],
        lambda x, u: 2 * np.tanh(2 * x[0]) + u[1] / math.sqrt(10),
        lambda x, u: 0.5 * x[0] * x[1] + u[2] / math.sqrt(2),
        lambda x, u: np.tanh(1.5 * x[0]) + math.sqrt(0.3) * u[3],
    ),
    ("cnf-large-backdoor", "nlin"): (
        lambda x, u: sp(1.8 * u[0]) - 1,
        lambda x, u: 0.25 * u[1] + 1.5 * L(x[0], 0),
        lambda x, u: L(x[0], u[2]),
        lambda x, u: L(x[1], u[3]),
        lambda x, u: L(x[2], u[4]),
        lambda x, u: L(x[3], u[5]),
        lambda x, u: L(x[4], u[6]),
        lambda x, u: 0.3 * u[7] + sp(x[5] + 1) - 1,
        lambda x, u: laplace_icdf(u[8], 2 - sp((1.3 * x[6] + x[7]) / 3 + 1), 0.6),
    ),
}

LADDER_EDGES = [(1, 2), (1, 3), (2, 4), (3, 4), (3, 5), (4, 6), (5, 6), (5, 7), (6, 8), (7, 8),
                (7, 9), (8, 10), (9, 10)]  # fmt: skip
EDGES = {  # from SCMS.md
    "dcm-chain": [(1, 2), (2, 3)],
    "dcm-triangle": [(1, 2), (1, 3), (2, 3)],
    "dcm-diamond": [(1, 2), (1, 3), (2, 3), (2, 4), (3, 4)],
    "dcm-y": [(1, 3), (2, 3), (3, 4)],
    "dcm-ladder": LADDER_EDGES,
    "cnf-chain-3": [(1, 2), (2, 3)],
    "cnf-chain-4": [(1, 2), (2, 3), (3, 4)],
    "cnf-chain-5": [(1, 2), (2, 3), (3, 4), (4, 5)],
    "cnf-collider": [(1, 3), (2, 3)],
    "cnf-fork": [(1, 3), (2, 3), (3, 4)],
    "cnf-triangle": [(1, 2), (1, 3), (2, 3)],
    ("cnf-simpson", "nlin"): [(1, 2), (1, 3), (2, 3), (3, 4)],
    ("cnf-simpson", "symprod"): [(1, 2), (1, 3), (2, 3), (1, 4)],
    "cnf-large-backdoor": [(1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (6, 8), (7, 9), (8, 9)],
}


def run_reference(equations, u, do=None):
    """Evaluate reference equations in order; ``do`` maps an index to a constant."""
    do = do or {}
    x: list[np.ndarray] = []
    for i, f in enumerate(equations):
        x.append(np.full_like(u[0], do[i]) if i in do else f(x, u))
    return x


def noise_np(scm: SyntheticSCM, n: int, seed: int) -> dict[str, torch.Tensor]:
    return scm.sample_noise(n, torch.Generator().manual_seed(seed))


def rand_do(scm: SyntheticSCM, node: str, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(scm.event_shapes[node], generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- registry, structure


def test_registry_names_and_variants():
    assert set(SYNTHETIC_SCMS) == {
        "dcm-chain", "dcm-triangle", "dcm-diamond", "dcm-y", "dcm-ladder", "dcm-random",
        "cnf-chain-3", "cnf-chain-4", "cnf-chain-5", "cnf-collider", "cnf-fork", "cnf-triangle",
        "cnf-simpson", "cnf-large-backdoor",
    }  # fmt: skip
    for name in SYNTHETIC_SCMS:
        if name.startswith("dcm-"):
            assert SYNTHETIC_VARIANTS[name] == ("nonlinear", "nonadditive")
    assert SYNTHETIC_VARIANTS["cnf-simpson"] == ("nlin", "symprod")
    assert load_synthetic("dcm-chain").variant == "nonlinear"
    assert load_synthetic("cnf_chain_3").variant == "lin"


@pytest.mark.parametrize("key", sorted(REFERENCE, key=str), ids=lambda k: f"{k[0]}-{k[1]}")
def test_equations_match_scms_md(key):
    scm = load(*key)
    u = scm.sample_noise(200, torch.Generator().manual_seed(3))
    x = scm.forward(u)
    ref = run_reference(REFERENCE[key], [u[v].numpy() for v in scm.nodes])
    for node, expected in zip(scm.nodes, ref, strict=True):
        np.testing.assert_allclose(x[node].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_graph_edges_match_scms_md(scm):
    key = (scm.name, scm.variant) if (scm.name, scm.variant) in EDGES else scm.name
    graph = scm.graph
    assert list(graph.nodes) == scm.nodes
    assert nx.is_directed_acyclic_graph(graph)
    assert all(scm.nodes.index(a) < scm.nodes.index(b) for a, b in graph.edges)
    if scm.name == "dcm-random":
        assert len(scm.nodes) == 10 and nx.is_weakly_connected(graph)
    else:
        assert set(graph.edges) == {(f"x{i}", f"x{j}") for i, j in EDGES[key]}


def test_every_parent_matters_and_nothing_else(scm):
    """Perturbing a parent (others fixed by do) changes the node; a non-parent does not."""
    x, u = scm.sample_with_noise(N, seed=2)
    graph = scm.graph
    for node in scm.nodes:
        parents = scm.parents(node)
        assert parents == tuple(v for v in scm.nodes if v in set(graph.predecessors(node)))
        fixed = {p: x[p] for p in parents}
        others = {w: x[w] + 1.0 for w in scm.nodes if w != node and w not in parents}
        out = scm.forward(u, {**fixed, **others})  # with the parents fixed, nothing else matters
        torch.testing.assert_close(out[node], x[node])
        for p in parents:
            out = scm.forward(u, {**fixed, p: x[p] + 0.7})
            assert (out[node] - x[node]).abs().max() > 1e-6, (node, p)


def test_shapes_dtype_and_event_shapes(scm):
    x = scm.sample(5, seed=0)
    vector = scm.name in ("dcm-ladder", "dcm-random")
    for node in scm.nodes:
        event = torch.Size([3]) if vector else torch.Size([])
        assert scm.event_shapes[node] == event
        assert x[node].shape == (5, *event) and x[node].dtype == torch.float64
    assert load_synthetic(scm.name, scm.variant).sample(3)["x1"].dtype == torch.float32


def test_sampling_is_seeded():
    scm = load("dcm-ladder", "nonlinear")
    a, b, c = scm.sample(10, seed=4), scm.sample(10, seed=4), scm.sample(10, seed=5)
    torch.testing.assert_close(a["x10"], b["x10"])
    assert not torch.allclose(a["x10"], c["x10"])


def test_super_node_weights_and_graph_are_fixed_by_seed():
    u = load("dcm-ladder", "nonlinear").sample_noise(10, torch.Generator().manual_seed(0))
    same = [load("dcm-ladder", "nonlinear", seed=s).forward(u)["x10"] for s in (0, 0, 1)]
    torch.testing.assert_close(same[0], same[1])
    assert not torch.allclose(same[0], same[2])
    graphs = [set(load("dcm-random", "nonlinear", seed=s).graph.edges) for s in (3, 3, 4)]
    assert graphs[0] == graphs[1] != graphs[2]


def test_ladder_nonadditive_component_uses_its_own_noise():
    scm = load("dcm-ladder", "nonadditive")
    x, u = scm.sample_with_noise(N, seed=0)
    u2 = dict(u)
    u2["x4"] = u["x4"].clone()
    u2["x4"][:, 1] += 1.0
    parents = {p: x[p] for p in scm.parents("x4")}
    out = scm.forward(u2, parents)["x4"]
    torch.testing.assert_close(out[:, [0, 2]], x["x4"][:, [0, 2]])
    assert (out[:, 1] - x["x4"][:, 1]).abs().max() > 1e-6


@pytest.mark.parametrize("variant", ["nonlinear", "nonadditive"])
def test_ladder_matches_reference_mlp(variant):
    """x = 0.75 W2 silu(W1 pa) + u, or component j = [0.75 W2 silu(W1 [u_j, pa])]_j, with the
    weights drawn from default_rng(seed) node by node (W1 then W2), as documented."""
    seed = 5
    scm = load("dcm-ladder", variant, seed=seed)
    x, u = scm.sample_with_noise(20, seed=0)
    rng = np.random.default_rng(seed)
    silu = lambda a: a / (1 + np.exp(-a))  # noqa: E731
    for node in scm.nodes[1:]:  # x1 is the only root
        pa = np.concatenate([x[p].numpy() for p in scm.parents(node)], axis=1)
        w1 = rng.uniform(-1, 1, (16, pa.shape[1] + (variant == "nonadditive")))
        w2 = rng.uniform(-1, 1, (3, 16))
        un = u[node].numpy()
        if variant == "nonlinear":
            expected = 0.75 * silu(pa @ w1.T) @ w2.T + un
        else:
            expected = np.stack(
                [(0.75 * silu(np.c_[un[:, j], pa] @ w1.T) @ w2.T)[:, j] for j in range(3)], axis=1
            )
        np.testing.assert_allclose(x[node].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_uniform_noise_of_large_backdoor():
    scm = load("cnf-large-backdoor", "nlin")
    u = scm.sample_noise(5000, torch.Generator().manual_seed(0))
    for v in u.values():
        assert v.min() >= UNIFORM_LOW and v.max() < 1 and abs(v.mean() - 0.5) < 0.02
    assert scm.noise == "uniform" and not scm.is_additive and scm.is_identifiable


# --------------------------------------------------------------------------- laws of the queries


def test_empty_counterfactual_returns_factual(scm):
    x, u = scm.sample_with_noise(N, seed=1)
    cf = scm.counterfactual(u, {})
    for node in scm.nodes:
        torch.testing.assert_close(cf[node], x[node], rtol=0, atol=0)


def test_counterfactual_keeps_non_descendants_and_sets_target(scm):
    x, u = scm.sample_with_noise(N, seed=1)
    for target in scm.intervention_nodes:
        value = rand_do(scm, target)
        cf = scm.counterfactual(u, {target: value})
        below = set(scm.descendants(target))
        for node in scm.nodes:
            if node == target:
                torch.testing.assert_close(cf[node], value.expand_as(x[node]))
            elif node not in below:
                torch.testing.assert_close(cf[node], x[node], rtol=0, atol=0)
        assert not below or any((cf[v] - x[v]).abs().max() > 1e-6 for v in below)


@pytest.mark.parametrize("key", sorted(REFERENCE, key=str), ids=lambda k: f"{k[0]}-{k[1]}")
def test_counterfactual_matches_reference_under_do(key):
    """The true counterfactual from the true noise: the reference equations with x_I := a."""
    scm = load(*key)
    _, u = scm.sample_with_noise(100, seed=7)
    uu = [u[v].numpy() for v in scm.nodes]
    for target in scm.intervention_nodes:
        i = scm.nodes.index(target)
        cf = scm.counterfactual(u, {target: 0.3})
        ref = run_reference(REFERENCE[key], uu, {i: 0.3})
        for node, expected in zip(scm.nodes, ref, strict=True):
            np.testing.assert_allclose(cf[node].numpy(), expected, rtol=1e-10, atol=1e-10)


def test_abduct_inverts_forward_for_identifiable(scm):
    x, u = scm.sample_with_noise(N, seed=3)
    if not scm.is_identifiable:
        with pytest.raises(MechanismError, match=r"not invertible|is not"):
            scm.abduct(x)
        return
    uu = scm.abduct(x)
    for node in scm.nodes:
        torch.testing.assert_close(uu[node], u[node], rtol=1e-6, atol=1e-7)
    # abduct -> do -> predict equals the counterfactual from the true noise
    for target in scm.intervention_nodes:
        do = {target: rand_do(scm, target)}
        via_abduction = scm.forward(scm.abduct(x), do)
        truth = scm.counterfactual(u, do)
        for node in scm.nodes:
            torch.testing.assert_close(via_abduction[node], truth[node], rtol=1e-6, atol=1e-6)


def test_identifiability_flags():
    for name, variant in ALL:
        scm = load(name, variant)
        if name.startswith("dcm-"):
            assert scm.is_additive == scm.is_identifiable == (variant == "nonlinear")
        else:
            assert scm.is_identifiable
            assert scm.is_additive == ((name, variant) not in {
                ("cnf-simpson", "nlin"), ("cnf-large-backdoor", "nlin")})  # fmt: skip


def test_abduct_error_names_the_node():
    scm = load("dcm-triangle", "nonadditive")
    with pytest.raises(MechanismError, match=r"'x2'.*not monotone"):
        scm.abduct(scm.sample(4))
    with pytest.raises(MechanismError, match="'x2'"):
        scm.log_prob(scm.sample(4))
    assert not scm.is_invertible("x2") and scm.is_invertible("x1")


def test_interventional_follows_mutilated_equations():
    scm = load("dcm-triangle", "nonlinear")
    x = scm.interventional({"x2": 0.5}, 500, seed=9)
    u = noise_np(scm, 500, 9)
    assert torch.all(x["x2"] == 0.5)
    torch.testing.assert_close(x["x1"], u["x1"])  # the parent is untouched
    x3 = (u["x3"] + 20 / (1 + torch.exp(-(0.5**2) + x["x1"]))) / 2.41
    torch.testing.assert_close(x["x3"], x3)
    graph = scm.mutilated_graph(["x2"])
    assert set(graph.edges) == {("x1", "x3"), ("x2", "x3")}


def test_interventional_vector_node_and_per_unit_values():
    scm = load("dcm-ladder", "nonlinear")
    value = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    x = scm.interventional({"x1": value}, 50, seed=0)
    torch.testing.assert_close(x["x1"], value.expand(50, 3))
    per_unit = torch.linspace(-1, 1, 50, dtype=torch.float64)
    y = load("dcm-chain", "nonlinear").interventional({"x2": per_unit}, 50, seed=0)
    torch.testing.assert_close(y["x2"], per_unit)


def test_interventional_distribution_differs_from_observational():
    scm = load("cnf-chain-3", "lin")
    obs = scm.sample(4000, seed=0)["x3"]
    itv = scm.interventional({"x2": 8.0}, 4000, seed=0)["x3"]
    assert abs(obs.mean()) < 0.2 and abs(itv.mean() - 2.0) < 0.1  # x3 = 0.25 * 8 + 2 u3


def test_loc_fn_and_noise_scale_reproduce_forward(scm):
    x, u = scm.sample_with_noise(N, seed=5)
    for node in scm.nodes:
        if scm._equations[node].scale is None:
            with pytest.raises(MechanismError, match="non-additive"):
                scm.loc_fn(node)
            with pytest.raises(MechanismError):
                scm.noise_scale(node)
            continue
        loc = scm.loc_fn(node)(*(x[p] for p in scm.parents(node)))
        torch.testing.assert_close(loc + scm.noise_scale(node) * u[node], x[node])


def test_loc_fn_of_roots_and_negative_scales():
    scm = load("cnf-triangle", "lin")
    torch.testing.assert_close(scm.loc_fn("x1")(), torch.tensor(1.0, dtype=torch.float64))
    assert scm.noise_scale("x2") == -1.0
    ladder = load("dcm-ladder", "nonlinear")
    assert ladder.loc_fn("x1")().shape == (3,)
    assert ladder.noise_scale("x4") == 1.0


def test_log_prob_linear_gaussian_closed_form():
    scm = load("cnf-chain-3", "lin")
    x = scm.sample(100, seed=0)
    normal = torch.distributions.Normal
    expected = (
        normal(0.0, 1.0).log_prob(x["x1"])
        + normal(10 * x["x1"], 1.0).log_prob(x["x2"])
        + normal(0.25 * x["x2"], 2.0).log_prob(x["x3"])
    )
    torch.testing.assert_close(scm.log_prob(x), expected)


def test_log_prob_nonadditive_uses_the_jacobian():
    scm = load("cnf-simpson", "nlin")
    x, u = scm.sample_with_noise(100, seed=0)
    std = torch.distributions.Normal(0.0, 1.0)
    t3 = torch.tanh(u["x3"])
    expected = (
        std.log_prob(u["x1"])
        + std.log_prob(u["x2"]) - 0.5 * math.log(3 / 20)
        + std.log_prob(u["x3"]) - torch.log1p(-(t3**2))
        + std.log_prob(u["x4"]) + 0.5 * math.log(10)
    )  # fmt: skip
    torch.testing.assert_close(scm.log_prob(x), expected)


# --------------------------------------------------------------------------- tables


def test_to_frame_columns_and_round_trip():
    scm = load("dcm-ladder", "nonlinear")
    x = scm.sample(7, seed=0)
    frame = scm.to_frame(x)
    assert isinstance(frame, pd.DataFrame) and frame.shape == (7, 30)
    assert list(frame.columns[:4]) == ["x1[0]", "x1[1]", "x1[2]", "x2[0]"]
    np.testing.assert_allclose(frame["x4[2]"].to_numpy(), x["x4"][:, 2].numpy())
    back = scm.from_frame(frame)
    for node in scm.nodes:
        torch.testing.assert_close(back[node], x[node])
    chain = load("dcm-chain", "nonlinear")
    assert list(chain.to_frame(chain.sample(3)).columns) == ["x1", "x2", "x3"]
    with pytest.raises(DataError, match="x2"):
        chain.from_frame(pd.DataFrame({"x1": [0.0], "x3": [1.0]}))


# --------------------------------------------------------------------------- protocols


def test_intervention_nodes_follow_the_protocols():
    nodes = {
        ("dcm-chain", "nonlinear"): ["x1", "x2"],
        ("dcm-triangle", "nonadditive"): ["x1", "x2"],
        ("dcm-diamond", "nonlinear"): ["x1", "x2", "x3"],
        ("dcm-y", "nonlinear"): ["x1", "x2", "x3"],
        ("dcm-ladder", "nonlinear"): ["x1", "x2"],
        ("cnf-chain-3", "lin"): ["x1", "x2"],
        ("cnf-chain-5", "lin"): ["x1", "x2", "x3"],
        ("cnf-collider", "lin"): ["x2"],
        ("cnf-fork", "nlin"): ["x2", "x3"],
        ("cnf-large-backdoor", "nlin"): ["x1", "x2", "x3", "x5"],
    }
    for key, expected in nodes.items():
        assert intervention_nodes(load(*key)) == expected
    for seed in range(5):
        scm = load("dcm-random", "nonlinear", seed=seed)
        picked = intervention_nodes(scm)
        assert len(picked) == 3 and all(scm.descendants(v) for v in picked)
        assert picked == intervention_nodes(load("dcm-random", "nonlinear", seed=seed))


def test_intervention_values_span_the_quantiles():
    scm = load("dcm-chain", "nonlinear")
    values = intervention_values(scm, "x2", num=20, seed=0)
    sample = scm.sample(10_000, seed=0)["x2"].numpy()
    lo, hi = np.quantile(sample, [0.1, 0.9])
    assert values.shape == (20,)
    np.testing.assert_allclose([values[0], values[-1]], [lo, hi], rtol=1e-10)
    np.testing.assert_allclose(np.diff(values.numpy()), (hi - lo) / 19, rtol=1e-8)
    x1 = intervention_values(load("cnf-chain-3", "lin"), "x1", num=3, low=0.25, high=0.75)
    assert -0.8 < x1[0] < -0.6 and abs(x1[1]) < 0.05 and 0.6 < x1[2] < 0.8  # N(0, 1) quartiles


def test_intervention_values_of_super_nodes_are_per_component():
    scm = load("dcm-ladder", "nonlinear")
    values = intervention_values(scm, "x2", num=5, num_samples=2000)
    q = intervention_quantiles(scm, "x2", (0.1, 0.9), num_samples=2000)
    assert values.shape == (5, 3) and q.shape == (2, 3)
    torch.testing.assert_close(values[0], q[0])
    torch.testing.assert_close(values[-1], q[1])


# --------------------------------------------------------------------------- errors


def test_loader_errors_list_valid_names():
    with pytest.raises(DataError, match="dcm-chain"):
        load_synthetic("chain")
    with pytest.raises(DataError, match="nonadditive"):
        load_synthetic("dcm-chain", "linear")


def test_forward_input_errors():
    scm = load("dcm-chain", "nonlinear")
    u = scm.sample_noise(4, torch.Generator().manual_seed(0))
    with pytest.raises(UnknownNodeError, match="x9"):
        scm.forward(u, {"x9": 1.0})
    with pytest.raises(UnknownNodeError, match="x9"):
        scm.forward({**u, "x9": u["x1"]})
    with pytest.raises(MissingNodeError, match="x2"):
        scm.forward({"x1": u["x1"], "x3": u["x3"]})
    scm.forward({"x1": u["x1"], "x3": u["x3"]}, {"x2": 0.0})  # an intervened node needs no noise
    with pytest.raises(ShapeError, match="x2"):
        scm.forward({**u, "x2": u["x2"][:, None]})
    with pytest.raises(ShapeError, match="units"):
        scm.forward({**u, "x3": u["x3"][:2]})
    with pytest.raises(NonFiniteError, match="x1"):
        scm.forward({**u, "x1": torch.full((4,), float("nan"))})
    with pytest.raises(NonFiniteError, match="x1"):
        scm.forward(u, {"x1": float("inf")})
    with pytest.raises(InterventionError, match="broadcastable"):
        scm.forward(u, {"x1": torch.zeros(3)})
    with pytest.raises(InterventionError):
        scm.forward(u, [("x1", 0.0)])
    with pytest.raises(DataError):
        scm.forward([u["x1"]])
    with pytest.raises(DataError, match="positive int"):
        scm.sample(0)
    with pytest.raises(UnknownNodeError):
        scm.descendants("x0")
    with pytest.raises(DataError):
        intervention_values(scm, "x1", num=0)
    with pytest.raises(UnknownNodeError):
        intervention_values(scm, "x7")
    with pytest.raises(DataError, match="quantile"):
        intervention_quantiles(scm, "x1", (0.5, 1.5))


def test_runs_on_the_requested_device(device: torch.device):
    for name, variant in [("dcm-ladder", "nonlinear"), ("cnf-simpson", "nlin")]:
        scm = load_synthetic(name, variant, device=device)
        x, u = scm.sample_with_noise(8, seed=0)
        assert all(v.device.type == device.type for v in x.values())
        target = scm.intervention_nodes[0]
        cf = scm.counterfactual(u, {target: 0.5})
        assert cf[target].device.type == device.type
        torch.testing.assert_close(scm.abduct(x)["x2"], u["x2"], rtol=1e-4, atol=1e-5)
        assert scm.log_prob(x).shape == (8,)
        assert intervention_values(scm, target, num=3, num_samples=100).device.type == device.type


# --------------------------------------------------------------------------- rank-preserving


def _sign_scm() -> SyntheticSCM:
    """x2 = x1 * u2: not identifiable (the sign of u2 is lost where x1 changes sign)."""
    from pyro_scm.datasets._scm import general, root

    equations = {"x1": root(), "x2": general(["x1"], lambda u, x1: x1 * u), "x3": root()}
    return SyntheticSCM("sign", "test", equations, dtype=torch.float64)


def test_rank_preserving_counterfactual_is_the_truth_where_identifiable():
    syn = load("dcm-chain", "nonlinear")  # every equation increasing in its noise
    factual, noise = syn.sample_with_noise(N, seed=3)
    do = {"x1": torch.linspace(-2, 2, N, dtype=torch.float64)}
    ours = syn.rank_preserving_counterfactual(factual, do, grid=20000)
    truth = syn.counterfactual(noise, do)
    for node in ("x2", "x3"):  # the grid's step bounds the error
        assert torch.allclose(ours[node], truth[node], atol=0.02), node
    assert torch.equal(ours["x1"], do["x1"])


def test_rank_preserving_counterfactual_closed_form_where_not_identifiable():
    syn = _sign_scm()
    factual = syn.sample(N, seed=4)
    factual["x1"] = factual["x1"].abs() + 0.5  # factual x1 > 0
    do = {"x1": -torch.linspace(0.5, 2, N, dtype=torch.float64)}  # counterfactual x1 < 0
    u2 = factual["x2"] / factual["x1"]
    ours = syn.rank_preserving_counterfactual(factual, do, grid=20000)
    # x2 | x1 ~ N(0, x1²): rank q = Φ(u2) maps to |x1'| u2, while the truth is x1' u2 = -|x1'| u2
    assert torch.allclose(ours["x2"], do["x1"].abs() * u2, atol=0.02)
    assert torch.equal(ours["x3"], factual["x3"])  # not downstream: the factual value, exactly


def test_rank_preserving_counterfactual_errors():
    syn = _sign_scm()
    factual = syn.sample(4)
    with pytest.raises(DataError, match="grid"):
        syn.rank_preserving_counterfactual(factual, {"x1": 0.0}, grid=10)
    with pytest.raises(UnknownNodeError):
        syn.rank_preserving_counterfactual(factual, {"x9": 0.0})
    with pytest.raises(MissingNodeError):
        syn.rank_preserving_counterfactual({"x1": factual["x1"]}, {"x1": 0.0})
    with pytest.raises(NonFiniteError):
        syn.rank_preserving_counterfactual(factual, {"x1": float("nan")})
    from pyro_scm.datasets._scm import general, root

    log_noise = {"x1": root(), "x2": general(["x1"], lambda u, x1: torch.log(u) + x1)}
    broken = SyntheticSCM("log", "test", log_noise, dtype=torch.float64)  # NaN for u < 0
    with pytest.raises(NonFiniteError, match="'x2'"):
        broken.rank_preserving_counterfactual(
            {"x1": torch.zeros(3), "x2": torch.zeros(3)}, {"x1": 1.0}
        )
    ladder = load("dcm-ladder", "nonadditive")
    with pytest.raises(ShapeError, match="scalar"):
        ladder.rank_preserving_counterfactual(ladder.sample(4), {"x1": 0.0})
