"""Laws of the queries (DESIGN.md laws 1-4 and 8) on random inputs and known SCMs."""

import pandas as pd
import pytest
import torch
from scms import Flows, GumbelChild, Heteroscedastic, Linear

import pyro_scm as ps

DTYPES = [torch.float32, torch.float64]


def _factual(scm, n, device):
    sample = scm.sample(n)
    return {k: v[:, 0].to(device) for k, v in sample.values.items()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_counterfactual_matches_closed_form(dtype, device):
    scm = Linear().to(device, dtype)
    f = _factual(scm, 500, device)
    x_star = torch.linspace(-2, 2, 500, dtype=dtype, device=device)
    cf = scm.counterfactual(f, do={"x": x_star})
    y_star, z_star = Linear.closed_form(f["x"], f["y"], f["z"], x_star)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert cf["x"].shape == (1, 500)
    torch.testing.assert_close(cf["x"][0], x_star)
    torch.testing.assert_close(cf["y"][0], y_star, atol=tol, rtol=tol)
    torch.testing.assert_close(cf["z"][0], z_star, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_heteroscedastic_counterfactual_matches_closed_form(dtype, device):
    scm = Heteroscedastic().to(device, dtype)
    f = _factual(scm, 300, device)
    cf = scm.counterfactual(f, do={"x": 1.25})
    expected = Heteroscedastic.closed_form(f["x"], f["y"], torch.tensor(1.25, dtype=dtype))
    torch.testing.assert_close(cf["y"][0], expected)
    assert cf["y"].dtype == dtype


def test_counterfactual_of_mediator_keeps_ancestors_and_recomputes_child(device):
    scm = Linear().to(device)
    f = _factual(scm, 200, device)
    cf = scm.counterfactual(f, do={"y": 0.0})
    u_z = (f["z"] - ps_linear_loc(f)) / 0.3
    assert torch.equal(cf["x"][0], f["x"])
    torch.testing.assert_close(cf["z"][0], -0.8 * 0.0 + 0.7 * f["x"] + 0.3 * u_z)


def ps_linear_loc(f):
    return -0.8 * f["y"] + 0.7 * f["x"]


@pytest.mark.parametrize("model", [Linear, Flows, Heteroscedastic])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_and_identity_interventions_return_the_factual(model, dtype, device):
    torch.manual_seed(1)
    scm = model().to(device, dtype)
    f = _factual(scm, 64, device)
    assert all(torch.equal(scm.counterfactual(f)[k][0], v) for k, v in f.items())
    root = scm.nodes[0]
    # an identity shift recomputes every descendant from the abducted noise: law 1 end to end
    cf = scm.counterfactual(f, do={root: lambda v: v})
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for k, v in f.items():
        torch.testing.assert_close(cf[k][0], v, atol=tol, rtol=tol)


@pytest.mark.parametrize("node", ["a", "b", "c"])
def test_non_descendants_are_returned_exactly(node, device):
    torch.manual_seed(2)
    scm = Flows().to(device)
    f = _factual(scm, 50, device)
    shape = (50, 2) if node == "c" else (50,)
    cf = scm.counterfactual(f, do={node: torch.randn(shape, device=device)})
    changed = {node} | ps.graph.descendants(scm.graph, [node])
    for k in scm.nodes:
        if k not in changed:
            assert torch.equal(cf[k][0], f[k]), k
        else:
            assert not torch.equal(cf[k][0], f[k]), k


def test_interventional_sampling_follows_mutilated_equations(device):
    scm = Linear().to(device)
    torch.manual_seed(0)
    s = scm.do({"x": 2.0}).sample(20000)
    assert s["x"].shape == (20000, 1)
    assert torch.all(s["x"] == 2.0)
    assert abs(s["y"].mean().item() - 3.0) < 0.02
    assert abs(s["y"].std().item() - 0.5) < 0.02
    s = scm.do({"y": torch.arange(4.0, device=device).repeat(5000)}).sample(20000)
    torch.testing.assert_close(s["y"][:8, 0], torch.arange(4.0, device=device).repeat(2))
    assert abs(s["x"].mean().item()) < 0.03  # the parent of y is untouched


def test_shift_intervention(device):
    scm = Linear().to(device)
    torch.manual_seed(0)
    s = scm.do({"x": lambda x: x + 1.0}).sample(20000)
    assert abs(s["x"].mean().item() - 1.0) < 0.03
    assert abs(s["y"].mean().item() - 1.5) < 0.03
    f = _factual(scm, 10, device)
    cf = scm.do({"x": lambda x: x + 1.0}).counterfactual(f)
    y_star, _ = Linear.closed_form(f["x"], f["y"], f["z"], f["x"] + 1.0)
    torch.testing.assert_close(cf["y"][0], y_star)


def test_observational_sample_shapes(device):
    scm = Flows().to(device)
    s = scm.sample(7)
    assert s["a"].shape == (7, 1) and s["c"].shape == (7, 1, 2)
    assert s.kind == "observational" and s.num_samples == 7 and s.num_units == 1


def test_factual_formats_agree(device):
    scm = Linear().to(device)
    f = _factual(scm, 20, device)
    frame = pd.DataFrame({k: v.cpu().numpy() for k, v in f.items()})
    as_dict = scm.counterfactual(f, do={"x": 0.5})
    as_frame = scm.counterfactual(frame, do={"x": 0.5})
    result = ps.QueryResult({k: v[None] for k, v in f.items()})
    as_result = scm.counterfactual(result, do={"x": 0.5})
    for k in f:
        torch.testing.assert_close(as_dict[k], as_frame[k])
        torch.testing.assert_close(as_dict[k], as_result[k])


def test_chunked_counterfactual_is_identical(device):
    scm = Flows().to(device)
    f = _factual(scm, 101, device)
    whole = scm.counterfactual(f, do={"a": 0.3})
    chunked = scm.counterfactual(f, do={"a": 0.3}, chunk_size=17)
    for k in f:
        torch.testing.assert_close(whole[k], chunked[k])


def test_gumbel_max_counterfactuals(device):
    scm = GumbelChild().to(device)
    n = 400
    x = torch.zeros(n, device=device)
    c = torch.arange(n, device=device) % 2
    y = 3 * c + 0.5 * torch.randn(n, device=device)
    f = {"x": x, "c": c, "y": y}
    # raising x makes class 1 likelier: a unit in class 1 stays there (counterfactual stability)
    up = scm.counterfactual(f, do={"x": 3.0}, num_samples=8)
    assert up["c"].shape == (8, n, 2)
    assert torch.all(up["c"][:, c == 1, 1] == 1)
    down = scm.counterfactual(f, do={"x": -3.0}, num_samples=8)
    assert torch.all(down["c"][:, c == 0, 0] == 1)
    # units in class 0 moved up switch in the proportion the posterior implies, not all or none
    switched = up["c"][:, c == 0, 1].mean().item()
    assert 0.5 < switched < 1.0
    # y follows its equation with the abducted noise
    u_y = (y - 3 * c) / 0.5
    expected = 3 * up["c"][..., 1] + 3.0 + 0.5 * u_y
    torch.testing.assert_close(up["y"], expected)
    # abduction then prediction with an identity shift returns the factual class in every draw
    same = scm.counterfactual(f, do={"x": lambda v: v}, num_samples=4)
    assert torch.all(same["c"].argmax(-1) == c)


def test_categorical_intervention_by_index(device):
    scm = GumbelChild().to(device)
    s = scm.do({"c": 1}).sample(1000)
    assert torch.all(s["c"][..., 1] == 1)
    assert abs(s["y"].mean().item() - 3.0) < 0.1


def test_intervened_graph_is_mutilated():
    scm = Linear()
    assert sorted(scm.do({"y": 0.0}).graph.edges) == [("x", "z"), ("y", "z")]
    assert sorted(scm.do({"x": 0.0, "z": 0.0}).graph.edges) == [("x", "y")]
    assert sorted(scm.graph.edges) == [("x", "y"), ("x", "z"), ("y", "z")]
