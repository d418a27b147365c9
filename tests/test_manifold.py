"""Constrained samplers on the antecedent manifold (issue 16): closed-form linear-Gaussian
posteriors, the constraint, reversibility, a flow SCM against exact quadrature and the relaxed
target as σ -> 0, method selection and errors."""

import math
import warnings

import pyro
import pytest
import torch
from scms import Flows, GumbelChild, Linear

import pyro_scm as ps
from pyro_scm.distances import L1, SquaredL2
from pyro_scm.errors import ArgumentError
from pyro_scm.infer import ReducedForm, solve_linearized
from pyro_scm.infer.manifold import ConstrainedHMC, ConstrainedMALA, ManifoldTarget, project


class RandomLinear(ps.SCM):
    """a (scalar) -> b (2-d) -> c (2-d) -> d (scalar), a -> c; random weights and scales.

    x_a = s_a u_a, x_b = w_ba x_a + s_b u_b, x_c = W_cb x_b + w_ca x_a + s_c u_c,
    x_d = w_dc · x_c + s_d u_d.
    """

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
        pos = lambda *s: 0.3 + torch.rand(*s, generator=g)  # noqa: E731
        self.w = {"ba": r(2), "cb": r(2, 2), "ca": r(2), "dc": r(2)}
        self.s = {"a": pos(()), "b": pos(2), "c": pos(2), "d": pos(())}
        w, s = self.w, self.s
        self.a = ps.LocScaleMechanism(scale=s["a"])
        self.b = ps.LocScaleMechanism(
            loc=lambda a: a[..., None] * w["ba"], scale=s["b"], event_shape=(2,)
        )
        self.c = ps.LocScaleMechanism(
            loc=lambda b, a: b @ w["cb"].T + a[..., None] * w["ca"],
            scale=s["c"],
            event_shape=(2,),
        )
        self.d = ps.LocScaleMechanism(loc=lambda c: c @ w["dc"], scale=s["d"])

    def model(self):
        a = pyro.sample("a", self.a())
        b = pyro.sample("b", self.b(a))
        c = pyro.sample("c", self.c(b, a))
        pyro.sample("d", self.d(c))

    def linear_map(self) -> dict[str, torch.Tensor]:
        """node -> the matrix L_node with x_node = L_node u, u = (u_a, u_b, u_c, u_d) (6,)."""
        w, s = self.w, self.s
        La = torch.zeros(1, 6)
        La[0, 0] = s["a"]
        Lb = w["ba"][:, None] * La
        Lb[:, 1:3] += torch.diag(s["b"])
        Lc = w["cb"] @ Lb + w["ca"][:, None] * La
        Lc[:, 3:5] += torch.diag(s["c"])
        Ld = w["dc"][None] @ Lc
        Ld[0, 5] += s["d"]
        return {"a": La, "b": Lb, "c": Lc, "d": Ld}


SLICES = {"a": slice(0, 1), "b": slice(1, 3), "c": slice(3, 5), "d": slice(5, 6)}


def _closed_form(scm: RandomLinear, u_f: torch.Tensor, antecedent: dict, free: list[str]):
    """Mean ``(units, D)`` and covariance ``(units, D, D)`` of N(u_F, ½ I) on the free latents
    conditioned on L_A u = x*_A (the other latents fixed at u_F)."""
    L = scm.linear_map()
    idx = torch.cat([torch.arange(6)[SLICES[n]] for n in free])
    rest = torch.tensor([i for i in range(6) if i not in idx.tolist()], dtype=torch.long)
    A = torch.cat([L[n] for n in antecedent])  # (M, 6)
    target = torch.cat([v.reshape(v.shape[0], -1) for v in antecedent.values()], -1)
    Af, Ar = A[:, idx], A[:, rest]
    S = torch.eye(len(idx)) / 2
    K = S @ Af.T @ torch.linalg.inv(Af @ S @ Af.T)
    m0 = u_f[:, idx]
    rhs = target - u_f[:, rest] @ Ar.T - m0 @ Af.T
    mean = m0 + rhs @ K.T
    cov = S - K @ Af @ S
    return mean, cov.expand(u_f.shape[0], *cov.shape), idx


def _draws(bt, free: list[str]) -> torch.Tensor:
    """``(samples, units, D)`` in the order of the closed form."""
    parts = [bt.noise[n].reshape(*bt.noise[n].shape[:2], -1) for n in free]
    return torch.cat(parts, -1)


CASES = [
    (1, lambda f: {"c": f["c"] + torch.tensor([0.5, -1.0])}),  # vector antecedent: D = 5, M = 2
    (2, lambda f: {"b": f["b"] - 0.5, "d": f["d"] + 0.5}),  # two nodes: D = 6, M = 3
]


@pytest.mark.parametrize("seed, antecedent", CASES)
def test_chmc_matches_the_linear_gaussian_closed_form(seed, antecedent):
    torch.manual_seed(seed)
    scm = RandomLinear(seed)
    factual = {k: v[:, 0] for k, v in scm.sample(3).values.items()}
    ante = antecedent(factual)
    bt = scm.backtrack(
        factual, ante, method="chmc", num_chains=10, num_samples=80, warmup=30, num_steps=2
    )
    free = [n for n in "abcd" if n in ("a", "b", "c") or "d" in ante]
    u = scm.abduct(factual)
    u_f = torch.cat([u[n].reshape(3, -1) for n in "abcd"], -1)
    mean, cov, _ = _closed_form(scm, u_f, ante, free)
    x = _draws(bt, free)  # (800, 3, D)
    ess = min(bt.diagnostics[f"ess_bulk_{n}"].min().item() for n in free)
    assert ess > 300
    # 4 Monte Carlo standard errors from the smallest bulk ESS of any latent
    sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert torch.all((x.mean(0) - mean).abs() <= 4 * sd / math.sqrt(ess) + 1e-4)
    # covariances: squares mix more slowly than the mean (bulk ESS can exceed the draws on
    # antithetic HMC chains), so their standard errors use half the number of draws
    emp = torch.stack([torch.cov(x[:, i].T) for i in range(3)])
    n = x.shape[0] / 2
    se = ((sd[..., :, None] * sd[..., None, :]).square() + cov.square()).sqrt() / math.sqrt(n)
    assert torch.all((emp - cov).abs() <= 4 * se + 1e-4)
    # every draw meets the antecedent to the tolerance, measured on the returned values
    assert bt.sample_stats["violation"].max() <= 1e-4
    assert torch.all(bt.sample_stats["converged"] == 1)
    assert bt.diagnostics["projection_failures"].sum() == 0
    # latents the antecedent does not constrain come from P_B = N(u_F, ½) directly
    if "d" not in ante:
        assert abs(bt.noise["d"].var(0).mean().item() - 0.5) < 0.05


def test_cmala_matches_the_closed_form_and_auto_picks_chmc():
    torch.manual_seed(0)
    scm = RandomLinear(0)
    factual = {k: v[:, 0] for k, v in scm.sample(2).values.items()}
    ante = {"d": factual["d"] + 1.0}  # scalar sink: D = 6, M = 1
    bt = scm.backtrack(factual, ante, method="cmala", num_chains=10, num_samples=100, warmup=50)
    free = ["a", "b", "c", "d"]
    u = scm.abduct(factual)
    u_f = torch.cat([u[n].reshape(2, -1) for n in "abcd"], -1)
    mean, cov, _ = _closed_form(scm, u_f, ante, free)
    x = _draws(bt, free)
    ess = min(bt.diagnostics[f"ess_bulk_{n}"].min().item() for n in free)
    assert ess > 200
    sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert torch.all((x.mean(0) - mean).abs() <= 4 * sd / math.sqrt(ess) + 1e-4)
    assert 0.3 < bt.diagnostics["accept_rate"].mean() < 0.9
    assert bt.sample_stats["violation"].max() <= 1e-4
    emp = torch.stack([torch.cov(x[:, i].T) for i in range(2)])
    se = ((sd[..., :, None] * sd[..., None, :]).square() + cov.square()).sqrt() / math.sqrt(ess)
    assert torch.all((emp - cov).abs() <= 4 * se + 1e-4)
    auto = Linear().backtrack(
        {"x": [0.3], "y": [0.2], "z": [-0.1]},
        {"y": 1.2},
        method="auto",
        num_chains=4,
        num_samples=200,
        warmup=30,
    )
    assert "projection_failure" in auto.sample_stats  # the constrained sampler ran
    assert auto.sample_stats["violation"].max() <= 1e-4


def _flow_factual():
    torch.manual_seed(0)
    scm = Flows().eval()
    f = {k: v[:, 0] for k, v in scm.sample(2).values.items()}
    return scm, f


def _flow_exact(scm, f, target: torch.Tensor, unit: int):
    """E and Var of u_a under the manifold density, by 1-d quadrature over u_a.

    On M = {b(u_a, u_b) = b*}, u_b = abduct(b* | a(u_a)) and the coarea formula gives the
    marginal density of u_a as p(u_a, u_b) / |∂b/∂u_b| (p = exp(−‖u − u_F‖²)).
    """
    u = scm.abduct(f)
    ua = torch.linspace(-6, 6, 4001) * 0.7 + u["a"][unit]
    with torch.no_grad():
        a = scm.a().generate(ua)
    bstar = target[unit].expand(len(ua))
    with torch.enable_grad():
        ub = scm.b(a).abduct(bstar).detach().requires_grad_(True)
        b = scm.b(a).generate(ub)
        (dbdub,) = torch.autograd.grad(b.sum(), ub)
    logw = -((ua - u["a"][unit]) ** 2) - (ub.detach() - u["b"][unit]) ** 2 - dbdub.abs().log()
    w = (logw - logw.max()).exp()
    w = w / w.sum()
    m = (w * ua).sum()
    return m.item(), (w * (ua - m) ** 2).sum().item(), dbdub


def _relaxed_quadrature(scm, f, target: torch.Tensor, unit: int, sigmas: list[float]):
    """E u_a of exp(−‖u − u_F‖²) N(b(u); b*, σ²) by 2-d quadrature, for each σ."""
    u = scm.abduct(f)
    g = torch.linspace(-4, 4, 801)
    ua, ub = torch.meshgrid(g * 0.7 + u["a"][unit], g * 0.7 + u["b"][unit], indexing="ij")
    with torch.no_grad():
        a = scm.a().generate(ua.reshape(-1))
        b = scm.b(a).generate(ub.reshape(-1)).reshape(ua.shape)
    out = []
    for sigma in sigmas:
        logw = -((ua - u["a"][unit]) ** 2) - (ub - u["b"][unit]) ** 2
        logw = logw - 0.5 * ((b - target[unit]) / sigma) ** 2
        w = (logw - logw.max()).exp()
        out.append(((w * ua).sum() / w.sum()).item())
    return out


def test_flow_scm_constrained_samples_match_exact_quadrature_and_the_relaxed_limit():
    scm, f = _flow_factual()
    target = f["b"] + 1.0
    torch.manual_seed(1)
    bt = scm.backtrack(
        f, {"b": target}, method="chmc", num_chains=8, num_samples=50, warmup=30, num_steps=2
    )
    assert bt.sample_stats["violation"].max() <= 1e-4  # on the flow's own output
    for unit in range(2):
        mean, var, dbdub = _flow_exact(scm, f, target, unit)
        x = bt.noise["a"][:, unit]
        ess = bt.diagnostics["ess_bulk_a"][unit].item()
        assert ess > 100
        ess = min(ess, x.numel())
        assert abs(x.mean().item() - mean) <= 4 * math.sqrt(var / ess)
        # variances: standard error from half the draws (squares mix more slowly); a longer
        # run (8 x 300 draws) gave 0.476 / 0.545 against the exact 0.502 / 0.508
        assert abs(x.var().item() / var - 1) <= 4 * math.sqrt(2 / (x.numel() / 2))
        # the relaxed target converges to the same mean as σ -> 0
        errs = [abs(m - mean) for m in _relaxed_quadrature(scm, f, target, unit, [0.3, 0.1, 0.02])]
        assert errs[2] < errs[0] and errs[2] < 0.02
    # the Jacobian factor matters on this flow: |∂b/∂u_b| varies along the manifold
    assert dbdub.abs().max() / dbdub.abs().min() > 1.2


def test_projection_and_rattle_steps_are_reversible():
    scm, f = _flow_factual()
    rf = ReducedForm(scm, f, {"c": f["c"] + 0.3})
    sol = solve_linearized(rf, SquaredL2())
    target = ManifoldTarget(rf, SquaredL2())
    kernel = ConstrainedHMC(target, step_size=0.2, num_steps=1, tol=1e-6)
    kernel.initial_params = {"z": sol.z.expand(3, *sol.z.shape).clone()}
    kernel.setup(0)
    z = kernel.initial_params["z"]
    state = kernel._state(z)
    assert state["J"].shape == (3, 2, 2, 4)
    torch.manual_seed(0)
    p = torch.randn_like(z)
    from pyro_scm.infer.manifold import tangent

    p = tangent(p, state["J"])
    h = torch.full(z.shape[:2], 0.2)
    ok = torch.ones(z.shape[:2], dtype=torch.bool)
    new, p1, good, finite = kernel.step(state, p, h, ok)
    assert good.all() and finite.all()
    assert target.residual(new["z"]).abs().max() <= 1e-6
    assert (new["z"] - z).abs().max() > 1e-2  # it moved
    back, p2, good, _ = kernel.step(new, -p1, h, ok)
    assert good.all()
    torch.testing.assert_close(back["z"], z, atol=1e-4, rtol=0)
    torch.testing.assert_close(p2, -p, atol=1e-3, rtol=0)
    # the projection itself: a point off M projects onto M, and a too-tight cap is a failure
    y = z + 0.05 * torch.randn_like(z)
    q, done = project(target.residual, y, state["J"], 1e-6, 30)
    assert done.all() and target.residual(q).abs().max() <= 1e-6
    _, done = project(target.residual, y, state["J"], 1e-12, 1)
    assert not done.any()


def _rattle_setup(scm, f, antecedent, step=0.3, chains=3):
    rf = ReducedForm(scm, f, antecedent)
    sol = solve_linearized(rf, SquaredL2())
    target = ManifoldTarget(rf, SquaredL2())
    kernel = ConstrainedHMC(target, step_size=step, num_steps=1, tol=1e-6)
    kernel.initial_params = {"z": sol.z.expand(chains, *sol.z.shape).clone()}
    kernel.setup(0)
    z = kernel.initial_params["z"]
    state = kernel._state(z)
    from pyro_scm.infer.manifold import tangent

    torch.manual_seed(1)
    p = tangent(torch.randn_like(z), state["J"])
    h = torch.full(z.shape[:2], step)
    return target, kernel, state, p, h


def test_rattle_step_starts_its_projections_on_the_tangent_plane():
    # the step lands where the textbook RATTLE position update q + h (p + ½ h ∇log p) does,
    # projected along J(q)ᵀ: the gradient's normal part only shifts the multiplier
    scm, f = _flow_factual()
    target, kernel, state, p, h = _rattle_setup(scm, f, {"c": f["c"] + 0.3}, step=0.1)
    ok = torch.ones(h.shape, dtype=torch.bool)
    new, _, good, _ = kernel.step(state, p, h, ok)
    assert good.all()
    y = state["z"] + h[..., None] * (p + 0.5 * h[..., None] * state["g"])
    ref, done = project(target.residual, y, state["J"], 1e-6, 50)
    assert done.all()
    torch.testing.assert_close(new["z"], ref, atol=1e-4, rtol=0)
    # on an affine constraint a tangent start is already on M: one residual per projection
    # (forward and reverse), where a start off the tangent plane needs two each; the forward
    # projection's residual pass also gives the Jacobian at the new point
    lin = Linear()
    fl = {k: torch.tensor([0.3, -0.2]) for k in ("x", "y", "z")}
    target, kernel, state, p, h = _rattle_setup(lin, fl, {"y": torch.tensor([1.0, 0.5])})
    calls = []
    residual = target.rf.residual
    target.rf.residual = lambda z: calls.append(1) or residual(z)
    new, _, good, _ = kernel.step(state, p, h, torch.ones(h.shape, dtype=torch.bool))
    assert good.all() and len(calls) == 2
    assert target.residual(new["z"]).abs().max() <= 1e-6


def test_chmc_default_is_two_rattle_steps_per_draw(monkeypatch):
    # each draw runs num_steps RATTLE steps; on an affine constraint every step costs one
    # residual pass (its forward projection, whose graph gives the Jacobian) and the reverse
    # checks of all steps one batched pass: num_steps + 1 model runs per draw
    steps, runs = [], []
    advance = ConstrainedHMC.advance
    monkeypatch.setattr(
        ConstrainedHMC, "advance", lambda self, *a: steps.append(1) or advance(self, *a)
    )
    residual = ReducedForm.residual
    monkeypatch.setattr(
        ReducedForm, "residual", lambda self, z: runs.append(z.shape[:-1]) or residual(self, z)
    )
    f = {"x": [0.3], "y": [0.2], "z": [-0.1]}
    for num_steps, kw in ((2, {}), (4, {"num_steps": 4})):
        steps.clear()
        with pytest.warns(ps.infer.SamplerWarning):  # three draws cannot have converged
            Linear().backtrack(
                f, {"y": 1.2}, method="chmc", num_samples=3, warmup=0, num_chains=2, **kw
            )
        assert len(steps) == 3 * num_steps
        # the last draw's runs: num_steps forward passes, then one (num_steps, chains, 1) pass
        draw = runs[-(num_steps + 1) :]
        assert draw[:-1] == [torch.Size([2, 1])] * num_steps
        assert draw[-1] == torch.Size([num_steps, 2, 1])


class Bent(ps.SCM):
    """x = u_x; y = tanh(4 x) + 0.1 x + 0.3 u_y: a sharply curved constraint."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.y = ps.LocScaleMechanism(loc=lambda x: torch.tanh(4 * x) + 0.1 * x, scale=0.3)

    def model(self):
        x = pyro.sample("x", self.x())
        pyro.sample("y", self.y(x))


def test_projection_failures_are_counted_and_reported():
    # a huge fixed step makes the Newton projection fail on a curved manifold
    scm = Bent()
    f = {"x": torch.tensor([0.1, -0.2]), "y": torch.tensor([0.3, 0.0])}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        bt = scm.backtrack(f, {"y": 0.5}, method="cmala", step_size=100.0, num_samples=20, warmup=0)
    messages = [str(w.message) for w in rec if issubclass(w.category, ps.infer.SamplerWarning)]
    assert any("projection failures" in m for m in messages)
    assert bt.diagnostics["projection_failures"].min() > 2
    assert bt.sample_stats["projection_failure"].shape == (20, 2)
    for v in bt.values.values():
        assert torch.isfinite(v).all()


@pytest.mark.filterwarnings("ignore::pyro_scm.infer.SamplerWarning")  # 5 draws: R-hat
def test_where_constrained_samplers_do_not_apply():
    torch.manual_seed(0)
    scm = GumbelChild()
    f = {k: v[:, 0] for k, v in scm.sample(4).values.items()}
    with pytest.raises(ArgumentError, match="categorical nodes"):
        scm.backtrack(f, {"y": f["y"] + 1.0}, method="chmc")
    # auto falls back to the relaxed HMC kernel: no projection statistics
    bt = scm.backtrack(f, {"c": 1}, method="auto", num_chains=2, num_samples=5, warmup=5)
    assert "projection_failure" not in bt.sample_stats
    lin = Linear()
    fl = {"x": [0.3], "y": [0.2], "z": [-0.1]}
    with pytest.raises(ArgumentError, match="no free direction"):
        lin.backtrack(fl, {"x": 1.0}, method="cmala")
    with pytest.raises(ArgumentError, match="cannot sample"):
        lin.backtrack(fl, {"y": 1.0}, method="chmc", distance=L1(), prior=True)


def test_constrained_kernel_arguments_are_checked():
    scm, f = _flow_factual()
    rf = ReducedForm(scm, f, {"b": f["b"]})
    target = ManifoldTarget(rf, SquaredL2())
    with pytest.raises(ArgumentError, match="num_steps"):
        ConstrainedHMC(target, num_steps=0)
    with pytest.raises(ArgumentError, match="step_size"):
        ConstrainedMALA(target, step_size=-1.0)
    with pytest.raises(ArgumentError, match="tol"):
        ConstrainedMALA(target, tol=0.0)
    with pytest.raises(ArgumentError, match="max_newton"):
        ConstrainedHMC(target, max_newton=0)


def _jacobian_cases():
    scm, f = _flow_factual()
    yield ReducedForm(scm, f, {"c": f["c"] + 0.3})  # flows, M = 2, D = 4
    torch.manual_seed(0)
    gumbel = GumbelChild()
    fg = {k: v[:, 0] for k, v in gumbel.sample(3).values.items()}
    yield ReducedForm(gumbel, fg, {"y": fg["y"] + 1.0})  # through the relaxed Gumbel-max
    yield ReducedForm(gumbel, fg, {"c": 1 - fg["c"]})  # the hinge of a categorical antecedent


@pytest.mark.parametrize("case", range(3))
def test_batched_reverse_mode_jacobian_equals_vmap_jacrev(case):
    rf = list(_jacobian_cases())[case]
    target = ManifoldTarget(rf, SquaredL2())
    torch.manual_seed(case)
    z = rf.z_factual + 0.5 * torch.randn(3, *rf.z_factual.shape)  # (chains, units, D)
    r, J = target.jacobian(z)
    r_ref, J_ref = rf.jacobian(z)
    assert J.shape == (3, rf.units, rf.constraint_dim, rf.dim)
    assert J.abs().max() > 0.1  # not a trivially zero Jacobian
    torch.testing.assert_close(r, r_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(J, J_ref, atol=1e-5, rtol=1e-4)
    if case == 2:  # a hinge is flat where it holds: no projection along its Jacobian
        return
    # the projection's graph gives the Jacobian and residual at the point it returns, with or
    # without the graph at its first pass, at the same point as a projection without graph
    _, J0 = target.jacobian(rf.z_factual.expand_as(z))
    y = rf.z_factual + 0.05 * torch.randn_like(z)
    q, done = project(target.residual, y, J0, 1e-6, 30)
    for graph_from in (0, 1, 5):
        info = {}
        q1, done1, J1, r1 = project(
            target.residual, y, J0, 1e-6, 30, graph=target.residual_graph,
            graph_from=graph_from, info=info,
        )  # fmt: skip
        assert torch.equal(done1, done) and info["evaluations"] >= 1
        torch.testing.assert_close(q1, q, atol=0, rtol=0)
        r_at, J_at = target.jacobian(q1)
        torch.testing.assert_close(J1[done], J_at[done], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(r1[done], r_at[done], atol=1e-7, rtol=0)


def test_certified_reverse_checks_agree_with_evaluated_ones():
    # the first-order certificate skips a residual pass but decides as the evaluated check
    scm, f = _flow_factual()
    target, _, _, p, h = _rattle_setup(scm, f, {"c": f["c"] + 0.3}, step=0.2, chains=8)
    # a tolerance well above float32 noise (the residuals of tol = 1e-6 sit near 1e-6 already)
    kernel = ConstrainedHMC(target, step_size=0.2, num_steps=1, tol=1e-4)
    sol = solve_linearized(target.rf, SquaredL2())
    kernel.initial_params = {"z": sol.z.expand(8, *sol.z.shape).clone()}
    kernel.setup(0)
    state = kernel._state(kernel.initial_params["z"])
    ok = torch.ones(h.shape, dtype=torch.bool)
    _, _, good, finite, reverse = kernel.advance(state, p, h, ok)
    assert good.all() and finite.all()
    calls = []
    residual = target.rf.residual
    target.rf.residual = lambda z: calls.append(1) or residual(z)
    certified = kernel._reverse_ok(*reverse)
    n_certified = len(calls)
    q, r0, J0, q1, J1, v1, active = reverse
    back, done = project(target.residual, q1 + v1, J1, kernel.tol, kernel.max_newton, active)
    evaluated = done & ((back - q).abs().amax(-1) <= kernel.reverse_tol)
    assert torch.equal(certified, evaluated) and certified.all()
    assert n_certified < len(calls) - n_certified  # it saved at least one pass
    # a reverse move that does not return to the start fails either way
    # (shifted by ten reverse tolerances: a shift of one, 0.01, sat on the threshold)
    wrong = (q + 10 * kernel.reverse_tol, r0, J0, q1, J1, v1, active)
    assert not kernel._reverse_ok(*wrong).any()
