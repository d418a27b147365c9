"""The example models in models/: graphs as designed, queries run end to end (untrained)."""

import torch
from pyro_scm.models.mnist_diffusion import DigitImage
from pyro_scm.models.triangle import Triangle


def test_triangle_graph():
    assert set(Triangle().graph.edges) == {("x1", "x2"), ("x1", "x3"), ("x2", "x3")}


def test_digit_image_counterfactual_runs():
    scm = DigitImage(side=14, net="mlp", width=32, timesteps=100, steps=4).mark_fitted()
    assert list(scm.graph.edges) == [("digit", "image")]
    factual = {"digit": torch.tensor([1, 7]), "image": torch.rand(2, 1, 14, 14)}
    cf = scm.counterfactual(factual, do={"digit": 3})
    assert cf["image"].shape == (1, 2, 1, 14, 14)
    assert torch.all(cf["digit"][0].argmax(-1) == 3)
    assert torch.isfinite(cf["image"]).all()


def test_schedule_rejects_betas_outside_the_unit_interval():
    import pytest

    from pyro_scm.errors import MechanismError
    from pyro_scm.mechanisms.diffusion import noise_schedule

    with pytest.raises(MechanismError, match="beta_end < 1"):
        noise_schedule("linear", 20, 1e-4, 1.0)
