"""One result type for every query, with arviz and pandas as its analysis surfaces."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = ["QueryResult"]


@dataclass
class QueryResult(Mapping):
    """Samples of every node from one query.

    ``result[node]`` is a tensor ``(num_samples, units, *event)``; with several MCMC chains the
    samples of the chains follow each other (``num_chains * draws`` in all).

    Attributes:
        values: node -> ``(num_samples, units, *event)``.
        kind: ``"observational"``, ``"interventional"``, ``"counterfactual"`` or ``"backtracking"``.
        factual: node -> ``(units, *event)``, the factual values (counterfactual queries).
        interventions: node -> the intervened value ``(units, *event)``, or a description of a
            callable intervention.
        noise: node -> exogenous noise ``(num_samples, units, *noise_event)`` (the nodes the
            query abducted or drew noise for).
        sample_stats: statistics of each draw and unit ``(num_samples, units)``: a sampler's
            (acceptance, divergences, the antecedent's violation), and the extrapolation p-values
            ``extrapolation_<node>`` and flag ``extrapolated`` of a counterfactual
            (:mod:`pyro_scm.extrapolation`); columns of :meth:`to_pandas` and variables of the
            arviz ``sample_stats`` group.
        categorical: categorical nodes -> number of classes (one-hot values).
        num_chains: number of chains the samples come from.
        diagnostics: per-unit sampler summaries ``(units,)`` of stochastic queries (R-hat and
            bulk ESS per sampled node as ``rhat_<node>``, ``ess_bulk_<node>``; acceptance rate,
            divergences, ...); in :meth:`to_arviz` they are attributes of the data.
    """

    values: dict[str, Tensor]
    kind: str = "observational"
    factual: dict[str, Tensor] | None = None
    interventions: dict[str, object] = field(default_factory=dict)
    noise: dict[str, Tensor] = field(default_factory=dict)
    sample_stats: dict[str, Tensor] = field(default_factory=dict)
    categorical: dict[str, int] = field(default_factory=dict)
    num_chains: int = 1
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, node: str) -> Tensor:
        from .errors import UnknownNodeError

        if node not in self.values:
            raise UnknownNodeError(node, list(self.values), "result")
        return self.values[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def num_samples(self) -> int:
        """Samples per unit (all chains together)."""
        return next(iter(self.values.values())).shape[0]

    @property
    def num_units(self) -> int:
        """Number of units (rows of the factual; 1 for observational sampling)."""
        return next(iter(self.values.values())).shape[1]

    def mean(self) -> dict[str, Tensor]:
        """Per-unit mean over samples: node -> ``(units, *event)``."""
        return {k: v.mean(0) for k, v in self.values.items()}

    def __repr__(self) -> str:
        lines = [
            f"QueryResult({self.kind}, num_samples={self.num_samples}, units={self.num_units}"
            + (f", chains={self.num_chains}" if self.num_chains > 1 else "")
            + ")"
        ]
        if self.interventions:
            lines.append(f"  do: {_describe(self.interventions)}")
        for node, v in self.values.items():
            x = v.detach().double()
            lines.append(
                f"  {node:<12} shape {tuple(v.shape)!s:<18} mean {x.mean().item():+.4g} "
                f"std {x.std().item() if x.numel() > 1 else 0.0:.4g}"
            )
        return "\n".join(lines)

    def to_pandas(self) -> pd.DataFrame:
        """A long table: one row per (sample, unit), a column per scalar node.

        Vector nodes give columns ``node[0]``, ``node[1]``, ...; categorical nodes one column of
        class indices. Columns ``chain`` (with several chains), ``draw`` and ``unit`` come first;
        the :attr:`sample_stats` (e.g. ``extrapolated``, ``accept_prob``) come last, named in
        ``frame.attrs["sample_stats"]`` so that the frame is a valid ``factual`` for a next query.
        """
        s, n = self.num_samples, self.num_units
        draws = s // self.num_chains
        index = {
            "chain": np.repeat(np.arange(self.num_chains), draws * n),
            "draw": np.tile(np.repeat(np.arange(draws), n), self.num_chains),
            "unit": np.tile(np.arange(n), s),
        }
        if self.num_chains == 1:
            del index["chain"]
        columns = _columns(
            {k: v.reshape(s * n, *v.shape[2:]) for k, v in self.values.items()}, self.categorical
        )
        stats = {k: _numpy(v.reshape(s * n)) for k, v in self.sample_stats.items()}
        frame = pd.DataFrame({**index, **columns, **stats})
        frame.attrs["sample_stats"] = list(stats)  # not nodes: a factual read from it skips them
        return frame

    def to_arviz(self):
        """The samples as arviz data (``InferenceData`` on arviz 0.x, ``DataTree`` on 1.x).

        Groups: ``posterior`` (dims chain, draw, unit, ``<node>_dim_i``), ``observed_data``
        (the factual, dims unit, ``<node>_dim_i``), ``constant_data`` (the interventions as
        ``do_<node>``, or a backtracking antecedent as ``antecedent_<node>``), ``sample_stats``
        where a sampler gave them; the exogenous noise is in the posterior as ``noise_<node>``.
        """
        import arviz as az

        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}}
        dims: dict[str, list[str]] = {}
        for node, v in self.values.items():
            groups["posterior"][node] = self._chains(v)
            dims[node] = ["unit"] + [f"{node}_dim_{i}" for i in range(v.dim() - 2)]
        for node, u in self.noise.items():
            name = f"noise_{node}"
            groups["posterior"][name] = self._chains(u)
            dims[name] = ["unit"] + [f"{name}_dim_{i}" for i in range(u.dim() - 2)]
        if self.factual:
            groups["observed_data"] = {k: _numpy(v) for k, v in self.factual.items()}
        prefix = "antecedent" if self.kind == "backtracking" else "do"
        constant = {
            f"{prefix}_{k}": _numpy(v) for k, v in self.interventions.items() if torch.is_tensor(v)
        }
        for k, v in self.interventions.items():  # (units, *event): the posterior's dims
            if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == self.num_units:
                dims[f"{prefix}_{k}"] = ["unit"] + [f"{k}_dim_{i}" for i in range(v.dim() - 1)]
        if constant:
            groups["constant_data"] = constant
        if self.sample_stats:
            groups["sample_stats"] = {k: self._chains(v) for k, v in self.sample_stats.items()}
        coords = {"unit": np.arange(self.num_units)}
        attrs = {"query": self.kind}
        if self.interventions:
            attrs["antecedent" if self.kind == "backtracking" else "interventions"] = _describe(
                self.interventions
            )
        attrs.update({k: _numpy(v) for k, v in self.diagnostics.items()})
        if "data" in inspect.signature(az.from_dict).parameters:  # arviz >= 1.0: a DataTree
            return az.from_dict(groups, dims=dims, coords=coords, attrs={"/": attrs})
        return az.from_dict(**groups, dims=dims, coords=coords, attrs=attrs)

    def _chains(self, v: Tensor) -> np.ndarray:
        x = _numpy(v)
        return x.reshape(self.num_chains, x.shape[0] // self.num_chains, *x.shape[1:])


def _numpy(v: Tensor) -> np.ndarray:
    return v.detach().to("cpu").numpy()


def _columns(values: Mapping[str, Tensor], categorical: Mapping[str, int]) -> dict:
    out = {}
    for node, v in values.items():
        x = _numpy(v)
        if node in categorical:
            out[node] = x.argmax(-1)
        elif x.ndim == 1:
            out[node] = x
        else:
            flat = x.reshape(x.shape[0], -1)
            for i in range(flat.shape[1]):
                out[f"{node}[{i}]"] = flat[:, i]
    return out


def _describe(interventions: Mapping[str, object]) -> str:
    parts = []
    for node, v in interventions.items():
        if torch.is_tensor(v):
            flat = v.detach().reshape(-1)
            same = bool((flat == flat[0]).all()) if flat.numel() else True
            shown = f"{flat[0].item():.4g}" if same and flat.numel() else f"tensor{tuple(v.shape)}"
        else:
            shown = getattr(v, "__name__", type(v).__name__)
        parts.append(f"{node}={shown}")
    return ", ".join(parts)
