"""Image mechanisms of issue 14: the query-time classifier-free guidance weight, and the
Morpho-MNIST SCM with each image mechanism."""

import pytest
import torch

from pyro_scm.errors import MechanismError
from pyro_scm.mechanisms.diffusion import DiffusionMechanism, cfg_scale
from pyro_scm.nets.diffusion import TimeMLP, UNet


def _cfg_mechanism(**kw):
    return DiffusionMechanism(
        TimeMLP(2, context=1, hidden=(8,)), (2,), context=1, timesteps=20, steps=5, **kw
    )


def test_cfg_scale_context_sets_the_weight_at_query_time():
    m = _cfg_mechanism(cond_drop=0.2)
    d = m(torch.randn(6))
    u = torch.randn(6, 2)
    with torch.no_grad():
        plain = d.generate(u)
        with cfg_scale(0.0):
            torch.testing.assert_close(d.generate(u), plain)
        with cfg_scale(3.0):
            assert m.current_cfg() == 3.0
            guided = d.generate(u)
            with cfg_scale(1.0):
                assert m.current_cfg() == 1.0
            assert m.current_cfg() == 3.0
        assert m.current_cfg() == 0.0
    assert not torch.allclose(plain, guided)
    # the weight w extrapolates ε: (1 + w) ε(pa) − w ε(∅), checked on one step
    x, t = torch.randn(6, 2), torch.full((6,), 3.0)
    c = torch.randn(6, 1)
    with cfg_scale(2.0), torch.no_grad():
        got = m.guided_eps(x, t, c, None, guided=False)
        want = 3 * m.eps(x, t, c) - 2 * m.eps(x, t, None)
    torch.testing.assert_close(got, want)


def test_cfg_scale_leaves_mechanisms_not_trained_for_it_alone():
    m = _cfg_mechanism()  # cond_drop = 0: no unconditional ε to extrapolate from
    with cfg_scale(5.0):
        assert m.current_cfg() == 0.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "2", True])
def test_cfg_scale_rejects_bad_weights(bad):
    with pytest.raises(MechanismError, match="guidance weight"), cfg_scale(bad):
        pass


def test_multi_parent_image_diffusion_round_trips_by_ddim_inversion():
    m = DiffusionMechanism(
        UNet(1, base=4, mults=(1, 2), context=12), (1, 28, 28), context=12, cond_drop=0.1,
        timesteps=50, steps=50,
    )  # fmt: skip
    t, i = torch.rand(3), torch.rand(3)
    d = m(t, i, torch.eye(10)[[1, 2, 3]])
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad(), cfg_scale(1.0):
        u = d.abduct(x)
        back = d.generate(u)
    assert u.shape == x.shape
    assert (back - x).abs().mean() < 0.05  # DDIM inversion: near exact with enough steps


@pytest.mark.parametrize("image", ["hvae", "diffusion"])
def test_morpho_mnist_with_each_image_mechanism(image):
    from pyro_scm.models.morpho_mnist import MorphoMNIST, morpho_mnist_data

    scm = MorphoMNIST(latent_dim=3, width=4, image=image)
    assert scm.image.kind == image
    data = morpho_mnist_data(40, seed=0).to_dict()
    scm.fit(data, epochs=1, batch_size=20, progress=False)
    cf = scm.counterfactual({k: v[:2] for k, v in data.items()}, do={"thickness": 3.0})
    assert cf["image"].shape == (1, 2, 1, 28, 28)


def test_morpho_mnist_rejects_unknown_image_mechanisms():
    from pyro_scm.models.morpho_mnist import MorphoMNIST, train

    with pytest.raises(MechanismError, match="image must be one of"):
        MorphoMNIST(image="gan")
    with pytest.raises(MechanismError, match="image must be one of"):
        train(image="gan")


def test_main_job_image_flag():
    from pyro_scm.inference import morpho_demo
    from pyro_scm.models.morpho_mnist import BEST_IMAGE

    assert BEST_IMAGE in morpho_demo.IMAGE_CHOICES
    assert morpho_demo.parse_args(["--image", "hvae+res"]).image == "hvae+res"
    assert morpho_demo.parse_args([]).image is None  # the benchmark's best
    with pytest.raises(SystemExit):
        morpho_demo.parse_args(["--image", "gan"])
