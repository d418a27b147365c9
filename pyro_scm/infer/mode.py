"""Mode DeepBC: the counterfactual noise closest to the factual that meets the antecedent.

    z* = argmin_z Σ_k λ_k d_k(z_k, z_F,k)   subject to   F_A(z) = x*_A.

:func:`solve_linearized` is the paper's Algorithm 1 (Eq. 14 in the pseudoinverse form of
Eq. 19) with Levenberg–Marquardt damping: at the current iterate z₀ the constraint is linearised,
F_A(z) ≈ F_A(z₀) + J (z − z₀), while the distance stays measured to z_F through the diagonal
weights W of its quadratic model (exact for squared L2, reweighted for L1); each step solves

    min_z ‖z − z_F‖²_W + μ ‖z − z₀‖²   s.t.   J (z − z₀) = −r₀,
    z = a + A⁻¹ Jᵀ (J A⁻¹ Jᵀ)⁺ (J z₀ − r₀ − J a),   A = W + μ I,  a = A⁻¹ (W z_F + μ z₀),

in closed form per unit (an M × M pseudoinverse, M the antecedent size). The constraint is
enforced as the stiff penalty ρ ‖r₀ + J (z − z₀)‖² (the M × M matrix becomes J A⁻¹ Jᵀ + I/ρ;
ρ = 1e6 by default, so the step is Eq. 19 to within 1e-6), which makes every step minimise a
model of the merit Σ λ d + ρ ‖r‖²: as μ grows the step shrinks toward a gradient step on the
merit, so a decreasing step always exists. μ grows tenfold when a step does not decrease the
merit and shrinks tenfold when it does; with μ = 0 the step is Eq. 19.

:func:`solve_gradient` minimises the penalty energy Σ λ d + (β/2) ‖r‖² (the paper's Eq. 11) with
Adam or L-BFGS, the alternative the paper compares against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..distances import Distance
from .reduced_form import ReducedForm

__all__ = ["ModeSolution", "solve_gradient", "solve_linearized"]


@dataclass
class ModeSolution:
    """Per-unit result of a mode solver.

    Attributes:
        z: free latents ``(units, D)``.
        iterations: iterations each unit used ``(units,)``.
        violation: max |F_A(z) − x*_A| per unit ``(units,)``.
        converged: violation below tolerance (and, for the linearised solver, steps settled).
        history: max violation over units after each iteration (for benchmarks).
    """

    z: Tensor
    iterations: Tensor
    violation: Tensor
    converged: Tensor
    history: list[float]


def _distance(rf: ReducedForm, distance: Distance, z: Tensor) -> Tensor:
    dims = rf.event_dims()
    return distance.total(rf.unpack(z), rf.unpack(rf.z_factual), dims)


def _weights(rf: ReducedForm, distance: Distance, z: Tensor) -> Tensor:
    u, u_f = rf.unpack(z), rf.unpack(rf.z_factual)
    parts = []
    for n in rf.free:
        w = distance.quadratic_weights(n, u[n], u_f[n])
        if w is None:
            raise NotImplementedError
        parts.append(w.expand_as(u[n]))
    return rf.pack(dict(zip(rf.free, parts)))


def supports_linearized(distance: Distance) -> bool:
    """Whether ``distance`` has a quadratic model the linearised solver can use."""
    return type(distance).quadratic_weights is not Distance.quadratic_weights


def solve_linearized(
    rf: ReducedForm,
    distance: Distance,
    *,
    mask: Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    step_tol: float = 1e-5,
    damping: float = 0.0,
    merit_penalty: float = 1e6,
) -> ModeSolution:
    """Constraint-linearised mode DeepBC with Levenberg–Marquardt damping.

    Args:
        rf: the reduced form around the factual.
        distance: a distance with ``quadratic_weights``.
        mask: ``(units, D)`` bool, latent elements allowed to move (sparse DeepBC); the others
            stay at the factual.
        max_iter: iteration cap.
        tol: constraint tolerance, max |F_A(z) − x*_A| per unit.
        step_tol: a unit stops once feasible and its step is below this (max abs).
        damping: initial μ (0: the undamped Eq. 19 step while it makes progress).
        merit_penalty: ρ of the merit Σ λ d + ρ ‖r‖², which decides whether a step is accepted.
    """
    z_f = rf.z_factual.detach()
    units = z_f.shape[0]
    move = torch.ones_like(z_f) if mask is None else mask.to(z_f.dtype)
    z = z_f.clone()
    with torch.no_grad():
        r, J = rf.jacobian(z)
    mu = torch.full((units,), float(damping), dtype=z.dtype, device=z.device)
    iterations = torch.zeros(units, dtype=torch.long, device=z.device)
    active = torch.ones(units, dtype=torch.bool, device=z.device)
    merit = _distance(rf, distance, z).detach() + merit_penalty * r.square().sum(-1)
    history = [r.abs().amax(-1).max().item()]
    eye = torch.eye(r.shape[-1], dtype=z.dtype, device=z.device)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        with torch.no_grad():
            W = _weights(rf, distance, z)
            A_inv = move / (W + mu[:, None])
            a = A_inv * (W * z_f + mu[:, None] * z) + (1 - move) * z_f
            Jm = J * move[:, None, :]
            JAJ = (Jm * A_inv[:, None, :]) @ Jm.transpose(-1, -2)
            rhs = (Jm @ (z - a).unsqueeze(-1)).squeeze(-1) - r
            JAJ = JAJ + eye / merit_penalty
            lam = (torch.linalg.pinv(JAJ, hermitian=True) @ rhs.unsqueeze(-1)).squeeze(-1)
            z_new = a + A_inv * (Jm.transpose(-1, -2) @ lam.unsqueeze(-1)).squeeze(-1)
            z_new = torch.where(active[:, None], z_new, z)
            r_new, J_new = rf.jacobian(z_new)
            merit_new = _distance(rf, distance, z_new) + merit_penalty * r_new.square().sum(-1)
            ok = torch.isfinite(merit_new) & (merit_new <= merit * (1 + 1e-6) + 1e-12)
            accept = active & ok
            step = (z_new - z).abs().amax(-1)
            z = torch.where(accept[:, None], z_new, z)
            r = torch.where(accept[:, None], r_new, r)
            J = torch.where(accept[:, None, None], J_new, J)
            merit = torch.where(accept, merit_new, merit)
            iterations = iterations + active.long()
            mu = torch.where(accept, mu / 10, torch.maximum(mu * 10, torch.full_like(mu, 1e-3)))
            mu = torch.where(mu < 1e-9, torch.zeros_like(mu), mu)
            feasible = r.abs().amax(-1) < tol
            settled = (step < step_tol) | (mu > 1e8)
            active = active & ~(feasible & settled) & ~(mu > 1e12)
            history.append(r.abs().amax(-1).max().item())
    violation = r.abs().amax(-1)
    return ModeSolution(z.detach(), iterations, violation, violation < tol, history)


def solve_gradient(
    rf: ReducedForm,
    distance: Distance,
    *,
    mask: Tensor | None = None,
    optimizer: str = "adam",
    lr: float = 0.05,
    max_iter: int = 2000,
    tol: float = 1e-4,
    penalty: float = 1e4,
) -> ModeSolution:
    """Mode DeepBC by minimising Σ λ d + (β/2) ‖r‖² with Adam or L-BFGS.

    Stops when every unit meets ``tol`` and the objective stops decreasing (relative 1e-7).
    Per-unit ``iterations`` is the first iteration at which the unit met ``tol``.
    """
    z_f = rf.z_factual.detach()
    move = torch.ones_like(z_f) if mask is None else mask.to(z_f.dtype)
    delta = torch.zeros_like(z_f, requires_grad=True)

    def energy() -> tuple[Tensor, Tensor]:
        z = z_f + delta * move
        r = rf.residual(z)
        return _distance(rf, distance, z) + 0.5 * penalty * r.square().sum(-1), r

    units = z_f.shape[0]
    first = torch.full((units,), max_iter, dtype=torch.long, device=z_f.device)
    history: list[float] = []
    if optimizer == "adam":
        opt = torch.optim.Adam([delta], lr=lr)
    elif optimizer == "lbfgs":
        opt = torch.optim.LBFGS([delta], lr=1.0, max_iter=1, line_search_fn="strong_wolfe")
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam' or 'lbfgs'")
    last = None
    for it in range(max_iter):
        with torch.enable_grad():

            def closure() -> Tensor:
                opt.zero_grad()
                e, _ = energy()
                loss = e.sum()
                loss.backward()
                return loss

            loss = opt.step(closure)
        with torch.no_grad():
            _, r = energy()
            v = r.abs().amax(-1)
            first = torch.where(
                (v < tol) & (first == max_iter), torch.full_like(first, it + 1), first
            )
            history.append(v.max().item())
            value = float(loss)
            if (
                bool((v < tol).all())
                and last is not None
                and abs(last - value) <= 1e-7 * abs(value)
            ):
                break
            last = value
    with torch.no_grad():
        z = z_f + delta.detach() * move
        r = rf.residual(z)
        violation = r.abs().amax(-1)
    iterations = torch.minimum(first, torch.full_like(first, it + 1))
    return ModeSolution(z, iterations, violation, violation < tol, history)
