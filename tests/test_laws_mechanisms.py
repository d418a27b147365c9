"""The mechanism laws M1-M7 of docs/laws.md over a registry of every mechanism kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import zuko

import pyro_scm as ps
from pyro_scm.mechanisms.equation import EquationMechanism, additive, general
from pyro_scm.nets.diffusion import TimeMLP


@dataclass(frozen=True)
class Kind:
    """A mechanism kind and what it supports (docs/laws.md, "Mechanisms")."""

    make: Callable[[], ps.Mechanism]
    parents: tuple  # event shapes of the parents
    inverse: str  # "exact": u -> x -> u and x -> u -> x; "x": x -> u -> x; "approx": bounded
    log_prob: bool
    deterministic: bool = True  # abduction is a function (not a posterior draw)
    differentiable: bool = True  # generate is differentiable in u
    tol: float = 1e-4  # float32 round-trip tolerance (float64: tol ** 2)


def _flow():
    return ps.FlowMechanism(
        zuko.flows.NSF(features=2, context=3, transforms=1, hidden_features=(8,)), hidden=(8,)
    )


def _diffusion():
    net = TimeMLP(2, context=1, hidden=(8,))
    return ps.DiffusionMechanism(net, (2,), context=1, timesteps=20, steps=3)


REGISTRY = {
    "flow": Kind(_flow, ((), (2,)), "exact", True),
    "locscale": Kind(
        lambda: ps.LocScaleMechanism.learned(3, (2,), (8,)), ((2,), ()), "exact", True
    ),
    "anm": Kind(
        lambda: ps.LocScaleMechanism.learned(3, (2,), (8,), heteroscedastic=False),
        ((2,), ()),
        "exact",
        True,
    ),
    "anm-ensemble": Kind(
        lambda: ps.LocScaleMechanism.learned(3, (2,), (8,), heteroscedastic=False, members=3),
        ((2,), ()),
        "exact",
        True,
    ),
    "categorical": Kind(
        lambda: ps.CategoricalMechanism(3, context=2, hidden=(8,)),
        ((), ()),
        "x",
        True,
        deterministic=False,
        differentiable=False,
    ),
    "vae": Kind(
        lambda: ps.VAEMechanism.mlp(3, latent_dim=2, context=1, hidden=(8,), residual=True),
        ((),),
        "x",
        False,
    ),
    "diffusion": Kind(_diffusion, ((),), "approx", False, tol=0.5),
    "equation-additive": Kind(
        lambda: EquationMechanism(
            additive(["a", "b"], lambda a, b: torch.sin(a) + b.sum(-1), -0.5),
            parent_event_dims=(0, 1),
        ),
        ((), (2,)),
        "exact",
        True,
    ),
    "equation-general": Kind(
        lambda: EquationMechanism(
            general(
                ["a"],
                lambda u, a: torch.sinh(u) * torch.exp(a),
                lambda x, a: torch.asinh(x * torch.exp(-a)),
            ),
            parent_event_dims=(0,),
        ),
        ((),),
        "exact",
        True,
    ),
}
NAMES = list(REGISTRY)


def _build(name, device, dtype=torch.float64, batch=(5,), seed=0):
    kind = REGISTRY[name]
    torch.manual_seed(seed)
    mech = kind.make().to(device, dtype)
    torch.manual_seed(seed + 1)
    parents = [torch.randn(*batch, *s, dtype=dtype, device=device) for s in kind.parents]
    return kind, mech, parents


def _noise(d, batch):
    u = d.noise.sample()
    return u.expand(*batch, *u.shape[len(d.batch_shape) :]) if not d.batch_shape else u


def _tol(kind, dtype):
    t = kind.tol if dtype == torch.float32 else min(kind.tol, kind.tol**2)
    return dict(atol=t, rtol=t)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_m1_m6_round_trip_in_each_precision_and_device(name, dtype, device):
    kind, mech, parents = _build(name, device, dtype)
    d = mech(*parents)
    u = _noise(d, (5,))
    x = d.generate(u)
    assert x.dtype == dtype and x.device.type == device.type  # M6
    tol = _tol(kind, dtype)
    if kind.inverse == "exact":
        torch.testing.assert_close(d.abduct(x), u, **tol)
    if kind.inverse in ("exact", "x"):
        torch.testing.assert_close(d.generate(d.abduct(x)), x, **tol)
    else:  # approximate inversion: bounded mean error
        assert (d.generate(d.abduct(x)) - x).abs().mean() < kind.tol
    if not kind.deterministic:  # a posterior draw: different noise, the same value
        assert not torch.equal(d.abduct(x), d.abduct(x))


@pytest.mark.parametrize("name", NAMES)
def test_m2_shapes(name, device):
    kind, mech, parents = _build(name, device, batch=(4, 3))
    d = mech(*parents)
    batch = torch.Size([4, 3])
    u = _noise(d, batch)
    x = d.generate(u)
    assert x.shape == batch + mech.event_shape
    assert d.abduct(x).shape == u.shape
    assert d.loss(x).shape == batch
    if kind.log_prob:
        assert d.log_prob(x).shape == batch
    if parents:
        assert d.batch_shape == batch


@pytest.mark.parametrize("name", NAMES)
def test_m3_batching_unit_by_unit(name, device):
    kind, mech, parents = _build(name, device)
    d = mech(*parents)
    u = _noise(d, (5,))
    x = d.generate(u)
    ux = d.abduct(x) if kind.deterministic else None
    for i in range(5):
        one = mech(*(p[i : i + 1] for p in parents))
        torch.testing.assert_close(one.generate(u[i : i + 1]), x[i : i + 1], atol=1e-8, rtol=1e-8)
        if ux is not None:
            torch.testing.assert_close(
                one.abduct(x[i : i + 1]), ux[i : i + 1], atol=1e-6, rtol=1e-6
            )
        if kind.log_prob:
            torch.testing.assert_close(
                one.log_prob(x[i : i + 1]), d.log_prob(x)[i : i + 1], atol=1e-8, rtol=1e-8
            )


@pytest.mark.parametrize("name", NAMES)
def test_m4_gradients_reach_every_parameter_and_the_noise(name, device):
    kind, mech, parents = _build(name, device, batch=(8,))
    d = mech(*parents)
    x = d.generate(_noise(d, (8,)))
    mech.train()
    loss = mech(*parents).loss(x).mean()
    assert torch.isfinite(loss)
    if any(True for _ in mech.parameters()):
        loss.backward()
        for pname, p in mech.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    else:
        assert mech.kind == "equation"  # only known equations have no parameters
    if kind.differentiable:
        u = _noise(d, (8,)).clone().requires_grad_()
        mech(*parents).generate(u).sum().backward()
        assert u.grad is not None and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_m5_state_dict_round_trip(name, device):
    _, a, parents = _build(name, device, seed=0)
    _, b, _ = _build(name, device, seed=7)
    for m in (a, b):
        if isinstance(m, ps.FlowMechanism | ps.LocScaleMechanism):
            m.prepare(
                torch.randn(50, *m.event_shape, dtype=torch.float64, device=device),
                *(torch.randn(50, *p.shape[1:], dtype=p.dtype, device=device) for p in parents),
            )
    b.load_state_dict(a.state_dict())
    d_a, d_b = a(*parents), b(*parents)
    u = _noise(d_a, (5,))
    assert torch.equal(d_a.generate(u), d_b.generate(u))


class _Count:
    def __init__(self, mech):
        self.calls = 0
        for m in mech.modules():
            if m is not mech and any(True for _ in m.parameters(recurse=False)):
                m.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


@pytest.mark.parametrize("name", NAMES)
def test_m7_calling_a_mechanism_runs_no_network(name, device):
    _, mech, parents = _build(name, device)
    count = _Count(mech)
    d = mech(*parents)
    assert count.calls == 0
    d.generate(_noise(d, (5,)))
    networks = any(
        m is not mech and any(True for _ in m.parameters(recurse=False)) for m in mech.modules()
    )
    assert count.calls > 0 or not networks
