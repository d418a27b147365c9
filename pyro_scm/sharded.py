"""Queries over many units in fixed chunks, each with its own seed: one process or many.

A sharded query cuts the units into chunks of ``chunk_size`` (the last one may be shorter) and
answers chunk ``i`` on its own, with torch's generator seeded by ``chunk_seed(seed, i)``. A chunk's
answer therefore depends only on its units, the model and ``(seed, i)``: answering the chunks in one
process (``trainer=None``) or spreading them over the ranks of a Lightning ``Trainer``
(:mod:`pyro_scm.lightning`) gives exactly the same result, and :func:`merge` puts the chunks back in
unit order. Warnings a chunk raised are raised again by the merge, naming the chunk's units.

Note that a chunked query equals the unchunked ``scm.counterfactual`` only up to floating point
(and, for samplers that adapt over all units at once, such as NUTS, up to the draw): the chunks,
not the processes, define the computation.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .data import broadcast_intervention, to_node_tensors
from .errors import DataError, InterventionError, ShapeError, UnknownNodeError
from .results import QueryResult

__all__ = ["ShardedQuery", "backtrack", "chunk_seed", "counterfactual", "merge", "sample"]

KINDS = ("counterfactual", "interventional", "backtracking")


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of a query with ``seed`` (numpy's SeedSequence, 63 bits)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@dataclass(frozen=True)
class ShardedQuery:
    """What to answer and how it is cut: ``units`` in chunks of ``chunk_size``, seeded ``seed``.

    Attributes:
        kind: ``"counterfactual"``, ``"interventional"`` or ``"backtracking"``.
        units: units (factual rows, or samples of an interventional query).
        chunk_size: units per chunk.
        seed: the query's seed; chunk ``i`` runs under :func:`chunk_seed` ``(seed, i)``.
        options: keyword arguments of the query (``num_samples``, backtracking settings).
    """

    kind: str
    units: int
    chunk_size: int
    seed: int
    options: dict = field(default_factory=dict)

    @property
    def num_chunks(self) -> int:
        """Number of chunks, the last one possibly shorter."""
        return -(-self.units // self.chunk_size)

    def bounds(self, index: int) -> tuple[int, int]:
        """Units ``[start, stop)`` of chunk ``index``."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.units)

    def manifest(self) -> dict:
        """A JSON-able description (written next to the shards)."""
        return {
            "kind": self.kind,
            "units": self.units,
            "chunk_size": self.chunk_size,
            "seed": self.seed,
            "num_chunks": self.num_chunks,
        }


# -- planning: validate everything before any computation ------------------------------------


def _check_plan(units: int, chunk_size: int | None, seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative int, got {seed!r}")
    if chunk_size is None:
        return units
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def _cpu_like(scm) -> Tensor:
    return torch.zeros((), dtype=scm._like().dtype)


def _actions(scm, given: object, units: int, like: Tensor, where: str) -> dict:
    if not isinstance(given, Mapping):
        raise InterventionError(f"{where} must be a dict node -> value, not {type(given).__name__}")
    specs, out = scm.specs, {}
    for node, value in given.items():
        if node not in specs:
            raise UnknownNodeError(node, list(specs), where)
        out[node] = broadcast_intervention(node, value, units, specs[node], like)
    return out


def plan_counterfactual(scm, factual, do, chunk_size, seed, num_samples, extrapolation=True):
    """``(query, factual, actions)`` of a sharded counterfactual, validated, tensors on the CPU."""
    like = _cpu_like(scm)
    factual_t = to_node_tensors(factual, scm.specs, where="factual", like=like)
    units = next(iter(factual_t.values())).shape[0]
    size = _check_plan(units, chunk_size, seed)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise DataError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(extrapolation, bool):
        raise DataError(f"extrapolation must be True or False, got {extrapolation!r}")
    actions = _actions(scm, do or {}, units, like, "do")
    options = {"num_samples": num_samples, "extrapolation": extrapolation}
    return ShardedQuery("counterfactual", units, size, seed, options), factual_t, actions


def plan_sample(scm, n, do, chunk_size, seed) -> tuple:
    """``(query, None, actions)`` of sharded (interventional) sampling of ``n`` units."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InterventionError(f"the number of samples must be a positive int, got {n!r}")
    size = _check_plan(n, chunk_size, seed)
    actions = _actions(scm, do or {}, n, _cpu_like(scm), "do")
    return ShardedQuery("interventional", n, size, seed), None, actions


def plan_backtrack(scm, factual, antecedent, chunk_size, seed, options) -> tuple:
    """``(query, factual, antecedent)`` of a sharded backtracking query (options checked)."""
    import inspect

    from .infer.backtrack import SOLVERS
    from .infer.backtrack import backtrack as _backtrack
    from .infer.stochastic import METHODS

    params = inspect.signature(_backtrack).parameters
    for name in options:
        if name not in params or name in ("scm", "factual", "antecedent"):
            raise DataError(f"backtrack has no option {name!r}")
    method, solver = options.get("method", "mode"), options.get("solver", "auto")
    if method != "mode" and method not in METHODS:
        raise ValueError(f"unknown backtracking method {method!r}; use 'mode' or one of {METHODS}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
    like = _cpu_like(scm)
    factual_t = to_node_tensors(factual, scm.specs, where="factual", like=like)
    units = next(iter(factual_t.values())).shape[0]
    size = _check_plan(units, chunk_size, seed)
    if not isinstance(antecedent, Mapping) or not antecedent:
        raise ValueError("the antecedent must be a non-empty dict node -> value")
    target = {}
    for node, value in antecedent.items():
        if node not in scm.specs:
            raise UnknownNodeError(node, scm.nodes, "antecedent")
        if callable(value) and not torch.is_tensor(value):
            value = value(factual_t[node])
        try:
            target.update(_actions(scm, {node: value}, units, like, "antecedent"))
        except InterventionError as e:  # as scm.backtrack reports it
            raise ShapeError(str(e).replace("intervention", "antecedent")) from e
    return ShardedQuery("backtracking", units, size, seed, dict(options)), factual_t, target


# -- one chunk ---------------------------------------------------------------------------------


def slice_chunk(query: ShardedQuery, index: int, factual, actions) -> tuple[dict | None, dict]:
    """The factual and the tensor actions of chunk ``index`` (callables are not sliced)."""
    start, stop = query.bounds(index)
    part = None if factual is None else {k: v[start:stop] for k, v in factual.items()}
    acts = {k: v[start:stop] if torch.is_tensor(v) else v for k, v in actions.items()}
    return part, acts


def run_chunk(scm, query: ShardedQuery, index: int, factual, actions) -> dict:
    """Answer chunk ``index`` under its own seed; returns its payload (tensors, warnings).

    ``factual`` and ``actions`` are the chunk's, on the model's device. The global torch generator
    is restored afterwards.
    """
    like = scm._like()
    devices = [like.device.index or 0] if like.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(chunk_seed(query.seed, index))
        start, stop = query.bounds(index)
        if query.kind == "counterfactual":
            result = scm.counterfactual(factual, do=actions, **query.options)
        elif query.kind == "interventional":
            result = scm.do(actions).sample(stop - start, **query.options)
        else:
            result = scm.backtrack(factual, actions, **query.options)
    return {
        "index": index,
        "start": start,
        "stop": stop,
        "values": result.values,
        "noise": result.noise,
        "sample_stats": result.sample_stats,
        "diagnostics": result.diagnostics,
        "factual": result.factual,
        "interventions": {k: v for k, v in result.interventions.items() if torch.is_tensor(v)},
        "num_chains": result.num_chains,
        "warnings": [(_qualname(w.category), str(w.message)) for w in caught],
    }


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _category(name: str) -> type[Warning]:
    module, _, qualname = name.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return UserWarning
    return obj if isinstance(obj, type) and issubclass(obj, Warning) else UserWarning


# -- merging -----------------------------------------------------------------------------------


def merge(
    query: ShardedQuery,
    payloads: list[dict],
    *,
    categorical: Mapping[str, int],
    interventions: Mapping[str, object] | None = None,
    warn: bool = True,
) -> QueryResult:
    """One :class:`QueryResult` from the chunks' payloads, in unit order.

    Every chunk must be there once (duplicates, e.g. from padded samplers, are dropped). With
    ``warn``, the chunks' warnings are raised again, each kind once: warnings that differ only in
    their numbers (units, counts) are one warning that names its first chunk's units and how many
    chunks raised it (the per-unit flags are in the result's ``sample_stats``). Callable
    ``interventions`` (not stored in the payloads) are put into the result as given.

    Raises:
        DataError: a chunk is missing, or a payload belongs to another query.
    """
    by_index = {}
    for p in payloads:
        i = int(p["index"])
        if not 0 <= i < query.num_chunks or (p["start"], p["stop"]) != query.bounds(i):
            raise DataError(f"chunk {i} ({p['start']}..{p['stop']}) is not part of this query")
        by_index.setdefault(i, p)
    missing = sorted(set(range(query.num_chunks)) - set(by_index))
    if missing:
        raise DataError(f"chunks {missing[:10]} of {query.num_chunks} are missing")
    parts = [by_index[i] for i in range(query.num_chunks)]
    axis = 0 if query.kind == "interventional" else 1

    def cat(key: str, dim: int) -> dict[str, Tensor]:
        return {k: torch.cat([p[key][k] for p in parts], dim) for k in parts[0][key]}

    if warn:
        _warn_again(parts)
    merged = cat("interventions", 0)
    for k, v in (interventions or {}).items():
        if not torch.is_tensor(v):
            merged[k] = v
    return QueryResult(
        values=cat("values", axis),
        kind=query.kind if query.kind != "interventional" or merged else "observational",
        factual=cat("factual", 0) if parts[0]["factual"] else None,
        interventions=merged,
        noise=cat("noise", axis),
        sample_stats=cat("sample_stats", axis),
        diagnostics=cat("diagnostics", 0),
        categorical=dict(categorical),
        num_chains=int(parts[0]["num_chains"]),
    )


_NUMBER = re.compile(r"(?<![\w'\"])\d+(?:\.\d+)?")  # a count or a level, not part of a name


def _warn_again(parts: list[dict]) -> None:
    """Raise the chunks' warnings again: one per category and message up to its numbers.

    Numbers inside names (node ``'x1'``) are kept, so each node still gets its own warning.
    """
    groups: dict[tuple[str, str], list[tuple[dict, str]]] = {}
    for p in parts:
        for category, message in p["warnings"]:
            key = (category, _NUMBER.sub("#", message))
            groups.setdefault(key, []).append((p, message))
    for (category, _), seen in groups.items():
        p, message = seen[0]
        text = f"units {p['start']}..{p['stop'] - 1} (chunk {p['index']}): {message}"
        if len(seen) > 1:
            others = ", ".join(f"{q['start']}..{q['stop'] - 1}" for q, _ in seen[1:4])
            rest = f" and {len(seen) - 4} more chunks" if len(seen) > 4 else ""
            text += (
                f" [the same warning for units {others}{rest}: {len(seen)} of {len(parts)} chunks]"
            )
        warnings.warn(text, _category(category), stacklevel=3)


def categorical_nodes(scm) -> dict[str, int]:
    """Categorical nodes of ``scm`` -> class count."""
    return {k: s.num_classes for k, s in scm.specs.items() if s.num_classes is not None}


# -- the queries -------------------------------------------------------------------------------


def _answer(scm, plan: tuple, trainer, out_dir, netcdf) -> QueryResult:
    query, factual, actions = plan
    if trainer is not None:
        from .lightning.predict import run_sharded

        return run_sharded(scm, query, factual, actions, trainer=trainer, out_dir=out_dir)
    if out_dir is not None:
        raise DataError("out_dir is where a Trainer's ranks write shards; pass trainer= too")
    like = scm._like()
    factual = None if factual is None else {k: v.to(like.device) for k, v in factual.items()}
    actions = {k: v.to(like.device) if torch.is_tensor(v) else v for k, v in actions.items()}
    payloads = [
        run_chunk(scm, query, i, *slice_chunk(query, i, factual, actions))
        for i in range(query.num_chunks)
    ]
    result = merge(query, payloads, categorical=categorical_nodes(scm), interventions=actions)
    if netcdf is not None:
        result.to_arviz().to_netcdf(str(netcdf))
    return result


def counterfactual(
    scm,
    factual: object,
    do: Mapping[str, object] | None = None,
    *,
    chunk_size: int | None = None,
    seed: int = 0,
    num_samples: int = 1,
    extrapolation: bool = True,
    trainer: object = None,
    out_dir: object = None,
    netcdf: object = None,
) -> QueryResult:
    """``scm.counterfactual(factual, do=do)`` answered chunk by chunk, each chunk seeded.

    Args:
        scm: the fitted model.
        factual: a DataFrame, a dict node -> ``(units, *event)`` or a :class:`QueryResult`.
        do: interventions as in :meth:`SCM.do`.
        chunk_size: units per chunk (None: one chunk).
        seed: the query's seed (chunk ``i`` uses :func:`chunk_seed` ``(seed, i)``).
        num_samples: abduction draws per unit.
        extrapolation: score each chunk against the training support (as in
            :meth:`SCM.counterfactual`; False skips the scores, for throughput).
        trainer: a ``lightning.Trainer``: its ranks answer the chunks under ``Trainer.predict``
            (see :func:`pyro_scm.lightning.run_sharded`); None answers them in this process.
        out_dir: with ``trainer``, the folder the shards are written to (shared by all nodes).
        netcdf: write the merged result's arviz data to this netcdf file.

    Returns:
        the merged :class:`QueryResult`, each node ``(num_samples, units, *event)``.
    """
    plan = plan_counterfactual(scm, factual, do, chunk_size, seed, num_samples, extrapolation)
    return _answer(scm, plan, trainer, out_dir, netcdf)


def sample(
    scm,
    n: int,
    do: Mapping[str, object] | None = None,
    *,
    chunk_size: int | None = None,
    seed: int = 0,
    trainer: object = None,
    out_dir: object = None,
    netcdf: object = None,
) -> QueryResult:
    """``scm.do(do).sample(n)`` in chunks of ``chunk_size`` samples; each node ``(n, 1, *event)``.

    Intervention tensors broadcast to ``(n, *event)`` and are cut with the samples. Other
    arguments as in :func:`counterfactual`.
    """
    plan = plan_sample(scm, n, do, chunk_size, seed)
    return _answer(scm, plan, trainer, out_dir, netcdf)


def backtrack(
    scm,
    factual: object,
    antecedent: Mapping[str, object],
    *,
    chunk_size: int | None = None,
    seed: int = 0,
    trainer: object = None,
    out_dir: object = None,
    netcdf: object = None,
    **options,
) -> QueryResult:
    """``scm.backtrack(factual, antecedent, **options)`` in seeded chunks of units.

    ``options`` are :func:`pyro_scm.infer.backtrack`'s (method, solver, num_samples, ...); a
    callable antecedent is applied to the whole factual first. Chains, step-size adaptation and
    solver iterations run per chunk. Other arguments as in :func:`counterfactual`.
    """
    plan = plan_backtrack(scm, factual, antecedent, chunk_size, seed, options)
    return _answer(scm, plan, trainer, out_dir, netcdf)
