"""The query laws Q1-Q6 of docs/laws.md over a registry of test SCMs of every mechanism kind."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch
from scms import Flows, GumbelChild, Heteroscedastic, Linear

import pyro_scm as ps
from pyro_scm import graph as g
from pyro_scm import queries
from pyro_scm.datasets import load_synthetic
from pyro_scm.datasets.synthetic import SYNTHETIC_VARIANTS
from pyro_scm.handlers import ReplayNoise
from pyro_scm.nets.diffusion import TimeMLP

UNITS = 5


class VAEChain(ps.SCM):
    """x -> v (a 3-d VAE node with an exact residual) -> y = sum(v) + u / 2."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.v = ps.VAEMechanism.mlp(3, latent_dim=2, context=1, hidden=(8,), residual=True)
        self.y = ps.LocScaleMechanism(loc=lambda v: v.sum(-1), scale=0.5)

    def model(self):
        x = pyro.sample("x", self.x())
        v = pyro.sample("v", self.v(x))
        pyro.sample("y", self.y(v))


class DiffusionSink(ps.SCM):
    """x -> img (a 2-d diffusion node, three DDIM steps)."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        net = TimeMLP(2, context=1, hidden=(8,))
        self.img = ps.DiffusionMechanism(net, (2,), context=1, timesteps=20, steps=3)

    def model(self):
        x = pyro.sample("x", self.x())
        pyro.sample("img", self.img(x))


def _equation_scm():
    """A synthetic SCM with a non-additive, invertible equation: an equation-mechanism program."""
    for name, variants in SYNTHETIC_VARIANTS.items():
        for variant in variants:
            syn = load_synthetic(name, variant)
            if syn.is_identifiable and not syn.is_additive and syn.noise == "normal":
                return syn
    raise AssertionError("no identifiable non-additive synthetic SCM")


SYN = _equation_scm()
REGISTRY = {
    "linear": Linear,
    "heteroscedastic": Heteroscedastic,
    "flows": Flows,
    "categorical": GumbelChild,
    "vae": VAEChain,
    "diffusion": DiffusionSink,
    "equation": lambda: SYN.scm,
}
NAMES = list(REGISTRY)


def _model(name, device):
    torch.manual_seed(0)
    scm = REGISTRY[name]().to(device).mark_fitted()  # the laws hold for any weights
    factual = {k: v[:, 0] for k, v in scm.sample(UNITS).values.items()}
    return scm, factual


def _value(scm, node):
    return 0 if scm.specs[node].num_classes is not None else 0.5  # a class index, or a number


def _unplanned(scm, factual, do, noise):
    """The full computation: abduct every node, regenerate every node under ``do``."""
    expanded = {k: v.unsqueeze(0) for k, v in factual.items()}
    full = queries.abduct(scm, expanded)
    full.update(noise)  # the recomputed nodes' noise, as the planned query drew it
    specs, like = scm.specs, scm._like()
    actions = {
        k: v.unsqueeze(0) if torch.is_tensor(v) else v
        for k, v in queries.plan.interventions_as_tensors(do, UNITS, specs, like).items()
    }
    return queries.run_program(scm, full, torch.Size([1, UNITS]), actions, {})


@pytest.mark.parametrize("name", NAMES)
def test_q1_empty_intervention_returns_the_factual(name, device):
    scm, factual = _model(name, device)
    cf = scm.counterfactual(factual, do={})
    for k in scm.nodes:
        assert torch.equal(cf[k][0], factual[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_q2_non_descendants_are_returned_as_given(name, device):
    scm, factual = _model(name, device)
    for node in scm.nodes:
        cf = scm.counterfactual(factual, do={node: _value(scm, node)})
        keep = set(scm.nodes) - {node} - g.descendants(scm.graph, [node])
        for k in keep:
            assert torch.equal(cf[k][0], factual[k]), (node, k)
        assert set(cf.noise) == g.descendants(scm.graph, [node])  # only recomputed nodes


def test_q3_closed_form_on_known_scms(device):
    torch.manual_seed(0)
    x, y, z = torch.randn(3, 7, device=device)
    cf = Linear().to(device).counterfactual({"x": x, "y": y, "z": z}, do={"x": 0.3})
    y_star, z_star = Linear.closed_form(x, y, z, 0.3)
    torch.testing.assert_close(cf["y"][0], y_star)
    torch.testing.assert_close(cf["z"][0], z_star)
    cf = Heteroscedastic().to(device).counterfactual({"x": x, "y": y}, do={"x": -1.0})
    torch.testing.assert_close(cf["y"][0], Heteroscedastic.closed_form(x, y, torch.tensor(-1.0)))


def test_q3_closed_form_on_a_synthetic_scm_with_equation_mechanisms():
    x, u = SYN.sample_with_noise(50, seed=3)
    for node in SYN.nodes:
        cf = SYN.scm.counterfactual(x, do={node: 0.25})
        truth = SYN.counterfactual(u, do={node: torch.full((50,), 0.25)})
        for k in SYN.nodes:
            torch.testing.assert_close(cf[k][0], truth[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_q4_the_plan_equals_the_full_computation(name, device):
    scm, factual = _model(name, device)
    for node in scm.nodes:
        do = {node: _value(scm, node)}
        planned = scm.counterfactual(factual, do=do)
        full = _unplanned(scm, factual, do, planned.noise)
        for k in scm.nodes:
            torch.testing.assert_close(planned[k], full[k], atol=1e-5, rtol=1e-5)
        if name != "categorical":  # deterministic abduction: the unplanned query path agrees
            again = queries.counterfactual(scm, factual, do, planned=False)
            for k in scm.nodes:
                torch.testing.assert_close(planned[k], again[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_q4_the_plan_runs_no_network_for_nodes_returned_as_given(name, device):
    scm, factual = _model(name, device)
    with poutine.trace() as tracer, ReplayNoise(batch_shape=(1,)):
        scm.model()
    mechanisms = {
        n: s["fn"].mechanism for n, s in tracer.trace.nodes.items() if s["type"] == "sample"
    }
    calls = dict.fromkeys(mechanisms, 0)
    for node, mech in mechanisms.items():
        for m in mech.modules():
            if m is not mech and any(True for _ in m.parameters(recurse=False)):
                m.register_forward_pre_hook(lambda *_, n=node: calls.__setitem__(n, calls[n] + 1))
    last = scm.nodes[-1]
    scm.counterfactual(factual, do={last: _value(scm, last)})
    assert all(c == 0 for c in calls.values()), calls


@pytest.mark.parametrize("name", NAMES)
def test_q5_interventions_hold_and_draw_no_noise(name, device):
    scm, _ = _model(name, device)
    node = scm.nodes[0]
    result = scm.do({node: _value(scm, node)}).sample(4, return_noise=True)
    expected = 0.5 if scm.specs[node].num_classes is None else None
    if expected is not None:
        assert bool((result[node] == expected).all())
    else:
        assert bool((result[node].argmax(-1) == 0).all())
    assert node not in result.noise and set(result.noise) == set(scm.nodes) - {node}


@pytest.mark.parametrize("name", NAMES)
def test_q6_every_result_is_samples_by_units_by_event(name, device):
    scm, factual = _model(name, device)
    cf = scm.counterfactual(factual, do={scm.nodes[0]: _value(scm, scm.nodes[0])}, num_samples=2)
    sample = scm.sample(3)
    for k, spec in scm.specs.items():
        assert cf[k].shape == (2, UNITS, *spec.event_shape)
        assert sample[k].shape == (3, 1, *spec.event_shape)
