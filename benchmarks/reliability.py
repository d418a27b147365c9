"""Concurrency and determinism figures of issue 11: run on any checkout, print a table, write JSON.

- concurrency: ``threads`` threads each ask one shared SCM ``iterations`` counterfactuals with
  their own intervention and compare against the closed form; an iteration fails when any
  thread raised or returned a wrong value;
- determinism: under one seed, the first query on a fresh model against the same query once the
  graph is cached, and whether deriving the graph moves torch's global RNG;
- global state: torch's default distribution validation after ``import pyro_scm`` and after a
  query.

Usage: ``python -m benchmarks.reliability [--threads 8] [--iterations 50] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

import torch

_before_import = torch.distributions.Distribution._validate_args
import pyro  # noqa: E402

import pyro_scm as ps  # noqa: E402

_after_import = torch.distributions.Distribution._validate_args

A, B, C, D, E = 1.5, 0.5, -0.8, 0.7, 0.3


class Linear(ps.SCM):
    """x = u_x; y = A x + B u_y; z = C y + D x + E u_z."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.y = ps.LocScaleMechanism(loc=lambda x: A * x, scale=B)
        self.z = ps.LocScaleMechanism(loc=lambda y, x: C * y + D * x, scale=E)

    def model(self):
        x = pyro.sample("x", self.x())
        y = pyro.sample("y", self.y(x))
        pyro.sample("z", self.z(y, x))


def concurrency(threads: int, iterations: int) -> dict:
    scm = Linear()
    g = torch.Generator().manual_seed(0)
    f = {k: torch.randn(64, generator=g) for k in "xyz"}
    u_y, u_z = (f["y"] - A * f["x"]) / B, (f["z"] - C * f["y"] - D * f["x"]) / E
    raised = wrong = failed = 0
    for _ in range(iterations):
        outcome = [None] * threads

        def work(i: int, outcome: list = outcome) -> None:
            value = float(i)
            try:
                cf = scm.counterfactual(f, do={"x": value})
                y = A * value + B * u_y
                ok = torch.allclose(cf["z"][0], C * y + D * value + E * u_z, atol=1e-4)
                outcome[i] = "ok" if ok else "wrong"
            except Exception:
                outcome[i] = "raised"

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        raised += "raised" in outcome
        wrong += "wrong" in outcome and "raised" not in outcome
        failed += any(o != "ok" for o in outcome)
    return {
        "threads": threads,
        "iterations": iterations,
        "failed": failed / iterations,
        "raised": raised / iterations,
        "wrong_without_error": wrong / iterations,
    }


def determinism() -> dict:
    pyro.set_rng_seed(0)
    first = Linear().sample(5)["x"]
    scm = Linear()
    _ = scm.graph
    pyro.set_rng_seed(0)
    cached = scm.sample(5)["x"]
    state = torch.get_rng_state()
    _ = Linear().graph
    return {
        "first_query_equals_cached": bool(torch.equal(first, cached)),
        "derivation_keeps_global_rng": bool(torch.equal(state, torch.get_rng_state())),
    }


def global_state() -> dict:
    torch.distributions.Distribution.set_default_validate_args(False)
    Linear().sample(3)
    after_query = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(_before_import)
    return {
        "validation_before_import": _before_import,
        "validation_after_import": _after_import,
        "validation_after_query_when_user_set_false": after_query,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {
        "concurrency": concurrency(args.threads, args.iterations),
        "determinism": determinism(),
        "global_state": global_state(),
    }
    for group, values in results.items():
        print(f"{group}:")
        for k, v in values.items():
            print(f"  {k:<44} {v}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
