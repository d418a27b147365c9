"""Command-line arguments shared by the programs in this folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """A parser with the shared options: --quick, --out, --device, --epochs, --seed, progress."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject a CUDA device on a machine without one, and fewer than one epoch."""
    try:
        torch.device(args.device)
    except (RuntimeError, TypeError):
        p.error(f"--device {args.device}: not a torch device (use cpu, cuda, cuda:1, mps, ...)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be at least 1")
    return args


def diagnostics(label: str, result) -> list[str]:
    """The diagnostics of a query result in words, one markdown bullet each.

    Reads ``sample_stats``: ``converged`` and ``violation`` (mode backtracking), ``accept_prob`` and
    ``diverging``; ``diagnostics``: ``rhat_<node>`` and ``ess_bulk_<node>`` (stochastic results);
    and, for backtracking, how far the returned values miss the antecedent.
    """
    stats = result.sample_stats
    out = []
    if "converged" in stats:
        met = stats["converged"].bool().all(0)
        out.append(
            f"{label}: {'converged' if bool(met.all()) else 'NOT converged'} — "
            f"{int(met.sum())} of {met.numel()} units met the antecedent within tolerance"
        )
    diag = getattr(result, "diagnostics", {})
    r_hats = [v for k, v in diag.items() if k.startswith("rhat_")]
    ess = [v for k, v in diag.items() if k.startswith("ess_bulk_")]
    if r_hats:
        stats = {**stats, "r_hat": torch.stack([torch.as_tensor(v).max() for v in r_hats])}
    if ess:
        stats = {**stats, "ess_bulk": torch.stack([torch.as_tensor(v).min() for v in ess])}
    if "r_hat" in stats:
        r_hat = stats["r_hat"].max().item()
        verdict = "chains agree" if r_hat <= 1.05 else "chains disagree: not converged"
        out.append(f"{label}: max R-hat {r_hat:.3f} ({verdict}; threshold 1.05)")
    if "ess_bulk" in stats:
        out.append(f"{label}: min bulk ESS {stats['ess_bulk'].min().item():.0f} draws")
    if "accept_prob" in stats:
        out.append(f"{label}: mean acceptance rate {stats['accept_prob'].mean().item():.2f}")
    if "diverging" in stats:
        out.append(
            f"{label}: {int(stats['diverging'].sum().item())} divergent transitions of "
            f"{stats['diverging'].numel()} draws"
        )
    if result.kind == "backtracking":
        for node, target in result.interventions.items():
            if torch.is_tensor(target):
                miss = (
                    (result[node] - target).abs().reshape(result.num_samples, target.shape[0], -1)
                )
                miss = miss.amax(-1)
                out.append(
                    f"{label}: antecedent {node!r} missed by {miss.mean().item():.3g} on average "
                    f"(worst draw {miss.max().item():.3g}, in {node}'s units)"
                )
    return [f"- {line}" for line in out]


def flagged_units(result) -> int:
    """Units of a counterfactual that any recomputed node flags as an extrapolation (0 where
    the query was not scored)."""
    flags = result.sample_stats.get("extrapolated")
    return 0 if flags is None else int(flags.any(0).sum())
