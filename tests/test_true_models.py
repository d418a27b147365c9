"""The true SCM of every additive synthetic data set, written with LocScaleMechanism, is exact."""

import pytest
import torch

from pyro_scm.datasets import SYNTHETIC_SCMS, SYNTHETIC_VARIANTS, load_synthetic
from pyro_scm.datasets.true_models import learned_scm, noise_signs, true_scm
from pyro_scm.errors import MechanismError
from pyro_scm.metrics import counterfactual_mse, mmd

ADDITIVE = [
    (name, variant)
    for name in SYNTHETIC_SCMS
    for variant in SYNTHETIC_VARIANTS[name]
    if load_synthetic(name, variant).is_additive
]
NON_ADDITIVE = [
    (name, variant)
    for name in SYNTHETIC_SCMS
    for variant in SYNTHETIC_VARIANTS[name]
    if not load_synthetic(name, variant).is_additive
]


def test_every_dcm_nonlinear_scm_is_covered():
    names = {n for n, v in ADDITIVE if v == "nonlinear"}
    assert names == {n for n in SYNTHETIC_SCMS if n.startswith("dcm-")}
    assert ("cnf-chain-3", "lin") in ADDITIVE and ("cnf-large-backdoor", "nlin") in NON_ADDITIVE


@pytest.mark.parametrize(("name", "variant"), ADDITIVE)
def test_true_model_has_zero_counterfactual_error(name, variant):
    syn = load_synthetic(name, variant)
    model = true_scm(syn)
    assert set(model.graph.edges) == set(syn.graph.edges)
    x, u = syn.sample_with_noise(300, seed=1)
    signs = noise_signs(syn)
    for node in syn.intervention_nodes:
        value = syn.interventional({}, 1, seed=2)[node][0]
        cf = model.counterfactual(x, do={node: value})
        truth = syn.counterfactual(u, do={node: value})
        pred = {k: cf[k][0] for k in syn.nodes}
        assert counterfactual_mse(pred, truth) < 1e-9
        # only the recomputed nodes are abducted (the plan), each to its true noise up to the
        # folded sign of a negative scale
        assert set(cf.noise) == set(syn.descendants(node))
        for k in cf.noise:
            torch.testing.assert_close(cf.noise[k][0], signs[k] * u[k], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "variant"), ADDITIVE)
def test_interventional_samples_follow_the_mutilated_equations(name, variant):
    syn = load_synthetic(name, variant)
    model = true_scm(syn)
    node = syn.intervention_nodes[0]
    value = syn.interventional({}, 1, seed=3)[node][0]
    result = model.do({node: value}).sample(200, return_noise=True)
    signs = noise_signs(syn)
    noise = {k: signs[k] * v[:, 0] for k, v in result.noise.items() if k != node}
    truth = syn.forward(noise, do={node: value})
    for k in syn.nodes:
        torch.testing.assert_close(result[k][:, 0], truth[k], atol=1e-4, rtol=1e-4)
    # and in distribution: fresh samples of each against the other's are close in MMD
    fresh = syn.interventional({node: value}, 200, seed=4)
    below = syn.descendants(node)
    ours = torch.cat([result[k][:, 0].reshape(200, -1) for k in below], 1)
    theirs = torch.cat([fresh[k].reshape(200, -1) for k in below], 1)
    shifted = theirs + 3 * theirs.std(0)
    assert mmd(ours, theirs) < 0.05 < mmd(ours, shifted)


def test_negative_scales_flip_the_abducted_noise():
    syn = load_synthetic("cnf-chain-3", "lin")  # x2 = 10 x1 - u2
    assert noise_signs(syn) == {"x1": 1.0, "x2": -1.0, "x3": 1.0}
    x, u = syn.sample_with_noise(10, seed=0)
    latents = true_scm(syn).abduct(x)
    torch.testing.assert_close(latents["x2"], -u["x2"])


@pytest.mark.parametrize(("name", "variant"), NON_ADDITIVE[:2])
def test_non_additive_scm_has_no_loc_scale_true_model(name, variant):
    syn = load_synthetic(name, variant)
    with pytest.raises(MechanismError, match="not an additive-noise SCM"):
        true_scm(syn)
    with pytest.raises(MechanismError, match="not an additive-noise SCM"):
        noise_signs(syn)


def test_learned_scm_is_built_over_the_data_set_graph():
    syn = load_synthetic("dcm-ladder", "nonlinear")
    data = syn.sample(64, seed=0)
    model = learned_scm(syn, syn.to_frame(data), "locscale", hidden=(8,))
    assert set(model.graph.edges) == set(syn.graph.edges)
    assert model.specs["x1"].event_shape == torch.Size([3])
    assert learned_scm(syn, data, "nsf", hidden=(8,), transforms=1).nodes == model.nodes
