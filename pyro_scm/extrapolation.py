r"""Extrapolation diagnostics: how far a mechanism's parents lie from the data it was fitted on.

A learned mechanism is only as good as its training data near the parents it is asked about; a
counterfactual that pairs parent values never seen together (``do(x2)`` on a triangle, keeping
x1) or a factual unit beyond the largest training value asks the network to extrapolate. At fit
time (:func:`record_support`, called from :func:`pyro_scm.fitting.prepare`) each node keeps, as
buffers of a :class:`ParentSupport`, up to ``max_reference`` of its training parents whitened by
their mean and covariance, z = L⁻¹(c − μ) with LLᵀ = Σ. A query's parents c get two distances
from their k nearest reference points N(c):

    s(c) = k-th smallest ‖z(c) − z_j‖                  (isolation: far from all the data)
    ℓ(c) = s(c) / mean_{j ∈ N(c)} s_j                  (local: far from the data near it)

where s_j is reference point j's own leave-one-out k-NN distance; ℓ is the simplified local
outlier factor (Schubert, Zimek and Kriegel, 2014). s alone misses parents just off a thin
ridge (x2 ≈ f(x1)): they are no more isolated than the training points in the tails, while ℓ
compares them with their dense neighbourhood. Each statistic t gets the conformal p-value
against the leave-one-out statistics t_1 ≤ … ≤ t_m of the reference points,

    p_t(c) = (1 + #{j : t_j ≥ t(c)}) / (m + 1),

uniform on (0, 1] (up to ties) for parents drawn from the training distribution, on every node
alike: one threshold means the same everywhere. A threshold of 0.001 lies beyond all but a
couple of the m = 2048 reference statistics, where the largest few would decide alone, so
above the 95% quantile u of the t_j the p-value follows their fitted Pareto tail,

    p_t(c) = p_t(u) (t(c) / u)^(−1/γ),   γ = mean of log(t_j / u) over t_j ≥ u (Hill's),

the tail of a k-NN distance where the density falls off (P(s > x) ∝ x^(−1/γ)). It is smooth in
t, goes below 1/(m + 1), and ranks units by how far out they lie.

Distances cannot tell a sparse region from an empty one (x1 in its lower tail, where x2 spreads
widely, moved to a value of x2 such x1 rarely have). A node with 2 to :data:`DENSITY_FEATURES`
parent features therefore gets a third statistic, the rarity r(c) = −log q(z(c)) under a
:class:`~pyro_scm.mixture.GaussianMixture` q fitted to training parents held out from the
reference (half of the units are the reference, so the reference rarities are exchangeable with
new parents'); its tail above u is exponential, p_r(c) = p_r(u) exp(−(r(c) − u)/γ), γ the mean
excess. The node's p-value is the Bonferroni combination of its j statistics (2 or 3),
p = min(1, j min(p_s, p_ℓ, p_r)). A counterfactual scores each node it
recomputes twice, at its counterfactual and at its factual parents (abduction uses the
latter), and reports
``min(1, 2 min(p_cf, p_factual))`` as ``sample_stats["extrapolation_<node>"]``; units with
``p <= ALPHA`` on any node are flagged (``sample_stats["extrapolated"]``) and an
:class:`ExtrapolationWarning` names each node with flagged units.

The k-NN search costs O(units (log m + k)) for a node with one parent feature (a window of the
sorted reference, exact) and O(units m) for several (a brute-force distance matrix in chunks).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import pyro.poutine as poutine
import torch
from torch import Tensor, nn

from . import graph as g
from .errors import NotFittedError, ShapeError
from .handlers import as_mechanism
from .mixture import GaussianMixture, components_for

__all__ = [
    "ALPHA",
    "ExtrapolationWarning",
    "ParentSupport",
    "SupportStatistics",
    "bonferroni",
    "check_counterfactual",
    "record_support",
    "support_pvalues",
]

#: p-value at or below which a unit's parents count as off the training support.
ALPHA = 1e-3
#: nodes with more parent features than this are not scored (images as parents).
MAX_FEATURES = 64
#: distance (whitened units) added to both sides of the local ratio: duplicated parents.
_TINY = 1e-6
#: most parent features of a node whose parents get a density model (the third statistic).
DENSITY_FEATURES = 16
#: fewest training units, on each side of the split, for a density model.
MIN_DENSITY = 100
#: reference quantile above which a statistic's p-value follows the fitted Pareto tail.
TAIL = 0.95


class ExtrapolationWarning(UserWarning):
    """Some units of a query ask a mechanism about parents off its training support."""


class ParentSupport(nn.Module):
    """Whitening, k-NN reference statistics and a density model of one node's training parents.

    Saved buffers: ``neighbour`` (k), ``loc`` ``(d,)``, ``whiten`` ``(d, d)`` (L⁻¹),
    ``reference`` ``(m, d)`` whitened training parents, ``scores`` ``(m,)`` their sorted
    leave-one-out k-NN distances, and the ``density`` mixture's (K = 0: none); loading a state
    dict resizes them to the saved shapes. Derived
    from ``reference`` at fit and load time (not saved): ``radius`` ``(m,)`` each reference
    point's leave-one-out k-NN distance, ``ratios`` ``(m,)`` the sorted leave-one-out local
    statistics, ``inner`` ``(m,)`` the (k-1)-th distances, ``rarities`` ``(m,)`` the sorted
    rarities of the reference under the mixture (empty without one), and for one feature the
    sorted reference and their radii (``sorted_*``).

    Args:
        features: the number of parent features d.
        k: the neighbour whose distance is the score.
    """

    def __init__(self, features: int = 1, k: int = 10):
        super().__init__()
        self.register_buffer("neighbour", torch.tensor(k))
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("whiten", torch.eye(features))
        self.register_buffer("reference", torch.zeros(0, features))
        self.register_buffer("scores", torch.zeros(0))
        self.density = GaussianMixture(features)
        derived = (
            "radius",
            "inner",
            "ratios",
            "rarities",
            "sorted_reference",
            "sorted_radius",
            "sorted_inner",
        )
        for name in derived:
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self.register_load_state_dict_post_hook(_rederive)

    @property
    def features(self) -> int:
        """The number of parent features d."""
        return self.loc.shape[0]

    @property
    def k(self) -> int:
        """The neighbour whose distance is the score."""
        return int(self.neighbour)

    @torch.no_grad()
    def fit(self, context: Tensor, max_reference: int = 2048, chunk: int = 1024) -> None:
        """Set the statistics from training parents ``(n, d)`` (n > k).

        With 2 to :data:`DENSITY_FEATURES` features and at least 2 :data:`MIN_DENSITY` units,
        at most half of them (up to ``max_reference``) become the reference and a
        :class:`~pyro_scm.mixture.GaussianMixture` is fitted to the others (up to
        ``4 max_reference``), so that the reference points' densities are held out."""
        x = context.reshape(-1, context.shape[-1]).to(self.loc.dtype)
        n, d = x.shape
        loc = x.mean(0)
        std = x.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        s = (x - loc) / std  # per-feature scaling first: the jitter is then scale-free
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        corr = s.T @ s / max(n - 1, 1)
        chol = torch.linalg.cholesky(corr + 1e-5 * eye)
        whiten = torch.linalg.solve_triangular(chol, eye, upper=False) / std
        generator = torch.Generator(device="cpu").manual_seed(0)
        order = torch.randperm(n, generator=generator).to(x.device)
        mixture = 2 <= d <= DENSITY_FEATURES and n >= 2 * MIN_DENSITY
        m = min(max_reference, n // 2 if mixture else n)
        reference = (x[order[:m]] - loc) @ whiten.T
        self.neighbour.fill_(min(self.k, reference.shape[0] - 1))
        self.loc, self.whiten, self.reference = loc, whiten, reference
        self.density = GaussianMixture(d).to(x)
        if mixture:
            held = (x[order[m : m + 4 * max_reference]] - loc) @ whiten.T
            self.density.fit(held, components_for(*held.shape))
        self._derive(chunk)

    @torch.no_grad()
    def _derive(self, chunk: int = 1024) -> None:
        """Recompute the leave-one-out statistics of ``reference`` (after fit or load)."""
        reference, k = self.reference, self.k
        m = reference.shape[0]
        if m <= k:
            return
        found = [
            _knn(reference[i : i + chunk], reference, k, exclude_from=i) for i in range(0, m, chunk)
        ]
        dist = torch.cat([d for d, _ in found])
        neighbours = torch.cat([j for _, j in found])
        radius = dist[:, -1]
        inner = dist[:, -2] if k > 1 else torch.zeros_like(radius)
        self.radius, self.inner = radius, inner
        self.scores = radius.sort().values
        # reference point j's neighbours have j among their own k nearest points: the ratio of a
        # query takes its neighbours' radii with the query added (_around), so both are alike
        self.ratios = _ratio(radius, radius[neighbours]).sort().values
        if self.density.components:
            self.rarities = (-self.density.log_prob(reference)).sort().values
        else:
            self.rarities = reference.new_zeros(0)
        if self.features == 1:
            self.sorted_reference, order = reference[:, 0].sort()
            self.sorted_radius, self.sorted_inner = radius[order], inner[order]

    def _whitened(self, context: Tensor) -> Tensor:
        """Parents ``(*batch, d)`` whitened and flattened, ``(units, d)``.

        Raises:
            ShapeError: the last dimension of ``context`` is not d.
        """
        if context.dim() == 0 or context.shape[-1] != self.features:
            raise ShapeError(
                f"parents must have shape (*batch, {self.features}), got {tuple(context.shape)}"
            )
        return (context.reshape(-1, self.features).to(self.loc) - self.loc) @ self.whiten.T

    @torch.no_grad()
    def statistics(self, context: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """The isolation s and the local statistic ℓ of parents ``(*batch, d)``: two tensors
        ``(*batch,)`` (NaN where a parent is non-finite), to compare with the sorted reference
        statistics ``scores`` and ``ratios``.

        Raises:
            NotFittedError: :meth:`fit` (or loading fitted statistics) has not run.
            ShapeError: the last dimension of ``context`` is not d.
        """
        if self.radius.shape[0] == 0:
            raise NotFittedError("ParentSupport has no reference statistics: call fit first")
        s, local = self._distances(self._whitened(context), chunk)
        return s.reshape(context.shape[:-1]), local.reshape(context.shape[:-1])

    def _distances(self, z: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        """:meth:`statistics` of whitened parents ``(units, d)`` -> two ``(units,)``."""
        if self.features == 1 and self.reference.shape[0] >= 2 * self.k:
            dist, near = _knn_sorted(z[:, 0], self.sorted_reference, self.k)
            around = _around(dist, self.sorted_radius[near], self.sorted_inner[near])
        else:
            found = [
                _knn(z[i : i + chunk], self.reference, self.k) for i in range(0, len(z), chunk)
            ]
            dist = torch.cat([d for d, _ in found])
            near = torch.cat([j for _, j in found])
            around = _around(dist, self.radius[near], self.inner[near])
        s, local = dist[:, -1], _ratio(dist[:, -1], around)
        finite = torch.isfinite(z).all(-1)
        return torch.where(finite, s, torch.nan), torch.where(finite, local, torch.nan)

    @torch.no_grad()
    def pvalues(self, context: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """Conformal p-values of the isolation and the local statistic of parents
        ``(*batch, d)``: two tensors ``(*batch,)``, each uniform in distribution (above the
        :data:`TAIL` quantile, as far as the fitted Pareto tail holds); 0 where a parent is
        non-finite: off every support, never in it."""
        return self.pvalues_of(*self.statistics(context, chunk))

    def pvalues_of(self, isolation: Tensor, local: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`pvalues` of statistics already computed by :meth:`statistics`."""
        out = []
        for t, reference in ((isolation, self.scores), (local, self.ratios)):
            p = _conformal(t.reshape(-1), reference).reshape(t.shape)
            out.append(torch.where(t.isnan(), torch.zeros_like(p), p))
        return out[0], out[1]

    @property
    def has_density(self) -> bool:
        """Whether the node's parents have a density model (the rarity statistic)."""
        return self.rarities.shape[0] > 0

    @torch.no_grad()
    def rarity(self, context: Tensor, chunk: int = 4096) -> Tensor:
        """The rarity r = −log q(z) of parents ``(*batch, d)`` under the mixture q fitted to
        held-out whitened training parents -> ``(*batch,)`` (NaN where a parent is
        non-finite), to compare with the sorted reference rarities ``rarities``.

        Raises:
            NotFittedError: the node has no density model (see :attr:`has_density`).
            ShapeError: the last dimension of ``context`` is not d.
        """
        if not self.has_density:
            raise NotFittedError(
                "ParentSupport has no density model: fit it on 2 to "
                f"{DENSITY_FEATURES} parent features and at least {2 * MIN_DENSITY} units"
            )
        return self._rarity(self._whitened(context), chunk).reshape(context.shape[:-1])

    def _rarity(self, z: Tensor, chunk: int) -> Tensor:
        """:meth:`rarity` of whitened parents ``(units, d)`` -> ``(units,)``."""
        finite = torch.isfinite(z).all(-1)
        r = -self.density.log_prob(torch.where(finite[:, None], z, torch.zeros_like(z)), chunk)
        return torch.where(finite, r, torch.nan)

    def rarity_pvalue_of(self, rarity: Tensor) -> Tensor:
        """Conformal p-value of rarities from :meth:`rarity`, with an exponential tail above
        the :data:`TAIL` quantile (a Gaussian's −log density has one); 0 where NaN."""
        p = _conformal(rarity.reshape(-1), self.rarities, log_scale=True).reshape(rarity.shape)
        return torch.where(rarity.isnan(), torch.zeros_like(p), p)

    @torch.no_grad()
    def pvalue(self, context: Tensor, chunk: int = 4096) -> Tensor:
        """The node's p-value of parents ``(*batch, d)`` -> ``(*batch,)``: the Bonferroni
        combination ``min(1, j min(p_1, ..., p_j))`` of the j statistics it has (isolation and
        local, :meth:`pvalues`, and the rarity where :attr:`has_density`), valid (P(p <= α) <= α
        in distribution, as far as the tail models hold) and at most j times as strict as
        any one of them."""
        if self.radius.shape[0] == 0:
            raise NotFittedError("ParentSupport has no reference statistics: call fit first")
        z = self._whitened(context)  # once for all the statistics
        found = list(self.pvalues_of(*self._distances(z, chunk)))
        if self.has_density:
            found.append(self.rarity_pvalue_of(self._rarity(z, chunk)))
        return bonferroni(*found).reshape(context.shape[:-1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("loc", "whiten", "reference", "scores"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def bonferroni(*pvalues: Tensor) -> Tensor:
    """The Bonferroni combination ``min(1, j min(p_1, ..., p_j))`` of j p-values of the same
    shape: a valid p-value whatever their dependence."""
    return (len(pvalues) * torch.stack(pvalues).amin(0)).clamp(max=1.0)


def _rederive(support: ParentSupport, incompatible_keys) -> None:
    """After loading (the mixture is a child, loaded after its parent): derive the rest."""
    support._derive()


class SupportStatistics(nn.Module):
    """Node -> :class:`ParentSupport`; loading a state dict creates (or drops) nodes to match."""

    def __init__(self):
        super().__init__()
        self.nodes = nn.ModuleDict()

    @staticmethod
    def key(node: str) -> str:
        return node.replace(".", "\u2024")  # ModuleDict keys cannot hold dots

    def get(self, node: str) -> ParentSupport | None:
        """The parent statistics of ``node``, or None where none were recorded."""
        try:
            return self.nodes[self.key(node)]
        except KeyError:
            return None

    def set(self, node: str, support: ParentSupport) -> None:
        """Store the parent statistics of ``node`` (buffers: save/load and ``.to`` carry them)."""
        self.nodes[self.key(node)] = support

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        head = prefix + "nodes."
        saved = {k[len(head) :].split(".", 1)[0] for k in state_dict if k.startswith(head)}
        for key in list(self.nodes):
            if key not in saved:
                del self.nodes[key]
        for key in saved - set(self.nodes):
            self.nodes[key] = ParentSupport().to(_device(state_dict, head + key))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _device(state_dict: Mapping[str, Tensor], prefix: str) -> torch.device:
    return next(v.device for k, v in state_dict.items() if k.startswith(prefix))


def _knn(
    query: Tensor, reference: Tensor, k: int, exclude_from: int | None = None
) -> tuple[Tensor, Tensor]:
    """Distances of each query row to its k nearest reference rows, ascending, and their indices
    (both ``(q, k)``).

    ``exclude_from``: the query rows are reference rows ``exclude_from, exclude_from + 1, ...``,
    left out of their own neighbours.
    """
    dist = torch.cdist(query, reference)
    if exclude_from is not None:
        rows = torch.arange(query.shape[0], device=query.device)
        dist[rows, rows + exclude_from] = torch.inf
    return dist.topk(k, dim=1, largest=False)


def _knn_sorted(query: Tensor, reference: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """:func:`_knn` for one feature: ``query`` ``(q,)``, sorted ``reference`` ``(m,)`` with
    m >= 2k -> distances and positions in ``reference`` ``(q, k)``, in O(q (log m + k)) instead
    of O(q m).

    The k nearest reference points of a query form a run of the sorted reference next to its
    insertion point, so they lie among the 2k points around it (a window moved inwards at the
    ends); the k smallest distances within that window are the exact ones.
    """
    m = reference.shape[0]
    start = (torch.searchsorted(reference, query.contiguous()) - k).clamp(0, m - 2 * k)
    window = start[:, None] + torch.arange(2 * k, device=query.device)
    dist = (reference[window] - query[:, None]).abs()
    values, positions = dist.topk(k, dim=1, largest=False)
    return values, window.gather(1, positions)


def _ratio(radius: Tensor, around: Tensor) -> Tensor:
    """The local statistic ℓ: k-NN distance ``(q,)`` over the mean k-NN distance of the
    neighbours ``(q, k)``, both in whitened units and padded by :data:`_TINY` (a query on top of
    duplicated points, 0/0, counts as 1)."""
    return (radius + _TINY) / (around.mean(-1) + _TINY)


def _around(dist: Tensor, radius: Tensor, inner: Tensor) -> Tensor:
    """The k-NN distances of a query's neighbours had the query been a reference point
    ``(q, k)``: a neighbour at distance ``dist`` below its radius has the query among its k
    nearest, which moves its k-th distance to ``max(inner, dist)``."""
    return torch.where(dist < radius, torch.maximum(inner, dist), radius)


def _conformal(statistic: Tensor, sorted_reference: Tensor, log_scale: bool = False) -> Tensor:
    """Conformal p-value of ``statistic`` ``(q,)`` among the sorted leave-one-out statistics
    ``(m,)`` of the reference, with a Pareto tail above their :data:`TAIL` quantile u:
    p(t) = p(u) (t / u)^(-1/γ), γ Hill's estimate (the mean of log(t_j / u) over t_j >= u).

    ``log_scale``: the statistics are logarithms already (a rarity), so the tail is
    exponential: p(t) = p(u) exp(-(t - u) / γ), γ the mean of t_j - u over t_j >= u."""
    m = sorted_reference.shape[0]
    larger = m - torch.searchsorted(sorted_reference, statistic.contiguous(), right=False)
    p = (1 + larger).to(sorted_reference) / (m + 1)
    i = int(TAIL * (m - 1))
    u = sorted_reference[i : i + 1]
    p_u = (1 + m - torch.searchsorted(sorted_reference, u)).to(p) / (m + 1)
    # Hill's estimate of γ; ties above u (discrete parents) give γ -> 0: beyond u is off support
    if log_scale:
        excesses, excess = sorted_reference[i:] - u, (statistic - u).clamp_min(0.0)
    else:
        excesses = ((sorted_reference[i:] + _TINY) / (u + _TINY)).log()
        excess = ((statistic + _TINY) / (u + _TINY)).clamp_min(1.0).log()
    hill = excesses.mean().clamp_min(1e-12)
    return torch.where(statistic > u, p_u * (-excess / hill).exp(), p)


def _support(scm) -> SupportStatistics:
    support = getattr(scm, "parent_support", None)
    if support is None:
        raise AttributeError(f"{type(scm).__name__} has no parent_support (SCM.__init__ not run)")
    return support


def parent_context(parents: Sequence, batch_ndim: int) -> Tensor | None:
    """The parents a mechanism receives, flattened per unit: ``(*batch, d)`` (None: no parents).

    ``batch_ndim``: the number of batch dimensions (those of the node's value), so that vector
    parents keep their features whatever their shapes.
    """
    tensors = [torch.as_tensor(p) for p in parents]
    tensors = [p for p in tensors if p.dim() >= batch_ndim]
    if not tensors:
        return None
    batch = torch.broadcast_shapes(*(p.shape[:batch_ndim] for p in tensors))
    flat = [p.reshape(*p.shape[:batch_ndim], -1) for p in tensors]
    return torch.cat([f.expand(*batch, f.shape[-1]) for f in flat], dim=-1)


def _contexts(scm, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Node -> the flattened parents its mechanism receives on ``values`` ``(*batch, d)``."""
    with poutine.trace() as tracer, poutine.condition(data=dict(values)):
        scm.model()
    specs = scm.specs
    out = {}
    for name, site in tracer.trace.nodes.items():
        if site["type"] != "sample" or name not in values or name not in specs:
            continue
        batch_ndim = values[name].dim() - len(specs[name].event_shape)
        context = parent_context(as_mechanism(site).parents, batch_ndim)
        if context is not None and context.is_floating_point():
            out[name] = context
    return out


@torch.no_grad()
def record_support(scm, data: Mapping[str, Tensor], k: int = 10, max_reference: int = 2048):
    """Store each node's parent statistics from training ``data`` (node -> ``(units, *event)``):
    the distance reference and, for 2 to :data:`DENSITY_FEATURES` parent features, the density
    model (:meth:`ParentSupport.fit`).

    Nodes without parents, with more than :data:`MAX_FEATURES` parent features, or with fewer
    than ``k + 2`` units are skipped.
    """
    support = getattr(scm, "parent_support", None)
    if support is None:
        return
    for node, context in _contexts(scm, data).items():
        d = context.shape[-1]
        if d > MAX_FEATURES or context.reshape(-1, d).shape[0] < k + 2:
            continue
        stats = ParentSupport(d, k).to(context.device)
        stats.fit(context, max_reference)
        support.set(node, stats)


@torch.no_grad()
def support_pvalues(scm, values: Mapping[str, Tensor], nodes: Sequence[str]) -> dict[str, Tensor]:
    """Node -> conformal p-value ``(*batch,)`` of its parents in ``values``, for the given nodes
    that have statistics."""
    support = getattr(scm, "parent_support", None)
    if support is None or not any(support.get(n) is not None for n in nodes):
        return {}
    contexts = _contexts(scm, values)
    out = {}
    for node in nodes:
        stats = support.get(node)
        if stats is not None and node in contexts and contexts[node].shape[-1] == stats.features:
            out[node] = stats.pvalue(contexts[node])
    return out


def recomputed_nodes(scm, interventions: Mapping[str, object]) -> list[str]:
    """Nodes a counterfactual recomputes with their mechanism: descendants of the intervened
    nodes and nodes under a shift (callable) intervention."""
    changed = g.descendants(scm.graph, interventions)
    changed |= {k for k, v in interventions.items() if not torch.is_tensor(v)}
    return [n for n in scm.graph.nodes if n in changed]


def check_counterfactual(scm, result) -> None:
    """Score a counterfactual :class:`~pyro_scm.results.QueryResult` in place and warn.

    Adds ``sample_stats["extrapolation_<node>"]`` ``(num_samples, units)`` for every recomputed
    node with statistics and ``sample_stats["extrapolated"]`` (any node at ``p <= ALPHA``).
    """
    nodes = recomputed_nodes(scm, result.interventions)
    if not nodes or result.factual is None:
        return
    cf = support_pvalues(scm, result.values, nodes)
    if not cf:
        return
    factual = support_pvalues(scm, result.factual, list(cf))
    flagged = None
    for node, p in cf.items():
        if node in factual:
            p = bonferroni(p, factual[node].expand_as(p))
        result.sample_stats[f"extrapolation_{node}"] = p
        off = p <= ALPHA
        flagged = off if flagged is None else flagged | off
        count = int(off.any(0).sum())
        if count:
            warnings.warn(
                f"node {node!r}: the parents of {count} of {result.num_units} counterfactual "
                f"units lie off the training support (p <= {ALPHA}); their values are "
                f"extrapolations (result.sample_stats['extrapolation_{node}'])",
                ExtrapolationWarning,
                stacklevel=3,
            )
    result.sample_stats["extrapolated"] = flagged
