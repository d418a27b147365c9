"""The benchmark runner's smoke path on one tiny SCM, the report, and the speed helpers."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report, run
from benchmarks.dcm_protocol import Settings, evaluate
from benchmarks.methods import RankOracleMethod, TrueMethod
from benchmarks.speed import (
    chain10,
    floor_counterfactual,
    floor_table,
    hand_counterfactual,
    ladder10,
    run_floor,
)
from pyro_scm.datasets import load_synthetic
from pyro_scm.datasets.true_models import learned_scm


def test_smoke_run_writes_json_markdown_and_docs(tmp_path):
    result = run.main(["--smoke", "--no-peers", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["mode"] == "smoke" and (tmp_path / "results.md").exists()
    methods = {r["method"]: r for r in result["dcm"]}
    assert {"pyro_scm-nsf", "pyro_scm-locscale", "true-scm"} <= set(methods)
    assert all(v.startswith("skipped") for v in saved["peers"].values())
    # the harness check: the true SCM has zero counterfactual error on every intervened node
    for node, m in methods["true-scm"]["summary"]["per_node"].items():
        assert m["cf_all"][0] < 1e-10, node
    nsf = methods["pyro_scm-nsf"]["summary"]
    assert set(nsf["per_node"]) == {"x1", "x2"} and nsf["fit_s"][0] > 0
    rows = [r for r in result["comparison"] if r["method"] == "true-scm"]
    assert all(r["met"] for r in rows) and rows[0]["dcm_x100"] == 0.46
    text = report.main([str(tmp_path / "results.json"), "--out", str(tmp_path / "b.md")])
    assert "0.0035 / 0.0163" in text and "true-scm" in text
    # the first-column variant against half the published DCM median (0.0035 / 2)
    assert "| dcm-chain[nonlinear] | true-scm | 0.0000 | 0.0035 | 0.0163 | 0.0018 | yes |" in text


def test_first_column_variant_differs_from_all_descendants():
    syn = load_synthetic("dcm-triangle", "nonlinear")

    class Shifted(TrueMethod):  # the true model, off by 1 on x3 only
        def counterfactual(self, factual, node, values):
            out = super().counterfactual(factual, node, values)
            return {**out, "x3": out["x3"] + 1.0}

    settings = Settings(n_train=50, num_values=2, n_obs=50, n_int=10, n_cf=10)
    result = evaluate(Shifted(), syn, 0, settings)
    assert result["per_node"]["x1"]["cf_first"] == pytest.approx(0.0, abs=1e-10)
    assert result["per_node"]["x1"]["cf_all"] == pytest.approx(0.5, abs=1e-5)  # x2, x3
    assert result["per_node"]["x2"]["cf_all"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.filterwarnings("ignore::pyro_scm.extrapolation.ExtrapolationWarning")  # 200 units
def test_hand_written_counterfactual_matches_pyro_scm():
    syn = ladder10()
    scm = learned_scm(syn, syn.sample(200, seed=0), "nsf", hidden=(8,), transforms=1)
    scm.mark_fitted()  # random weights on purpose: the two computations must agree on any
    factual = syn.sample(30, seed=1)
    value = torch.full((30,), 0.5)
    ours = scm.counterfactual(factual, do={"x1": value})
    hand = hand_counterfactual(scm, factual, "x1", value)
    for k in syn.nodes:
        torch.testing.assert_close(ours[k][0], hand[k], atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::pyro_scm.extrapolation.ExtrapolationWarning")  # random weights
@pytest.mark.parametrize("node", ["x1", "x4", "x9"])
def test_floor_counterfactual_equals_the_query(node):
    syn = chain10()
    scm = learned_scm(syn, syn.sample(200, seed=0), "nsf", hidden=(8,)).mark_fitted()
    factual = syn.sample(20, seed=1)
    value = torch.full((20,), 0.5)
    ours = scm.counterfactual(factual, do={node: value})
    floor = floor_counterfactual(scm, factual, node, value)
    for k in syn.nodes:
        torch.testing.assert_close(ours[k][0], floor[k], atol=1e-4, rtol=1e-4)
    for k in syn.nodes[: syn.nodes.index(node)]:  # non-descendants: exactly the factual
        assert torch.equal(ours[k][0], factual[k])


def test_floor_rows_and_table(monkeypatch):
    import benchmarks.speed as speed

    monkeypatch.setattr(speed, "FLOOR_CASES", {"chain10": (chain10, {"late": "x9"})})
    result = run_floor(sizes=(16,), repeats=1, chirho=False, fit_units=100)
    (row,) = result["rows"]
    assert row["descendants"] == 1 and row["max_abs_diff"] < 1e-4 and row["pyro_scm_ratio"] > 0
    assert "| chain10 | late (x9) | 1 | 16 |" in floor_table(result)


def test_modes_are_configured():
    assert run.mode_config("quick")["scms"] == [
        ("dcm-triangle", "nonlinear"),
        ("dcm-chain", "nonlinear"),
    ]
    full = run.mode_config("full")
    assert len(full["scms"]) == 12 and full["seeds"] == list(range(10))
    assert full["settings"].n_train == 5000 and full["settings"].num_values == 20


def test_slices_run_and_merge_into_one_report(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run.main(["--smoke", "--no-speed", "--methods", "true", "--seeds", "1", "--out", str(a)])
    run.main(["--smoke", "--methods", "true", "--scm", "dcm-triangle:nonlinear", "--out", str(b)])
    saved = [json.loads((p / "results.json").read_text()) for p in (a, b)]
    assert saved[0]["mode"] == "smoke (slice)"
    assert [r["method"] for r in saved[0]["dcm"]] == ["true-scm"]
    assert [r["scm"] for r in saved[1]["dcm"]] == ["dcm-triangle"]
    merged = report.merge(saved)
    assert [r["scm"] for r in merged["dcm"]] == ["dcm-chain", "dcm-triangle"]
    assert merged["slices"] == 2 and merged["total_s"] == pytest.approx(
        saved[0]["total_s"] + saved[1]["total_s"]
    )
    rerun = json.loads(json.dumps(saved[0]))  # the chain's true-scm record again, changed
    rerun["dcm"][0]["seeds"] = 7
    again = report.merge([*saved, rerun])
    assert [(r["scm"], r["seeds"]) for r in again["dcm"]] == [("dcm-chain", 7), ("dcm-triangle", 1)]
    assert len(again["comparison"]) == len(merged["comparison"])
    seed1 = json.loads(json.dumps(saved[0]))  # another seed of the chain: its runs are added
    seed1["seeds"] = [1]
    seed1["dcm"][0]["runs"][0]["fit_s"] += 2.0
    both = report.merge([saved[0], seed1])
    chain = both["dcm"][0]
    assert chain["seeds"] == 2 and len(chain["runs"]) == 2
    assert chain["summary"]["fit_s"][0] == pytest.approx(saved[0]["dcm"][0]["runs"][0]["fit_s"] + 1)
    text = report.main(
        [str(a / "results.json"), str(b / "results.json"), "--out", str(tmp_path / "m.md")]
    )
    assert "dcm-triangle[nonlinear] | true-scm" in text and "sum over 2 slices" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--methods", "chirho"],
        ["--methods", "nsf,magic"],
        ["--scm", "dcm-chain"],
        ["--seeds", "0"],
        ["--hidden", "64,x"],
        ["--hidden", "0"],
    ],
)
def test_bad_slice_arguments_exit(argv, tmp_path):
    with pytest.raises(SystemExit):
        run.main(["--smoke", "--out", str(tmp_path), *argv])


@pytest.mark.parametrize("name", ["dcm-ladder", "dcm-random"])
def test_chirho_counterfactuals_equal_ours_on_vector_nodes(name):
    pytest.importorskip("chirho")  # a peer: installed by scripts/bench-env.sh only
    from benchmarks.methods import ChiRhoMethod, PyroSCMMethod

    syn = load_synthetic(name, "nonlinear")
    data = syn.sample(200, seed=0)
    ours = PyroSCMMethod("nsf", fit_kwargs={"epochs": 1}, hidden=(8,), transforms=1)
    ours.fit(syn, data, 0)
    chirho = ChiRhoMethod(ours)
    chirho.fit(syn, data, 0)
    node = syn.intervention_nodes[0]
    factual, value = syn.sample(7, seed=1), torch.randn(7, *syn.event_shapes[node])
    a, b = ours.counterfactual(factual, node, value), chirho.counterfactual(factual, node, value)
    for k in syn.nodes:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)


def test_report_names_the_scms_run_with_fewer_seeds():
    records = [{"scm": "a", "variant": "v", "seeds": 3}, {"scm": "b", "variant": "v", "seeds": 1}]
    assert (
        report._seeds({"seeds": [0, 1, 2], "dcm": records}) == "[0, 1, 2] (fewer seeds on b[v]: 1)"
    )
    assert report._seeds({"seeds": [0], "dcm": records[1:]}) == "[0]"


def test_report_carries_the_kept_blocks_of_the_old_page_before_reproduce():
    old = "# B\n\nold table\n<!-- kept -->\n### Floor\n| a |\n<!-- /kept -->\n\n## Reproduce\nx\n"
    new = "# B\n\nnew table\n\n## Reproduce\ny\n"
    text = report.carry_kept(old, new)
    kept = "<!-- kept -->\n### Floor\n| a |\n<!-- /kept -->\n"
    assert text == "# B\n\nnew table\n\n" + kept + "\n## Reproduce\ny\n"
    assert report.carry_kept("no blocks", new) == new


def test_workers_reach_auto_only():
    syn = load_synthetic("dcm-chain", "nonlinear")
    peers = dict.fromkeys(("chirho", "dowhy"), "skipped")
    settings = run.mode_config("smoke")["settings"]
    (auto,) = run.make_methods(settings, peers, syn, {"auto"}, workers=2)
    assert auto.fit_kwargs == {"workers": 2}
    (default,) = run.make_methods(settings, peers, syn, {"auto"})
    assert default.fit_kwargs == {}
    (nsf,) = run.make_methods(settings, peers, syn, {"nsf"}, workers=2)
    assert "workers" not in nsf.fit_kwargs


def test_hidden_reaches_the_fixed_kinds(tmp_path):
    run.main(
        ["--smoke", "--no-speed", "--methods", "anm", "--hidden", "3,5", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["hidden"] == [3, 5] and saved["mode"] == "smoke (slice)"
    settings = dataclasses.replace(run.mode_config("smoke")["settings"], hidden=(3, 5))
    syn = load_synthetic("dcm-chain", "nonlinear")
    peers = dict.fromkeys(("chirho", "dowhy"), "skipped")
    auto, anm = run.make_methods(settings, peers, syn, {"anm", "auto"})
    assert anm.build == {"hidden": (3, 5)} and "hidden" not in auto.build  # auto: the defaults


def test_rank_oracle_runs_on_non_identifiable_scalar_scms_only():
    peers = dict.fromkeys(("chirho", "dowhy"), "skipped")
    settings = run.mode_config("smoke")["settings"]
    names = {
        (name, variant): [m.name for m in run.make_methods(settings, peers, syn, {"rank", "true"})]
        for name, variant in [("dcm-chain", "nonlinear"), ("dcm-chain", "nonadditive"),
                              ("dcm-ladder", "nonadditive")]
        for syn in [load_synthetic(name, variant)]
    }  # fmt: skip
    assert names[("dcm-chain", "nonlinear")] == ["true-scm"]
    assert names[("dcm-chain", "nonadditive")] == ["rank-oracle"]
    assert names[("dcm-ladder", "nonadditive")] == []
    syn = load_synthetic("dcm-chain", "nonadditive")
    oracle = RankOracleMethod()
    oracle.fit(syn, syn.sample(8), seed=0)
    factual, noise = syn.sample_with_noise(50, seed=1)
    values = torch.full((50,), 0.3)
    cf = oracle.counterfactual(factual, "x2", values)  # x3 increasing in |u3|: the truth
    truth = syn.counterfactual(noise, {"x2": values})
    assert torch.allclose(cf["x3"], truth["x3"], atol=0.02)


def test_extrapolation_calibration_rows_and_bad_arguments(tmp_path):
    from benchmarks import extrapolation_calibration as calibration

    out = tmp_path / "c.json"
    scms = ["--scm", "dcm-triangle:nonlinear", "--scm", "dcm-triangle:nonadditive"]
    result = calibration.main(["--seeds", "1", "--fresh", "500", *scms, "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    measures = {
        (r["scm"].split(":")[1], r["node"], r["measure"], r["tail"]): r["mean_pct"]
        for r in result["rows"]
    }
    nl, na = "nonlinear", "nonadditive"
    # do(x1) recomputes x2, so x3 is only judged under do(x2), where x2 leaves x1 factual
    assert (nl, "x3", "do(x1)", "library") not in measures
    assert (nl, "x2", "do(x1)", "library") in measures
    # do(x2) pairs x2 with values of x1 it never meets: far more flags than in distribution
    assert measures[(nl, "x3", "do(x2)", "library")] > 20 * max(
        measures[(nl, "x3", "in-distribution", "library")], 0.1
    )
    # in the sparse bend of the non-additive triangle the rarity flags what distances miss
    assert (
        measures[(na, "x3", "do(x2)", "library")] > 2 * measures[(na, "x3", "do(x2)", "distances")]
    )
    # one parent: no density model, the same p-value
    for variant in (nl, na):
        key = (variant, "x2", "do(x1)")
        assert measures[(*key, "library")] == measures[(*key, "distances")]
    with pytest.raises(SystemExit):
        calibration.main(["--seeds", "0"])


def test_fit_time_rows_and_bad_arguments(tmp_path, monkeypatch):
    from benchmarks import fit_time

    out = tmp_path / "t.json"
    argv = ["--scm", "dcm-triangle:nonlinear", "--n-train", "200", "--epochs", "2"]
    result = fit_time.main([*argv, "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    (row,) = result["rows"]
    assert row["scm"] == "dcm-triangle:nonlinear" and row["n_train"] == 200
    assert set(row["kinds"]) == {"x1", "x2", "x3"}
    assert set(row["kinds"].values()) <= {"anm", "locscale", "nsf"}
    assert row["selection_cost"] == pytest.approx(row["auto_1_worker_s"] / row["chosen_kinds_s"])
    assert row["auto_over_dcm"] == pytest.approx(row["auto_s"] / fit_time.DCM_FIT_S)
    for bad in (["--seeds", "0"], ["--n-train", "10"], ["--epochs", "0"], ["--scm", "dcm-nope"]):
        with pytest.raises(SystemExit):
            fit_time.main(bad)
    with pytest.raises(SystemExit):
        fit_time.main(["--scm", "dcm-triangle:linear-ish"])
    with pytest.raises(SystemExit):  # no DCM code in the folder: refused before any fit
        fit_time.main([*argv, "--dcm-code", str(tmp_path)])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "diffusion.py").write_text("")

    def load_dcm(code):
        pytest.fail("the vector nodes were not refused first")

    monkeypatch.setattr(fit_time, "load_dcm", load_dcm)
    with pytest.raises(SystemExit):  # DCM's code takes scalar nodes only
        fit_time.main(["--scm", "dcm-ladder:nonlinear", "--dcm-code", str(tmp_path)])


def test_fit_time_refuses_dcm_without_dowhy(tmp_path, monkeypatch):
    from benchmarks import fit_time

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "diffusion.py").write_text("")
    for name in ("dowhy", "dowhy.gcm", "dowhy.gcm.graph", "dowhy.gcm.causal_mechanisms"):
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them raises ImportError
    argv = ["--scm", "dcm-triangle:nonlinear", "--n-train", "200", "--epochs", "2"]
    with pytest.raises(SystemExit):
        fit_time.main([*argv, "--dcm-code", str(tmp_path)])


def test_fit_time_fits_dcm_in_the_run(tmp_path, monkeypatch):
    """With --dcm-code the ratio's denominator is DCM's fit on the same sample, in this run."""
    import types

    from benchmarks import fit_time

    calls = []
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("")
    (tmp_path / "model" / "diffusion.py").write_text(
        "def create_model_from_graph(g, params):\n    return (sorted(g.edges), params)\n"
    )
    gcm = types.ModuleType("dowhy.gcm")
    gcm.fit = lambda model, frame: calls.append((model, list(frame.columns), len(frame)))
    gcm.config = types.SimpleNamespace(disable_progress_bars=lambda: None)
    gcm.causal_mechanisms = types.ModuleType("dowhy.gcm.causal_mechanisms")
    for name, module in (
        ("dowhy", types.ModuleType("dowhy")),
        ("dowhy.gcm", gcm),
        ("dowhy.gcm.causal_mechanisms", gcm.causal_mechanisms),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("model", "model.diffusion", "dowhy.gcm.graph"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        argv = ["--scm", "dcm-triangle:nonlinear", "--n-train", "200", "--epochs", "2"]
        result = fit_time.main([*argv, "--no-floor", "--dcm-code", str(tmp_path)])
    finally:
        for name in ("model", "model.diffusion", "dowhy.gcm.graph"):
            sys.modules.pop(name, None)
    (((edges, params), columns, n),) = calls
    assert edges == [("x1", "x2"), ("x1", "x3"), ("x2", "x3")] and n == 200
    assert columns == ["x1", "x2", "x3"]
    assert params["num_epochs"] == 2 and params["batch_size"] == 64 and params["lr"] == 1e-4
    (row,) = result["rows"]
    assert row["dcm_measured"] and row["dcm_s"] > 0
    assert row["auto_over_dcm"] == pytest.approx(row["auto_s"] / row["dcm_s"])
    assert row["auto_1_worker_s"] is None and row["selection_cost"] is None
    assert result["dcm_params"]["num_epochs"] == 2


def _fake_dcm(tmp_path, monkeypatch, calls: list):
    """A stand-in for DCM's code (a folder with model/diffusion.py) and for dowhy's gcm, whose
    counterfactual sets the intervened column and keeps the others: enough to check the wiring."""
    import types

    import pandas as pd

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("")
    (tmp_path / "model" / "diffusion.py").write_text(
        "def create_model_from_graph(g, params):\n    return (sorted(g.edges), params)\n"
    )

    def counterfactual_samples(model, interventions, observed_data):
        (node, fn), out = *interventions.items(), observed_data.copy()
        out[node] = fn(None)
        return out

    def interventional_samples(model, interventions, num_samples_to_draw):
        (fn,) = interventions.values()
        return pd.DataFrame({c: [fn(None)] * num_samples_to_draw for c in calls[0][1]})

    gcm = types.ModuleType("dowhy.gcm")
    gcm.fit = lambda model, frame: calls.append((model, list(frame.columns), len(frame)))
    gcm.config = types.SimpleNamespace(disable_progress_bars=lambda: None)
    gcm.counterfactual_samples = counterfactual_samples
    gcm.interventional_samples = interventional_samples
    gcm.draw_samples = lambda model, n: pd.DataFrame({c: [0.0] * n for c in calls[0][1]})
    gcm.causal_mechanisms = types.ModuleType("dowhy.gcm.causal_mechanisms")
    dowhy = types.ModuleType("dowhy")
    dowhy.gcm = gcm
    for name, module in (
        ("dowhy", dowhy),
        ("dowhy.gcm", gcm),
        ("dowhy.gcm.causal_mechanisms", gcm.causal_mechanisms),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("model", "model.diffusion", "dowhy.gcm.graph"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_dcm_runs_on_the_same_units_as_the_other_methods(tmp_path, monkeypatch):
    """--dcm-code adds DCM to the run: fitted with its benchmark's settings on the run's training
    sample, each counterfactual unit answered under its own intervention value."""
    from benchmarks.dcm_peer import DCMMethod, dcm_params, load_dcm

    calls: list = []
    _fake_dcm(tmp_path, monkeypatch, calls)
    try:
        syn = load_synthetic("dcm-chain", "nonlinear")
        method = DCMMethod(load_dcm(tmp_path))
        method.fit(syn, syn.sample(120, seed=0), seed=3)
        (((edges, params), columns, n),) = calls
        assert edges == [("x1", "x2"), ("x2", "x3")] and columns == ["x1", "x2", "x3"]
        assert n == 120 and params == dcm_params() and params["num_epochs"] == 500
        factual = syn.sample(6, seed=1)
        values = torch.tensor([0.5, -1.0, 0.5, 2.0, -1.0, 0.5])
        cf = method.counterfactual(factual, "x2", values)
        torch.testing.assert_close(cf["x2"], values)
        torch.testing.assert_close(cf["x1"], factual["x1"].reshape(6))
        result = run.main(
            [
                "--smoke",
                "--no-speed",
                "--methods",
                "dcm",
                "--dcm-code",
                str(tmp_path),
                "--out",
                str(tmp_path / "out"),
            ]
        )
    finally:
        for name in ("model", "model.diffusion", "dowhy.gcm.graph"):
            sys.modules.pop(name, None)
    assert [r["method"] for r in result["dcm"]] == ["dcm"]
    assert result["dcm_params"] == dcm_params()
    assert len(calls) == 2 and calls[1][2] == run.mode_config("smoke")["settings"].n_train


def test_dcm_arguments_are_refused_before_any_fit(tmp_path, monkeypatch):
    from benchmarks import dcm_peer

    def no_fit(*args, **kwargs):
        pytest.fail("a method was fitted before the arguments were checked")

    monkeypatch.setattr(run, "evaluate", no_fit)
    argv = ["--smoke", "--no-speed", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):  # dcm without its code
        run.main([*argv, "--methods", "dcm"])
    with pytest.raises(SystemExit):  # no DCM code in the folder
        run.main([*argv, "--dcm-code", str(tmp_path)])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "diffusion.py").write_text("")

    def load_dcm(code):
        pytest.fail("the vector nodes were not refused first")

    monkeypatch.setattr(run, "load_dcm", load_dcm)
    with pytest.raises(SystemExit):  # DCM's code takes scalar nodes only
        run.main([*argv, "--scm", "dcm-ladder:nonlinear", "--dcm-code", str(tmp_path)])
    monkeypatch.setattr(run, "load_dcm", dcm_peer.load_dcm)
    for name in ("dowhy", "dowhy.gcm", "dowhy.gcm.graph", "dowhy.gcm.causal_mechanisms"):
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them raises ImportError
    with pytest.raises(SystemExit):  # dowhy missing: DCM's code does not import
        run.main([*argv, "--dcm-code", str(tmp_path)])


def test_paired_table_compares_seed_by_seed():
    """auto and dcm pair by seed (slices merged in any order), over the seeds both ran."""

    def record(method, seeds, values, unflagged=None):
        runs = [
            {
                "per_node": {
                    "x1": {
                        "cf_all": v,
                        "cf_first": v,
                        **({} if unflagged is None else {"cf_unflagged": u, "flagged": 0.1}),
                    }
                },
                **dict.fromkeys(("obs_mmd", "fit_s", "query_s"), 0.0),
            }
            for v, u in zip(values, unflagged or values, strict=True)
        ]
        return {
            "seeds": seeds,
            "total_s": 1.0,
            "dcm": [
                {
                    "scm": "dcm-chain",
                    "variant": "nonlinear",
                    "identifiable": True,
                    "method": method,
                    "seeds": len(seeds),
                    "summary": run.summarise(runs),
                    "runs": runs,
                }
            ],
            "comparison": [],
        }

    merged = report.merge(
        [
            record("pyro_scm-auto", [0, 1, 2], [0.01, 0.04, 0.03], [0.01, 0.01, 0.02]),
            record("dcm", [2], [0.01]),
            record("dcm", [0, 1], [0.02, 0.02]),
            record("dowhy-anm", [0, 1, 2], [0.10, 0.10, 0.10]),
        ]
    )
    (row,) = report.paired_table(merged["dcm"]).splitlines()[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # auto 1, 4, 3 (mean 2.667) against dcm 2, 2, 1 (mean 1.667): target 1.667 / 2
    assert cells[:9] == [
        "dcm-chain[nonlinear]",
        "x1",
        "3",
        "2.667",
        "1.333",
        "1.667",
        "–",  # dcm was not run beside auto: not scored on its unflagged units
        "10.000",
        "0.833",
    ]
    assert cells[9:] == ["no / no", "1/3", "2.00"]
    alone = report.merge([record("pyro_scm-auto", [0], [0.01]), record("dcm", [1], [0.02])])
    assert report.paired_table(alone["dcm"]) == ""  # no seed in common: no table


def test_methods_after_auto_are_scored_on_its_unflagged_units():
    config = run.mode_config("smoke")
    config["seeds"] = [0]
    peers = dict.fromkeys(("chirho", "dowhy"), "skipped")
    records = run.run_dcm(config, peers, log=lambda *a: None, only={"auto", "anm"}, workers=1)
    by_method = {r["method"]: r["runs"][0]["per_node"] for r in records}
    for node, ours in by_method["pyro_scm-auto"].items():
        assert "cf_reference_unflagged" not in ours
        theirs = by_method["pyro_scm-anm"][node]
        assert "cf_reference_unflagged" in theirs  # beside its own flags, if it has any
        if ours["flagged"] == 0:  # nothing flagged: the same units
            assert theirs["cf_reference_unflagged"] == theirs["cf_all"]


def test_counterfactual_spread_rows_and_bad_arguments(tmp_path):
    from benchmarks import counterfactual_spread as spread

    out = tmp_path / "spread"
    spread.main(
        ["--scms", "dcm-chain", "--starts", "2", "--units", "40", "--n", "200", "--epochs", "2",
         "--out", str(out)]
    )  # fmt: skip
    rows = json.loads((out / "spread.json").read_text())["rows"]
    assert [r["node"] for r in rows] == ["x2", "x3"]
    for r in rows:
        for kind in spread.KINDS:
            assert r[f"{kind}_cf_mse"] >= 0 and r[f"{kind}_spread"] >= 0
    with pytest.raises(SystemExit):
        spread.main(["--starts", "1", "--out", str(out)])


def test_worst_units_ranks_the_protocol_units_by_error_and_bad_arguments(tmp_path):
    from benchmarks import worst_units

    out = tmp_path / "worst"
    worst_units.main(
        ["--scm", "dcm-chain:nonlinear", "--seed", "1", "--node", "x2", "--top", "3",
         "--n-train", "200", "--epochs", "2", "--out", str(out)]
    )  # fmt: skip
    (record,) = json.loads((out / "worst_units.json").read_text())["nodes"]
    units = record["units"]
    assert record["node"] == "x2" and len(units) == 3
    errors = [u["squared_error"] for u in units]
    assert errors == sorted(errors, reverse=True)
    for u in units:  # the squared error is that of the recorded answer against the truth
        assert u["squared_error"] == pytest.approx(
            (u["counterfactual"]["x3"][0] - u["truth"]["x3"][0]) ** 2, rel=1e-4
        )
        assert set(u["pvalue"]) == {"x3"} and u["flagged"] == (u["pvalue"]["x3"] <= 0.001)
    # the shares add up to the mean over all units less the mean over the others
    n = 20 * 100
    rest = record["cf_without_top_x100"] * (n - 3) / n
    assert sum(u["share_x100"] for u in units) + rest == pytest.approx(
        record["cf_all_x100"], rel=1e-4
    )
    for argv in (["--node", "x3"], ["--top", "0"]):
        with pytest.raises(SystemExit):
            worst_units.main([*argv, "--out", str(out)])
