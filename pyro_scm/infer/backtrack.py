"""``backtrack``: backtracking counterfactuals (DeepBC) of an SCM, mode or stochastic."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .. import validation
from ..data import broadcast_intervention, to_node_tensors
from ..distances import as_distance
from ..errors import (
    ArgumentError,
    InterventionError,
    NonFiniteError,
    ShapeError,
    UnknownNodeError,
)
from ..results import QueryResult
from .arguments import check_arguments
from .diagnostics import BacktrackingWarning, SamplerWarning, chain_diagnostics, check_sampler
from .fixed import fixed_parameters
from .manifold import ConstrainedHMC, ConstrainedMALA, ManifoldTarget
from .mode import solve_gradient, solve_linearized, supports_linearized
from .reduced_form import ReducedForm
from .stochastic import (
    METHODS,
    Annealer,
    backtracking_model,
    run_mcmc,
    sample_kernel,
    sigma_schedule,
)

__all__ = ["METHODS", "RELAXED_TOLERANCE", "BacktrackingWarning", "SamplerWarning", "backtrack"]

SOLVERS = ("auto", "linearized", "adam", "lbfgs")
CONSTRAINED = ("chmc", "cmala")
ALL_METHODS = ("mode", "auto", *CONSTRAINED, *METHODS)
FALLBACK = "hmc"
"""The relaxed sampler ``method="auto"`` uses where the constrained samplers do not apply."""

RELAXED_TOLERANCE = 5.0
"""Relaxed samplers meet the antecedent to within ``tol + RELAXED_TOLERANCE * sigma``."""


@validation.guarded
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
    num_steps: int | None = None,
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
        step_size: initial step size, > 0 (Langevin/MALA default 1e-3, HMC 0.1, NUTS 0.01;
            adapted during warmup except for unadjusted Langevin).
        num_steps: leapfrog steps per draw of HMC (default 10) or RATTLE steps of constrained
            HMC (default 2, about half a period of a Gaussian posterior at the adapted step),
            1 to 1024 (each costs one gradient, or one Jacobian and two projections).
        max_tree_depth: NUTS tree depth cap, 1 to 10 (at most 2^depth − 1 leapfrog steps per
            draw).
        temperature: softmax temperature of relaxed categorical nodes.
        max_iter: solver iteration cap (default 100 linearised, 2000 gradient).
        tol: constraint tolerance: max |x*_A − x_A| per unit of the returned values (relaxed
            samplers: ``tol + 5 sigma``).
        lr: Adam learning rate.
        penalty: β of the gradient solvers' penalty energy.
        progress: show progress bars.

    Returns:
        a :class:`QueryResult` of kind ``"backtracking"``: values and latents
        ``(num_samples, units, ...)`` (one sample for the mode), the factual, the antecedent as
        ``interventions``; ``sample_stats`` ``(num_samples, units)``: ``violation`` (max
        |x_A − x*_A| on the returned values, hard categorical classes: 1 when the class
        differs) and ``converged`` (violation within tolerance), ``iterations`` (mode),
        ``accept_prob``, ``step_size``, ``diverging`` (stochastic); ``diagnostics`` per unit
        (stochastic): ``rhat_<node>``, ``ess_bulk_<node>`` (arviz, per sampled node),
        ``accept_rate``, ``divergences``, ``violation_max``.

    Warns:
        BacktrackingWarning: units whose returned values miss the antecedent.
        SamplerWarning: R-hat > 1.05, low bulk ESS, acceptance < 0.05 or divergences, naming
            the nodes and units (see :mod:`pyro_scm.infer.diagnostics`).

    Raises:
        UnknownNodeError: an antecedent node the model does not have.
        ShapeError: an antecedent value that does not broadcast to ``(units, *event)``.
        NonFiniteError: NaN or infinite factual or antecedent values.
        ArgumentError: an unknown method or solver, an empty antecedent, or any other
            argument of the wrong type or out of range (checked before the model runs).
    """
    validation.check_query(scm)
    check_arguments(
        method=method,
        methods=ALL_METHODS,
        solver=solver,
        solvers=SOLVERS,
        sparse=sparse,
        prior=prior,
        num_samples=num_samples,
        num_chains=num_chains,
        warmup=warmup,
        sigma=sigma,
        anneal=anneal,
        step_size=step_size,
        num_steps=num_steps,
        max_tree_depth=max_tree_depth,
        temperature=temperature,
        max_iter=max_iter,
        tol=tol,
        lr=lr,
        penalty=penalty,
        progress=progress,
    )
    distance = as_distance(distance)
    solve = _mode_solver(solver, distance, max_iter, tol, lr, penalty)
    specs = scm.specs
    like = scm._like()
    factual_t = to_node_tensors(factual, specs, where="factual", like=like)
    units = next(iter(factual_t.values())).shape[0]
    target = _antecedent(antecedent, factual_t, specs, units, like)
    rf = ReducedForm(scm, factual_t, target, temperature=temperature)
    if method in ("auto", *CONSTRAINED):
        blocker = constrained_blocker(rf, distance, prior)
        if blocker is not None and method != "auto":
            raise ArgumentError(
                f"method {method!r} does not apply here: {blocker}; use a relaxed sampler "
                f"('hmc', 'mala', 'nuts', 'langevin') or method='auto'"
            )
        if method == "auto":
            method = "chmc" if blocker is None else FALLBACK

    # -- mode ----------------------------------------------------------------------------
    sol = solve(rf, distance)
    if sparse is not None:
        sol = solve(rf, distance, mask=_sparse_mask(rf, distance, sol.z, sparse))
    kw = dict(kind="backtracking", factual=factual_t, interventions=target)
    kw["categorical"] = {k: s.num_classes for k, s in specs.items() if s.num_classes is not None}
    with torch.no_grad():
        mode_values = rf.values(sol.z.unsqueeze(0))
    per_node = _violation(mode_values, target, rf.antecedent)
    violation = _worst(per_node)[0][0]
    converged = sol.converged & (violation < tol)
    if method == "mode" and not bool(converged.all()):
        bad = int((~converged).sum())
        warnings.warn(
            f"{bad} of {units} units did not meet the antecedent within tol={tol} "
            f"(largest violation {violation.max().item():.3g}, measured on the returned values"
            f"{_relaxed_note(rf)}); see sample_stats['violation']",
            BacktrackingWarning,
            stacklevel=2,
        )
    if method == "mode":
        with torch.no_grad():
            latents = rf.full_noise(sol.z.unsqueeze(0))
        stats = {
            "iterations": sol.iterations[None].to(like.dtype),
            "violation": violation[None],
            "converged": converged[None].to(like.dtype),
        }
        return QueryResult(values=mode_values, noise=latents, sample_stats=stats, **kw)

    # -- stochastic ----------------------------------------------------------------------
    C, S = num_chains, num_samples
    if method in CONSTRAINED:
        manifold = ManifoldTarget(rf, distance, prior)
        kind = ConstrainedHMC if method == "chmc" else ConstrainedMALA
        extra = {"num_steps": num_steps} if method == "chmc" and num_steps else {}
        kernel = kind(manifold, step_size=step_size or 0.3, tol=tol / 2, **extra)
        init = {"z": sol.z.expand(C, *sol.z.shape).clone()}
        with fixed_parameters(scm):
            draws, stats = sample_kernel(kernel, init, S, warmup, progress)
        draws = rf.unpack(draws["z"])  # node -> (chains, draws, units, *e)
        direct = [n for n in rf.nodes if n not in rf.free]
        return _stochastic_result(
            rf, distance, prior, method, draws, stats, direct, tol, None, kw, progress
        )
    direct = [n for n in rf.nodes if n not in rf.free and _can_sample(distance, n, rf, prior)]
    sampled = [n for n in rf.nodes if n not in direct]
    annealer = None if anneal is None else Annealer(sigma_schedule(sigma, anneal, warmup))
    model = backtracking_model(rf, distance, sampled, C, annealer or sigma, prior)
    mode_u = rf.full_noise(sol.z)
    init = {f"noise_{n}": mode_u[n].expand(C, *mode_u[n].shape).clone() for n in sampled}
    with fixed_parameters(scm):
        draws, stats = run_mcmc(
            model,
            method,
            init,
            S,
            warmup,
            step_size,
            num_steps or 10,
            max_tree_depth,
            progress,
            annealer,
        )
    draws = {n: draws[f"noise_{n}"] for n in sampled}  # (chains, draws, units, *e)
    within = tol + RELAXED_TOLERANCE * sigma
    return _stochastic_result(
        rf, distance, prior, method, draws, stats, direct, within, sigma, kw, progress
    )


def _stochastic_result(
    rf: ReducedForm,
    distance,
    prior: bool,
    method: str,
    draws: dict[str, Tensor],
    stats: dict[str, Tensor],
    direct: list[str],
    within: float,
    sigma: float | None,
    kw: dict,
    progress: bool,
) -> QueryResult:
    """Assemble a stochastic result from MCMC draws ``(chains, draws, units, *e)`` and stats
    ``(chains, draws, units)``: values, violation and diagnostics, with every warning."""
    C, S = next(iter(draws.values())).shape[:2]
    units = rf.units
    finite = None
    for v in draws.values():
        f = torch.isfinite(v.reshape(C, S, units, -1)).all(-1)
        finite = f if finite is None else finite & f
    stats = dict(stats)
    stats["diverging"] = torch.maximum(stats["diverging"], (~finite).to(stats["diverging"].dtype))
    diagnostics = chain_diagnostics(draws)
    latents = {n: v.reshape(C * S, *v.shape[2:]) for n, v in draws.items()}
    with torch.no_grad():
        for n in direct:
            u_f = rf.u_factual[n]
            latents[n] = distance.sample(n, u_f.expand(C * S, *u_f.shape), prior)
        latents = {n: latents[n] for n in rf.nodes}
        values = rf.run(latents, torch.Size([C * S, units]), relax=False)
    per_node = _violation(values, kw["interventions"], rf.antecedent)
    violation, _ = _worst(per_node)
    stats["violation"] = violation.reshape(C, S, units)
    stats["converged"] = (stats["violation"] <= within).to(violation.dtype)
    diagnostics["accept_rate"] = stats["accept_prob"].mean((0, 1))
    diagnostics["divergences"] = stats["diverging"].sum((0, 1))
    if "projection_failure" in stats:
        diagnostics["projection_failures"] = stats["projection_failure"].sum((0, 1))
    diagnostics["violation_max"] = violation.amax(0)
    check_sampler(method, diagnostics, list(draws), C * S, stacklevel=4)
    _warn_missed(per_node, within, kw["categorical"], rf)
    stats = {k: v.reshape(C * S, units) for k, v in stats.items()}
    return QueryResult(
        values=values,
        noise=latents,
        sample_stats=stats,
        num_chains=C,
        diagnostics=diagnostics,
        **kw,
    )


def _violation(
    values: Mapping[str, Tensor], target: Mapping[str, Tensor], antecedent: list[str]
) -> dict[str, Tensor]:
    """node -> max |x − x*_A| over the node's event, on the returned (hard) values:
    ``(samples, units)``; one-hot rows of a categorical node give 1 exactly when the class
    differs."""
    out = {}
    for n in antecedent:
        v, t = values[n], target[n]
        d = (v - t).abs()
        out[n] = d.reshape(*d.shape[:2], -1).amax(-1)
    return out


def _worst(per_node: Mapping[str, Tensor]) -> tuple[Tensor, list[str]]:
    stacked = torch.stack(list(per_node.values()), -1)
    return stacked.amax(-1), list(per_node)


def _relaxed_note(rf: ReducedForm) -> str:
    relaxed = [n for n in rf.free if n in rf.categorical and n not in rf.antecedent]
    if not relaxed:
        return ""
    return f"; categorical ancestors {relaxed} are relaxed while solving, hard in the result"


def _warn_missed(per_node, within: float, categorical, rf: ReducedForm) -> None:
    for n, v in per_node.items():
        miss = v > (0.5 if n in categorical else within)
        if not bool(miss.any()):
            continue
        units = int(miss.any(0).sum())
        if n in categorical:
            what = f"whose {n!r} is not the antecedent class"
        else:
            what = f"whose {n!r} misses the antecedent by more than {within:.3g}"
        warnings.warn(
            f"{units} of {rf.units} units have draws {what} ({miss.float().mean().item():.1%} "
            f"of draws, largest miss {v.max().item():.3g}, measured on the returned values"
            f"{_relaxed_note(rf)}); see sample_stats['violation']",
            BacktrackingWarning,
            stacklevel=4,
        )


def constrained_blocker(rf: ReducedForm, distance, prior: bool) -> str | None:
    """Why the constrained samplers do not apply to this query, or None if they do."""
    cats = [n for n in rf.free if n in rf.categorical]
    if cats:
        return (
            f"categorical nodes {cats} are the antecedent or its ancestors (their constraint is "
            f"relaxed, not a smooth manifold)"
        )
    if rf.dim <= rf.constraint_dim:
        return (
            f"the antecedent ({rf.constraint_dim} values) leaves no free direction in the "
            f"{rf.dim} latents that can move it (the posterior is a point: use method='mode')"
        )
    missing = [n for n in rf.nodes if n not in rf.free and not _can_sample(distance, n, rf, prior)]
    if missing:
        return f"the distance cannot sample the latents of {missing} directly"
    return None


def _can_sample(distance, node: str, rf: ReducedForm, prior: bool) -> bool:
    probe = rf.u_factual[node][:1]
    return distance.sample(node, probe, prior) is not None


def _mode_solver(solver, distance, max_iter, tol, lr, penalty) -> Callable:
    if solver == "auto":
        solver = "linearized" if supports_linearized(distance) else "lbfgs"
    if solver == "linearized":
        if not supports_linearized(distance):
            raise ArgumentError(
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
        raise ArgumentError("the antecedent must be a non-empty dict node -> value")
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
