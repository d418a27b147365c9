"""Methods under benchmark behind one small interface: fit, sample, intervene, counterfactual.

Every method answers with node -> ``(n, *event)`` tensors. Interventional and counterfactual
queries take a per-unit intervention value ``(n, *event)`` so one call answers all values of the
protocol at once where the method can batch (pyro_scm, ChiRho); the peers that cannot loop.

- :class:`PyroSCMMethod`: ``ps.SCM.from_graph`` with NSF flow, loc-scale, ANM or ``"auto"``
  (per-node selection, library defaults) mechanisms; it keeps each counterfactual's
  extrapolation flags (``last_flags``) and, for ``auto``, the kinds chosen per node;
- :class:`TrueMethod`: the true SCM written with ``LocScaleMechanism`` (a check on the harness);
- :class:`RankOracleMethod`: the counterfactual of a perfect rank-preserving (flow) model, from
  the true equations: the floor of any flow on the non-identifiable SCMs;
- :class:`ChiRhoMethod`: ChiRho's counterfactual handlers over the fitted pyro_scm mechanisms;
- :class:`DoWhyANMMethod`: DoWhy gcm with its default (additive-noise) model selection.

Peers are optional: :func:`peer_status` says which import.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_scm.datasets import SyntheticSCM
from pyro_scm.datasets.true_models import learned_scm, true_scm

Values = dict[str, Tensor]


def peer_status() -> dict[str, str]:
    """peer -> ``"ok <version>"`` or why it is missing."""
    status = {}
    for name, module in (("chirho", "chirho"), ("dowhy", "dowhy")):
        try:
            mod = __import__(module)
            status[name] = f"ok {getattr(mod, '__version__', '?')}"
        except Exception as e:  # ImportError or a broken install
            status[name] = f"missing ({type(e).__name__}: {e})"
    return status


class Method:
    """Interface of a benchmarked method."""

    name = "method"

    def fit(self, syn: SyntheticSCM, data: Values, seed: int) -> None:
        raise NotImplementedError

    def sample(self, n: int) -> Values:
        raise NotImplementedError

    def interventional(self, node: str, values: Tensor) -> Values:
        """One sample per row of ``values`` ``(n, *event)`` under ``do(node = values[i])``."""
        raise NotImplementedError

    def counterfactual(self, factual: Values, node: str, values: Tensor) -> Values:
        """Unit ``i``'s counterfactual under ``do(node = values[i])``."""
        raise NotImplementedError


class PyroSCMMethod(Method):
    """pyro_scm over the data set's graph with one learned mechanism kind."""

    def __init__(
        self, mechanism: str = "nsf", *, fit_kwargs: Mapping | None = None, name=None, **build
    ):
        self.mechanism = mechanism
        self.name = name or f"pyro_scm-{mechanism}"
        self.fit_kwargs = dict(fit_kwargs or {})
        self.build = build
        self.scm = None
        self.last_flags: Tensor | None = None
        self.selection: dict | None = None
        #: node -> kind -> mean counterfactual spread over starts (nodes with a chosen flow)
        self.spread: dict | None = None

    def fit(self, syn: SyntheticSCM, data: Values, seed: int) -> None:
        torch.manual_seed(seed)
        self.scm = learned_scm(syn, data, self.mechanism, **self.build)
        history = self.scm.fit(data, seed=seed, progress=False, **self.fit_kwargs)
        chosen = history.attrs.get("selection")
        self.selection = {n: i["kind"] for n, i in chosen.items()} if chosen else None
        spread = {n: i["spread"] for n, i in (chosen or {}).items() if "spread" in i}
        self.spread = spread or None

    def sample(self, n: int) -> Values:
        return {k: v[:, 0] for k, v in self.scm.sample(n).values.items()}

    def interventional(self, node: str, values: Tensor) -> Values:
        out = self.scm.do({node: values}).sample(len(values))
        return {k: v[:, 0] for k, v in out.values.items()}

    def counterfactual(self, factual: Values, node: str, values: Tensor) -> Values:
        from pyro_scm.extrapolation import ExtrapolationWarning

        with warnings.catch_warnings():  # the flags are scored by the protocol instead
            warnings.simplefilter("ignore", ExtrapolationWarning)
            out = self.scm.counterfactual(factual, do={node: values})
        flags = out.sample_stats.get("extrapolated")
        self.last_flags = None if flags is None else flags[0]
        return {k: v[0] for k, v in out.values.items()}


class TrueMethod(PyroSCMMethod):
    """The true SCM as a pyro_scm program (additive SCMs only): scores the harness itself."""

    name = "true-scm"

    def __init__(self):
        super().__init__("true")
        self.name = "true-scm"

    def fit(self, syn: SyntheticSCM, data: Values, seed: int) -> None:
        self.scm = true_scm(syn)


class RankOracleMethod(Method):
    """A rank-preserving model that knows the true conditional distributions (no training).

    Its counterfactual keeps each recomputed node's rank in its true conditional distribution
    (:meth:`~pyro_scm.datasets.SyntheticSCM.rank_preserving_counterfactual`): what an NSF
    mechanism gives once it has learnt the data exactly. On an identifiable SCM that is the
    true counterfactual; on a non-identifiable one it is the floor of any flow, so the gap
    between a flow and this row is estimation and extrapolation error, and the rest is the
    counterfactual the observations cannot fix. Samples come from the true SCM.
    """

    name = "rank-oracle"

    def __init__(self):
        self.syn: SyntheticSCM | None = None
        self.seed = self.calls = 0

    def fit(self, syn: SyntheticSCM, data: Values, seed: int) -> None:
        self.syn, self.seed, self.calls = syn, seed, 0

    def sample(self, n: int) -> Values:
        self.calls += 1
        return self.syn.sample(n, seed=7000 + 100 * self.seed + self.calls)

    def interventional(self, node: str, values: Tensor) -> Values:
        self.calls += 1
        return self.syn.interventional(
            {node: values}, len(values), 7000 + 100 * self.seed + self.calls
        )

    def counterfactual(self, factual: Values, node: str, values: Tensor) -> Values:
        return self.syn.rank_preserving_counterfactual(factual, {node: values})


class ChiRhoMethod(Method):
    """ChiRho's ``MultiWorldCounterfactual`` over the mechanisms of a fitted pyro_scm model.

    Shares the fitted model of a :class:`PyroSCMMethod` (its fit time is that method's). The
    program is the pyro_scm ``GraphSCM`` program inside a plate over units, with parents
    broadcast to a common batch shape (ChiRho adds world dimensions to the descendants of
    intervened nodes only); vector nodes keep their event dimension.
    """

    name = "chirho"

    def __init__(self, source: PyroSCMMethod):
        self.source = source
        self.name = f"chirho[{source.mechanism}]"

    def fit(self, syn: SyntheticSCM, data: Values, seed: int) -> None:
        self.event_dims = {k: len(s) for k, s in syn.event_shapes.items()}

    def _program(self, n: int):
        scm = self.source.scm

        def model():
            values = {}
            with pyro.plate("units", n, dim=-1):
                for node, mechanism in zip(scm.order, scm.mechanisms):
                    names = scm.parents[node]
                    parents = [values[p] for p in names]
                    if len(parents) > 1:  # a common batch shape; event dims kept
                        dims = [self.event_dims[p] for p in names]
                        batch = torch.broadcast_shapes(
                            *(v.shape[: v.dim() - d] for v, d in zip(parents, dims))
                        )
                        parents = [
                            v.expand(*batch, *v.shape[v.dim() - d :]) for v, d in zip(parents, dims)
                        ]
                    d = mechanism(*parents)  # a plain copy: Pyro's plate expands it
                    d = dist.TransformedDistribution(d.base_dist, d.transforms)
                    values[node] = pyro.sample(node, d)
            return values

        return model

    def sample(self, n: int) -> Values:
        with torch.no_grad():
            return self._program(n)()

    def interventional(self, node: str, values: Tensor) -> Values:
        from chirho.interventional.handlers import do

        with torch.no_grad(), do(actions={node: values}):
            return self._program(len(values))()

    @torch.no_grad()
    def counterfactual(self, factual: Values, node: str, values: Tensor) -> Values:
        from chirho.counterfactual.handlers import MultiWorldCounterfactual
        from chirho.indexed.ops import IndexSet, gather
        from chirho.interventional.handlers import do
        from chirho.observational.handlers import condition

        n = len(values)
        mwc = MultiWorldCounterfactual()
        with mwc, do(actions={node: values}), condition(data=dict(factual)):
            out = self._program(n)()
        with mwc:
            world = IndexSet(**{node: {1}})
            cf = {k: gather(v, world, event_dim=self.event_dims[k]) for k, v in out.items()}
        return {k: v.reshape(n, *factual[k].shape[1:]) for k, v in cf.items()}


class DoWhyANMMethod(Method):
    """DoWhy gcm: ``auto.assign_causal_mechanisms`` (additive-noise models) and its queries.

    Scalar nodes only (gcm does not support vector nodes); queries loop over distinct values.
    """

    name = "dowhy-anm"

    def fit(self, syn: SyntheticSCM, data: Values, seed: int) -> None:
        from dowhy import gcm

        if any(len(s) for s in syn.event_shapes.values()):
            raise NotImplementedError("DoWhy gcm does not support vector nodes")
        self.gcm, self.syn = gcm, syn
        gcm.config.disable_progress_bars()
        np.random.seed(seed)
        self.model = gcm.InvertibleStructuralCausalModel(nx.DiGraph(syn.graph))
        frame = syn.to_frame(data)
        gcm.auto.assign_causal_mechanisms(self.model, frame)
        gcm.fit(self.model, frame)

    def _values(self, frame) -> Values:
        return {
            k: torch.as_tensor(frame[k].to_numpy(copy=True), dtype=self.syn.dtype)
            for k in self.syn.nodes
        }

    def sample(self, n: int) -> Values:
        return self._values(self.gcm.draw_samples(self.model, n))

    def _by_value(self, node: str, values: Tensor, answer) -> Values:
        out = {k: torch.empty(len(values), dtype=self.syn.dtype) for k in self.syn.nodes}
        for v in values.unique():
            idx = (values == v).nonzero()[:, 0]
            part = answer(float(v), idx)
            for k in out:
                out[k][idx] = part[k]
        return out

    def interventional(self, node: str, values: Tensor) -> Values:
        def answer(v: float, idx: Tensor) -> Values:
            frame = self.gcm.interventional_samples(
                self.model, {node: lambda x, v=v: v}, num_samples_to_draw=len(idx)
            )
            return self._values(frame)

        return self._by_value(node, values, answer)

    def counterfactual(self, factual: Values, node: str, values: Tensor) -> Values:
        frame = self.syn.to_frame(factual)

        def answer(v: float, idx: Tensor) -> Values:
            rows = frame.iloc[idx.numpy()].reset_index(drop=True)
            out = self.gcm.counterfactual_samples(
                self.model, {node: lambda x, v=v: v}, observed_data=rows
            )
            return self._values(out)

        return self._by_value(node, values, answer)


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
