"""Extrapolation diagnostics: calibrated p-values, flags off the support, warnings.

The flags depend on the parent statistics stored by prepare(), not on the weights, so the models
here are declared fitted without training."""

import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from scms import Linear

import pyro_scm as ps
from pyro_scm.extrapolation import (
    ALPHA,
    ExtrapolationWarning,
    ParentSupport,
    _knn_sorted,
)


def _gaussian(n, seed, d=2):
    g = torch.Generator().manual_seed(seed)
    mix = torch.tensor([[1.0, 0.0], [0.9, 0.4]])[:d, :d]
    return torch.randn(n, d, generator=g) @ mix.T


def _assert_calibrated(support, query, m):
    """Each statistic's p-value is uniform in distribution; their combination is valid and at
    most j times as strict (j statistics). Given the reference set, coverage varies by
    ~sqrt(q(1-q)/m)."""
    found = list(support.pvalues(query))
    if support.has_density:
        found.append(support.rarity_pvalue_of(support.rarity(query)))
    combined = support.pvalue(query)
    assert all(p.shape == query.shape[:-1] for p in [*found, combined])
    for q in (0.05, 0.2, 0.5):
        tol = 4 * (q * (1 - q) / m) ** 0.5 + 0.01
        for p in found:
            assert abs((p <= q).float().mean().item() - q) < tol
        rate = (combined <= q).float().mean().item()
        assert q / len(found) - tol < rate < q + tol


def test_pvalues_are_uniform_in_distribution_and_tiny_far_away():
    m = 1500  # two features: half the units are the reference, the others fit the density
    support = ParentSupport(2, k=5)
    support.fit(_gaussian(3000, 0), max_reference=2000)
    assert support.has_density and support.reference.shape[0] == m
    _assert_calibrated(support, _gaussian(6000, 1), m)
    far = support.pvalue(torch.tensor([[8.0, 7.2], [3.0, -3.0], [6.0, -6.0]]))  # off the ridge
    assert bool((far < 1 / (m + 1)).all()) and far[2] < far[1]


def test_one_feature_pvalues_are_uniform_in_distribution_and_tiny_far_away():
    m = 2000
    support = ParentSupport(1, k=10)
    support.fit(_gaussian(3000, 0, d=1), max_reference=m)
    _assert_calibrated(support, _gaussian(6000, 1, d=1), m)
    far = support.pvalue(torch.tensor([[-9.0], [6.0], [12.0]]))
    assert bool((far < 1 / (m + 1)).all()) and far[2] < far[1]


@pytest.mark.parametrize("d", [1, 2])
def test_the_local_statistic_takes_the_neighbours_radii_with_the_query_added(d):
    # brute force: add the query to the reference, then each of its k nearest reference points'
    # distance to its own k-th nearest other point; the statistic is s over their mean
    support = ParentSupport(d, k=5)
    support.fit(_gaussian(400, 0, d=d))
    query = torch.cat([_gaussian(30, 1, d=d), torch.full((1, d), 3.0)])
    s, local = support.statistics(query)
    reference = support.reference
    for i in range(len(query)):
        z = (query[i] - support.loc) @ support.whiten.T
        augmented = torch.cat([reference, z[None]])
        dist = torch.cdist(augmented, augmented)
        dist.fill_diagonal_(torch.inf)
        own = dist[-1, :-1].topk(5, largest=False)
        radii = dist[own.indices].topk(5, dim=1, largest=False).values[:, -1]
        torch.testing.assert_close(s[i], own.values[-1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            local[i], (s[i] + 1e-6) / (radii.mean() + 1e-6), rtol=1e-4, atol=0
        )
    nan = support.statistics(torch.full((2, d), float("nan")))
    assert bool(nan[0].isnan().all()) and bool(nan[1].isnan().all())


def test_parents_just_off_a_curved_ridge_are_flagged_by_the_local_statistic():
    # x2 = x1² + 0.05 e: whitening cannot straighten the parabola, so a point 0.4 off it at its
    # vertex is no more isolated than the training points in the tails (isolation p large), but
    # far from the points around it: the triangle's do(x2) in small
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(4000, generator=g)
    train = torch.stack([x1, x1**2 + 0.05 * torch.randn(4000, generator=g)], -1)
    support = ParentSupport(2)
    support.fit(train)
    off = torch.tensor([[0.0, 0.4], [1.0, 0.5], [-1.0, 1.4]])
    isolation, local = support.pvalues(off)
    assert bool((isolation > 0.01).all()), isolation  # the isolation statistic alone misses them
    assert bool((local <= ALPHA / 2).all()) and bool((support.pvalue(off) <= ALPHA).all())
    on = torch.tensor([[0.0, 0.0], [1.0, 1.02], [-2.5, 6.25]])  # on the ridge, a tail included
    assert bool((support.pvalue(on) > 0.01).all())


@pytest.mark.parametrize("quantiles", [(0.01, 0.5), (0.015, 0.5), (0.02, 0.9)])
def test_parents_in_a_sparse_bend_are_flagged_by_their_rarity(quantiles):
    # the non-additive triangle's do(x2): x1 in its lower tail, x2 set to a value that such an
    # x1 rarely has. The training points there are sparse, so neither distance statistic sees
    # it; the density of held-out parents does (the flow's largest errors sit there)
    from pyro_scm.datasets import load_synthetic

    train = load_synthetic("dcm-triangle", "nonadditive").sample(5000, seed=0)
    parents = torch.stack([train["x1"], train["x2"]], -1)
    support = ParentSupport(2)
    support.fit(parents)
    query = torch.stack([parents[:, i].quantile(q) for i, q in enumerate(quantiles)])[None]
    isolation, local = support.pvalues(query)
    rarity = support.rarity_pvalue_of(support.rarity(query))
    assert bool(isolation > ALPHA / 2) and bool(local > ALPHA / 2), (isolation, local)
    assert bool(rarity <= ALPHA / 3) and bool(support.pvalue(query) <= ALPHA), rarity
    typical = parents[:2000].median(0).values[None]
    assert bool(support.pvalue(typical) > 0.1)


def test_one_feature_or_few_units_get_no_density_model():
    one, few = ParentSupport(1), ParentSupport(2)
    one.fit(_gaussian(3000, 0, d=1))
    few.fit(_gaussian(150, 0))
    assert not one.has_density and not few.has_density
    assert few.reference.shape[0] == 150  # all of them stay the reference
    with pytest.raises(ps.errors.NotFittedError, match="no density model"):
        one.rarity(torch.zeros(3, 1))


def test_statistics_saved_without_a_density_model_load_without_one():
    # files written before the density model: the mixture's buffers are absent
    support = ParentSupport(2)
    support.fit(_gaussian(1000, 0))
    old = {k: v for k, v in support.state_dict().items() if not k.startswith("density.")}
    loaded = ParentSupport(2)
    loaded.load_state_dict(old)
    query = _gaussian(100, 1)
    assert support.has_density and not loaded.has_density
    torch.testing.assert_close(loaded.pvalues(query), support.pvalues(query))
    again = ParentSupport(2)
    again.load_state_dict(support.state_dict())
    torch.testing.assert_close(again.pvalue(query), support.pvalue(query))


def test_the_tail_does_not_hinge_on_the_most_isolated_training_point():
    # one outlier in the training data (x = 12) makes the largest reference statistics huge;
    # units just beyond the data follow the fitted tail and stay flagged (a tail anchored at
    # the largest statistic gave them all p = 0.0027)
    train = _gaussian(1500, 0, d=1)
    query = torch.tensor([[4.5], [4.8], [-4.5]])
    plain, outlier = ParentSupport(1), ParentSupport(1)
    plain.fit(train)
    outlier.fit(torch.cat([train, torch.tensor([[12.0]])]))
    p, q = plain.pvalue(query), outlier.pvalue(query)
    assert bool((p <= ALPHA).all()) and bool((q <= ALPHA).all()), (p, q)
    assert bool((q[:2] / p[:2] < 10).all())  # next to the data: within a factor of 10


def test_duplicated_parents_are_scored_without_nan():
    # a discrete parent: reference points on top of each other, k-NN distances of 0
    g = torch.Generator().manual_seed(1)
    train = torch.randint(0, 3, (1000, 1), generator=g).float()
    support = ParentSupport(1)
    support.fit(train)
    p = support.pvalue(torch.tensor([[0.0], [1.0], [2.0], [0.5], [7.0]]))
    assert bool(torch.isfinite(p).all()), p
    assert bool((p[:3] > 0.5).all()) and bool((p[3:] <= ALPHA).all())


@pytest.mark.parametrize("d", [1, 2])
def test_non_finite_parents_get_p_zero(d):
    support = ParentSupport(d)
    support.fit(_gaussian(500, 0, d=d))
    query = torch.zeros(3, d)
    query[1, 0], query[2, -1] = float("nan"), float("inf")
    p = support.pvalue(query)
    assert p[0] > ALPHA and p[1] == 0 and p[2] == 0


@pytest.mark.parametrize("m, k", [(2000, 10), (20, 10), (57, 3), (300, 1)])
def test_one_feature_window_search_is_the_brute_force_distance(m, k):
    g = torch.Generator().manual_seed(m + k)
    reference = torch.randn(m, generator=g).sort().values
    # inside, at the ends, far beyond both ends, and exactly on reference points
    query = torch.cat([torch.randn(500, generator=g) * 3, torch.tensor([-50.0, 50.0]), reference])
    dist = (query[:, None] - reference).abs()
    brute = dist.topk(k, dim=1, largest=False).values
    found, near = _knn_sorted(query, reference, k)
    torch.testing.assert_close(found, brute)
    # the neighbours found are k distinct reference points at the k smallest distances
    assert bool((near.sort(1).values.diff(dim=1) > 0).all())
    torch.testing.assert_close(dist.gather(1, near).sort(1).values, brute)


def test_pvalues_do_not_depend_on_the_units_of_the_parents():
    train, query = _gaussian(800, 0), _gaussian(300, 1)
    a, b = ParentSupport(2), ParentSupport(2)
    a.fit(train)
    scale, shift = torch.tensor([100.0, 0.01]), torch.tensor([5.0, -3.0])
    b.fit(train * scale + shift)
    # equal up to float32 rounding, which can swap a few neighbouring ranks (1 / 801 each,
    # doubled by the combination)
    torch.testing.assert_close(
        a.pvalue(query), b.pvalue(query * scale + shift), atol=6 / 801, rtol=0
    )


def _triangle(n=1500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    y = x + 0.1 * torch.randn(n, generator=g)
    z = x - y + 0.1 * torch.randn(n, generator=g)
    return pd.DataFrame({"x": x.numpy(), "y": y.numpy(), "z": z.numpy()})


def test_counterfactual_flags_units_whose_parents_leave_the_support(tmp_path):
    frame = _triangle()
    graph = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    scm = ps.SCM.from_graph(
        graph, frame, mechanism="anm", hidden=(8,)
    ).mark_fitted()  # prepare() stores them
    factual = frame.iloc[:200]
    do_y = torch.where(torch.arange(200) < 50, 4.0, torch.tensor(factual.x.to_numpy())).float()
    with pytest.warns(ExtrapolationWarning, match=r"node 'z'.* 50 of 200"):
        cf = scm.counterfactual(factual, do={"y": do_y})
    p = cf.sample_stats["extrapolation_z"]
    assert p.shape == (1, 200) and set(cf.sample_stats) == {"extrapolation_z", "extrapolated"}
    assert bool((p[0, :50] <= ALPHA).all()) and bool((p[0, 50:] > ALPHA).all())
    frame_out = cf.to_pandas()
    assert frame_out["extrapolated"].tolist() == [True] * 50 + [False] * 150
    assert "extrapolation_z" in frame_out.columns
    idata = cf.to_arviz()
    np.testing.assert_array_equal(idata.sample_stats["extrapolated"].values[0, 0], p[0] <= ALPHA)
    # saved statistics travel with the model
    path = tmp_path / "m.pt"
    scm.save(path)
    fresh = ps.SCM.from_graph(graph, _triangle(300, 1), mechanism="anm", hidden=(8,)).mark_fitted()
    fresh.load(path)
    with pytest.warns(ExtrapolationWarning):
        again = fresh.counterfactual(factual, do={"y": do_y})
    torch.testing.assert_close(again.sample_stats["extrapolation_z"], p)


def test_in_support_counterfactuals_do_not_warn_and_unfitted_programs_are_not_scored():
    frame = _triangle()
    graph = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    scm = ps.SCM.from_graph(graph, frame, mechanism="anm", hidden=(8,)).mark_fitted()
    factual = frame.iloc[:300]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cf = scm.counterfactual(factual, do={"x": torch.tensor(factual.x.to_numpy()).float()})
        plain = Linear().counterfactual({"x": [1.0], "y": [2.0], "z": [0.0]}, do={"x": 9.0})
    assert set(cf.sample_stats) == {"extrapolation_y", "extrapolation_z", "extrapolated"}
    assert not bool(cf.sample_stats["extrapolated"].any())
    assert plain.sample_stats == {}


def test_a_factual_unit_beyond_the_data_is_flagged_too():
    frame = _triangle()
    scm = ps.SCM.from_graph(
        nx.DiGraph([("x", "y")]), frame[["x", "y"]], mechanism="anm"
    ).mark_fitted()
    with pytest.warns(ExtrapolationWarning, match="node 'y'.* 1 of 2"):
        cf = scm.counterfactual({"x": [9.0, 0.0], "y": [9.0, 0.0]}, do={"x": 0.5})
    assert cf.sample_stats["extrapolated"].tolist() == [[True, False]]


def test_vector_parents_keep_their_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1000, 2, generator=g)
    data = {"a": a, "b": a.sum(-1) + 0.1 * torch.randn(1000, generator=g)}
    scm = ps.SCM.from_graph(
        nx.DiGraph([("a", "b")]), data, mechanism="anm", hidden=(4,)
    ).mark_fitted()
    assert scm.parent_support.get("b").features == 2
    factual = {k: v[:4] for k, v in data.items()}
    with pytest.warns(ExtrapolationWarning, match="node 'b'.* 4 of 4"):
        cf = scm.counterfactual(factual, do={"a": torch.tensor([6.0, -6.0])})
    assert cf.sample_stats["extrapolation_b"].shape == (1, 4)


def test_extrapolation_can_be_skipped_and_the_flag_is_checked():
    frame = _triangle(300, 2)
    graph = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    scm = ps.SCM.from_graph(graph, frame, mechanism="anm", hidden=(8,)).mark_fitted()
    factual = frame.iloc[:20]
    with pytest.warns(ExtrapolationWarning):
        scored = scm.counterfactual(factual, do={"y": 4.0})
    plain = scm.counterfactual(factual, do={"y": 4.0}, extrapolation=False)
    assert "extrapolated" in scored.sample_stats and plain.sample_stats == {}
    for k in scored.values:  # the same answer, only without the scores
        torch.testing.assert_close(scored[k], plain[k], rtol=0, atol=0)
    with pytest.raises(ps.errors.ArgumentError, match="extrapolation"):
        scm.counterfactual(factual, do={"y": 4.0}, extrapolation="no")


def test_statistics_check_their_input_before_any_search():
    with pytest.raises(ps.errors.NotFittedError, match="call fit"):
        ParentSupport(2).pvalue(torch.zeros(3, 2))
    support = ParentSupport(2)
    support.fit(_gaussian(300, 0))
    for bad in (torch.zeros(4, 3), torch.zeros(4), torch.tensor(0.0)):
        with pytest.raises(ps.errors.ShapeError, match=r"\(\*batch, 2\)"):
            support.statistics(bad)
    query = _gaussian(50, 1)
    for a, b in zip(support.pvalues(query), support.pvalues_of(*support.statistics(query))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for bad in (torch.zeros(4, 3), torch.tensor(0.0)):
        with pytest.raises(ps.errors.ShapeError, match=r"\(\*batch, 2\)"):
            support.rarity(bad)
