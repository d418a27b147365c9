"""Calibration and stability of the extrapolation flags: run on any checkout, print a table,
write JSON.

For each DCM scalar SCM, training sample (seeds) and non-root node, the node's parent
statistics are stored as ``fit`` stores them (the flags depend on the training parents only, so
no network is trained). Two numbers per node and training sample, for the library's p-value
(``ParentSupport.pvalue``: isolation, local statistic and, on nodes with 2 to 16 parent
features, the rarity under the parents' density model) and for the distances alone (isolation
and local statistic, the flags before the rarity; the same on one-parent nodes):

- ``in-distribution``: the share of ``fresh`` new units drawn like the training data whose
  parents get ``p <= ALPHA / 2`` (the level at which the counterfactual's own Bonferroni
  combination with the factual parents flags; nominal ``ALPHA / 2``);
- ``do(x)``: the share of the DCM protocol's counterfactual units (20 values between the 10% and
  90% quantiles of x, 100 units each) whose counterfactual parents of the node get
  ``p <= ALPHA / 2``, for each intervention on a parent of the node whose other parents it
  leaves factual (not its descendants): how much of the question leaves the data.

Usage: ``python -m benchmarks.extrapolation_calibration [--seeds 10] [--fresh 20000]
[--scm dcm-triangle:nonlinear ...] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pyro_scm.datasets import intervention_values, load_synthetic
from pyro_scm.datasets.true_models import learned_scm
from pyro_scm.extrapolation import ALPHA, ParentSupport, bonferroni

DEFAULT_SCMS = (
    "dcm-chain:nonlinear",
    "dcm-chain:nonadditive",
    "dcm-triangle:nonlinear",
    "dcm-triangle:nonadditive",
    "dcm-diamond:nonlinear",
    "dcm-diamond:nonadditive",
    "dcm-y:nonlinear",
    "dcm-y:nonadditive",
)


def node_pvalues(support: ParentSupport, parents: torch.Tensor) -> dict[str, torch.Tensor]:
    """The library's node p-value and the distances' ``min(1, 2 min(p_s, p_l))``, ``(units,)``
    each; the statistics are computed once."""
    s, local = support.statistics(parents)
    distances = support.pvalues_of(s, local)
    out = {"distances": bonferroni(*distances)}
    if support.has_density:
        rarity = support.rarity_pvalue_of(support.rarity(parents))
        out["library"] = bonferroni(*distances, rarity)
    else:
        out["library"] = out["distances"]
    return out


def calibrate(label: str, seeds: int, fresh: int) -> list[dict]:
    """Rows (node, tail, measure) with the per-seed shares, in percent."""
    name, variant = label.split(":")
    syn = load_synthetic(name, variant)
    shares: dict[tuple[str, str, str], list[float]] = {}
    for seed in range(seeds):
        train = syn.sample(5000, seed=1000 + seed)
        scm = learned_scm(syn, train, "anm", hidden=(4,)).mark_fitted()  # stores the supports
        new = syn.sample(fresh, seed=7000 + seed)
        for node in syn.nodes:
            parents = syn.parents(node)
            support = scm.parent_support.get(node)
            if not parents or support is None:
                continue
            measures = {"in-distribution": {v: new[v].reshape(fresh) for v in parents}}
            for j, x in enumerate(syn.intervention_nodes):
                below = syn.descendants(x)
                if x not in parents or any(v != x and v in below for v in parents):
                    continue  # the counterfactual recomputes the other parents too
                grid = intervention_values(syn, x, 20, seed=3000 + seed)
                do = grid.repeat_interleave(100, dim=0).reshape(-1)
                factual, _ = syn.sample_with_noise(len(do), seed=5000 + 10 * seed + j)
                measures[f"do({x})"] = {
                    v: do if v == x else factual[v].reshape(-1) for v in parents
                }
            for measure, values in measures.items():
                context = torch.stack([values[v] for v in parents], -1)
                for tail, p in node_pvalues(support, context).items():
                    share = 100 * float((p <= ALPHA / 2).float().mean())
                    shares.setdefault((node, tail, measure), []).append(share)
    rows = []
    for (node, tail, measure), values in shares.items():
        rows.append(
            {
                "scm": label,
                "node": node,
                "tail": tail,
                "measure": measure,
                "mean_pct": sum(values) / len(values),
                "min_pct": min(values),
                "max_pct": max(values),
                "per_seed_pct": values,
            }
        )
    return rows


def table(rows: list[dict], nominal: float) -> str:
    """Markdown table: one row per (SCM, node, measure), both p-values side by side."""
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["scm"], r["node"], r["measure"]), {})[r["tail"]] = r
    lines = [
        f"Units flagged at p <= {nominal:g} (%, mean [min-max] over training samples; "
        f"nominal in-distribution: {100 * nominal:g}%)",
        "",
        "| SCM | node | units | library (with rarity) | distances only |",
        "|---|---|---|---|---|",
    ]
    for (scm, node, measure), tails in by_key.items():
        cells = [
            f"{t['mean_pct']:.3f} [{t['min_pct']:.3f}-{t['max_pct']:.3f}]"
            for t in (tails["library"], tails["distances"])
        ]
        lines.append(f"| {scm} | {node} | {measure} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="training samples per SCM")
    parser.add_argument("--fresh", type=int, default=20000, help="in-distribution units")
    parser.add_argument("--scm", action="append", help="e.g. dcm-triangle:nonlinear (repeat)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.fresh < 1:
        parser.error("--seeds and --fresh must be at least 1")
    torch.set_num_threads(1)
    rows = [
        row
        for label in args.scm or DEFAULT_SCMS
        for row in calibrate(label, args.seeds, args.fresh)
    ]
    print(table(rows, ALPHA / 2))
    result = {"alpha": ALPHA, "seeds": args.seeds, "fresh": args.fresh, "rows": rows}
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
