"""DCM's evaluation protocol (``SCMS.md``) for any :class:`~benchmarks.methods.Method`.

For one SCM and seed: fit on ``n_train`` true samples; observational MMD on the non-root nodes
(``n_obs`` model vs true samples); for every protocol node and each of ``num_values`` values
evenly spaced between the 10% and 90% quantiles of its true marginal, interventional MMD on its
descendants (``n_int`` vs ``n_int`` samples per value, mean over values) and counterfactual MSE of
``n_cf`` fresh factual units per value against the truth from their true noise, over all
descendant columns and over the first descendant column only (DCM's published variant).
Methods that flag extrapolated counterfactual units (``last_flags``, pyro_scm's
:mod:`pyro_scm.extrapolation`) are also scored over the unflagged units (``cf_unflagged``), with
the share of flagged units (``flagged``). Given the flags another method raised on the same
units (``reference``: node -> mask, from ``flags_out`` of its evaluation on the same seed),
a method is also scored over the units that method did not flag (``cf_reference_unflagged``),
so a peer's error over our trusted units compares with ours over them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from pyro_scm.datasets import SyntheticSCM, intervention_values
from pyro_scm.metrics import counterfactual_mse, mmd

from .methods import Method, Values, timed


@dataclass
class Settings:
    """Protocol sizes; the defaults are DCM's (``--quick`` shrinks them).

    Training (ours): Adam, learning rate multiplied by ``lr_decay`` on each of ``max_decays``
    plateaus of ``patience`` epochs per mechanism, then early stopping (``pyro_scm.fit``).
    """

    n_train: int = 5000
    num_values: int = 20
    n_obs: int = 1000
    n_int: int = 100
    n_cf: int = 100
    epochs: int = 200
    patience: int = 5
    lr_decay: float = 0.3
    max_decays: int = 3
    batch_size: int = 256
    hidden: tuple[int, ...] = (64, 64)
    transforms: int = 3
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _cat(values: Values, nodes: list[str]) -> torch.Tensor:
    return torch.cat([values[k].reshape(len(values[k]), -1) for k in nodes], dim=1)


def _mse_over(pred: Values, true: Values, keep: torch.Tensor) -> float:
    """Counterfactual MSE over the units where ``keep`` (0 where none is kept)."""
    if not bool(keep.any()):
        return 0.0
    return counterfactual_mse(
        {k: v[keep] for k, v in pred.items()}, {k: v[keep] for k, v in true.items()}
    )


def training_sample(syn: SyntheticSCM, seed: int, settings: Settings) -> Values:
    """The ``n_train`` true samples every method of ``seed`` is fitted on."""
    return syn.sample(settings.n_train, seed=1000 + seed)


def counterfactual_units(
    syn: SyntheticSCM, node: str, seed: int, settings: Settings
) -> tuple[torch.Tensor, Values, Values]:
    """The counterfactual query of do(``node``) for ``seed``: ``(do_values, factual, noise)``,
    ``n_cf`` fresh factual units (with their true noise) per intervention value, every
    method asked about the same units."""
    j = syn.intervention_nodes.index(node)
    grid = intervention_values(syn, node, settings.num_values, seed=3000 + seed)
    do_cf = grid.repeat_interleave(settings.n_cf, dim=0)
    factual, noise = syn.sample_with_noise(len(do_cf), seed=5000 + 10 * seed + j)
    return do_cf, factual, noise


def evaluate(
    method: Method,
    syn: SyntheticSCM,
    seed: int,
    settings: Settings,
    reference: dict[str, torch.Tensor] | None = None,
    flags_out: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Fit ``method`` on ``syn`` with ``seed`` and score it; metrics raw (not x100).

    ``reference``: node -> ``(units,)`` flags another method raised on this seed's units, to
    score ``method`` over the others too; ``flags_out``: filled with this method's own flags,
    node -> ``(units,)``, where it raises any."""
    train = training_sample(syn, seed, settings)
    cpu = time.process_time()
    _, fit_s = timed(method.fit, syn, train, seed)
    fit_cpu_s = time.process_time() - cpu  # CPU seconds: less sensitive to a loaded machine
    torch.manual_seed(seed)
    query_s = 0.0

    # observational
    non_roots = [v for v in syn.nodes if syn.parents(v)]
    model_obs, t = timed(method.sample, settings.n_obs)
    query_s += t
    true_obs = syn.sample(settings.n_obs, seed=2000 + seed)
    result = {"obs_mmd": mmd(_cat(model_obs, non_roots), _cat(true_obs, non_roots))}

    per_node = {}
    for j, node in enumerate(syn.intervention_nodes):
        below = syn.descendants(node)
        grid = intervention_values(syn, node, settings.num_values, seed=3000 + seed)
        # interventional: n_int samples per value, all values in one batched query
        do_int = grid.repeat_interleave(settings.n_int, dim=0)
        model_int, t = timed(method.interventional, node, do_int)
        query_s += t
        true_int = syn.interventional({node: do_int}, len(do_int), seed=4000 + 10 * seed + j)
        ours, theirs = _cat(model_int, below), _cat(true_int, below)
        k = settings.n_int
        int_mmd = [
            mmd(ours[i * k : (i + 1) * k], theirs[i * k : (i + 1) * k])
            for i in range(settings.num_values)
        ]
        # counterfactual: n_cf fresh factual units per value
        do_cf, factual, noise = counterfactual_units(syn, node, seed, settings)
        cf, t = timed(method.counterfactual, factual, node, do_cf)
        query_s += t
        truth = syn.counterfactual(noise, {node: do_cf})
        pred = {k: cf[k] for k in below}
        true = {k: truth[k] for k in below}
        per_node[node] = {
            "int_mmd": float(sum(int_mmd) / len(int_mmd)),
            "cf_all": counterfactual_mse(pred, true),
            "cf_first": counterfactual_mse(pred, true, first_column=True),
        }
        flags = getattr(method, "last_flags", None)
        if flags is not None:
            per_node[node]["flagged"] = float(flags.float().mean())
            per_node[node]["cf_unflagged"] = _mse_over(pred, true, ~flags)
            if flags_out is not None:
                flags_out[node] = flags
        if reference is not None and node in reference:
            per_node[node]["cf_reference_unflagged"] = _mse_over(pred, true, ~reference[node])
    result.update(seed=seed, per_node=per_node, fit_s=fit_s, fit_cpu_s=fit_cpu_s, query_s=query_s)
    if getattr(method, "selection", None):
        result["selection"] = method.selection
    if getattr(method, "spread", None):
        result["spread"] = method.spread
    return result
