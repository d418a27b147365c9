"""Fit time of ``mechanism="auto"`` on the DCM scalar SCMs: run on an idle machine, print a
table, write JSON.

For each SCM and seed, the protocol's training sample (n = 5000, ``benchmarks.dcm_protocol``)
is fitted three ways, one after the other in this process, so the ratios come from one run:

- ``auto``: ``from_graph(graph, data).fit(data)`` with the library's defaults (its candidate
  kinds train in ``workers=None`` processes: one per usable CPU);
- ``auto, 1 worker``: the same in one process (the benchmark protocol's setting);
- ``chosen kinds``: ``from_graph(graph, data, {node: kind}).fit(data)`` with the kinds ``auto``
  chose, trained once with the same settings: the floor of a model of those kinds, so
  ``auto, 1 worker / chosen kinds`` is what the selection costs on top of it.

Also printed: each ``auto`` time over DCM's fit time (the issue's target is at most 2). With
``--dcm-code DIR`` (a checkout of DCM's reference code, github.com/patrickrchao/
DiffusionBasedCausalModels, and dowhy installed) DCM is fitted in this run on the same training
sample with its benchmark's settings (``dcm_peer.DCM_PARAMS``: 500 epochs of batches of 64),
so the ratio compares one run; without it the ratio uses ``DCM_FIT_S``, the ≈ 60 s per SCM of an
earlier run (``shared/benchmarks/SCMS.md``), which compares machines. Wall seconds (the machine
should be otherwise idle; torch uses one thread per process, DCM included).

Usage: ``python -m benchmarks.fit_time [--seeds 1] [--scm dcm-diamond:nonadditive ...]
[--dcm-code DIR] [--no-floor] [--out FILE]`` (``--no-floor``: time ``auto`` with the defaults
only, not with one worker nor the chosen kinds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pyro_scm.datasets import load_synthetic
from pyro_scm.datasets.true_models import learned_scm
from pyro_scm.errors import DataError

from .dcm_peer import check_dcm_code, dcm_params, load_dcm
from .extrapolation_calibration import DEFAULT_SCMS

#: DCM's fit time per SCM in an earlier run on this kind of machine (seconds; ``SCMS.md``,
#: "Measured here"), the ratio's denominator when DCM is not fitted in the run
DCM_FIT_S = 60.0
N_TRAIN = 5000


def dcm_fit_s(create: Callable, syn, data, seed: int, epochs: int | None = None) -> float:
    """Wall seconds of ``dowhy.gcm.fit`` of DCM's model (``create``, from :func:`load_dcm`) of
    ``syn``'s graph on ``data`` (scalar nodes), with ``dcm_peer.DCM_PARAMS`` (``epochs``: its
    epochs)."""
    import dowhy.gcm as gcm
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({n: data[n].reshape(len(data[n])).cpu().numpy() for n in syn.nodes})
    params = dcm_params(epochs)
    gcm.config.disable_progress_bars()
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = create(syn.graph, params)
    start = time.perf_counter()
    gcm.fit(model, frame)
    return time.perf_counter() - start


def _timed_fit(syn, data, mechanism, seed: int, **kwargs) -> tuple[float, object]:
    torch.manual_seed(seed)
    scm = learned_scm(syn, data, mechanism)
    start = time.perf_counter()
    history = scm.fit(data, seed=seed, progress=False, **kwargs)
    return time.perf_counter() - start, history


def measure(
    label: str,
    seed: int,
    n_train: int = N_TRAIN,
    epochs: int | None = None,
    dcm: Callable | None = None,
    floor: bool = True,
) -> dict:
    """The fit times of ``label`` ("name:variant") on training seed ``seed`` (``epochs``: None
    for the library's default and DCM's; ``dcm``: DCM's model factory, :func:`load_dcm`, to fit
    DCM in this run; ``floor``: also time ``auto`` in one worker and the chosen kinds)."""
    name, _, variant = label.partition(":")
    syn = load_synthetic(name, variant or None)  # as benchmarks.run (the seed draws the sample)
    data = syn.sample(n_train, seed=1000 + seed)  # as benchmarks.dcm_protocol
    settings = {} if epochs is None else {"epochs": epochs}
    auto_s, history = _timed_fit(syn, data, "auto", seed, **settings)
    kinds = {n: info["kind"] for n, info in history.attrs["selection"].items()}
    one_s = chosen_s = None
    if floor:
        one_s, history_one = _timed_fit(syn, data, "auto", seed, workers=1, **settings)
        if kinds != {n: info["kind"] for n, info in history_one.attrs["selection"].items()}:
            raise RuntimeError(f"{label}: the selection depends on the number of workers")
        chosen_s, _ = _timed_fit(syn, data, kinds, seed, **settings)
    dcm_s = DCM_FIT_S if dcm is None else dcm_fit_s(dcm, syn, data, seed, epochs)
    return {
        "scm": label,
        "seed": seed,
        "n_train": n_train,
        "kinds": kinds,
        "workers": len(history.attrs["worker_cpu_s"]),
        "auto_s": auto_s,
        "auto_1_worker_s": one_s,
        "chosen_kinds_s": chosen_s,
        "dcm_s": dcm_s,
        "dcm_measured": dcm is not None,
        "selection_cost": None if one_s is None else one_s / chosen_s,
        "auto_over_dcm": auto_s / dcm_s,
        "auto_1_worker_over_dcm": None if one_s is None else one_s / dcm_s,
    }


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| SCM | seed | kinds chosen | workers | auto (s) | DCM (s) "
        "| auto / chosen kinds (1 worker) | auto / DCM | auto, 1 worker / DCM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kinds = ", ".join(f"{n} {k}" for n, k in r["kinds"].items())
        dcm = f"{r['dcm_s']:.1f}" + ("" if r["dcm_measured"] else " (SCMS.md)")
        lines.append(
            f"| {r['scm']} | {r['seed']} | {kinds} | {r['workers']} | {r['auto_s']:.1f} | {dcm} "
            f"| {_ratio(r['selection_cost'])} | {r['auto_over_dcm']:.2f} "
            f"| {_ratio(r['auto_1_worker_over_dcm'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="training samples per SCM")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--scm", action="append", help="e.g. dcm-diamond:nonadditive (repeat)")
    parser.add_argument("--n-train", type=int, default=N_TRAIN, help="training units")
    parser.add_argument("--epochs", type=int, default=None, help="default: the library's")
    parser.add_argument("--dcm-code", type=Path, default=None, help="DCM's reference code")
    parser.add_argument("--no-floor", action="store_true", help="time auto's defaults only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.first_seed < 0:
        parser.error("--seeds must be at least 1 and --first-seed at least 0")
    if args.n_train < 50 or (args.epochs is not None and args.epochs < 1):
        parser.error("--n-train must be at least 50 and --epochs at least 1")
    for label in args.scm or DEFAULT_SCMS:
        name, _, variant = label.partition(":")
        try:
            syn = load_synthetic(name, variant or None)
        except DataError as error:
            parser.error(f"--scm {label}: {error}")
        if args.dcm_code is not None and any(len(s) for s in syn.event_shapes.values()):
            parser.error(f"--dcm-code: {label} has vector nodes; DCM's code takes scalars")
    dcm = None
    if args.dcm_code is not None:
        if (why := check_dcm_code(args.dcm_code)) is not None:
            parser.error(f"--dcm-code {args.dcm_code}: {why}")
        try:
            dcm = load_dcm(args.dcm_code)
        except ImportError as error:
            parser.error(f"--dcm-code {args.dcm_code}: DCM's code does not import ({error})")
    torch.set_num_threads(1)
    rows = []
    for label in args.scm or DEFAULT_SCMS:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(
                measure(label, seed, args.n_train, args.epochs, dcm, floor=not args.no_floor)
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    result = {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "dcm_fit_s": DCM_FIT_S if dcm is None else "measured",
        "dcm_params": dcm_params(args.epochs),
        "rows": rows,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
