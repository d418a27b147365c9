"""Does the counterfactual spread over starts tell a flow from a diffusion model per node?

For each (SCM, seed): ``--starts`` fits of the whole SCM with ``mechanism="nsf"`` and as many
with ``mechanism="diffusion"`` (fit's defaults, each with its own seed), then, for every node
with parents, 1,000 fresh units are abducted and regenerated at parents whose rows are permuted
independently, parent by parent (the pseudo-queries of ``select_mechanisms``' spread). Per node
and kind it reports the counterfactual MSE against the true equations at those parents (mean
over starts) and the spread: the variance over starts of the answers, summed over features,
over the node's variance. Prints a table and writes ``spread.json`` to ``--out``.

    python -m benchmarks.counterfactual_spread --scms dcm-triangle dcm-diamond --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

import pyro_scm as ps
from pyro_scm.datasets import load_synthetic

KINDS = ("nsf", "diffusion")


def answers(
    scm_name: str, seed: int, starts: int, units: int, n: int = 5000, epochs: int = 200
) -> dict:
    """node -> {"truth": (units, f), "var": float, kind: [(units, f)] * starts, "queries"}."""
    truth = load_synthetic(scm_name, "nonadditive", seed=seed)
    data = truth.sample(n, seed=seed)
    nodes = [n for n in truth.nodes if truth.parents(n)]
    factual, noise = truth.sample_with_noise(units, seed=777 + seed)
    g = torch.Generator().manual_seed(99 + seed)
    out = {}
    for n in nodes:
        queries = {p: factual[p][torch.randperm(units, generator=g)] for p in truth.parents(n)}
        x = factual[n].reshape(units, -1)
        out[n] = {"queries": queries, "truth": truth.forward(noise, do=queries)[n]}
        out[n] |= {"var": float(x.var(0).sum()), **{k: [] for k in KINDS}}
    for kind in KINDS:
        for s in range(starts):
            model = ps.SCM.from_graph(truth.graph, data, mechanism=kind)
            model.fit(data, epochs=epochs, progress=False, seed=seed * 1000 + s)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # extrapolation warnings of the pseudo-queries
                for n in nodes:
                    cf = model.counterfactual(factual, do=out[n]["queries"])[n][0]
                    out[n][kind].append(cf.reshape(units, -1))
    return out


def summarise(scm_name: str, seed: int, out: dict) -> list[dict]:
    """One row per node of :func:`answers`: each kind's counterfactual MSE (mean over starts)
    and its spread (variance over starts, summed over features, over the node's variance)."""
    rows = []
    for n, r in out.items():
        units = r["truth"].shape[0]
        truth = r["truth"].reshape(units, -1)
        row = {"scm": scm_name, "seed": seed, "node": n}
        for kind in KINDS:
            answers = torch.stack(r[kind])
            row[f"{kind}_cf_mse"] = float(((answers - truth) ** 2).sum(-1).mean())
            row[f"{kind}_spread"] = float(answers.var(0).sum(-1).mean() / r["var"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scms", nargs="+", default=["dcm-triangle", "dcm-chain"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--starts", type=int, default=3)
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--n", type=int, default=5000, help="training samples")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/counterfactual_spread"))
    args = p.parse_args(argv)
    if args.starts < 2:
        p.error(f"--starts must be at least 2 (a spread needs two starts), got {args.starts}")
    torch.set_num_threads(1)
    rows = []
    print("| SCM | seed | node | nsf CF MSE | diffusion CF MSE | nsf spread | diffusion spread |")
    print("|---|---|---|---|---|---|---|")
    for name in args.scms:
        for seed in args.seeds:
            out = answers(name, seed, args.starts, args.units, args.n, args.epochs)
            for r in summarise(name, seed, out):
                rows.append(r)
                print(
                    f"| {name} | {seed} | {r['node']} | {r['nsf_cf_mse']:.4f} | "
                    f"{r['diffusion_cf_mse']:.4f} | {r['nsf_spread']:.4f} | "
                    f"{r['diffusion_spread']:.4f} |",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "spread.json").write_text(json.dumps({"config": config, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
