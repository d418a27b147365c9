"""Constrained samplers on the antecedent manifold against relaxed-target samplers.

Two SCMs, one unit each: ``linear`` (x = u_x; y = 1.5 x + 0.5 u_y; z = −0.8 y + 0.7 x + 0.3 u_z,
antecedent y = 1.2, backtracking posterior known in closed form) and ``flow`` (an untrained
four-node zuko flow SCM a, b -> c (2-d) -> d, antecedent b = b_F + 1). Methods: constrained HMC
(``chmc``) and manifold MALA (``cmala``) on the exact constraint; Pyro's NUTS, MALA and the
batched HMC kernel on the relaxed target (σ = ``--sigma``). For each run: wall time, the smallest
bulk ESS over the free latents (arviz), ESS per second and its ratio to NUTS, and on ``linear``
the error of the posterior mean (max abs) and covariance (relative Frobenius) to the closed form
of the exact constraint, and the ESS of the squared deviations (u − ū)², which sets the Monte
Carlo error of a variance (sd ≈ √(2 / ESS) relative). ``--target`` also runs the issue's target:
default chmc with 2000 draws of one unit (20 chains × 100, and 100 chains × 100 thinned to every
fifth), for ``--seeds`` seeds, next to the
covariance error of 2000 exact independent draws with the same seed. ``--chains`` sets the chains
of every method (NUTS included). Every ratio comes from one run on one machine. JSON to ``--out``.

    python benchmarks/constrained_backtracking.py [--quick] [--target] [--seeds 5]
        [--scms linear flow] [--chains 4] [--nuts-depth 8] [--out benchmarks/out/constrained]

``--quick`` cuts NUTS to depth 4 and 10 + 10 iterations per chain (a smoke run; its ESS is then
an overestimate from unconverged chains, so its ratios flatter NUTS' cost, not its accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch
import zuko

import pyro_scm as ps

A, B = 1.5, 0.5
FACT = {"x": [0.3], "y": [0.2], "z": [-0.1]}


class LinearSCM(ps.SCM):
    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.y = ps.LocScaleMechanism(loc=lambda x: A * x, scale=B)
        self.z = ps.LocScaleMechanism(loc=lambda y, x: -0.8 * y + 0.7 * x, scale=0.3)

    def model(self):
        x = pyro.sample("x", self.x())
        y = pyro.sample("y", self.y(x))
        pyro.sample("z", self.z(y, x))


class FlowSCM(ps.SCM):
    def __init__(self):
        super().__init__()
        self.a = ps.FlowMechanism(zuko.flows.NSF(features=1, context=0))
        self.b = ps.FlowMechanism(zuko.flows.MAF(features=1, context=1))
        self.c = ps.FlowMechanism(zuko.flows.NSF(features=2, context=2))
        self.d = ps.FlowMechanism(zuko.flows.MAF(features=1, context=2))

    def model(self):
        a = pyro.sample("a", self.a())
        b = pyro.sample("b", self.b(a))
        c = pyro.sample("c", self.c(a, b))
        pyro.sample("d", self.d(c))


def linear_closed_form(scm) -> tuple[torch.Tensor, torch.Tensor]:
    """N(u_F, ½ I) on (u_x, u_y) conditioned on 1.5 u_x + 0.5 u_y = 1.2."""
    u = scm.abduct({k: torch.tensor(v) for k, v in FACT.items()})
    m = torch.tensor([u["x"].item(), u["y"].item()])
    a = torch.tensor([A, B])
    S = torch.eye(2) / 2
    k = S @ a / (a @ S @ a)
    return m + k * (1.2 - a @ m), S - torch.outer(k, a @ S)


def problem(name: str):
    if name == "linear":
        scm = LinearSCM()
        return scm, FACT, {"y": 1.2}, ["x", "y"]
    torch.manual_seed(0)
    scm = FlowSCM().eval().mark_fitted()  # untrained weights, declared on purpose
    f = {k: v[:1, 0] for k, v in scm.sample(1).values.items()}
    return scm, f, {"b": f["b"] + 1.0}, ["a", "b"]


def chains(bt, n: str, thin: int = 1) -> torch.Tensor:
    """Unit 0's draws of latent ``n`` by chain, every ``thin``-th kept: ``(chains, draws)``."""
    return bt.noise[n][:, 0].reshape(bt.num_chains, -1)[:, ::thin]


def ess_of_squares(bt, free: list[str], thin: int = 1) -> float:
    """The smallest ESS (arviz, mean) over the free latents of (u − ū)²: the ESS that sets the
    Monte Carlo error of a variance, sd(v̂)/v ≈ √(2 / ESS) for a Gaussian."""
    import arviz

    out = []
    for n in free:
        x = chains(bt, n, thin).numpy()
        out.append(float(arviz.ess((x - x.mean()) ** 2, method="mean")))
    return min(out)


def iid_cov_error(scm, n: int, seed: int) -> float:
    """The covariance error of ``n`` exact independent draws of the closed form: the Monte
    Carlo floor any sampler's ``n`` draws are measured against."""
    mean, cov = linear_closed_form(scm)
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([-B, A]) / (A**2 + B**2) ** 0.5  # the manifold's direction
    x = mean + torch.randn(n, 1, generator=g) * (a @ cov @ a).sqrt() * a
    return ((torch.cov(x.T) - cov).norm() / cov.norm()).item()


def run(name: str, method: str, kw: dict, sigma: float, seed: int = 1, thin: int = 1) -> dict:
    """One backtracking run; ``thin`` keeps every thin-th draw of each chain for the closed-form
    errors and the ESS of squares (ESS, R-hat and ESS/s are of all draws)."""
    scm, f, ante, free = problem(name)
    extra = {} if method in ("chmc", "cmala") else {"sigma": sigma}
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        start = time.perf_counter()
        bt = scm.backtrack(f, ante, method=method, **kw, **extra)
        seconds = time.perf_counter() - start
    ess = min(bt.diagnostics[f"ess_bulk_{n}"][0].item() for n in free)
    rhat = max(bt.diagnostics[f"rhat_{n}"][0].item() for n in free)
    row = {
        "scm": name,
        "method": method,
        "settings": kw,
        "seconds": seconds,
        "draws": bt.num_samples // thin,
        "thin": thin,
        "ess": ess,
        "ess_per_s": ess / seconds,
        "rhat": rhat,
        "ess_sq": ess_of_squares(bt, free, thin),
        "accept": bt.diagnostics["accept_rate"][0].item(),
        "violation_max": bt.diagnostics["violation_max"][0].item(),
        "warnings": [str(w.message)[:200] for w in rec],
    }
    if "projection_failures" in bt.diagnostics:
        row["projection_failure_rate"] = bt.diagnostics["projection_failures"][0].item() / (
            bt.num_samples
        )
    if name == "linear":
        mean, cov = linear_closed_form(scm)
        x = torch.stack([chains(bt, "x", thin).flatten(), chains(bt, "y", thin).flatten()], -1)
        row["mean_error"] = (x.mean(0) - mean).abs().max().item()
        row["cov_rel_error"] = ((torch.cov(x.T) - cov).norm() / cov.norm()).item()
    else:
        row["mean_a"] = bt.noise["a"][:, 0].mean().item()
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer draws (a smoke run)")
    parser.add_argument("--sigma", type=float, default=0.01, help="relaxation of relaxed samplers")
    parser.add_argument("--target", action="store_true", help="also the 2000-draw chmc target")
    parser.add_argument("--scms", nargs="+", default=["linear", "flow"], choices=["linear", "flow"])
    parser.add_argument("--nuts-depth", type=int, default=8, help="NUTS max_tree_depth")
    parser.add_argument("--chains", type=int, default=4, help="chains of every method")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the --target run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/constrained"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import arviz  # noqa: F401  (imported once, outside the timings)

    q = args.quick
    draws = dict(num_chains=args.chains, num_samples=50 if q else 200, warmup=30 if q else 50)
    settings = {
        "chmc": draws,
        "cmala": draws,
        "hmc": draws,
        "mala": draws,
        "nuts": dict(
            num_chains=args.chains,
            num_samples=10 if q else 50,
            warmup=10 if q else 50,
            max_tree_depth=4 if q else args.nuts_depth,
        ),
    }
    rows = []
    for name in args.scms:
        for method, kw in settings.items():
            rows.append(run(name, method, kw, args.sigma))
            print(f"{name:7} {method:6} {rows[-1]['seconds']:7.1f}s", file=sys.stderr)
    if args.target:  # the target: 2000 draws of one unit, default chmc, several seeds
        plans = [  # 20 chains x 100 draws; 100 chains x 100 transitions, every 5th kept
            (dict(num_chains=20, num_samples=100, warmup=50), 1),
            (dict(num_chains=100, num_samples=100, warmup=50), 5),
        ]
        for kw, thin in plans:
            for seed in range(args.seeds):
                row = run("linear", "chmc", kw, args.sigma, seed, thin)
                row.update(target=True, seed=seed, cov_mc_error=(2 / row["ess_sq"]) ** 0.5)
                row["iid_cov_error"] = iid_cov_error(LinearSCM(), row["draws"], seed)
                rows.append(row)
    for name in args.scms:
        nuts = next(r for r in rows if r["scm"] == name and r["method"] == "nuts")
        for r in rows:
            if r["scm"] == name:
                r["ess_per_s_vs_nuts"] = r["ess_per_s"] / max(nuts["ess_per_s"], 1e-12)
    header = (
        f"{'scm':7} {'method':7} {'draws':>6} {'s':>7} {'ESS':>7} {'ESS/s':>8} {'xNUTS':>8} "
        f"{'R-hat':>6} {'acc':>5} {'mean err':>9} {'cov err':>8} {'proj fail':>9} {'ESS u²':>7}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['scm']:7} {r['method'] + ('*' if r.get('target') else ''):7} {r['draws']:6d} "
            f"{r['seconds']:7.1f} {r['ess']:7.0f} {r['ess_per_s']:8.2f} "
            f"{r['ess_per_s_vs_nuts']:8.1f} {r['rhat']:6.3f} {r['accept']:5.2f} "
            f"{r.get('mean_error', float('nan')):9.4f} {r.get('cov_rel_error', float('nan')):8.3f} "
            f"{r.get('projection_failure_rate', float('nan')):9.3f} {r['ess_sq']:7.0f}"
        )
    target = [r for r in rows if r.get("target")]
    if target:
        print("target (default chmc, 2000 draws of one unit, 50 warmup), per seed:")
        head = f"{'chains':>6} {'thin':>4} {'seed':>4} {'s':>6} {'mean err':>9} {'cov err':>8}"
        print(f"{head} {'MC sd':>6} {'iid cov err':>11}")
        for r in target:
            print(
                f"{r['settings']['num_chains']:6d} {r['thin']:4d} {r['seed']:4d} "
                f"{r['seconds']:6.1f} {r['mean_error']:9.4f} "
                f"{r['cov_rel_error']:8.3f} {r['cov_mc_error']:6.3f} {r['iid_cov_error']:11.3f}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"sigma": args.sigma, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
