"""Speed table: framework overhead against hand-written torch over the same mechanisms, and peers.

A 10-node scalar SCM with the ladder's edges (additive noise, tanh mechanisms). pyro_scm NSF
mechanisms are built and standardised on its data (speed does not depend on training). Timings
are medians of ``repeats`` runs after a warm-up; every row is reported as a ratio to pyro_scm
measured in the same run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import warnings

import torch

from pyro_scm.datasets import SyntheticSCM
from pyro_scm.datasets._scm import additive, root
from pyro_scm.datasets.true_models import learned_scm

from .methods import ChiRhoMethod, DoWhyANMMethod, PyroSCMMethod

LADDER = [
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 4),
    (3, 5),
    (4, 6),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 8),
    (7, 9),
    (8, 10),
    (9, 10),
]


def ladder10() -> SyntheticSCM:
    """10 scalar nodes ``x1..x10`` over the ladder's edges: ``x = tanh(Σ pa) + 0.5 u``."""
    parents = {f"x{i}": [f"x{a}" for a, b in LADDER if b == i] for i in range(1, 11)}
    equations = {
        v: additive(pa, lambda *p: torch.tanh(torch.stack(p).sum(0)), 0.5) if pa else root()
        for v, pa in parents.items()
    }
    return SyntheticSCM("ladder10", "tanh", equations, intervention_nodes=["x1"])


def chain10() -> SyntheticSCM:
    """10 scalar nodes ``x1 -> x2 -> ... -> x10``: ``x = tanh(parent) + 0.5 u``."""
    equations = {"x1": root()}
    for i in range(2, 11):
        equations[f"x{i}"] = additive([f"x{i - 1}"], torch.tanh, 0.5)
    return SyntheticSCM("chain10", "tanh", equations, intervention_nodes=["x1"])


#: (SCM builder, {position: intervened node}): root, mid-chain and late interventions.
FLOOR_CASES = {
    "chain10": (chain10, {"root": "x1", "mid": "x4", "late": "x9"}),
    "ladder10": (ladder10, {"root": "x1", "mid": "x5", "late": "x9"}),
}


def _median_cpu_time(fn, repeats: int) -> float:
    """Median process CPU seconds of ``fn()`` after a warm-up (robust on a loaded machine)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def hand_counterfactual(scm, factual: dict, node: str, value: torch.Tensor) -> dict:
    """Abduct every node, then regenerate the descendants of ``node`` in topological order."""
    noise = {}
    for name, mechanism in zip(scm.order, scm.mechanisms):
        d = mechanism(*(factual[p] for p in scm.parents[name]))
        noise[name] = d.abduct(factual[name])
    out = dict(factual)
    out[node] = value
    changed = {node}
    for name, mechanism in zip(scm.order, scm.mechanisms):
        if name != node and any(p in changed for p in scm.parents[name]):
            out[name] = mechanism(*(out[p] for p in scm.parents[name])).generate(noise[name])
            changed.add(name)
    return out


@torch.no_grad()
def floor_counterfactual(scm, factual: dict, node: str, value: torch.Tensor) -> dict:
    """The cost floor: abduct and regenerate only the descendants of ``node``, by hand, over the
    same mechanism objects, in topological order; every other node is the factual."""
    out = dict(factual)
    out[node] = value
    changed = {node}
    for name, mechanism in zip(scm.order, scm.mechanisms):
        if name != node and any(p in changed for p in scm.parents[name]):
            u = mechanism(*(factual[p] for p in scm.parents[name])).abduct(factual[name])
            out[name] = mechanism(*(out[p] for p in scm.parents[name])).generate(u)
            changed.add(name)
    return out


def run_floor(
    sizes: tuple[int, ...] = (64, 10_000),
    repeats: int = 7,
    chirho: bool | None = None,
    fit_units: int = 2000,
) -> dict:
    """Counterfactual time of pyro_scm and ChiRho over the descendants-only floor.

    For each SCM of :data:`FLOOR_CASES`, intervention position and size: the median CPU seconds
    (one thread; process time, so that other load on the machine does not count) of
    ``scm.counterfactual(..., extrapolation=False)`` (the floor's answer), of the default query
    (which adds the extrapolation scores), of :func:`floor_counterfactual` and (when ChiRho
    imports and ``chirho`` is not False) of ChiRho's ``MultiWorldCounterfactual`` over the same
    mechanisms, all in one run; the largest absolute difference of pyro_scm from the floor
    checks they agree.
    """
    if chirho is None:
        try:
            import chirho as _  # noqa: F401

            chirho = True
        except ImportError:
            chirho = False
    rows = []
    for scm_name, (build, positions) in FLOOR_CASES.items():
        torch.manual_seed(0)
        syn = build()
        data = syn.sample(fit_units, seed=0)
        scm = learned_scm(syn, data, "nsf", hidden=(64, 64)).mark_fitted()  # timing only
        peer = None
        if chirho:
            source = PyroSCMMethod("nsf")
            source.scm = scm
            peer = ChiRhoMethod(source)
            peer.fit(syn, data, 0)
        for units in sizes:
            factual = syn.sample(units, seed=1)
            value = torch.full((units,), 0.5)
            for position, node in positions.items():
                row = _floor_row(scm, peer, syn, factual, node, value, repeats)
                rows.append({"scm": scm_name, "position": position, **row})
    return {"rows": rows, "repeats": repeats, "chirho": bool(chirho)}


def _floor_row(scm, peer, syn, factual: dict, node: str, value, repeats: int) -> dict:
    def ours():  # the floor's answer; the extrapolation scores are timed apart
        return scm.counterfactual(factual, do={node: value}, extrapolation=False)

    def scored():
        return scm.counterfactual(factual, do={node: value})

    def floor():
        return floor_counterfactual(scm, factual, node, value)

    cf, ref = ours(), floor()
    row = {
        "node": node,
        "descendants": len(syn.descendants(node)),
        "units": len(value),
        "floor_s": _median_cpu_time(floor, repeats),
        "pyro_scm_s": _median_cpu_time(ours, repeats),
        "max_abs_diff": max(float((cf[k][0] - ref[k]).abs().max()) for k in syn.nodes),
    }
    row["pyro_scm_ratio"] = row["pyro_scm_s"] / row["floor_s"]
    with warnings.catch_warnings():  # random weights: many units are rightly flagged
        warnings.simplefilter("ignore")
        row["scored_s"] = _median_cpu_time(scored, repeats)
    row["scored_ratio"] = row["scored_s"] / row["floor_s"]
    if peer is not None:
        row["chirho_s"] = _median_cpu_time(
            lambda: peer.counterfactual(factual, node, value), repeats
        )
        row["chirho_ratio"] = row["chirho_s"] / row["floor_s"]
        row["chirho_over_pyro_scm"] = row["chirho_s"] / row["pyro_scm_s"]
    return row


def floor_table(result: dict) -> str:
    """The markdown table of :func:`run_floor`."""
    chirho = result.get("chirho")
    head = (
        "| SCM | do | descendants | units | floor (ms) | pyro_scm (ms) | pyro_scm / floor |"
        " scored / floor |"
    )
    sep = "|---|---|---|---|---|---|---|---|"
    if chirho:
        head += " ChiRho / floor | ChiRho / pyro_scm |"
        sep += "---|---|"
    lines = [head, sep]
    for r in result["rows"]:
        line = (
            f"| {r['scm']} | {r['position']} ({r['node']}) | {r['descendants']} | {r['units']} | "
            f"{1e3 * r['floor_s']:.3g} | {1e3 * r['pyro_scm_s']:.3g} | "
            f"{r['pyro_scm_ratio']:.2f}x | {r['scored_ratio']:.2f}x |"
        )
        if chirho:
            line += f" {r['chirho_ratio']:.2f}x | {r['chirho_over_pyro_scm']:.2f}x |"
        lines.append(line)
    return "\n".join(lines)


@torch.no_grad()
def hand_sample(scm, n: int) -> dict:
    """Observational sampling written by hand over the same mechanisms."""
    out = {}
    for name, mechanism in zip(scm.order, scm.mechanisms):
        d = mechanism(*(out[p] for p in scm.parents[name]))
        u = torch.randn(n)
        out[name] = d.generate(u)
    return out


_MEMORY_SCRIPT = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
from benchmarks.speed import ladder10
from pyro_scm.datasets.true_models import learned_scm
units, chunk, mech = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
syn = ladder10()
scm = learned_scm(syn, syn.sample(2000, seed=0), mech, hidden=(64, 64)).mark_fitted()
factual = syn.sample(units, seed=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
cf = scm.counterfactual(factual, do={"x1": 0.5}, chunk_size=chunk or None)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"units": units, "chunk_size": chunk, "rss_before_mb": before / 1024,
                  "rss_peak_mb": after / 1024, "seconds": seconds,
                  "data_mb": 2 * 10 * units * 4 / 2**20}))
"""


def memory_peak(units: int, chunk: int, mechanism: str = "nsf") -> dict:
    """Max RSS of a fresh process answering a ``units``-unit counterfactual in chunks."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(units), str(chunk), mechanism],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_speed(
    units: int = 10_000,
    repeats: int = 5,
    fit_units: int = 5000,
    fit_epochs: int = 3,
    memory_units: int = 1_000_000,
    memory_chunk: int = 100_000,
    peers: dict | None = None,
    floor_sizes: tuple[int, ...] = (64, 10_000),
) -> dict:
    """All speed rows; ratios are ``seconds / pyro_scm seconds`` of the same query."""
    torch.manual_seed(0)
    syn = ladder10()
    data = syn.sample(fit_units, seed=0)
    scm = learned_scm(syn, data, "nsf", hidden=(64, 64)).mark_fitted()  # timing only
    factual = syn.sample(units, seed=1)
    value = torch.full((units,), 0.5)
    rows: dict[str, dict] = {}

    def row(query: str, method: str, seconds: float, base: str = "pyro_scm") -> None:
        rows.setdefault(query, {})[method] = {"seconds": seconds}

    row(
        "counterfactual",
        "pyro_scm",
        _median_time(lambda: scm.counterfactual(factual, do={"x1": value}), repeats),
    )
    row(
        "counterfactual",
        "hand-written torch",
        _median_time(lambda: hand_counterfactual(scm, factual, "x1", value), repeats),
    )
    row("observational", "pyro_scm", _median_time(lambda: scm.sample(units), repeats))
    row(
        "observational",
        "hand-written torch",
        _median_time(lambda: hand_sample(scm, units), repeats),
    )
    peers = peers or {}
    if peers.get("chirho", "").startswith("ok"):
        source = PyroSCMMethod("nsf")
        source.scm = scm
        chirho = ChiRhoMethod(source)
        chirho.fit(syn, data, 0)
        cf_c = chirho.counterfactual(factual, "x1", value)
        cf_p = scm.counterfactual(factual, do={"x1": value})
        err = max(float((cf_c[k] - cf_p[k][0]).abs().max()) for k in syn.nodes)
        row(
            "counterfactual",
            "ChiRho (same mechanisms)",
            _median_time(lambda: chirho.counterfactual(factual, "x1", value), repeats),
        )
        rows["counterfactual"]["ChiRho (same mechanisms)"]["max_abs_diff"] = err
        row(
            "observational",
            "ChiRho (same mechanisms)",
            _median_time(lambda: chirho.sample(units), repeats),
        )
    if peers.get("dowhy", "").startswith("ok"):
        anm = DoWhyANMMethod()
        start = time.perf_counter()
        anm.fit(syn, data, 0)
        anm_fit = time.perf_counter() - start
        frame = syn.to_frame(factual)
        row(
            "counterfactual",
            "DoWhy gcm ANM",
            _median_time(
                lambda: anm.gcm.counterfactual_samples(
                    anm.model, {"x1": lambda x: 0.5}, observed_data=frame
                ),
                max(1, repeats // 2),
            ),
        )
        row(
            "observational",
            "DoWhy gcm ANM",
            _median_time(lambda: anm.gcm.draw_samples(anm.model, units), max(1, repeats // 2)),
        )
        row("fit per node", "DoWhy gcm ANM (auto assignment + fit)", anm_fit / len(syn.nodes))
    fitted = learned_scm(syn, data, "nsf", hidden=(64, 64))
    start = time.perf_counter()
    fitted.fit(data, epochs=fit_epochs, patience=fit_epochs + 1, progress=False)
    fit_s = time.perf_counter() - start
    rows.setdefault("fit per node", {})["pyro_scm"] = {"seconds": fit_s / len(syn.nodes)}
    rows["fit per node"]["pyro_scm"]["note"] = f"{fit_epochs} epochs of {fit_units} units"
    for _query, methods in rows.items():
        base = methods.get("pyro_scm", {}).get("seconds")
        for entry in methods.values():
            entry["ratio_to_pyro_scm"] = entry["seconds"] / base if base else None
    memory = memory_peak(memory_units, memory_chunk) if memory_units else None
    chirho_ok = (peers or {}).get("chirho", "").startswith("ok")
    floor = run_floor(floor_sizes, repeats, chirho=chirho_ok) if floor_sizes else None
    return {
        "scm": "ladder10 (10 scalar nodes, NSF mechanisms, do(x1))",
        "units": units,
        "rows": rows,
        "memory": memory,
        "floor": floor,
    }


def main() -> None:
    """``python -m benchmarks.speed [--out floor.json]``: the floor table, one run."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default="64,10000")
    parser.add_argument("--no-chirho", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    result = run_floor(sizes, args.repeats, chirho=False if args.no_chirho else None)
    print(floor_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
