"""Equation mechanisms: the known SCMs of pyro_scm.datasets as programs, and their typed errors."""

import pytest
import torch

import pyro_scm as ps
from pyro_scm.datasets import load_synthetic
from pyro_scm.errors import MechanismError
from pyro_scm.mechanisms.equation import EquationMechanism, additive, general


def test_bad_noise_kind_and_parent_count_are_typed_errors():
    with pytest.raises(MechanismError, match="noise must be"):
        EquationMechanism(additive([], lambda: 0.0), noise="laplace")
    mech = EquationMechanism(additive(["a"], lambda a: a), parent_event_dims=(0,), name="y")
    with pytest.raises(MechanismError, match=r"'y'.*takes 1 parents, got 2"):
        mech(torch.zeros(3), torch.zeros(3))


def test_a_non_invertible_equation_names_the_node_on_abduction():
    eq = general(["a"], lambda u, a: a * u.abs())
    d = EquationMechanism(eq, parent_event_dims=(0,), name="y")(torch.ones(3))
    with pytest.raises(MechanismError, match=r"'y'.*not invertible"):
        d.abduct(torch.ones(3))
    with pytest.raises(MechanismError, match=r"'y'.*not invertible"):
        d.log_prob(torch.ones(3))


def test_uniform_noise_density_is_zero_outside_its_support():
    d = EquationMechanism(additive([], lambda: 0.0), noise="uniform")()
    lp = d.log_prob(torch.tensor([0.5, 1.5, -0.5]))
    assert torch.isfinite(lp[0]) and lp[1] == -torch.inf and lp[2] == -torch.inf


@pytest.mark.parametrize(("name", "variant"), [("dcm-chain", "nonlinear"), ("cnf-simpson", "nlin")])
def test_the_synthetic_program_is_an_scm_with_the_same_graph_and_queries(name, variant):
    syn = load_synthetic(name, variant)
    assert isinstance(syn.scm, ps.SCM)
    assert set(syn.scm.graph.edges) == set(syn.graph.edges)
    x, u = syn.sample_with_noise(20, seed=0)
    node = syn.nodes[0]
    cf = syn.scm.counterfactual(x, do={node: 0.3}, num_samples=2)
    truth = syn.counterfactual(u, do={node: torch.full((20,), 0.3)})
    for k in syn.nodes:
        assert cf[k].shape == (2, 20, *syn.event_shapes[k])
        torch.testing.assert_close(cf[k][1], truth[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(syn.scm.log_prob(x), syn.log_prob(x))
    sample = syn.scm.do({node: 0.3}).sample(7)
    assert bool((sample[node] == 0.3).all()) and sample[syn.nodes[-1]].shape[:2] == (7, 1)
