"""One command for the benchmark suite: the DCM protocol side by side with peers, and speed.

    python -m benchmarks.run --quick            # a few minutes: triangle + chain nonlinear, 1 seed
    python -m benchmarks.run                    # full: every DCM SCM, 10 seeds, DCM's sizes
    python -m benchmarks.run --smoke            # seconds: one tiny SCM (CI)
    python -m benchmarks.run --scm dcm-y:nonadditive --seeds 3 --methods nsf,dowhy   # a slice

``--scm``, ``--seeds`` and ``--methods`` narrow any mode to a slice of it (the full mode takes
hours on a 2-core CPU).

Methods: pyro_scm with NSF flow, loc-scale and additive-noise (``anm``) mechanisms, the true
SCM (additive SCMs: a check on the harness, ~0 counterfactual error), the rank-preserving
oracle (non-identifiable scalar SCMs: the floor of any flow, from the true equations), and where
installed ChiRho (over pyro_scm's fitted NSF mechanisms) and DoWhy gcm (ANM); with
``--dcm-code DIR`` (a checkout of DCM's reference code; dowhy installed) DCM itself, fitted on the
same samples and asked about the same units (``benchmarks.dcm_peer``). Peers belong to the
benchmark environment (``.venv-bench``); a missing peer is reported and skipped. Writes
``results.json`` and ``results.md`` to ``--out`` (default ``benchmarks/out/run``);
``benchmarks/report.py`` turns the JSON into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.dcm_peer import DCMMethod, check_dcm_code, dcm_params, load_dcm
from benchmarks.dcm_protocol import Settings, evaluate
from benchmarks.methods import (
    ChiRhoMethod,
    DoWhyANMMethod,
    PyroSCMMethod,
    RankOracleMethod,
    TrueMethod,
    peer_status,
)
from benchmarks.published import MEASURED, PUBLISHED
from pyro_scm.datasets import load_synthetic

DCM_SCMS = ["dcm-chain", "dcm-triangle", "dcm-diamond", "dcm-y", "dcm-ladder", "dcm-random"]
VARIANTS = ["nonlinear", "nonadditive"]


def mode_config(mode: str) -> dict:
    """SCMs, seeds, protocol settings and speed sizes of a mode (smoke, quick, full)."""
    if mode == "smoke":
        settings = Settings(
            n_train=300,
            num_values=2,
            n_obs=100,
            n_int=20,
            n_cf=20,
            epochs=2,
            hidden=(8,),
            transforms=1,
        )
        return {
            "scms": [("dcm-chain", "nonlinear")],
            "seeds": [0],
            "settings": settings,
            "speed": None,
        }
    if mode == "quick":
        settings = Settings(
            n_train=2000, num_values=5, epochs=40, patience=4, hidden=(32, 32), transforms=2
        )
        speed = {
            "units": 10_000,
            "repeats": 3,
            "fit_units": 2000,
            "fit_epochs": 1,
            "memory_units": 200_000,
            "memory_chunk": 10_000,
            "floor_sizes": (64,),
        }
        return {
            "scms": [("dcm-triangle", "nonlinear"), ("dcm-chain", "nonlinear")],
            "seeds": [0],
            "settings": settings,
            "speed": speed,
        }
    speed = {
        "units": 10_000,
        "repeats": 5,
        "fit_units": 5000,
        "fit_epochs": 3,
        "memory_units": 1_000_000,
        "memory_chunk": 10_000,
    }
    return {
        "scms": [(s, v) for s in DCM_SCMS for v in VARIANTS],
        "seeds": list(range(10)),
        "settings": Settings(),
        "speed": speed,
    }


METHOD_KEYS = {
    "pyro_scm-auto": "auto",
    "pyro_scm-nsf[v0.1 defaults]": "nsf0",
    "pyro_scm-nsf": "nsf",
    "pyro_scm-locscale": "locscale",
    "pyro_scm-anm": "anm",
    "pyro_scm-diffusion": "diffusion",
    "true-scm": "true",
    "rank-oracle": "rank",
    "chirho[nsf]": "chirho",
    "dowhy-anm": "dowhy",
    "dcm": "dcm",
}


def make_methods(
    settings: Settings,
    peers: dict,
    syn,
    only: set[str] | None = None,
    workers: int | None = None,
    dcm: Callable | None = None,
) -> list:
    """The methods run on ``syn`` (true model only for additive SCMs, the rank oracle only for
    non-identifiable scalar ones; DoWhy and DCM scalar nodes only).

    ``only``: keys of :data:`METHOD_KEYS` to keep (None: all but ``nsf0``, NSF with fit's
    defaults before issue 15, and ``diffusion``, the fixed diffusion kind on every node).
    ChiRho reuses the NSF model, so it needs ``nsf`` too.
    ``workers``: processes of ``auto``'s selection (None: the library's default).
    ``dcm``: DCM's model factory (``dcm_peer.load_dcm``), to run DCM's reference code too.
    """
    fit = {
        "epochs": settings.epochs,
        "patience": settings.patience,
        "lr_decay": settings.lr_decay,
        "max_decays": settings.max_decays,
        "batch_size": settings.batch_size,
    }
    build = {"hidden": settings.hidden, "transforms": settings.transforms}
    nsf = PyroSCMMethod("nsf", fit_kwargs=fit, **build)
    v01 = {"epochs": 100, "patience": 10, "lr_decay": None}  # fit's defaults before issue 15
    methods = [
        # library defaults: from_graph(graph, data).fit(data)
        PyroSCMMethod("auto", fit_kwargs={} if workers is None else {"workers": workers}),
        PyroSCMMethod("nsf", fit_kwargs=v01, name="pyro_scm-nsf[v0.1 defaults]"),
        nsf,
        PyroSCMMethod("locscale", fit_kwargs=fit, hidden=settings.hidden),
        PyroSCMMethod("anm", fit_kwargs=fit, hidden=settings.hidden),
        # DCM's model class in pyro_scm: a conditional MLP ε-network per node (T = 100)
        PyroSCMMethod("diffusion", fit_kwargs=fit, hidden=settings.hidden),
    ]
    scalar = not any(len(s) for s in syn.event_shapes.values())
    if syn.is_additive:
        methods.append(TrueMethod())
    elif not syn.is_identifiable and scalar:
        methods.append(RankOracleMethod())
    if peers["chirho"].startswith("ok"):
        methods.append(ChiRhoMethod(nsf))
    if peers["dowhy"].startswith("ok") and scalar:
        methods.append(DoWhyANMMethod())
    if dcm is not None and scalar:
        methods.append(DCMMethod(dcm))
    if only is None:  # the default: everything but the old-defaults reference and diffusion
        only = set(METHOD_KEYS.values()) - {"nsf0", "diffusion"}
    return [m for m in methods if METHOD_KEYS[m.name] in only]


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Mean and std over seeds of every metric of one (SCM, method)."""
    out = {k: _mean_std([r[k] for r in runs]) for k in ("obs_mmd", "fit_s", "query_s")}
    out["per_node"] = {
        node: {m: _mean_std([r["per_node"][node][m] for r in runs]) for m in metrics}
        for node, metrics in runs[0]["per_node"].items()
    }
    if "selection" in runs[0]:  # node -> kind -> seeds that chose it
        counts: dict[str, dict[str, int]] = {}
        for r in runs:
            for node, kind in r["selection"].items():
                counts.setdefault(node, {}).setdefault(kind, 0)
                counts[node][kind] += 1
        out["selection"] = counts
    return out


def run_dcm(
    config: dict,
    peers: dict,
    log=print,
    only: set[str] | None = None,
    workers: int | None = None,
    dcm: Callable | None = None,
) -> list[dict]:
    """Every (SCM, method, seed) of the mode; one summary record per (SCM, method). Methods run
    after ``auto`` on a seed are also scored over the units it did not flag
    (``cf_reference_unflagged``)."""
    records = []
    for name, variant in config["scms"]:
        syn = load_synthetic(name, variant)
        runs: dict[str, list[dict]] = {}
        for seed in config["seeds"]:
            reference: dict | None = None  # the flags of auto, the first method, on this seed
            for method in make_methods(config["settings"], peers, syn, only, workers, dcm):
                start = time.perf_counter()
                flags: dict = {}
                result = evaluate(method, syn, seed, config["settings"], reference, flags)
                if reference is None and method.name == "pyro_scm-auto":
                    reference = flags
                runs.setdefault(method.name, []).append(result)
                log(f"{syn.label} seed {seed} {method.name}: {time.perf_counter() - start:.1f} s")
        for method_name, results in runs.items():
            records.append(
                {
                    "scm": name,
                    "variant": variant,
                    "identifiable": syn.is_identifiable,
                    "method": method_name,
                    "seeds": len(results),
                    "summary": summarise(results),
                    "runs": results,
                }
            )
    return records


# --------------------------------------------------------------------------- tables


def _pm(ms: tuple[float, float], scale: float = 100.0, digits: int = 2) -> str:
    m, s = ms
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def dcm_table(records: list[dict]) -> str:
    """Markdown: every metric x100 (MMD and MSE), mean ± std over seeds; times in seconds."""
    lines = [
        "| SCM | method | node | CF MSE all desc. | CF MSE first col. | Int MMD | Obs MMD | "
        "fit (s) | query (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        s = r["summary"]
        for i, (node, m) in enumerate(s["per_node"].items()):
            head = f"{r['scm']}[{r['variant']}] | {r['method']}" if i == 0 else " | "
            tail = (
                f"{_pm(s['obs_mmd'])} | {_pm(s['fit_s'], 1, 1)} | {_pm(s['query_s'], 1, 2)}"
                if i == 0
                else " | | "
            )
            lines.append(
                f"| {head} | do({node}) | {_pm(m['cf_all'])} | {_pm(m['cf_first'])} | "
                f"{_pm(m['int_mmd'])} | {tail} |"
            )
    return "\n".join(lines)


def comparison(records: list[dict]) -> list[dict]:
    """Ours against SCMS.md's "Measured here" (x100) and the published medians (raw)."""
    rows = []
    for r in records:
        key = (r["scm"], r["variant"])
        measured, published = MEASURED.get(key), PUBLISHED.get(key)
        s = r["summary"]
        for node, m in s["per_node"].items():
            row = {
                "scm": r["scm"],
                "variant": r["variant"],
                "method": r["method"],
                "node": node,
                "cf_all_x100": m["cf_all"][0] * 100,
                "cf_first_x100": m["cf_first"][0] * 100,
            }
            if measured and node in measured["DCM"]["cf_all"]:
                best = min(measured["DCM"]["cf_all"][node], measured["ANM"]["cf_all"][node])
                row.update(
                    dcm_x100=measured["DCM"]["cf_all"][node],
                    anm_x100=measured["ANM"]["cf_all"][node],
                    target_x100=best / 2 if r["identifiable"] else best,
                    met=row["cf_all_x100"] <= (best / 2 if r["identifiable"] else best),
                )
            if "cf_unflagged" in m:
                row["cf_unflagged_x100"] = m["cf_unflagged"][0] * 100
                row["flagged"] = m["flagged"][0]
                if "target_x100" in row:
                    row["met_unflagged"] = row["cf_unflagged_x100"] <= row["target_x100"]
            if published:
                row["published_cf_median_dcm_anm"] = published["cf_mse"][:2]
            rows.append(row)
    return rows


def comparison_table(rows: list[dict]) -> str:
    lines = [
        "| SCM | method | do | ours CF all (x100) | DCM here | ANM here | target | met | "
        "ours CF first col. (raw) | published DCM / ANM median (raw) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = r.get("published_cf_median_dcm_anm")
        pub_s = f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else "–"
        if "target_x100" in r:
            here = (
                f"{r['dcm_x100']:.2f} | {r['anm_x100']:.2f} | {r['target_x100']:.2f} | "
                f"{'yes' if r['met'] else 'no'}"
            )
        else:
            here = "– | – | – | –"
        lines.append(
            f"| {r['scm']}[{r['variant']}] | {r['method']} | {r['node']} | "
            f"{r['cf_all_x100']:.3f} | {here} | {r['cf_first_x100'] / 100:.4f} | {pub_s} |"
        )
    return "\n".join(lines)


def speed_table(speed: dict) -> str:
    lines = [
        f"Speed on {speed['scm']}, {speed['units']} units (median seconds; ratio = time / "
        "pyro_scm's in the same run):",
        "",
        "| query | method | seconds | ratio to pyro_scm |",
        "|---|---|---|---|",
    ]
    for query, methods in speed["rows"].items():
        for method, e in methods.items():
            ratio = e.get("ratio_to_pyro_scm")
            note = f" ({e['note']})" if "note" in e else ""
            lines.append(
                f"| {query} | {method}{note} | {e['seconds']:.4f} | {ratio:.2f} |"
                if ratio is not None
                else "| – |"
            )
    mem = speed.get("memory")
    if mem:
        lines += [
            "",
            f"Memory: counterfactual of {mem['units']:,} units with chunk_size "
            f"{mem['chunk_size']:,}: peak RSS {mem['rss_peak_mb']:.0f} MB (process before "
            f"the query {mem['rss_before_mb']:.0f} MB; factual + answer data "
            f"{mem['data_mb']:.0f} MB), {mem['seconds']:.1f} s.",
        ]
    if speed.get("floor"):
        from benchmarks.speed import floor_table

        lines += [
            "",
            "Counterfactuals against the descendants-only floor (hand-written torch abducting and "
            "regenerating only the intervened node's descendants, over the same mechanisms; "
            "median CPU seconds, one thread, one run):",
            "",
            floor_table(speed["floor"]),
        ]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    parts = [
        f"# Benchmarks ({result['mode']})",
        "",
        f"Machine: {result['machine']}; peers: {result['peers']}.",
        "",
        "## DCM protocol (x100, mean ± std over seeds)",
        "",
        dcm_table(result["dcm"]),
        "",
        "## Against DCM and ANM",
        "",
        comparison_table(result["comparison"]),
        "",
    ]
    if result.get("speed"):
        parts += ["## Speed", "", speed_table(result["speed"]), ""]
    return "\n".join(parts)


def _parse_scm(text: str) -> tuple[str, str]:
    """``"NAME:VARIANT"`` -> ``(name, variant)`` (an argparse type)."""
    name, _, variant = text.partition(":")
    if name not in DCM_SCMS or variant not in VARIANTS:
        raise argparse.ArgumentTypeError(
            f"expected NAME:VARIANT with NAME in {DCM_SCMS} and VARIANT in {VARIANTS}"
        )
    return name, variant


def _parse_hidden(text: str) -> tuple[int, ...]:
    """``"64,64,64"`` -> ``(64, 64, 64)`` (an argparse type)."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,64,64, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a few minutes on a 2-core CPU")
    group.add_argument("--smoke", action="store_true", help="seconds: one tiny SCM (tests)")
    parser.add_argument("--out", default="benchmarks/out/run", help="output folder")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--no-peers", action="store_true", help="skip ChiRho and DoWhy")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--scm",
        action="append",
        type=_parse_scm,
        metavar="NAME:VARIANT",
        help="run only this SCM of the mode's protocol (repeatable), e.g. dcm-y:nonadditive",
    )
    parser.add_argument("--seeds", type=int, help="run only the first N seeds of the mode")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="with --seeds: start at this seed"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="processes of auto's mechanism selection (default: the library's, one per CPU)",
    )
    parser.add_argument(
        "--hidden",
        type=_parse_hidden,
        metavar="W,W,...",
        help="hidden layers of the fixed kinds' networks (default: the mode's, (64, 64) in full)",
    )
    parser.add_argument(
        "--methods",
        help=f"comma-separated subset of {', '.join(METHOD_KEYS.values())} (chirho needs nsf)",
    )
    parser.add_argument(
        "--dcm-code",
        type=Path,
        help="a checkout of DCM's reference code: run DCM too, on the same samples (needs dowhy)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    config = mode_config(mode)
    if args.scm:
        config["scms"] = args.scm
    if args.hidden:
        config["settings"] = dataclasses.replace(config["settings"], hidden=args.hidden)
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        config["seeds"] = list(range(args.first_seed, args.first_seed + args.seeds))
    narrowed = bool(args.scm or args.seeds is not None or args.methods or args.hidden)
    only = None
    if args.methods:
        only = {m.strip() for m in args.methods.split(",") if m.strip()}
        unknown = only - set(METHOD_KEYS.values())
        if unknown or ("chirho" in only and "nsf" not in only):
            parser.error(
                f"--methods takes {', '.join(METHOD_KEYS.values())} (chirho with nsf), "
                f"got {args.methods!r}"
            )
    if only is not None and "dcm" in only and args.dcm_code is None:
        parser.error("--methods dcm needs --dcm-code DIR (a checkout of DCM's reference code)")
    dcm = None
    if args.dcm_code is not None:  # refused before any fit
        for name, variant in config["scms"]:
            if any(len(s) for s in load_synthetic(name, variant).event_shapes.values()):
                parser.error(f"--dcm-code: {name}:{variant} has vector nodes; DCM takes scalars")
        if (why := check_dcm_code(args.dcm_code)) is not None:
            parser.error(f"--dcm-code {args.dcm_code}: {why}")
        try:
            dcm = load_dcm(args.dcm_code)
        except ImportError as error:
            parser.error(f"--dcm-code {args.dcm_code}: DCM's code does not import ({error})")
        if only is not None:
            only.add("dcm")
    peers = peer_status()
    if args.no_peers:
        peers = dict.fromkeys(peers, "skipped (--no-peers)")
    for name, state in peers.items():
        if not state.startswith("ok"):
            print(f"peer {name}: {state}; its benchmarks are skipped")
    start = time.perf_counter()
    records = run_dcm(config, peers, only=only, workers=args.workers, dcm=dcm)
    result = {
        "mode": f"{mode} (slice)" if narrowed else mode,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)",
        "peers": peers,
        "settings": config["settings"].as_dict(),
        "seeds": config["seeds"],
        "workers": args.workers,
        "dcm_params": None if dcm is None else dcm_params(),
        "dcm": records,
        "comparison": comparison(records),
    }
    if config["speed"] and not args.no_speed:
        from benchmarks.speed import run_speed

        result["speed"] = run_speed(peers=peers, **config["speed"])
    result["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (out / "results.md").write_text(text)
    print(text)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} in {result['total_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
