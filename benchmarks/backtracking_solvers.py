"""Mode DeepBC solvers: constraint-linearised (Algorithm 1 + LM damping) against Adam and L-BFGS.

An untrained four-node flow SCM (a, b -> c (2-d) -> d); antecedent c = (0.5, -0.3) for every
unit. Prints iterations, remaining constraint violation and the distance reached per solver, and
writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import torch
import zuko

import pyro_scm as ps
from pyro_scm.distances import SquaredL2
from pyro_scm.infer import ReducedForm, solve_gradient, solve_linearized


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/out/backtracking_solvers")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--units", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    units = args.units or (32 if args.quick else 256)
    scm = FlowSCM()
    f = {k: v[:, 0] for k, v in scm.sample(units).values.items()}
    rf = ReducedForm(scm, f, {"c": torch.tensor([0.5, -0.3]).expand(units, 2)})
    d = SquaredL2()
    runs = {
        "linearized": lambda: solve_linearized(rf, d),
        "adam lr=0.05": lambda: solve_gradient(
            rf, d, optimizer="adam", lr=0.05, max_iter=300 if args.quick else 2000
        ),
        "lbfgs": lambda: solve_gradient(
            rf, d, optimizer="lbfgs", max_iter=100 if args.quick else 300
        ),
    }
    rows = {}
    for name, run in runs.items():
        t = time.perf_counter()
        sol = run()
        seconds = time.perf_counter() - t
        dist = d.total(rf.unpack(sol.z), rf.unpack(rf.z_factual), rf.event_dims())
        rows[name] = {
            "iterations_median": sol.iterations.float().median().item(),
            "iterations_max": int(sol.iterations.max()),
            "violation_median": sol.violation.median().item(),
            "violation_max": sol.violation.max().item(),
            "converged": sol.converged.float().mean().item(),
            "distance_mean": dist.mean().item(),
            "seconds": seconds,
        }
    base = rows["linearized"]["seconds"]
    print(f"{units} units, antecedent c = (0.5, -0.3), tol 1e-4")
    print(
        f"{'solver':<14}{'iter med':>9}{'iter max':>9}{'viol med':>10}{'viol max':>10}"
        f"{'conv':>6}{'dist':>8}{'time/lin':>9}"
    )
    for name, r in rows.items():
        print(
            f"{name:<14}{r['iterations_median']:>9.0f}{r['iterations_max']:>9d}"
            f"{r['violation_median']:>10.2e}{r['violation_max']:>10.2e}{r['converged']:>6.2f}"
            f"{r['distance_mean']:>8.3f}{r['seconds'] / base:>9.2f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"units": units, "solvers": rows}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
