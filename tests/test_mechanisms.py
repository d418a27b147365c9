"""Laws of every mechanism kind on random inputs: round trips, log-densities, gradients, tails."""

import math

import pytest
import torch
import zuko

import pyro_scm as ps
from pyro_scm.mechanisms.base import flatten_parents


def _registry():
    return {
        "nsf-root": (lambda: ps.FlowMechanism(zuko.flows.NSF(features=1, context=0)), []),
        "maf-scalar": (lambda: ps.FlowMechanism(zuko.flows.MAF(features=1, context=2)), [(), ()]),
        "nsf-vector": (lambda: ps.FlowMechanism(zuko.flows.NSF(features=3, context=3)), [(), (2,)]),
        "naf-scalar": (lambda: ps.FlowMechanism(zuko.flows.NAF(features=1, context=1)), [()]),
        "nsf-no-tails": (
            lambda: ps.FlowMechanism(zuko.flows.NSF(features=2, context=1), tails=False),
            [()],
        ),
        "locscale-const": (lambda: ps.LocScaleMechanism(1.0, 2.0), []),
        "locscale-fn": (
            lambda: ps.LocScaleMechanism(lambda a: a.sin(), lambda a: a.exp()),
            [()],
        ),
        "locscale-learned": (lambda: ps.LocScaleMechanism.learned(3, (2,)), [(2,), ()]),
        "anm-learned": (
            lambda: ps.LocScaleMechanism.learned(3, (2,), heteroscedastic=False),
            [(2,), ()],
        ),
    }


REGISTRY = _registry()


def _build(name, dtype, device, batch=(5, 4)):
    make, parent_shapes = REGISTRY[name]
    torch.manual_seed(0)
    mech = make().to(device, dtype)
    parents = [torch.randn(*batch, *s, dtype=dtype, device=device) for s in parent_shapes]
    return mech, parents


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trips(name, dtype, device):
    mech, parents = _build(name, dtype, device)
    d = mech(*parents)
    u = d.noise.sample((5, 4)) if not parents else d.noise.sample()
    x = d.generate(u)
    assert x.shape == (5, 4, *mech.event_shape)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(d.abduct(x), u, **tol)
    x2 = 3 * torch.randn_like(x)
    torch.testing.assert_close(d.generate(d.abduct(x2)), x2, **tol)


@pytest.mark.parametrize(
    "name", [n for n in REGISTRY if n != "naf-scalar"]
)  # NAF inverts numerically
def test_log_prob_is_the_change_of_variables(name, device):
    mech, parents = _build(name, torch.float64, device, batch=(6,))
    d = mech(*parents)
    x = d.generate(d.noise.sample() if parents else d.noise.sample((6,)))
    u = d.abduct(x)
    event = mech.event_shape
    k = event.numel()
    jac = torch.autograd.functional.jacobian(
        lambda v: d.abduct(v.reshape(6, *event)).reshape(6, k).sum(0), x.reshape(6, k)
    )  # (k, 6, k): du_i / dx_j per unit
    logdet = torch.stack([torch.linalg.slogdet(jac[:, n, :])[1] for n in range(6)])
    base = torch.distributions.Normal(0.0, 1.0).log_prob(u).reshape(6, -1).sum(-1)
    torch.testing.assert_close(d.log_prob(x), base + logdet)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_gradients_reach_noise_and_parameters(name, device):
    mech, parents = _build(name, torch.float64, device, batch=(8,))
    d = mech(*parents)
    u = (d.noise.sample() if parents else d.noise.sample((8,))).requires_grad_()
    d.generate(u).sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    if not any(True for _ in mech.parameters()):
        return
    d = mech(*parents)
    d.loss(d.generate(torch.randn_like(u))).mean().backward()
    for pname, p in mech.named_parameters():
        assert p.grad is not None, pname


def test_flow_tails_extrapolate_linearly_beyond_the_spline_bound():
    """A unit far outside the data keeps an exact round trip and an affine tail."""
    torch.manual_seed(0)
    x = torch.randn(2000)
    y = x + 0.5 * torch.randn(2000)
    fitted = {}
    for tails in (True, False):
        mech = ps.FlowMechanism(zuko.flows.NSF(features=1, context=1), tails=tails)
        mech.prepare(y, x)
        opt = torch.optim.Adam(mech.parameters(), lr=3e-3)
        for _ in range(200):
            opt.zero_grad()
            mech(x).loss(y).mean().backward()
            opt.step()
        fitted[tails] = mech.double()
    with torch.no_grad():
        parent = torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64)
        u_true = torch.tensor([12.0, 20.0, -12.0], dtype=torch.float64)  # far beyond N(0, 1)
        y_far = parent + 0.5 * u_true
        u_tails = fitted[True](parent).abduct(y_far)
        u_plain = fitted[False](parent).abduct(y_far)
        torch.testing.assert_close(fitted[True](parent).generate(u_tails), y_far)
    rel_tails = ((u_tails - u_true).abs() / u_true.abs()).max()
    rel_plain = ((u_plain - u_true).abs() / u_true.abs()).max()
    assert rel_tails < 0.25, (u_tails, u_true)
    assert rel_tails < rel_plain


def test_flow_standardisation_is_learnt_by_prepare():
    mech = ps.FlowMechanism(zuko.flows.NSF(features=1, context=1))
    x, y = 100 + 10 * torch.randn(500), -50 + 3 * torch.randn(500)
    mech.prepare(y, x)
    assert abs(mech.x_std.loc.item() + 50) < 1 and abs(mech.x_std.scale.item() - 3) < 0.3
    assert abs(mech.c_std.loc.item() - 100) < 2 and abs(mech.c_std.scale.item() - 10) < 1


def test_gumbel_max_abduction_reproduces_the_category_and_matches_the_posterior():
    torch.manual_seed(0)
    mech = ps.CategoricalMechanism(4)
    with torch.no_grad():
        mech.root_logits.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    d = mech()
    x = d.sample((20000,))
    u = d.abduct(x)
    assert torch.equal(d.generate(u), x)
    # the posterior noise is the prior noise conditioned on the category: its joint law is the
    # prior's, so the marginal of u matches Gumbel(0, 1) (mean = Euler's gamma, var = pi^2/6)
    assert abs(u.mean().item() - 0.5772) < 0.03
    assert abs(u.var().item() - math.pi**2 / 6) < 0.08


def test_flatten_parents_shapes():
    s, v = torch.randn(5, 3), torch.randn(5, 3, 2)
    context, batch = flatten_parents([s, v], 3)
    assert context.shape == (5, 3, 3) and batch == (5, 3)
    context, batch = flatten_parents([v, v], 4)
    assert context.shape == (5, 3, 4) and batch == (5, 3)
    assert flatten_parents([], 0) == (None, torch.Size())
    with pytest.raises(ps.errors.ShapeError, match="expects 5 context features"):
        flatten_parents([s, v], 5)
    with pytest.raises(ps.errors.ShapeError, match="incompatible batch shapes"):
        flatten_parents([torch.randn(4), torch.randn(3)], 2)


def test_locscale_rejects_non_positive_scale():
    with pytest.raises(ps.errors.MechanismError, match="scale must be positive"):
        ps.LocScaleMechanism(0.0, -1.0)


def test_flow_distribution_works_with_pyro_transform_reparam():
    import pyro
    from pyro.infer.reparam import TransformReparam

    mech = ps.FlowMechanism(zuko.flows.NSF(features=1, context=1))
    parent = torch.randn(3)

    def model():
        return pyro.sample("y", mech(parent))

    with pyro.poutine.trace() as tr, pyro.poutine.reparam(config={"y": TransformReparam()}):
        y = model()
    u = tr.trace.nodes["y_base"]["value"]
    torch.testing.assert_close(mech(parent).abduct(y), u)


def test_anm_scale_does_not_depend_on_the_parents():
    torch.manual_seed(0)
    mech = ps.LocScaleMechanism.learned(1, heteroscedastic=False)
    mech.prepare(torch.randn(50) * 3, torch.randn(50))
    with torch.no_grad():
        mech.scale.net_params.fill_(0.7)
    d = mech(torch.linspace(-3, 3, 7))
    u = torch.ones(7)
    loc = d.generate(torch.zeros(7))
    spread = d.generate(u) - loc  # = scale(pa) for every unit
    assert torch.allclose(spread, spread[0].expand(7)) and not torch.allclose(loc, loc[0])


def test_flow_tail_scale_grows_linearly_where_its_network_does():
    from pyro_scm.nets import SOFTPLUS_ONE

    mech = ps.FlowMechanism(zuko.flows.NSF(features=1, context=1))
    mech.tails = torch.nn.Linear(1, 2)  # a network extrapolating linearly: (shift, raw scale)
    with torch.no_grad():
        mech.tails.weight.copy_(torch.tensor([[0.0], [1.0]]))  # raw scale = the context
        mech.tails.bias.zero_()
    context = torch.tensor([[0.0], [10.0], [20.0]])
    shift, log_scale = mech._affine(context)
    scale = log_scale.exp()[:, 0]
    assert torch.all(shift == 0) and scale[0].item() == pytest.approx(1.0, abs=1e-3)
    # softplus: about linear (an exponential scale would be e^10 and e^20 here)
    torch.testing.assert_close(scale[1:], context[1:, 0] + SOFTPLUS_ONE, rtol=1e-3, atol=1e-3)
