"""Sampler diagnostics of stochastic backtracking: R-hat, bulk ESS, acceptance, divergences.

:func:`chain_diagnostics` computes, with arviz, the rank-normalised split R-hat and the bulk
effective sample size of every sampled latent per unit (the worst element of a vector node:
max R-hat, min ESS). With one chain the chain is split into halves first, so arviz's split-chain
R-hat compares the first and second half of the run. :func:`check_sampler` turns the per-unit
summaries into one :class:`SamplerWarning` naming the nodes and units at fault:

- R-hat above :data:`RHAT_MAX` (1.05) or not finite (a chain that never moved);
- bulk ESS below :func:`ess_threshold` (min(100, 10% of the draws));
- mean acceptance below :data:`ACCEPT_MIN` (0.05);
- any divergent transition (a non-finite state or an energy error above 1000);
- projection failures (constrained samplers) in more than :data:`PROJECTION_FAILURE_MAX` (10%)
  of a unit's draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ACCEPT_MIN",
    "PROJECTION_FAILURE_MAX",
    "RHAT_MAX",
    "BacktrackingWarning",
    "SamplerWarning",
    "chain_diagnostics",
    "check_sampler",
    "ess_threshold",
]

RHAT_MAX = 1.05
ACCEPT_MIN = 0.05
PROJECTION_FAILURE_MAX = 0.1


class BacktrackingWarning(UserWarning):
    """Some units did not meet the antecedent within tolerance, or their draws are unreliable."""


class SamplerWarning(BacktrackingWarning):
    """A stochastic backtracking sampler's diagnostics (R-hat, ESS, acceptance, divergences,
    projection failures) flag some nodes and units."""


def ess_threshold(num_draws: int) -> float:
    """The bulk ESS below which a unit is flagged: min(100, 0.1 × draws of all chains)."""
    return min(100.0, 0.1 * num_draws)


def chain_diagnostics(draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-unit R-hat and bulk ESS of each node's draws ``(chains, draws, units, *event)``.

    Returns ``rhat_<node>`` and ``ess_bulk_<node>``, each ``(units,)`` on the draws' device
    (max R-hat and min ESS over the event elements).
    """
    import arviz as az

    out: dict[str, Tensor] = {}
    for node, x in draws.items():
        like = x
        a = x.detach().to("cpu", torch.float64).numpy()
        a = a.reshape(*a.shape[:3], -1)
        if a.shape[0] == 1:  # one chain: split it, so arviz's split R-hat compares the halves
            half = a.shape[1] // 2
            a = np.stack([a[0, :half], a[0, half : 2 * half]])
        if a.shape[1] < 4:  # too short for any estimate
            nan = torch.full(x.shape[2:3], float("nan"), dtype=like.dtype, device=like.device)
            out[f"rhat_{node}"], out[f"ess_bulk_{node}"] = nan, nan.clone()
            continue
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
            ds = az.convert_to_dataset({"v": a})
            rhat = az.rhat(ds)["v"].values
            ess = az.ess(ds, method="bulk")["v"].values
        stuck = np.ptp(a, axis=(0, 1)) == 0  # arviz reports ESS = N for a constant chain
        rhat = np.where(stuck, np.nan, rhat)
        ess = np.where(stuck, 0.0, ess)
        rhat = np.where(np.isnan(rhat).any(-1), np.nan, np.nanmax(_nan_ok(rhat), -1))
        ess = np.nan_to_num(ess, nan=0.0).min(-1)
        out[f"rhat_{node}"] = torch.as_tensor(rhat, dtype=like.dtype, device=like.device)
        out[f"ess_bulk_{node}"] = torch.as_tensor(ess, dtype=like.dtype, device=like.device)
    return out


def _nan_ok(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), -np.inf, x)


def _units(mask: Tensor) -> str:
    idx = mask.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
    return f"{len(idx)} of {mask.numel()} units [{shown}]"


def check_sampler(
    method: str,
    diagnostics: Mapping[str, Tensor],
    nodes: list[str],
    num_draws: int,
    stacklevel: int = 3,
) -> list[str]:
    """Warn (one :class:`SamplerWarning`) about every flagged node and unit; return the problems.

    ``diagnostics`` holds per-unit ``rhat_<node>``, ``ess_bulk_<node>``, ``accept_rate``,
    ``divergences`` and (constrained samplers) ``projection_failures``, all ``(units,)``;
    ``num_draws`` is the number of draws of all chains together.
    """
    problems = []
    min_ess = ess_threshold(num_draws)
    for n in nodes:
        rhat = diagnostics.get(f"rhat_{n}")
        if rhat is not None:
            bad = ~(rhat <= RHAT_MAX)
            if bool(bad.any()):
                worst = rhat[bad].nan_to_num(nan=float("inf")).max().item()
                problems.append(f"R-hat > {RHAT_MAX} for {n!r} on {_units(bad)} (max {worst:.3g})")
        ess = diagnostics.get(f"ess_bulk_{n}")
        if ess is not None:
            bad = ~(ess >= min_ess)
            if bool(bad.any()):
                problems.append(
                    f"bulk ESS < {min_ess:.3g} for {n!r} on {_units(bad)} "
                    f"(min {ess[bad].nan_to_num(nan=0.0).min().item():.3g})"
                )
    acc = diagnostics.get("accept_rate")
    if acc is not None and bool((acc < ACCEPT_MIN).any()):
        bad = acc < ACCEPT_MIN
        problems.append(
            f"acceptance rate < {ACCEPT_MIN} on {_units(bad)} (min {acc.min().item():.3g})"
        )
    div = diagnostics.get("divergences")
    if div is not None and bool((div > 0).any()):
        problems.append(
            f"divergent transitions (non-finite states or energy errors) on {_units(div > 0)} "
            f"({int(div.sum().item())} draws); those draws keep the previous state"
        )
    fail = diagnostics.get("projection_failures")
    if fail is not None:
        bad = fail > PROJECTION_FAILURE_MAX * num_draws
        if bool(bad.any()):
            problems.append(
                f"projection failures in > {PROJECTION_FAILURE_MAX:.0%} of draws on {_units(bad)} "
                f"(max {int(fail.max().item())} of {num_draws})"
            )
    if problems:
        warnings.warn(
            f"method {method!r}: " + "; ".join(problems) + "; see result.diagnostics",
            SamplerWarning,
            stacklevel=stacklevel,
        )
    return problems
