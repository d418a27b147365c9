r"""Constrained samplers on the antecedent manifold M = {z : F_A(z) = x*_A}.

Stochastic DeepBC targets u* ~ P_B(u* | u_F) δ(F_A(u*) − x*_A). By the coarea formula the
delta, as a measure on M, has the density (with respect to the surface measure σ of M)

    π_M(z) ∝ p(z) · det(J(z) J(z)ᵀ)^(−1/2),   p(z) = exp(−Σ_k λ_k d_k(z_k, z_F,k)) [· p_prior(z)],

with J = ∂F_A/∂z the ``(M, D)`` Jacobian of the antecedent in the free latents. The Jacobian
factor is constant when F_A is linear (linear-Gaussian SCMs: π_M is then P_B restricted to the
affine subspace) and matters wherever the curvature of F_A changes |J| along M; the relaxed
target exp(−‖F_A(z) − x*_A‖² / 2σ²) p(z) converges to π_M (factor included) as σ → 0.

Both kernels move on M and need no σ:

- :class:`ConstrainedHMC` (``method="chmc"``): RATTLE, the constrained leapfrog integrator.
  Momenta live in the tangent space T_z = ker J(z); each position step
  q₁ = q + h (p + ½ h ∇log p(q)) + J(q)ᵀ a is projected back onto M by solving F_A(q₁) = x*_A
  for the multiplier a, and the new momentum is projected onto T_{q₁}. The dynamics use
  ∇ log p only; the exact log π_M (with the Jacobian factor) enters the Metropolis ratio,
  which keeps the chain exact because RATTLE is volume-preserving and reversible for any
  potential.
- :class:`ConstrainedMALA` (``method="cmala"``): a tangent Langevin proposal
  v ~ N(ε P_z ∇log p(z), 2ε P_z), projected onto M along J(z)ᵀ (Zappa, Holmes-Cerfon and
  Goodman 2018, with a drift); ``drift=False`` gives their random walk.

Projection is a quasi-Newton solve a ← a − (J₀ J₀ᵀ)⁻¹ (F_A(y + J₀ᵀ a) − x*_A) from a = 0 with
tolerance ``tol`` (max abs residual) and at most ``max_newton`` iterations. Every move is checked
for reversibility (Brubaker, Salzmann and Urtasun 2012; Lelièvre, Rousset and Stoltz 2019): the
reverse move from the new point must project back to the start (within ``100 tol`` in every
coordinate), else the proposal is rejected. A failed forward or reverse projection rejects the
proposal and is counted in ``projection_failure``. Everything is batched over chains and units
(the state is ``(chains, units, D)``), with acceptance and step-size adaptation per chain and
unit.

Cost: a model run (one residual pass) dominates everything else. A forward projection's last
pass is recorded with autograd, and its graph gives J at the new point (M backward passes; no
separate Jacobian run). The reverse checks of a chmc trajectory do not steer it, so they run
after it as one batched projection over its steps; the start of a reverse move is a known
root, and its last Newton iterate is certified by a first-order expansion around it (with the
curvature seen along the move) instead of a residual pass. On a nearly affine constraint a
RATTLE step then costs two passes and a draw of L steps 2L + 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..distances import Distance
from ..errors import ArgumentError
from .kernels import DIVERGENCE_ENERGY, MAX_LEAPFROG, _BatchedKernel
from .reduced_form import ReducedForm

__all__ = ["ConstrainedHMC", "ConstrainedMALA", "ManifoldTarget", "project"]


def _bmv(A: Tensor, x: Tensor) -> Tensor:
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def _mtv(J: Tensor, a: Tensor) -> Tensor:
    """Jᵀ a: ``(*, M, D)``, ``(*, M)`` -> ``(*, D)``."""
    return (J.transpose(-1, -2) @ a.unsqueeze(-1)).squeeze(-1)


class ManifoldTarget:
    """log p, its gradient, and the constraint F_A(z) − x*_A with Jacobians, on ``(C, units, D)``.

    Args:
        rf: the reduced form (free latents z, constraint).
        distance: the backtracking distance (P_B ∝ exp(−Σ λ d)).
        prior: multiply in the standard normal exogenous prior.
    """

    def __init__(self, rf: ReducedForm, distance: Distance, prior: bool = False):
        self.rf, self.distance, self.prior = rf, distance, prior
        self._dims = rf.event_dims()

    def log_p(self, z: Tensor) -> Tensor:
        """log p(z) up to a constant: ``(*batch, units)``."""
        u = self.rf.unpack(z)
        u_f = {n: v.expand_as(u[n]) for n, v in self.rf.unpack(self.rf.z_factual).items()}
        lp = -self.distance.total(u, u_f, self._dims)
        if self.prior:
            lp = lp - 0.5 * z.square().sum(-1)
        return lp

    def log_p_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """log p ``(*batch, units)`` and ∇ log p ``(*batch, units, D)`` (no model run)."""
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            lp = self.log_p(leaf)
            (g,) = torch.autograd.grad(lp.sum(), leaf)
        return lp.detach(), g.detach()

    def residual(self, z: Tensor) -> Tensor:
        """F_A(z) − x*_A ``(*batch, units, M)``."""
        with torch.no_grad():
            return self.rf.residual(z)

    def jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Residual ``(*batch, units, M)`` and Jacobian ``(*batch, units, M, D)``.

        One batched forward pass and M backward passes: row m of unit b's Jacobian is the
        gradient of Σ_b r_{b,m} in z_b, exact because every unit (and chain) runs the program
        independently of the others.
        """
        leaf, r = self.residual_graph(z)
        return r.detach(), jacobian_rows(r, leaf)

    def residual_graph(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """A leaf copy of ``z`` and the residual at it with its autograd graph, for
        :func:`jacobian_rows`: the residual's one forward pass serves both the convergence
        test of a projection and the Jacobian at the projected point."""
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            return leaf, self.rf.residual(leaf)


def jacobian_rows(r: Tensor, leaf: Tensor) -> Tensor:
    """The per-element Jacobian ``(*b, M, D)`` of ``r`` ``(*b, M)`` in ``leaf`` ``(*b, D)``,
    from M backward passes of the batch sums (exact when the elements are independent)."""
    M = r.shape[-1]
    with torch.enable_grad():
        rows = [
            torch.autograd.grad(r[..., m].sum(), leaf, retain_graph=m < M - 1)[0] for m in range(M)
        ]
    return torch.stack(rows, -2)


def project(
    residual: Callable[[Tensor], Tensor],
    y: Tensor,
    J0: Tensor,
    tol: float,
    max_newton: int,
    active: Tensor | None = None,
    graph: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    certify: Callable[[Tensor], Tensor] | None = None,
    graph_from: int = 0,
    info: dict | None = None,
) -> tuple[Tensor, ...]:
    """Solve F(y + J0ᵀ a) = 0 for a by quasi-Newton from a = 0, per batch element.

    Args:
        residual: z ``(*b, D)`` -> F(z) ``(*b, M)``.
        y: the point to project ``(*b, D)``.
        J0: the Jacobian fixing the projection direction ``(*b, M, D)``.
        tol: convergence when max |F| <= tol.
        max_newton: iteration cap.
        active: ``(*b,)`` elements to project (the others are returned as failed, unchanged).
        graph: z -> (leaf, F(leaf) with its autograd graph) (e.g.
            :meth:`ManifoldTarget.residual_graph`); when given, every residual is evaluated
            through it and the Jacobian at the returned point comes from the last evaluation's
            graph (the point where every converged element stopped), so no extra forward pass.
        certify: z ``(*b, D)`` -> ``(*b,)`` elements whose max |F(z)| <= tol is known without
            evaluating F (e.g. from a first-order expansion around a known root); an iterate
            certified after a Newton step is converged, and when every unconverged element is
            certified no residual is evaluated.
        graph_from: with ``graph``, evaluate the first ``graph_from`` residuals without a
            graph (cheaper; the result is the same, at one more residual pass when the solve
            stops earlier).
        info: filled with ``evaluations``, the number of residual passes.

    Returns:
        the projected point ``(*b, D)`` and whether each element converged ``(*b,)``; with
        ``graph`` also the Jacobian ``(*b, M, D)`` and the residual ``(*b, M)`` there.
    """
    batch = y.shape[:-1]
    active = torch.ones(batch, dtype=torch.bool, device=y.device) if active is None else active
    G = J0 @ J0.transpose(-1, -2)
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    G = torch.where(active[..., None, None], G, eye)  # inactive elements get a harmless system
    a = torch.zeros(*batch, G.shape[-1], dtype=y.dtype, device=y.device)
    done = torch.zeros(batch, dtype=torch.bool, device=y.device)
    failed = ~active
    z = at = y
    leaf = r_graph = r = None
    evaluations = 0
    for k in range(max_newton + 1):
        z = y + _mtv(J0, a)  # done elements keep their a: the last evaluation is at their z
        ok = torch.isfinite(z).all(-1)
        failed = failed | ~ok
        if certify is not None and k > 0:
            done = done | (~failed & certify(z))
            if not bool((~done & ~failed).any()):
                break
        at = torch.where((ok & ~failed)[..., None], z, y.nan_to_num(0.0, 0.0, 0.0))
        if graph is None or k < graph_from:
            r, leaf = residual(at), None
        else:
            leaf, r_graph = graph(at)
            r = r_graph.detach()
        evaluations = k + 1
        finite = torch.isfinite(r).all(-1)
        failed = failed | ~finite
        done = done | (~failed & (r.abs().amax(-1) <= tol))
        todo = ~done & ~failed
        if not bool(todo.any()):
            break
        step = torch.linalg.solve(G, torch.where(todo[..., None], r, torch.zeros_like(r)))
        a = a - torch.where(todo[..., None], step, torch.zeros_like(step))
    if graph is not None and leaf is None:  # stopped before the first graph evaluation
        leaf, r_graph = graph(at)
        r, evaluations = r_graph.detach(), evaluations + 1
    if info is not None:
        info["evaluations"] = evaluations
    if graph is None:
        return z, done & ~failed
    J = torch.where(failed[..., None, None], J0, jacobian_rows(r_graph, leaf))
    return z, done & ~failed, J, r


def tangent(v: Tensor, J: Tensor) -> Tensor:
    """The projection of ``v`` ``(*b, D)`` onto ker J: v − Jᵀ (J Jᵀ)⁻¹ J v."""
    G = J @ J.transpose(-1, -2)
    return v - _mtv(J, torch.linalg.solve(G, _bmv(J, v)))


def log_volume(J: Tensor) -> Tensor:
    """½ log det(J Jᵀ) ``(*b,)``: minus the log Jacobian factor of the manifold density."""
    return 0.5 * torch.linalg.slogdet(J @ J.transpose(-1, -2))[1]


class _ConstrainedKernel(_BatchedKernel):
    """Shared state of constrained kernels: one site ``z`` ``(chains, units, D)`` on M; the
    step size is adapted per unit from the acceptance averaged over its chains."""

    pool_chains = True

    def __init__(
        self,
        target: ManifoldTarget,
        step_size: float,
        tol: float,
        max_newton: int,
        adapt_step_size: bool,
        target_accept: float,
    ):
        super().__init__(None, step_size, batch_ndims=2)
        if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
            raise ArgumentError(f"tol must be a finite number > 0, got {tol!r}")
        if isinstance(max_newton, bool) or not isinstance(max_newton, int) or max_newton < 1:
            raise ArgumentError(f"max_newton must be an int >= 1, got {max_newton!r}")
        self.target, self.tol, self.max_newton = target, tol, max_newton
        self.reverse_tol = 100 * tol
        self.adapt, self.target_accept = adapt_step_size, target_accept

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        if self._initial_params is None:
            raise ArgumentError("constrained kernels need initial_params {'z': (C, units, D)}")
        self._warmup_steps, self._t = warmup_steps, 0
        z = self._initial_params["z"]
        batch = z.shape[:2]
        step = torch.as_tensor(self._step_size0, dtype=z.dtype, device=z.device)
        self.step_size = step.expand(batch).clone()
        self._log_step_bar = self.step_size.log()
        self.accept_prob = torch.ones(batch, dtype=z.dtype, device=z.device)
        self._accept_sum = torch.zeros_like(self.accept_prob)
        self.diverging = torch.zeros(batch, dtype=torch.bool, device=z.device)
        self.projection_failure = torch.zeros(batch, dtype=torch.bool, device=z.device)
        # start exactly on M: project the start along its own normal space
        _, J = self.target.jacobian(z)
        z, ok = project(self.target.residual, z, J, self.tol, self.max_newton)
        self.on_manifold = ok  # elements that could not start on M never move
        self._last_evaluations = 1
        self._initial_params = {"z": z}
        self._cache = None

    def _state(self, z: Tensor) -> dict[str, Tensor]:
        if self._cache is not None and self._cache["z"] is z:
            return self._cache
        lp, g = self.target.log_p_and_grad(z)
        r, J = self.target.jacobian(z)
        return {"z": z, "r": r, "lp": lp, "g": g, "J": J, "logvol": log_volume(J)}

    def _finish(self, z, new, accept_prob, ok, proj_ok, state) -> dict[str, Tensor]:
        accept_prob = torch.where(ok & proj_ok & self.on_manifold, accept_prob, 0.0)
        accept = torch.rand_like(accept_prob) < accept_prob
        keep = {k: torch.where(self._expand(accept, v), new[k], state[k]) for k, v in state.items()}
        keep["z"] = torch.where(accept[..., None], new["z"], z)
        self._cache = keep
        self.accept_prob = accept_prob
        self.diverging = ~ok & self.on_manifold
        self.projection_failure = ~proj_ok | ~self.on_manifold
        self._accept_sum += accept_prob
        self._t += 1
        self._adapt(accept_prob)
        return {"z": keep["z"]}

    def _move(
        self, z: Tensor, J: Tensor, v: Tensor, active: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Project z + v along J(z)ᵀ onto M: ``(z₁, ok, J(z₁), F(z₁) − x*)``, the Jacobian
        from the projection's last residual pass; ``v`` is any displacement whose tangent part
        is the move."""
        t, info = self.target, {}
        # the graph (for J(z₁)) is needed only at the last residual pass: skip it at the first
        # pass unless the previous projection stopped there (a wrong guess costs time, not
        # accuracy)
        out = project(
            t.residual,
            z + v,
            J,
            self.tol,
            self.max_newton,
            active,
            t.residual_graph,
            graph_from=min(self._last_evaluations - 1, 1),
            info=info,
        )
        self._last_evaluations = info["evaluations"]
        return out

    def _reverse_ok(
        self, z0: Tensor, r0: Tensor, J0: Tensor, z1: Tensor, J1: Tensor, v1: Tensor, ok: Tensor
    ) -> Tensor:
        """Whether projecting z₁ + v₁ along J(z₁)ᵀ lands on z₀ (the reverse move exists); any
        leading batch dims, e.g. the steps of a trajectory checked in one batched solve.

        z₀ is a root (residual r₀, Jacobian J₀), so for a Newton iterate z = z₀ + d,
        F(z) − x* = r₀ + J₀ d + R with |R| <= ½ |∂²F| |d|². With κ = max |J₁ − J₀| / max |z₁ − z₀|,
        the curvature seen along the move, an iterate with max |d| <= 10 tol and
        max |r₀ + J₀ d| + κ D max |d|² <= tol / 2 has max |F(z) − x*| <= tol (unless the
        curvature near z₀ exceeds twice what the move saw, by a margin of tol / 2 against a
        remainder of order κ tol²), so the solve stops there, within the reverse tolerance of
        z₀, without evaluating F at it.
        """
        dz = (z1 - z0).abs().amax(-1)
        kappa = (J1 - J0).abs().amax((-2, -1)) / dz.clamp_min(torch.finfo(dz.dtype).tiny)
        D = z0.shape[-1]

        def certify(z: Tensor) -> Tensor:
            d = z - z0
            dmax = d.abs().amax(-1)
            bound = (r0 + _bmv(J0, d)).abs().amax(-1) + kappa * D * dmax.square()
            return (dmax <= 10 * self.tol) & (bound <= 0.5 * self.tol)

        back, done = project(
            self.target.residual, z1 + v1, J1, self.tol, self.max_newton, ok, certify=certify
        )
        return ok & done & ((back - z0).abs().amax(-1) <= self.reverse_tol)


class ConstrainedHMC(_ConstrainedKernel):
    """Constrained HMC (RATTLE) on the antecedent manifold, batched over chains and units.

    Args:
        target: the manifold target.
        step_size: initial leapfrog step h > 0 (adapted per chain and unit during warmup).
        num_steps: RATTLE steps per draw, 1 to :data:`~pyro_scm.infer.kernels.MAX_LEAPFROG`.
        tol: projection tolerance (max |F_A − x*_A|).
        max_newton: projection iteration cap.
        adapt_step_size: adapt h toward ``target_accept``.
        target_accept: the acceptance rate adaptation aims at.

    Each draw and element draws its step uniformly in [h/2, 3h/2]: random trajectory lengths
    avoid both periodic orbits and the antithetic oscillation of a fixed length on Gaussian
    targets (which makes draws of |z − median| positively correlated). Per-element statistics
    of the latest draw: ``accept_prob``, ``step_size``, ``diverging``, ``projection_failure``.
    """

    def __init__(
        self,
        target: ManifoldTarget,
        step_size: float = 0.3,
        num_steps: int = 2,
        tol: float = 1e-5,
        max_newton: int = 30,
        adapt_step_size: bool = True,
        target_accept: float = 0.8,
    ):
        super().__init__(target, step_size, tol, max_newton, adapt_step_size, target_accept)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise ArgumentError(f"num_steps must be an int, got {num_steps!r}")
        if not 1 <= num_steps <= MAX_LEAPFROG:
            raise ArgumentError(f"num_steps must be in [1, {MAX_LEAPFROG}], got {num_steps}")
        self.num_steps = num_steps

    def advance(
        self, state: dict, p: Tensor, h: Tensor, ok: Tensor
    ) -> tuple[dict, Tensor, Tensor, Tensor, tuple]:
        """One RATTLE step without its reverse check: the new state and momentum, whether the
        forward projection passed and whether the new state is finite (each
        ``(chains, units)``; failed elements keep ``state``), and the arguments of the reverse
        check ``(q, q₁, J(q₁), v₁, active)`` for :meth:`_reverse_ok`."""
        q, J = state["z"], state["J"]
        hh = h[..., None]
        # the normal part of ½h²∇log p lies in the span of J(q)ᵀ, absorbed by the projection's
        # multiplier: starting the solve from the tangent step finds the same point (one
        # residual on an affine constraint, fewer Newton iterations on a curved one)
        v = p + 0.5 * hh * tangent(state["g"], J)
        q1, ok, J1, r1 = self._move(q, J, hh * v, ok)
        p_half = (q1 - q) / hh
        lp1, g1 = self.target.log_p_and_grad(q1)
        p1 = tangent(p_half + 0.5 * hh * g1, J1)
        new = {"z": q1, "r": r1, "lp": lp1, "g": g1, "J": J1, "logvol": log_volume(J1)}
        finite = torch.isfinite(q1).all(-1) & torch.isfinite(p1).all(-1) & torch.isfinite(lp1)
        good = ok & finite
        new = {k: torch.where(self._expand(good, v), v, state[k]) for k, v in new.items()}
        # reverse: from (q1, −p1) the position step must land on q
        reverse = (q, state["r"], J, q1, J1, hh * (-p1 + 0.5 * hh * tangent(g1, J1)), good)
        p1 = torch.where(good[..., None], p1, p)
        return new, p1, ok, finite, reverse

    def step(
        self, state: dict, p: Tensor, h: Tensor, ok: Tensor
    ) -> tuple[dict, Tensor, Tensor, Tensor]:
        """One RATTLE step from ``state`` with tangent momentum ``p``: the new state and
        momentum, whether the projections and the reverse check passed, and whether the new
        state is finite (each ``(chains, units)``); failed elements keep ``state``."""
        new, p1, ok, finite, reverse = self.advance(state, p, h, ok)
        back = self._reverse_ok(*reverse)
        good = back | ~reverse[-1]  # elements without a reverse check failed already
        ok = ok & good
        keep = ok & finite
        new = {k: torch.where(self._expand(keep, v), v, state[k]) for k, v in new.items()}
        return new, torch.where(keep[..., None], p1, p), ok, finite

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One constrained transition of every chain and unit; returns the new state.

        The reverse checks of all ``num_steps`` steps run after the trajectory as one batched
        projection ``(num_steps, chains, units, D)``: a step's check decides only whether the
        proposal may be accepted, not where the trajectory goes (an element whose check fails
        is rejected, as if it had stopped there).
        """
        z = params["z"]
        state = self._state(z)
        h = self.step_size * (0.5 + torch.rand_like(self.step_size))
        p = tangent(torch.randn_like(z), state["J"])
        h0 = -state["lp"] + state["logvol"] + 0.5 * p.square().sum(-1)
        cur, mom = state, p
        proj_ok = self.on_manifold.clone()
        fin = torch.ones_like(proj_ok)
        reverse = []
        for _ in range(self.num_steps):
            cur, mom, good, finite, rev = self.advance(cur, mom, h, proj_ok & fin)
            proj_ok, fin = proj_ok & (good | ~finite), fin & finite
            reverse.append(rev)
        active = torch.stack([r[-1] for r in reverse])
        back = self._reverse_ok(*(torch.stack(parts) for parts in zip(*reverse)))
        proj_ok = proj_ok & (back | ~active).all(0)
        h1 = -cur["lp"] + cur["logvol"] + 0.5 * mom.square().sum(-1)
        delta = h1 - h0
        ok = fin & torch.isfinite(delta) & (delta < DIVERGENCE_ENERGY)
        accept_prob = (-delta).clamp(max=0).exp().nan_to_num(nan=0.0)
        return self._finish(z, cur, accept_prob, ok, proj_ok, state)


class ConstrainedMALA(_ConstrainedKernel):
    """Manifold MALA (``drift=True``) or random walk on the antecedent manifold, batched.

    The proposal is z' = proj_M(z + v), v ~ N(ε P_z ∇log p(z), 2ε P_z) on T_z (without drift:
    N(0, 2ε P_z)); the reverse tangent move v' = P_{z'}(z − z') must project back to z, and
    z' is accepted with min(1, π_M(z') q(v' | z') / (π_M(z) q(v | z))).

    Args:
        target: the manifold target.
        step_size: initial ε > 0 (adapted per chain and unit during warmup).
        drift: include the Langevin drift ε P ∇ log p.
        tol: projection tolerance; max_newton: projection iteration cap.
        adapt_step_size: adapt ε toward ``target_accept`` (0.574 is optimal for MALA).
    """

    def __init__(
        self,
        target: ManifoldTarget,
        step_size: float = 0.3,
        drift: bool = True,
        tol: float = 1e-5,
        max_newton: int = 30,
        adapt_step_size: bool = True,
        target_accept: float = 0.574,
    ):
        super().__init__(target, step_size, tol, max_newton, adapt_step_size, target_accept)
        self.drift = drift

    def _mean(self, state: dict, eps: Tensor) -> Tensor:
        if not self.drift:
            return torch.zeros_like(state["g"])
        return eps[..., None] * tangent(state["g"], state["J"])

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One constrained transition of every chain and unit; returns the new state."""
        z = params["z"]
        state = self._state(z)
        eps = self.step_size
        e = eps[..., None]
        v = self._mean(state, eps) + (2 * e).sqrt() * tangent(torch.randn_like(z), state["J"])
        z1, ok, J1, r1 = self._move(z, state["J"], v, self.on_manifold)
        lp1, g1 = self.target.log_p_and_grad(z1)
        new = {"z": z1, "r": r1, "lp": lp1, "g": g1, "J": J1, "logvol": log_volume(J1)}
        v1 = tangent(z - z1, J1)
        ok = self._reverse_ok(z, state["r"], state["J"], z1, J1, v1, ok)
        fwd = -(v - self._mean(state, eps)).square().sum(-1) / (4 * eps)
        bwd = -(v1 - self._mean(new, eps)).square().sum(-1) / (4 * eps)
        log_ratio = (lp1 - new["logvol"]) - (state["lp"] - state["logvol"]) + bwd - fwd
        finite = torch.isfinite(log_ratio) & torch.isfinite(z1).all(-1)
        log_ratio = torch.where(finite & ok, log_ratio, -math.inf)
        accept_prob = log_ratio.clamp(max=0).exp()
        new = {k: torch.where(self._expand(finite, t), t, state[k]) for k, t in new.items()}
        return self._finish(z, new, accept_prob, finite, ok, state)
