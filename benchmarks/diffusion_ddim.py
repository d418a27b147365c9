"""DDIM abduction -> generation reconstruction error against the number of sampling steps.

Two mechanisms: the exact ε of N(0, I) data (isolates the ODE discretisation error) and the
diffusion SCM fitted on DCM's triangle (nonlinear), whose counterfactual MSE under do(x1) is
also reported per step count. Prints a table and writes ``results.json`` and ``ddim_steps.png``.

    python benchmarks/diffusion_ddim.py --quick
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import pyro_scm as ps
from pyro_scm.datasets import intervention_values, load_synthetic
from pyro_scm.mechanisms.diffusion import DiffusionMechanism, sampling_steps
from pyro_scm.metrics import counterfactual_mse


class GaussianOptimal(nn.Module):
    """ε(x_t, t) = √(1 - ᾱ_t) x_t, exact for N(0, I) data."""

    def __init__(self, abar: torch.Tensor):
        super().__init__()
        self.abar = abar

    def forward(self, x, t, context=None):
        return (1 - self.abar[t.long()]).sqrt()[:, None] * x


def round_trip(d, x: torch.Tensor) -> float:
    return float((d.generate(d.abduct(x)) - x).abs().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50, 100])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--units", type=int, default=500)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/diffusion_ddim"))
    args = p.parse_args()
    if args.quick:
        args.n, args.epochs, args.units = 2000, 40, 300
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)

    exact = DiffusionMechanism(nn.Identity(), (3,), timesteps=100, beta_end=0.1)
    exact.eps_net = GaussianOptimal(exact.alphas_cumprod)
    gauss = torch.randn(args.units, 3)

    truth = load_synthetic("dcm-triangle", "nonlinear")
    data = truth.sample(args.n, seed=0)
    scm = ps.from_graph(truth.graph, data, "diffusion", hidden=(64, 64))
    scm.fit(
        data,
        epochs=args.epochs,
        batch_size=128,
        lr=3e-3,
        val_fraction=0,
        patience=args.epochs,
        progress=False,
    )
    factual, noise = truth.sample_with_noise(args.units, seed=1)
    v = intervention_values(truth, "x1", num=3)[1]
    true_cf = truth.counterfactual(noise, {"x1": v})
    rows = []
    with torch.no_grad():
        for k in args.steps:
            with sampling_steps(k):
                row = {"steps": k, "exact_gaussian": round_trip(exact(), gauss)}
                for node in ("x2", "x3"):
                    parents = [factual[q] for q in scm.parents[node]]
                    mech = scm.mechanisms[scm.order.index(node)]
                    row[f"fitted_{node}"] = round_trip(mech(*parents), factual[node])
                t0 = time.perf_counter()
                cf = scm.counterfactual(factual, do={"x1": v})
                row["cf_seconds"] = time.perf_counter() - t0
                row["cf_mse"] = counterfactual_mse(
                    {n: cf[n][0] for n in ("x2", "x3")}, true_cf, ["x2", "x3"]
                )
            rows.append(row)
            print(
                f"steps {k:>4}  round trip |x' - x|: exact {row['exact_gaussian']:.4f}  "
                f"fitted x2 {row['fitted_x2']:.4f}  x3 {row['fitted_x3']:.4f}  "
                f"CF MSE {row['cf_mse']:.4f}  CF time {row['cf_seconds']:.2f}s",
                flush=True,
            )
    base = rows[-1]["cf_seconds"]
    for r in rows:
        r["cf_time_ratio_to_max_steps"] = r["cf_seconds"] / base
    (args.out / "results.json").write_text(
        json.dumps({"config": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1)
    )
    _plot(rows, args.out / "ddim_steps.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [r["steps"] for r in rows]
    for key in ("exact_gaussian", "fitted_x2", "fitted_x3", "cf_mse"):
        ax.plot(steps, [r[key] for r in rows], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("DDIM steps")
    ax.set_ylabel("mean |x' - x| (round trip) / CF MSE")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
