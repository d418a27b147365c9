"""Fixed parameters while samplers run the program: a root flow's transform is built once,
with the same values and noise gradients as without, and the cache never outlives the block."""

import contextlib
import sys
import warnings

import pytest
import torch
import zuko
from scms import Flows

import pyro_scm as ps
from pyro_scm.errors import ArgumentError
from pyro_scm.infer.fixed import fixed_parameters


def _root_and_child():
    torch.manual_seed(0)
    root = ps.FlowMechanism(zuko.flows.NSF(features=1, context=0))
    child = ps.FlowMechanism(zuko.flows.MAF(features=1, context=1))
    with torch.no_grad():  # non-trivial weights: the tails of a fresh flow start at zero
        for p in list(root.parameters()) + list(child.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    return root, child


def _outputs(root, child, u):
    u = u.detach().requires_grad_(True)
    a = root().generate(u)
    b = child(a).generate(u)
    (grad,) = torch.autograd.grad((a**2 + b).sum(), u)
    return a.detach(), b.detach(), root().abduct(a.detach()), root().log_prob(a.detach()), grad


def test_root_transform_is_built_once_with_the_same_values_and_noise_gradients(monkeypatch):
    root, child = _root_and_child()
    u = torch.randn(7)
    ref = _outputs(root, child, u)
    builds = {"root": 0, "child": 0}

    def counting(name, bijector):
        def build(c):
            builds[name] += 1
            return bijector(c)

        return build

    for name, mech in (("root", root), ("child", child)):
        monkeypatch.setattr(mech, "_bijector", counting(name, mech._bijector))
    module = torch.nn.ModuleDict({"a": root, "b": child})
    with fixed_parameters(module):
        for _ in range(3):
            out = _outputs(root, child, u)
            for x, y in zip(out, ref, strict=True):
                torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)
        assert builds["root"] == 1  # once, then reused
        assert builds["child"] == 3 * 1  # a child depends on its parents: built at every run
        cached = root()
        cached.generate(u)
        assert not any(t.requires_grad for t in cached.transform.affine)
    assert root._root_cache is None  # nothing outlives the block


def test_parameter_changes_after_the_block_are_seen_and_blocks_nest():
    root, _ = _root_and_child()
    u = torch.randn(5)
    module = torch.nn.ModuleDict({"a": root})
    with fixed_parameters(module):
        before = root().generate(u)
        with fixed_parameters(module):
            torch.testing.assert_close(root().generate(u), before)
        assert root._root_cache is not None and "built" in root._root_cache  # outer restored
    with torch.no_grad():
        root.tail_params.add_(0.5)
    after = root().generate(u)
    assert (after - before).abs().min() > 0.1
    with fixed_parameters(module):
        torch.testing.assert_close(root().generate(u), after)
    # with grad to the weights (training), no cache is involved
    root().generate(u).sum().backward()
    assert root.tail_params.grad is not None and root.tail_params.grad.abs().sum() > 0


def test_backtracking_draws_are_identical_with_and_without_fixed_parameters(monkeypatch):
    torch.manual_seed(0)
    scm = Flows().eval()
    f = {k: v[:, 0] for k, v in scm.sample(2).values.items()}
    kw = dict(method="chmc", num_chains=2, num_samples=20, warmup=10)
    draws = []
    backtrack = sys.modules["pyro_scm.infer.backtrack"]
    for fixed in (True, False):
        if not fixed:
            monkeypatch.setattr(backtrack, "fixed_parameters", lambda m: contextlib.nullcontext())
        torch.manual_seed(3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ps.infer.SamplerWarning)  # 20 draws: R-hat
            draws.append(scm.backtrack(f, {"b": f["b"] + 1.0}, **kw).noise)
    for n in draws[0]:
        torch.testing.assert_close(draws[0][n], draws[1][n], atol=1e-5, rtol=1e-5)
    assert draws[0]["a"].std() > 0.05  # it moved


def test_fixed_parameters_needs_a_module():
    with (
        pytest.raises(ArgumentError, match=r"torch\.nn\.Module, got dict"),
        fixed_parameters({"a": 1}),
    ):
        pass
