"""``backtrack``: backtracking counterfactuals (DeepBC) of an SCM, mode or stochastic."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ..data import broadcast_intervention, to_node_tensors
from ..distances import as_distance
from ..errors import InterventionError, NonFiniteError, ShapeError, UnknownNodeError
from ..results import QueryResult
from .mode import solve_gradient, solve_linearized, supports_linearized
from .reduced_form import ReducedForm
from .stochastic import METHODS, Annealer, backtracking_model, run_mcmc, sigma_schedule

__all__ = ["BacktrackingWarning", "backtrack"]

SOLVERS = ("auto", "linearized", "adam", "lbfgs")


class BacktrackingWarning(UserWarning):
    """Some units did not meet the antecedent within tolerance."""


def backtrack(
    scm,
    factual: object,
    antecedent: Mapping[str, object],
    *,
    method: str = "mode",
    distance: object = None,
    solver: str = "auto",
    sparse: int | None = None,
    prior: bool = False,
    num_samples: int = 100,
    num_chains: int = 1,
    warmup: int = 200,
    sigma: float = 1e-2,
    anneal: float | None = None,
    step_size: float | None = None,
    num_steps: int = 10,
    max_tree_depth: int = 8,
    temperature: float = 0.1,
    max_iter: int | None = None,
    tol: float = 1e-4,
    lr: float = 0.05,
    penalty: float = 1e4,
    progress: bool = False,
) -> QueryResult:
    r"""Backtracking counterfactuals given factual observations and an antecedent.

    The counterfactual exogenous noise u* follows P_B(u* | u_F) δ(F_A(u*) = x*_A) with
    P_B ∝ exp(−Σ_k λ_k d_k(u*_k, u_F,k)) (times the prior p(u*) when ``prior=True``, an
    extension); the counterfactual is x* = F(u*). Only latents of the antecedent nodes and
    their ancestors can move the antecedent: ``"mode"`` leaves every other latent at the factual,
    stochastic methods draw them directly from P_B.

    Args:
        scm: the model.
        factual: a DataFrame, a dict node -> ``(units, *event)`` or a :class:`QueryResult`.
        antecedent: node -> value x*_A (a number, a tensor broadcastable to ``(units, *event)``,
            class indices for a categorical node, or a callable of the factual value).
        method: ``"mode"`` (mode DeepBC), or ``"langevin"`` (unadjusted), ``"mala"``,
            ``"hmc"``, ``"nuts"`` (stochastic DeepBC, started at the mode).
        distance: a :class:`pyro_scm.distances.Distance` or a callable ``(u_star, u)``; default
            squared L2 with λ = 1.
        solver: mode solver: ``"linearized"`` (Algorithm 1 with LM damping), ``"adam"``,
            ``"lbfgs"``, or ``"auto"`` (linearised when the distance has a quadratic model).
        sparse: sparse DeepBC: let at most this many free nodes' latents move per unit (greedy:
            solve, keep the nodes that moved most, solve again on those).
        prior: multiply in the exogenous prior p(u*).
        num_samples: draws per chain (stochastic).
        num_chains: chains, run as a batch dimension.
        warmup: warmup steps (step-size adaptation).
        sigma: standard deviation of the antecedent likelihood relaxing the delta.
        anneal: σ annealing: start warmup at this σ and decrease it geometrically to ``sigma``
            over the first half of ``warmup`` (stochastic methods; None: no annealing).
        step_size: initial step size (Langevin default 1e-3, HMC/NUTS 0.01, adapted).
        num_steps: leapfrog steps of HMC.
        max_tree_depth: NUTS tree depth cap.
        temperature: softmax temperature of relaxed categorical nodes.
        max_iter: solver iteration cap (default 100 linearised, 2000 gradient).
        tol: constraint tolerance (max abs violation per unit) of the mode solvers.
        lr: Adam learning rate.
        penalty: β of the gradient solvers' penalty energy.
        progress: show progress bars.

    Returns:
        a :class:`QueryResult` of kind ``"backtracking"``: values and latents
        ``(num_samples, units, ...)`` (one sample for the mode), the factual, the antecedent as
        ``interventions``; ``sample_stats``: ``iterations``, ``violation``, ``converged`` (mode),
        ``accept_prob``, ``step_size``, ``diverging`` (stochastic).

    Raises:
        UnknownNodeError: an antecedent node the model does not have.
        ShapeError: an antecedent value that does not broadcast to ``(units, *event)``.
        NonFiniteError: NaN or infinite factual or antecedent values.
        ValueError: an unknown method or solver, an empty antecedent, or a non-positive
            ``sigma`` or ``anneal``.
    """
    if method != "mode" and method not in METHODS:
        raise ValueError(f"unknown backtracking method {method!r}; use 'mode' or one of {METHODS}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    if not sigma > 0 or (anneal is not None and not anneal > 0):
        raise ValueError(f"sigma and anneal must be positive, got {sigma!r} and {anneal!r}")
    distance = as_distance(distance)
    specs = scm.specs
    like = scm._like()
    factual_t = to_node_tensors(factual, specs, where="factual", like=like)
    units = next(iter(factual_t.values())).shape[0]
    target = _antecedent(antecedent, factual_t, specs, units, like)
    rf = ReducedForm(scm, factual_t, target, temperature=temperature)

    # -- mode ----------------------------------------------------------------------------
    solve = _mode_solver(solver, distance, max_iter, tol, lr, penalty)
    sol = solve(rf, distance)
    if sparse is not None:
        sol = solve(rf, distance, mask=_sparse_mask(rf, distance, sol.z, sparse))
    if not bool(sol.converged.all()):
        bad = int((~sol.converged).sum())
        warnings.warn(
            f"{bad} of {units} units did not meet the antecedent within tol={tol} "
            f"(largest violation {sol.violation.max().item():.3g}); see sample_stats['violation']",
            BacktrackingWarning,
            stacklevel=2,
        )
    kw = dict(kind="backtracking", factual=factual_t, interventions=target)
    kw["categorical"] = {k: s.num_classes for k, s in specs.items() if s.num_classes is not None}
    if method == "mode":
        with torch.no_grad():
            values = rf.values(sol.z.unsqueeze(0))
            latents = rf.full_noise(sol.z.unsqueeze(0))
        stats = {
            "iterations": sol.iterations[None].to(like.dtype),
            "violation": sol.violation[None],
            "converged": sol.converged[None].to(like.dtype),
        }
        return QueryResult(values=values, latents=latents, sample_stats=stats, **kw)

    # -- stochastic ----------------------------------------------------------------------
    C, S = num_chains, num_samples
    direct = [n for n in rf.nodes if n not in rf.free and _can_sample(distance, n, rf, prior)]
    sampled = [n for n in rf.nodes if n not in direct]
    annealer = None if anneal is None else Annealer(sigma_schedule(sigma, anneal, warmup))
    model = backtracking_model(rf, distance, sampled, C, annealer or sigma, prior)
    mode_u = rf.full_noise(sol.z)
    init = {f"u_{n}": mode_u[n].expand(C, *mode_u[n].shape).clone() for n in sampled}
    draws, stats = run_mcmc(
        model, method, init, S, warmup, step_size, num_steps, max_tree_depth, progress, annealer
    )
    latents = {n: draws[f"u_{n}"].reshape(C * S, *draws[f"u_{n}"].shape[2:]) for n in sampled}
    with torch.no_grad():
        for n in direct:
            u_f = rf.u_factual[n]
            latents[n] = distance.sample(n, u_f.expand(C * S, *u_f.shape), prior)
        latents = {n: latents[n] for n in rf.nodes}
        values = rf.run(latents, torch.Size([C * S, units]), relax=False)
    stats = {k: v.reshape(C * S, units) for k, v in stats.items()}
    for n in rf.antecedent:
        if n in kw["categorical"]:
            miss = values[n].argmax(-1) != target[n].argmax(-1)
            if bool(miss.any()):
                warnings.warn(
                    f"{int(miss.any(0).sum())} of {units} units have draws whose {n!r} is not the "
                    f"antecedent class ({miss.float().mean().item():.1%} of draws); "
                    f"lower sigma",
                    BacktrackingWarning,
                    stacklevel=2,
                )
    return QueryResult(values=values, latents=latents, sample_stats=stats, num_chains=C, **kw)


def _can_sample(distance, node: str, rf: ReducedForm, prior: bool) -> bool:
    probe = rf.u_factual[node][:1]
    return distance.sample(node, probe, prior) is not None


def _mode_solver(solver, distance, max_iter, tol, lr, penalty) -> Callable:
    if solver == "auto":
        solver = "linearized" if supports_linearized(distance) else "lbfgs"
    if solver == "linearized":
        if not supports_linearized(distance):
            raise ValueError(
                f"the linearised solver needs a distance with quadratic weights; "
                f"{distance!r} has none: use solver='adam' or 'lbfgs'"
            )

        def solve(rf, d, mask=None):
            return solve_linearized(rf, d, mask=mask, max_iter=max_iter or 100, tol=tol)

        return solve

    def solve(rf, d, mask=None):
        return solve_gradient(
            rf,
            d,
            mask=mask,
            optimizer=solver,
            lr=lr,
            max_iter=max_iter or 2000,
            tol=tol,
            penalty=penalty,
        )

    return solve


def _sparse_mask(rf: ReducedForm, distance, z: Tensor, k: int) -> Tensor:
    """``(units, D)``: the latents of the k free nodes per unit that moved most."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"sparse must be a positive int, got {k!r}")
    u, u_f, dims = rf.unpack(z), rf.unpack(rf.z_factual), rf.event_dims()
    moved = torch.stack([distance(n, u[n], u_f[n], dims[n]) for n in rf.free], -1)
    keep = torch.zeros_like(moved, dtype=torch.bool)
    keep.scatter_(-1, moved.topk(min(k, len(rf.free)), -1).indices, True)
    parts = {n: keep[:, i, None].expand(-1, s) for i, (n, s) in enumerate(zip(rf.free, rf.sizes))}
    return torch.cat([parts[n] for n in rf.free], -1)


def _antecedent(
    antecedent: Mapping[str, object], factual: Mapping[str, Tensor], specs, units: int, like
) -> dict[str, Tensor]:
    if not isinstance(antecedent, Mapping) or not antecedent:
        raise ValueError("the antecedent must be a non-empty dict node -> value")
    out = {}
    for node, value in antecedent.items():
        if node not in specs:
            raise UnknownNodeError(node, list(specs), "antecedent")
        if callable(value) and not torch.is_tensor(value):
            value = value(factual[node])
        try:
            out[node] = broadcast_intervention(node, value, units, specs[node], like)
        except NonFiniteError as e:
            raise NonFiniteError(f"antecedent on {node!r} has NaN or infinite values") from e
        except InterventionError as e:
            raise ShapeError(str(e).replace("intervention", "antecedent")) from e
    return out
