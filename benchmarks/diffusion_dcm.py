"""Vector diffusion mechanisms on the DCM suite, side by side with NSF flows in the same harness.

Every node gets a DiffusionMechanism (conditional MLP ε-network, T = 100, β linear 1e-4…0.1, as
DCM) or an NSF flow; both are fitted with ``scm.fit`` and asked the same queries:
counterfactual MSE on the descendants (all columns, and DCM's first-column variant),
interventional MMD, observational MMD. Prints a table and writes ``results.json`` and
``cf_mse.png`` to ``--out``.

    python benchmarks/diffusion_dcm.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import pyro_scm as ps
from pyro_scm.datasets import intervention_nodes, intervention_values, load_synthetic
from pyro_scm.mechanisms.diffusion import sampling_steps
from pyro_scm.metrics import counterfactual_mse, mmd


def evaluate(model, truth, args, seed: int) -> dict[str, float]:
    """CF MSE (all / first column), interventional and observational MMD of ``model``."""
    out: dict[str, list[float]] = {"cf_all": [], "cf_first": [], "int_mmd": []}
    descendants = {n: truth.descendants(n) for n in intervention_nodes(truth)}
    for node, desc in descendants.items():
        values = intervention_values(truth, node, num=args.values)
        for i, v in enumerate(values):
            factual, noise = truth.sample_with_noise(args.cf_units, seed=1000 + seed * 100 + i)
            true_cf = truth.counterfactual(noise, {node: v})
            cf = model.counterfactual(factual, do={node: v})
            pred = {k: cf[k][0] for k in desc}
            out["cf_all"].append(counterfactual_mse(pred, true_cf, desc))
            out["cf_first"].append(counterfactual_mse(pred, true_cf, desc, first_column=True))
            sample = model.do({node: v}).sample(args.int_units)
            true_int = truth.interventional({node: v}, args.int_units, seed=2000 + i)
            out["int_mmd"].append(
                mmd(
                    {k: sample[k][:, 0] for k in desc},
                    {k: true_int[k] for k in desc},
                )
            )
    nonroot = [n for n in truth.nodes if truth.parents(n)]
    obs = model.sample(args.obs_units)
    true_obs = truth.sample(args.obs_units, seed=3000 + seed)
    result = {k: sum(v) / len(v) for k, v in out.items()}
    result["obs_mmd"] = mmd({k: obs[k][:, 0] for k in nonroot}, {k: true_obs[k] for k in nonroot})
    return result


def run(args) -> list[dict]:
    rows = []
    for name in args.scms:
        for seed in range(args.seeds):
            truth = load_synthetic(name, args.variant, seed=seed)
            data = truth.sample(args.n, seed=seed)
            for method in args.methods:
                torch.manual_seed(seed)
                # "diffusion": the library's kind (T = 100, β linear 1e-4…0.1, as DCM)
                hidden = (args.hidden,) * 2 if method == "diffusion" else None
                model = ps.from_graph(truth.graph, data, method, hidden=hidden)
                t0 = time.perf_counter()
                model.fit(
                    data,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    val_fraction=0 if method == "diffusion" else 0.1,
                    patience=args.epochs if method == "diffusion" else 10,
                    seed=seed,
                    progress=False,
                )
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                with torch.no_grad(), sampling_steps(args.steps):
                    metrics = evaluate(model, truth, args, seed)
                query_s = time.perf_counter() - t0
                row = {"scm": name, "variant": args.variant, "seed": seed, "method": method}
                row |= metrics | {"fit_s": fit_s, "query_s": query_s}
                rows.append(row)
                print(_fmt(row), flush=True)
    return rows


def _fmt(row: dict) -> str:
    return (
        f"{row['scm']:>9} {row['method']:>9} seed {row['seed']}  "
        f"CF MSE all {row['cf_all']:.4f} first {row['cf_first']:.4f}  "
        f"Int MMD {row['int_mmd']:.4f}  Obs MMD {row['obs_mmd']:.4f}  "
        f"fit {row['fit_s']:.0f}s query {row['query_s']:.0f}s"
    )


def summary(rows: list[dict]) -> list[dict]:
    keys = sorted({(r["scm"], r["method"]) for r in rows})
    out = []
    for scm, method in keys:
        sel = [r for r in rows if r["scm"] == scm and r["method"] == method]
        med = {
            k: statistics.median(r[k] for r in sel)
            for k in ("cf_all", "cf_first", "int_mmd", "obs_mmd", "fit_s", "query_s")
        }
        out.append({"scm": scm, "method": method, "seeds": len(sel)} | med)
    return out


def plot(summ: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    labels = [f"{s['scm']}\n{s['method']}" for s in summ]
    ax.bar(labels, [s["cf_all"] for s in summ])
    ax.set_ylabel("counterfactual MSE (all descendants)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scms", nargs="+", default=["dcm-triangle", "dcm-chain"])
    p.add_argument("--variant", default="nonlinear")
    p.add_argument("--methods", nargs="+", default=["diffusion", "nsf"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="DDIM steps at query time")
    p.add_argument("--values", type=int, default=20)
    p.add_argument("--cf-units", type=int, default=100)
    p.add_argument("--int-units", type=int, default=100)
    p.add_argument("--obs-units", type=int, default=1000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/diffusion_dcm"))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.n, args.epochs, args.values, args.steps = 1, 2000, 40, 5, 50
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    summ = summary(rows)
    print("\nmedians over seeds")
    for s in summ:
        print(_fmt(s | {"seed": "-"}))
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "results.json").write_text(
        json.dumps({"config": config, "rows": rows, "summary": summ}, indent=1)
    )
    plot(summ, args.out / "cf_mse.png")


if __name__ == "__main__":
    main()
