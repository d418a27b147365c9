"""Which units carry a counterfactual error of the DCM protocol?

Fits one method (``auto`` by default) on one seed's training sample, asks the protocol's
counterfactual query of each intervened node (the same units as ``benchmarks.run``) and lists
the ``--top`` units by squared error over the descendant columns, with each unit's share of the
mean, its factual values, the extrapolation p-value of every recomputed node and whether it is
flagged, and the mean without those units. Prints a table and writes ``worst_units.json``.

    python -m benchmarks.worst_units --scm dcm-chain:nonlinear --seed 1 --node x2 --top 5
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from pyro_scm.datasets import SyntheticSCM, load_synthetic
from pyro_scm.extrapolation import ExtrapolationWarning

from .dcm_protocol import Settings, counterfactual_units, training_sample
from .methods import PyroSCMMethod


def worst_units(
    method: PyroSCMMethod, syn: SyntheticSCM, node: str, seed: int, settings: Settings, top: int
) -> dict:
    """The ``top`` units of do(``node``) by squared counterfactual error summed over the
    descendant columns (``method`` fitted on ``seed``), each unit's share of the mean, and the
    mean over all units and over the others (x100)."""
    do_cf, factual, noise = counterfactual_units(syn, node, seed, settings)
    with warnings.catch_warnings():  # the flags are reported per unit instead
        warnings.simplefilter("ignore", ExtrapolationWarning)
        result = method.scm.counterfactual(factual, do={node: do_cf})
    truth = syn.counterfactual(noise, {node: do_cf})
    below = syn.descendants(node)
    units = len(do_cf)
    pred = torch.cat([result.values[k][0].reshape(units, -1) for k in below], 1)
    true = torch.cat([truth[k].reshape(units, -1) for k in below], 1)
    error = ((pred - true) ** 2).sum(1)  # (units,): the MSE is error.sum() / (units * columns)
    scale = units * pred.shape[1]
    stats = result.sample_stats
    flags = stats.get("extrapolated")  # None where no recomputed node carries statistics
    order = error.argsort(descending=True)[:top]
    rows = []
    for i in order.tolist():
        row = {
            "unit": i,
            "do": do_cf[i].reshape(-1).tolist(),
            "squared_error": float(error[i]),
            "share_x100": float(error[i]) / scale * 100,
            "flagged": None if flags is None else bool(flags[0][i]),
            "factual": {k: v[i].reshape(-1).tolist() for k, v in factual.items()},
            "counterfactual": {k: result.values[k][0][i].reshape(-1).tolist() for k in below},
            "truth": {k: truth[k][i].reshape(-1).tolist() for k in below},
            "pvalue": {
                k.removeprefix("extrapolation_"): float(v[0][i])
                for k, v in stats.items()
                if k.startswith("extrapolation_")
            },
        }
        rows.append(row)
    keep = torch.ones(units, dtype=torch.bool, device=error.device)
    keep[order] = False
    return {
        "node": node,
        "cf_all_x100": float(error.sum()) / scale * 100,
        "cf_without_top_x100": float(error[keep].sum()) / (int(keep.sum()) * pred.shape[1]) * 100,
        "units": rows,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scm", default="dcm-chain:nonlinear", metavar="NAME:VARIANT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--node", action="append", help="intervened node (default: the protocol's)")
    p.add_argument(
        "--method", default="auto", help="from_graph's mechanism (auto or a kind), its defaults"
    )
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--n-train", type=int, default=Settings.n_train)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/worst_units"))
    args = p.parse_args(argv)
    name, _, variant = args.scm.partition(":")
    syn = load_synthetic(name, variant or None)
    nodes = args.node or list(syn.intervention_nodes)
    unknown = [n for n in nodes if n not in syn.intervention_nodes]
    if unknown:
        p.error(f"--node {unknown} is not intervened on by the protocol of {args.scm}")
    if args.top < 1:
        p.error(f"--top must be at least 1, got {args.top}")
    torch.set_num_threads(1)
    settings = Settings(n_train=args.n_train)
    fit = {"epochs": args.epochs} | ({"workers": 1} if args.method == "auto" else {})
    method = PyroSCMMethod(args.method, fit_kwargs=fit)  # the library's defaults otherwise
    method.fit(syn, training_sample(syn, args.seed, settings), args.seed)
    out = {"config": {**vars(args), "out": str(args.out)}, "selection": method.selection}
    out["nodes"] = [worst_units(method, syn, n, args.seed, settings, args.top) for n in nodes]
    print("| do | unit | squared error | share of the mean (x100) | flagged | p-values |")
    print("|---|---|---|---|---|---|")
    for r in out["nodes"]:
        for u in r["units"]:
            pv = ", ".join(f"{k} {v:.2g}" for k, v in u["pvalue"].items())
            print(
                f"| {r['node']} | {u['unit']} | {u['squared_error']:.3g} | "
                f"{u['share_x100']:.3g} | {u['flagged']} | {pv} |"
            )
        print(
            f"| {r['node']} | all | | {r['cf_all_x100']:.3g} (without these: "
            f"{r['cf_without_top_x100']:.3g}) | | |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worst_units.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
