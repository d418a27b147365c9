"""The image benchmark script: interventions, target bookkeeping, the choice of the best
mechanism, a tiny end-to-end run, and argument errors."""

import json

import pytest
import torch

from benchmarks import image_benchmark as ib


def _rows(t_mae, i_mae, acc, l1):
    row = {"thickness_mae": t_mae, "intensity_mae": i_mae, "digit_accuracy": acc}
    return {
        **{iv: dict(row) for iv in ib.INTERVENTIONS},
        "composition": {"l1_1": l1, "l1_10": 2 * l1},
    }


def test_interventions_change_the_parent_they_name():
    test = {
        "thickness": torch.arange(20.0),
        "intensity": torch.arange(20.0) + 100,
        "digit": torch.arange(20) % 10,
    }
    dos = ib.interventions(test, seed=0)
    assert (dos["do(digit)"]["digit"] != test["digit"]).all()
    assert sorted(dos["do(thickness)"]["thickness"].tolist()) == test["thickness"].tolist()
    assert set(dos["pick"].tolist()) <= {0, 1, 2}


def test_targets_and_best_mechanism():
    results = {"good": _rows(0.1, 4.0, 0.99, 1.0), "bad": _rows(0.5, 30.0, 0.5, 20.0)}
    marks = ib.targets(results)
    assert all(marks[label]["good"]["met"] for label in ib.TARGETS)
    assert not any(marks[label]["bad"]["met"] for label in ib.TARGETS)
    assert ib.best_mechanism(results) == "good"
    # equal counts of met targets: the smaller mean ratio to the targets wins
    results = {"a": _rows(0.3, 10.0, 0.9, 10.0), "b": _rows(0.2, 6.0, 0.95, 3.0)}
    assert ib.best_mechanism(results) == "b"


def test_tiny_run_writes_json_table_and_grid(tmp_path):
    args = ["--mechanisms", "vae", "--n-train", "60", "--n-test", "12", "--epochs", "1"]
    args += ["--n-composition", "4", "--no-progress", "--out", str(tmp_path)]
    summary = ib.main(args)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["results"]) == {"vae", "vae+res"} and saved["best"] in saved["results"]
    assert saved["results"]["vae+res"]["composition"]["l1_1"] < 1e-3  # the residual is exact
    assert summary["n_composition"] == 4
    assert "| vae | do(digit) |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "grid.png").stat().st_size > 0


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--n-test", "-1"], ["--mechanisms", "gan"]])
def test_bad_arguments_exit(bad, tmp_path):
    with pytest.raises(SystemExit):
        ib.main([*bad, "--out", str(tmp_path)])
