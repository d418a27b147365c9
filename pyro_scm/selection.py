r"""Per-node mechanism selection: train candidate kinds side by side, keep the best held-out fit.

Every candidate mechanism of every node is trained in one loop: each one's loss depends on its
own parameters only (the parents are the observed data), so the sum of all losses trains them
independently, each with its own Adam parameter group, learning-rate decay and early stopping,
as in :func:`pyro_scm.fitting.fit`. Afterwards each candidate k of a node scores the held-out
units by their log-likelihood ℓ_k(i) = log p_k(x_i | pa_i). With b the best kind and
d_i = ℓ_b(i) − ℓ_k(i), the chosen kind is the first of ``kinds`` (ordered simplest first) with

    mean(d) <= tolerance · std(d) / sqrt(n_val),

a standard-error rule (``tolerance=2`` by default): a simpler model class that fits the
held-out data as well as the best one, up to the noise of the estimate, is kept, because
counterfactuals ask the mechanism about parents off the training data where a smaller class
extrapolates more safely (an additive model gets the identifiable counterfactual right where a
flow only matches the density). Two standard errors rather than one: when the simplest kind is
the true class, each more flexible kind still beats it by more than one standard error about
one time in six by chance, and with two alternatives on each of several nodes the one-SE rule
picks a wrong, more flexible kind on some node of most models (``docs/accuracy.md``).

A flow's counterfactuals depend on where its training started far more than its density does:
on the non-additive triangle, four starts of the same NSF on the same data gave counterfactual
errors 1.5 to 3.9 times apart. Where a flow kind is chosen, ``restarts - 1`` more starts of it
train afterwards on the same split and mini-batches, and the start with the best held-out
log-likelihood is kept (``docs/accuracy.md``). The kind is chosen on one start each, so the
restarts never change which kind a node gets, and cost nothing where a regression kind wins.

An additive-noise fit errs off the training support in a direction its initial weights decide,
and the errors of independent fits partly cancel. Where ``"anm"`` is chosen for a node with
parents, ``members - 1`` more fits of it train on the same split and mini-batches, and their
mean f̄ = (1/K) Σ_k f_k is installed (:meth:`LocScaleMechanism.ensemble
<pyro_scm.mechanisms.LocScaleMechanism.ensemble>`): still an additive-noise mechanism, so
abduction ε = x − f̄(pa) and the counterfactual x' = x + f̄(pa') − f̄(pa) stay exact. On the
nonlinear triangle's do(x2) five fits cut the counterfactual error from 1.18 to 1.03 (×100,
ten seeds; ``docs/accuracy.md``).

Where the starts of a chosen flow disagree about counterfactuals, the flow's answer is decided
by its initial weights rather than by the data, however well it fits the density. Each kind's
**counterfactual spread** measures it: the held-out units are abducted at their own parents
and regenerated at parents whose rows are permuted independently, parent by parent (the
pairs an intervention on a parent makes), and the variance of the answers over the starts,
summed over the node's features, is divided by the node's held-out variance,

    spread_k(i) = Σ_j Var_s[x'_{k,s}(i)_j] / Σ_j Var_i[x(i)_j].

The variance over starts is the part of a start's expected squared counterfactual error that
the data do not fix (error = bias² + variance). Where a chosen flow's mean spread exceeds
``instability``, ``restarts`` starts of each kind in ``rivals`` (default ``"diffusion"``, DCM's
model class) train on the same split and mini-batches, and a rival replaces the flow when its
spread is lower by more than ``tolerance`` standard errors of the per-unit difference; its
start with the lowest held-out loss is installed. The held-out likelihood cannot make this
choice: on the non-additive triangle's x3 the flow fits the density better by 0.8 nats per unit
and answers do(x2) 2.7 to 8.3 times worse (``docs/accuracy.md``).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import pandas as pd
import pyro.poutine as poutine
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import to_node_tensors
from .errors import ArgumentError, DataError, FitWarning, MechanismError, UnknownNodeError
from .extrapolation import parent_context
from .fitting import _EarlyStopping, _param_groups, adam, prepare
from .handlers import as_mechanism
from .validation import check_count
from .workers import can_fork, fork_map, usable_workers

__all__ = ["CANDIDATE_KINDS", "KINDS", "RESTART_KINDS", "RIVAL_KINDS", "select_mechanisms"]

#: the default candidate kinds, simplest first.
KINDS = ("anm", "locscale", "nsf")
CANDIDATE_KINDS = ("anm", "locscale", "nsf", "maf")
#: the kinds that get ``restarts`` starts when chosen.
RESTART_KINDS = ("nsf", "maf")
#: the kinds that may replace a chosen flow whose counterfactual spread is high.
RIVAL_KINDS = ("diffusion",)


def _check(
    kinds, rivals, instability, nodes, specs, epochs, batch_size, val_fraction, tolerance, budget_s
):
    if isinstance(kinds, str) or not kinds or any(k not in CANDIDATE_KINDS for k in kinds):
        raise MechanismError(
            f"kinds must be a non-empty sequence of {CANDIDATE_KINDS}, got {kinds!r}"
        )
    if len(set(kinds)) != len(kinds):
        raise MechanismError(f"kinds must not repeat, got {kinds!r}")
    if isinstance(rivals, str) or any(k not in RIVAL_KINDS for k in rivals):
        raise MechanismError(f"rivals must be a sequence of {RIVAL_KINDS}, got {rivals!r}")
    if len(set(rivals)) != len(rivals):
        raise MechanismError(f"rivals must not repeat, got {rivals!r}")
    if not instability >= 0:
        raise ArgumentError(f"instability must be >= 0, got {instability!r}")
    for node in nodes or ():
        if node not in specs:
            raise UnknownNodeError(node, list(specs), "select_mechanisms(nodes=...)")
    if epochs < 1 or batch_size < 1 or not 0 < val_fraction < 1:
        raise DataError("selection needs epochs >= 1, batch_size >= 1 and 0 < val_fraction < 1")
    if not tolerance >= 0:
        raise DataError(f"tolerance must be >= 0, got {tolerance}")
    if budget_s is not None and not budget_s > 0:
        raise DataError(f"budget_s must be positive or None, got {budget_s}")


def _sites(scm, values: Mapping[str, Tensor]) -> dict[str, tuple[nn.Module, tuple]]:
    """Node -> (its mechanism module, the parent tensors the program passes it)."""
    with poutine.trace() as tracer, poutine.condition(data=dict(values)):
        scm.model()
    return {
        name: (as_mechanism(site).mechanism, tuple(as_mechanism(site).parents))
        for name, site in tracer.trace.nodes.items()
        if site["type"] == "sample"
    }


def _rows(parents: tuple, idx: Tensor, units: int) -> tuple:
    return tuple(
        p[idx] if torch.is_tensor(p) and p.dim() and p.shape[0] == units else p for p in parents
    )


def _install(scm, old: nn.Module, new: nn.Module, node: str) -> None:
    """Put ``new`` where the program finds ``old`` (an attribute path of ``scm``)."""
    paths = [name for name, m in scm.named_modules(remove_duplicate=False) if m is old]
    if not paths:
        raise MechanismError(
            f"node {node!r}: its mechanism is not a submodule of the SCM, so it cannot be replaced"
        )
    for path in paths:
        owner_path, _, attr = path.rpartition(".")
        owner = scm.get_submodule(owner_path) if owner_path else scm
        setattr(owner, attr, new)


def select_mechanisms(
    scm,
    data: object,
    *,
    kinds: Sequence[str] = KINDS,
    nodes: Sequence[str] | None = None,
    hidden: Sequence[int] | None = None,
    transforms: int = 3,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    patience: int = 5,
    lr_decay: float | None = 0.3,
    max_decays: int = 3,
    tolerance: float = 2.0,
    restarts: int = 3,
    members: int = 5,
    rivals: Sequence[str] = RIVAL_KINDS,
    instability: float = 0.1,
    budget_s: float | None = None,
    workers: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit candidate mechanism kinds per node and install the best one in ``scm``.

    Works on any SCM whose mechanisms are its submodules (``from_graph`` models and hand-written
    programs alike): each selected node gets a new learned mechanism of each kind in ``kinds``
    (see :func:`pyro_scm.builders.make_mechanism`), taking the parents exactly as the program
    passes them; the other nodes' mechanisms train in the same loop, as in ``fit``. The chosen
    candidates replace the nodes' mechanisms, trained (best validation weights).

    Args:
        scm: the model; changed in place.
        data: a DataFrame or dict node -> ``(units, *event)`` with every node.
        kinds: candidate kinds, simplest first (the order breaks near-ties).
        nodes: the nodes to select for (default: every non-categorical node).
        hidden: hidden layer sizes of the candidates' networks (None: each kind's
            :data:`~pyro_scm.builders.DEFAULT_HIDDEN`).
        transforms: flow transforms of the flow candidates.
        epochs, batch_size, lr, weight_decay, val_fraction, patience, lr_decay, max_decays, seed,
            progress: as in :func:`pyro_scm.fitting.fit`; the validation units both stop the
            training and score the candidates. ``seed`` also seeds each candidate's initial
            weights, from ``(seed, node, kind)``: a candidate starts the same whatever the
            other kinds, nodes and the global RNG (None: the global RNG).
        tolerance: standard errors of the held-out log-likelihood difference within which a
            simpler kind is preferred to the best one (0: the best held-out log-likelihood).
        restarts: starts of a chosen flow kind (:data:`RESTART_KINDS`): after the kinds are
            chosen, ``restarts - 1`` more starts of each chosen flow train (initial weights
            from ``(seed, node, kind, start)``) and the one with the best held-out
            log-likelihood is installed; 1: one start, as the other kinds.
        members: fits of a chosen additive-noise kind (``"anm"``, on a node with parents) whose
            mean is installed: after the kinds are chosen, ``members - 1`` more fits of it train
            (initial weights from ``(seed, node, "anm", start)``, on the same units and
            mini-batches) and :meth:`LocScaleMechanism.ensemble
            <pyro_scm.mechanisms.LocScaleMechanism.ensemble>` averages them all; 1: one fit.
        rivals: kinds (:data:`RIVAL_KINDS`) that may replace a chosen flow whose counterfactual
            spread over its starts exceeds ``instability``: ``restarts`` starts of each train
            (initial weights from ``(seed, node, kind, start)``) and the one with the lowest
            spread wins if it is below the flow's by more than ``tolerance`` standard errors;
            () or ``restarts=1``: the flows are kept. Nodes whose event a rival cannot model
            (images) keep their flow.
        instability: the mean counterfactual spread of a flow's starts, as a share of the
            node's held-out variance, above which the rivals train. A flow above it that keeps
            its place (no rival's spread is lower, ``rivals=()``, no rival can model the
            node, or the budget ran out) raises a :class:`~pyro_scm.errors.FitWarning` naming
            the node, its spread and the reason.
        budget_s: stop training after this many seconds (every candidate keeps its best
            weights so far; the restarts, ensemble fits and rivals not started by then are
            skipped); None: no limit. A :class:`~pyro_scm.errors.FitWarning` lists the
            candidates it stopped and the work it skipped.
        workers: processes that train the candidates side by side (each candidate trains
            independently, so the result is the same for any number); None: one per CPU this
            process may use, up to the number of candidates, on CPU under Linux (see
            :mod:`pyro_scm.workers`), else 1.

    Returns:
        the history, one row per (epoch, node, kind, start): ``epoch``, ``node``, ``kind``,
        ``start`` (0 for the first start; the restarts' epochs count from 0 again), ``train``,
        ``val``; ``history.attrs["selection"]`` holds node -> ``{"kind", "scores", "se",
        "start", "starts", "members"}`` (mean held-out log-likelihood per kind of the first
        starts, in nats per unit, the standard error of the chosen kind's difference to the
        best, the start installed, the chosen kind's mean held-out log-likelihood per start or
        fit, minus its mean held-out loss for a rival, which has no density, and the number of
        fits averaged); an ensemble has ``start`` None and ``"score"``, the ensemble's mean
        held-out log-likelihood. A node whose flow had several starts also has ``"spread"``:
        kind -> mean counterfactual spread (the flow's, and each rival's where they trained),
        and ``"flow"``, the flow kind the likelihood chose. The same dict
        is each node's ``selection`` attribute in ``scm.graph`` and ``scm.selection``.
        ``attrs["seconds"]`` is the wall time of the training and ``attrs["worker_cpu_s"]`` the
        CPU seconds of each worker process over both rounds (the longest bounds the wall time
        when every worker has a core of its own).
    """
    from .mechanisms.factory import make_mechanism
    from .mechanisms.locscale import LocScaleMechanism

    specs = scm.specs
    kinds = tuple(kinds) if not isinstance(kinds, str) else kinds
    rivals = tuple(rivals) if not isinstance(rivals, str) else rivals
    _check(
        kinds, rivals, instability, nodes, specs, epochs, batch_size, val_fraction, tolerance,
        budget_s,
    )  # fmt: skip
    check_count("workers", workers, allow_none=True)
    check_count("restarts", restarts)
    check_count("members", members)
    if lr_decay is not None and not (0 < lr_decay < 1 and max_decays >= 0):
        raise DataError(f"needs 0 < lr_decay < 1 and max_decays >= 0, got {lr_decay}, {max_decays}")
    like = scm._like()
    if workers is not None and workers > 1 and not can_fork(like.device):
        raise ArgumentError(
            f"workers={workers} trains in forked processes, which needs CPU tensors on Linux "
            f"outside a daemon process; the model is on {like.device} on {sys.platform} "
            "(use workers=1)"
        )
    values = to_node_tensors(data, specs, where="training data", like=like)
    units = next(iter(values.values())).shape[0]
    device = next(iter(values.values())).device
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed) if seed is not None else generator.seed()
    perm = torch.randperm(units, generator=generator).to(device)
    n_val = round(units * val_fraction)
    if n_val < 2 or units - n_val < 1:
        raise DataError(f"{units} units are too few for a validation split of {val_fraction}")
    train = {k: v[perm[n_val:]] for k, v in values.items()}
    val = {k: v[perm[:n_val]] for k, v in values.items()}
    selected = [n for n in (nodes or specs) if specs[n].num_classes is None]
    prepare(scm, train)
    sites, val_sites = _sites(scm, train), _sites(scm, val)

    candidates: dict[str, nn.Module] = {}  # "node/kind" -> mechanism
    owner: dict[str, tuple[str, str, int]] = {}
    for node, (mechanism, parents) in sites.items():
        if node in selected:
            features = _features(parents)
            pool = {}
            for k in kinds:
                with _initial_weights(seed, node, k):
                    pool[k] = make_mechanism(k, node, specs[node], features, hidden, transforms)
            for cand in pool.values():
                cand.to(device=like.device, dtype=like.dtype)
                with torch.no_grad():
                    cand.prepare(train[node], *parents)
        elif any(p.requires_grad for p in mechanism.parameters()):
            pool = {getattr(mechanism, "kind", "mechanism"): mechanism}
        else:
            continue
        for kind, cand in pool.items():
            candidates[f"{node}/{kind}"] = cand
            owner[f"{node}/{kind}"] = (node, kind, 0)

    start = time.perf_counter()
    train_share = _Loop(
        candidates, owner, sites, train, val_sites, val, generator.get_state(), device,
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        patience=patience, lr_decay=lr_decay, max_decays=max_decays, budget_s=budget_s,
        start=start, progress=progress, seed=seed,
    )  # fmt: skip
    usable = usable_workers(like.device)
    new = [k for k in candidates if owner[k][0] in selected]
    history, cpu_s, cut = _train(train_share, candidates, new, owner, workers, usable)

    def held_out(key: str) -> Tensor:
        node = owner[key][0]
        return candidates[key](*val_sites[node][1]).log_prob(val[node]).reshape(n_val)

    summary = {}
    with torch.no_grad():
        for node in selected:
            scores = {kind: held_out(f"{node}/{kind}") for kind in kinds}
            summary[node] = _choose(scores, kinds, tolerance)

    def new_start(node: str, kind: str, r: int) -> str:
        """A fresh candidate of ``kind`` for ``node``, start ``r``, prepared; returns its key."""
        with _initial_weights(seed, node, kind, r):
            cand = make_mechanism(
                kind, node, specs[node], _features(sites[node][1]), hidden, transforms
            )
        cand.to(device=like.device, dtype=like.dtype)
        with torch.no_grad():
            cand.prepare(train[node], *sites[node][1])
        key = f"{node}/{kind}/{r}"
        candidates[key], owner[key] = cand, (node, kind, r)  # the loop reads them from here
        return key

    def train_round(keys: Sequence[str]) -> None:
        """Train the new candidates ``keys`` side by side; their history and CPU time add up."""
        nonlocal history, cpu_s, cut
        rows, more_cpu, more_cut = _train(
            train_share, {k: candidates[k] for k in keys}, list(keys), owner, workers, usable
        )
        history, cut = history + rows, cut + more_cut
        width = max(len(cpu_s), len(more_cpu))
        cpu_s = [sum(c[i] for c in (cpu_s, more_cpu) if i < len(c)) for i in range(width)]

    # more starts of the chosen flows and more fits of the chosen ANMs, on the same split and
    # mini-batches: only the initial weights differ (bootstrap reweighting measured no better)
    more: list[str] = []
    skipped: list[str] = []  # the work budget_s left out, for the warning
    over = budget_s is not None and time.perf_counter() - start > budget_s
    for node, info in summary.items():
        kind = info["kind"]
        features = _features(sites[node][1])
        count = restarts if kind in RESTART_KINDS else members if _ensembles(kind, features) else 1
        if over and count > 1:
            skipped.append(f"{count - 1} more {kind} fits of {node!r}")
        more += [new_start(node, kind, r) for r in range(1, 1 if over else count)]
    if more:
        train_round(more)
    flows: dict[str, list[str]] = {}  # node -> the keys of its chosen flow's finite starts
    placed: dict[str, nn.Module] = {}  # node -> the flow start installed
    with torch.no_grad():
        for node, info in summary.items():
            keys = [f"{node}/{info['kind']}"]
            keys += [k for k in more if owner[k][0] == node]  # empty when not trained
            # the first start was scored when the kind was chosen
            starts = [info["scores"][info["kind"]]] + [float(held_out(k).mean()) for k in keys[1:]]
            finite = [v if math.isfinite(v) else -math.inf for v in starts]
            if info["kind"] in RESTART_KINDS or len(keys) == 1:
                best = max(range(len(keys)), key=finite.__getitem__)
                info.update(start=owner[keys[best]][2], starts=starts, members=1)
                _install(scm, sites[node][0], candidates[keys[best]], node)
                if info["kind"] in RESTART_KINDS:
                    flows[node] = [k for k, v in zip(keys, finite) if math.isfinite(v)]
                    placed[node] = candidates[keys[best]]
                continue
            fits = [candidates[k] for k, v in zip(keys, finite) if math.isfinite(v)]
            mean = LocScaleMechanism.ensemble(fits, train[node], *sites[node][1])
            score = float(mean(*val_sites[node][1]).log_prob(val[node]).mean())
            info.update(start=None, starts=starts, members=len(fits), score=score)
            _install(scm, sites[node][0], mean, node)
    # rivals of the flows whose counterfactuals depend on their start
    unstable: dict[str, tuple[Tensor, tuple]] = {}  # node -> (flow's spread per unit, queries)
    with torch.no_grad():
        for node, keys in flows.items():
            if len(keys) < 2:
                continue
            queries = _permuted(val_sites[node][1], n_val, seed, node)
            spread = _spread([candidates[k] for k in keys], val[node], val_sites[node][1], queries)
            info = summary[node]
            info.update(flow=info["kind"], spread={info["kind"]: float(spread.mean())})
            if not float(spread.mean()) <= instability:
                unstable[node] = (spread, queries)
    over = budget_s is not None and time.perf_counter() - start > budget_s
    rival: list[str] = []
    kept: dict[str, str] = {}  # unstable node -> why no rival replaced its flow
    for node in unstable:
        if not rivals:
            kept[node] = "rivals=() trains none"
            continue
        if over:
            kept[node] = "budget_s ran out before its rivals trained"
            skipped.append(f"the rivals of {node!r}")
            continue
        for kind in rivals:
            try:
                rival += [new_start(node, kind, r) for r in range(restarts)]
            except MechanismError:  # an event the rival cannot model: the flow stays
                continue
        if not any(owner[k][0] == node for k in rival):
            kept[node] = f"no rival in {rivals} can model its event"
    if rival:
        train_round(rival)
    with torch.no_grad():
        for node, (flow_spread, queries) in unstable.items():
            info, parents, x = summary[node], val_sites[node][1], val[node]
            winner = None
            for kind in rivals:
                keys = [k for k in rival if owner[k][:2] == (node, kind)]
                scores = [-float(candidates[k](*parents).loss(x).mean()) for k in keys]
                keys, scores = (
                    [k for k, v in zip(keys, scores) if math.isfinite(v)],
                    [v for v in scores if math.isfinite(v)],
                )
                if len(keys) < 2:
                    continue
                spread = _spread([candidates[k] for k in keys], x, parents, queries)
                info["spread"][kind] = float(spread.mean())
                if _lower(flow_spread, spread, tolerance) and (
                    winner is None or float(spread.mean()) < info["spread"][winner[0]]
                ):
                    winner = kind, keys, scores
            if winner is not None:
                kind, keys, starts = winner
                best = max(range(len(keys)), key=starts.__getitem__)
                info.update(kind=kind, start=owner[keys[best]][2], starts=starts, members=1)
                _install(scm, placed[node], candidates[keys[best]], node)
            elif node not in kept:
                rivals_spread = {k: round(v, 3) for k, v in info["spread"].items() if k in rivals}
                kept[node] = (
                    f"no rival's spread was lower by {tolerance:g} standard errors "
                    f"({rivals_spread or 'no rival had two finite starts'})"
                )
    for node, why in kept.items():
        info = summary[node]
        warnings.warn(
            f"node {node!r} keeps its {info['flow']} flow although its starts disagree about "
            f"counterfactuals (spread {info['spread'][info['flow']]:.3g} of the node's variance, "
            f"above instability={instability:g}): {why}. Its counterfactuals depend on the "
            "initial weights; see scm.selection and docs/accuracy.md",
            FitWarning,
            stacklevel=2,
        )
    scm._graph_cache = None
    for node, info in summary.items():
        scm.graph.nodes[node]["selection"] = info
    scm.selection = summary
    scm.eval()
    frame = pd.DataFrame(history, columns=["epoch", "node", "kind", "start", "train", "val"])
    frame.attrs["selection"] = summary
    frame.attrs["seconds"] = time.perf_counter() - start
    frame.attrs["worker_cpu_s"] = cpu_s
    frame.attrs["budget_hit"] = budget_s is not None and frame.attrs["seconds"] > budget_s
    if cut or skipped:
        message = f"budget_s={budget_s:g} ran out before the selection ended"
        if cut:  # keys "node/kind" or "node/kind/start"
            message += f"; stopped while still improving (best weights so far kept): {cut}"
        if skipped:
            message += f"; skipped: {', '.join(skipped)}"
        warnings.warn(message, FitWarning, stacklevel=2)
    return frame


def _ensembles(kind: str, features: int) -> bool:
    """Whether a chosen kind gets ``members`` fits averaged: an ANM of a node with parents."""
    return kind == "anm" and features > 0


def _features(parents: tuple) -> int:
    """The number of context features of a node's parents (training data)."""
    context = parent_context(parents, 1)  # training data: (units, *event)
    return 0 if context is None else context.shape[-1]


def _train(
    loop: _Loop,
    candidates: Mapping[str, nn.Module],
    new: Sequence[str],
    owner: Mapping[str, tuple[str, str, int]],
    workers: int | None,
    usable: int,
) -> tuple[list[dict], list[float], list[str]]:
    """Train ``candidates`` in shares side by side (only the ``new`` ones move to other
    processes); the children's best weights are loaded back. Returns the history rows, sorted
    by epoch and candidate, the CPU seconds of each share and the keys the budget stopped while
    early stopping had not."""
    shares = _shares(candidates, new, workers, usable, owner)
    results = fork_map(loop, list(enumerate(shares)))
    history: list[dict] = []
    cpu_s: list[float] = []
    cut: list[str] = []
    for index, (rows, states, cpu, stopped) in enumerate(results):
        history += rows
        cpu_s.append(cpu)
        cut += stopped
        if index > 0:  # trained in a child: its best weights come back
            for key, state in states.items():
                candidates[key].load_state_dict(state)
    rank = {key: i for i, key in enumerate(candidates)}
    history.sort(key=lambda row: (row["epoch"], rank[row.pop("key")]))
    return history, cpu_s, cut


@contextmanager
def _initial_weights(seed: int | None, node: str, kind: str, start: int = 0) -> Iterator[None]:
    """Draw a candidate's initial weights from a generator of its own, seeded by
    ``(seed, node, kind, start)`` and restored afterwards: a candidate starts the same whatever
    the other candidates, the other nodes and the global RNG are (None: the global RNG)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_of(seed, node, kind, *([start] if start else [])))
        yield


def _seed_of(*parts: object) -> int:
    """A seed derived from ``parts`` (the fit's seed, a node, a kind, ...), the same in every
    process and Python session."""
    return zlib.crc32("/".join(map(str, parts)).encode())


@contextmanager
def _own_draws(
    mechanism: nn.Module, seed: int | None, key: str, epoch: int, step: int
) -> Iterator[None]:
    """The random draws of a candidate's training loss (``random_loss`` mechanisms) from the
    global RNG seeded by ``(seed, candidate, epoch, step)`` and restored afterwards: the same
    draws in any worker process and whatever the global RNG (None: the global RNG)."""
    if seed is None or not getattr(mechanism, "random_loss", False):
        yield
        return
    devices = [p.device for p in mechanism.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_seed_of(seed, key, epoch, step))
        yield


#: relative cost of one training step of a candidate kind, for sharing the work between workers
_COST = {"nsf": 4, "maf": 4, "diffusion": 2}


def _shares(
    candidates: Mapping[str, nn.Module],
    new: Sequence[str],
    workers: int | None,
    usable: int,
    owner: Mapping[str, tuple[str, str, int]],
) -> list[list[str]]:
    """Split the candidate keys between ``workers`` processes (None: as many as are usable and
    useful), heaviest first onto the lightest share. Only new candidates move to other
    processes: the program's own mechanisms may share parameters, so they stay in share 0."""
    n = min(usable, len(new)) if workers is None else min(workers, max(1, len(new)))
    shares: list[list[str]] = [[k for k in candidates if k not in new]] + [[] for _ in range(n - 1)]
    load = [len(shares[0])] + [0] * (n - 1)
    for key in sorted(new, key=lambda k: -_COST.get(owner[k][1], 1)):
        i = min(range(n), key=load.__getitem__)
        shares[i].append(key)
        load[i] += _COST.get(owner[key][1], 1)
    rank = {k: i for i, k in enumerate(candidates)}
    return [sorted(s, key=rank.__getitem__) for s in shares if s] or [[]]


class _Loop:
    """The training loop over some candidates (one share): each with its own Adam group,
    learning-rate decay and early stopping; returns the history rows, the best weights, the
    CPU seconds the share took and the keys still training when ``budget_s`` stopped it."""

    def __init__(self, candidates, owner, sites, train, val_sites, val, rng, device, **settings):
        self.candidates, self.owner, self.sites, self.train = candidates, owner, sites, train
        self.val_sites, self.val, self.rng, self.device = val_sites, val, rng, device
        self.s = settings

    def __call__(self, share: tuple[int, list[str]]) -> tuple[list[dict], dict[str, dict], float]:
        index, keys = share
        s, owner, sites, train = self.s, self.owner, self.sites, self.train
        cpu0 = time.process_time()
        mine = {k: self.candidates[k] for k in keys}
        if not mine:
            return [], {}, 0.0, []
        generator = torch.Generator(device="cpu")
        generator.set_state(self.rng)  # every share draws the same mini-batches
        n_train = next(iter(train.values())).shape[0]
        optimizer = adam(_param_groups(mine), lr=s["lr"], weight_decay=s["weight_decay"])
        stopper = _EarlyStopping(mine, s["patience"], optimizer, s["lr_decay"], s["max_decays"])
        history: list[dict] = []
        cut: list[str] = []
        steps = math.ceil(n_train / s["batch_size"])
        bar = tqdm(range(s["epochs"]), desc="select", disable=not s["progress"] or index > 0)
        for epoch in bar:
            for m in mine.values():
                m.train()
            order = torch.randperm(n_train, generator=generator).to(self.device)
            sums = dict.fromkeys(stopper.active, 0.0)
            for step in range(steps):
                idx = order[step * s["batch_size"] : (step + 1) * s["batch_size"]]
                total = 0.0
                for key in stopper.active:
                    node = owner[key][0]
                    parents = _rows(sites[node][1], idx, n_train)
                    with _own_draws(mine[key], s["seed"], key, epoch, step):
                        loss = mine[key](*parents).loss(train[node][idx]).mean()
                    total = total + loss
                    sums[key] = sums[key] + loss.detach() / steps
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
            for m in mine.values():
                m.eval()
            with torch.no_grad():
                for key, train_loss in sums.items():
                    node, kind, start = owner[key]
                    val_loss = float(
                        mine[key](*self.val_sites[node][1]).loss(self.val[node]).mean()
                    )
                    train_loss = float(train_loss)
                    history.append(
                        {"epoch": epoch, "node": node, "kind": kind, "start": start,
                         "train": train_loss, "val": val_loss, "key": key}
                    )  # fmt: skip
                    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                        stopper.active.remove(key)  # keeps its best weights so far; scored later
                    else:
                        stopper.update(key, val_loss)
            bar.set_postfix(active=len(stopper.active))
            budget = s["budget_s"]
            if budget is not None and time.perf_counter() - s["start"] > budget:
                cut = list(stopper.active)  # stopped by the budget, not by early stopping
                break
            if not stopper.active:
                break
        bar.close()
        stopper.restore()
        cpu_s = time.process_time() - cpu0
        return history, {k: m.state_dict() for k, m in mine.items()}, cpu_s, cut


def _permuted(parents: tuple, units: int, seed: int | None, node: str) -> tuple:
    """The pseudo-queries of a node's counterfactual spread: its held-out parents with the rows
    of each parent permuted independently (seeded by ``(seed, node)``), as an intervention on
    one parent pairs its values with the others'."""
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(_seed_of(seed, node, "spread"))
    out = []
    for p in parents:
        if torch.is_tensor(p) and p.dim() and p.shape[0] == units:
            p = p[torch.randperm(units, generator=generator).to(p.device)]
        out.append(p)
    return tuple(out)


def _spread(mechanisms: Sequence[nn.Module], x: Tensor, parents: tuple, queries: tuple) -> Tensor:
    """Counterfactual spread per unit ``(units,)``: every start abducts ``x`` ``(units, *event)``
    at ``parents`` and regenerates it at ``queries``; the variance of the answers over the
    starts, summed over features, over the node's variance (inf where an answer is not finite)."""
    units = x.shape[0]
    answers = torch.stack(
        [m(*queries).generate(m(*parents).abduct(x)).reshape(units, -1) for m in mechanisms]
    )
    scale = x.reshape(units, -1).var(0).sum().clamp_min(torch.finfo(x.dtype).tiny)
    spread = answers.var(0).sum(-1) / scale
    return torch.where(torch.isfinite(spread), spread, torch.full_like(spread, math.inf))


def _lower(reference: Tensor, other: Tensor, tolerance: float) -> bool:
    """Whether ``other``'s mean is below ``reference``'s by more than ``tolerance`` standard
    errors of the per-unit difference (a finite ``other`` is below a non-finite reference)."""
    if not bool(torch.isfinite(other).all()):
        return False
    if not bool(torch.isfinite(reference).all()):
        return True
    diff = reference - other
    se = float(diff.std() / math.sqrt(diff.numel())) if diff.numel() > 1 else 0.0
    return float(diff.mean()) > tolerance * se


def _choose(scores: Mapping[str, Tensor], kinds: Sequence[str], tolerance: float) -> dict:
    """The simplest kind within ``tolerance`` standard errors of the best mean log-likelihood."""
    means = {
        k: float(v.mean()) if bool(torch.isfinite(v).all()) else -math.inf
        for k, v in scores.items()
    }
    best = max(means, key=means.get)
    if not math.isfinite(means[best]):
        raise DataError("every candidate mechanism gave a non-finite held-out log-likelihood")
    n = scores[best].numel()
    for kind in kinds:
        if not math.isfinite(means[kind]):
            continue
        diff = scores[best] - scores[kind]
        se = float(diff.std() / math.sqrt(n)) if n > 1 else 0.0
        if means[best] - means[kind] <= tolerance * se:
            return {"kind": kind, "scores": means, "se": se}
    return {"kind": best, "scores": means, "se": 0.0}
