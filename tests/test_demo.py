"""The main job and the console command: outputs exist and open, arguments are checked."""

import arviz as az
import matplotlib.image
import pytest
import torch
from pyro_scm.inference import tabular_demo

from pyro_scm import cli


# do(x2 = 0.5) pairs x2 with values of x1 it never meets in the data: those units are flagged
@pytest.mark.filterwarnings("ignore::pyro_scm.extrapolation.ExtrapolationWarning")
def test_demo_writes_results_that_open(tmp_path):
    metrics = tabular_demo.main(
        ["--quick", "--epochs", "2", "--out", str(tmp_path), "--no-progress"]
    )
    for name in ("observational", "interventional_do_x1", "counterfactual_do_x1"):
        idata = az.from_netcdf(str(tmp_path / f"{name}.nc"))
        assert "x3" in idata.posterior
    assert matplotlib.image.imread(tmp_path / "graph.png").ndim == 3
    assert matplotlib.image.imread(tmp_path / "counterfactual_scatter.png").ndim == 3
    summary = (tmp_path / "summary.md").read_text()
    for query in ("observational", "interventional", "counterfactual do(x1 = 1)"):
        assert query in summary
    assert metrics["cf_mse_do_x1"] >= 0
    assert metrics["cf_flagged_do_x2"] > metrics["cf_flagged_do_x1"]
    assert "units flagged as extrapolations" in summary


def test_demo_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        tabular_demo.parse_args(["--epochs", "0"])
    assert "--epochs must be at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            tabular_demo.parse_args(["--device", "cuda"])
        assert "CUDA is not available" in capsys.readouterr().err


def test_console_command_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fly"])
    assert "invalid choice" in capsys.readouterr().err


def test_main_job_quick_writes_every_query(tmp_path):
    from pyro_scm.inference import morpho_demo

    # MALA keeps this test fast; the default sampler (auto: constrained HMC) is checked below
    args = ["--quick", "--epochs", "1", "--units", "2", "--out", str(tmp_path), "--no-progress"]
    metrics = morpho_demo.main([*args, "--sampler", "mala"])
    for name in ("interventional", "counterfactual", "backtrack_mode", "backtrack_mala"):
        idata = az.from_netcdf(str(tmp_path / f"{name}.nc"))
        assert "image" in idata.posterior and "thickness" in idata.posterior
    assert "sample_stats" in az.from_netcdf(str(tmp_path / "backtrack_mala.nc")).groups()
    for png in ("graph", "interventional", "counterfactuals", "scatter", "trace"):
        assert matplotlib.image.imread(tmp_path / f"{png}.png").ndim == 3
    summary = (tmp_path / "summary.md").read_text()
    for query in ("Interventional", "interventional CF", "backtracking (mode)", "(mala)"):
        assert query in summary
    # every diagnostic in words: convergence of the mode, sampler statistics, antecedent misses
    assert "## Diagnostics" in summary
    assert "backtracking (mode): converged" in summary or "NOT converged" in summary
    assert "mean acceptance rate" in summary and "divergent transitions" in summary
    assert summary.count("antecedent 'intensity' missed by") == 2
    flagged = int(metrics["interventional CF: units flagged"])
    assert f"interventional CF: {flagged} of 2 units flagged as extrapolations" in summary
    # the interventional counterfactual keeps intensity's cause; backtracking moves it
    assert metrics["interventional CF: |thickness change|"] == 0
    assert metrics["backtracking (mode): |thickness change|"] > 0


def test_main_job_samples_backtracking_on_the_antecedent_manifold_by_default():
    from pyro_scm.inference import morpho_demo

    assert morpho_demo.parse_args([]).sampler == "auto"


def test_main_job_rejects_bad_arguments(capsys):
    from pyro_scm.inference import morpho_demo

    for bad in (
        ["--units", "0"],
        ["--intensity", "300"],
        ["--sampler", "gibbs"],
        ["--device", "gpu"],
    ):
        with pytest.raises(SystemExit):
            morpho_demo.parse_args(bad)


def test_sachs_program_scores_and_intervenes(tmp_path):
    from pyro_scm.inference import sachs_demo

    from pyro_scm.datasets import SachsUnavailableError, sachs_files

    try:
        sachs_files()
    except SachsUnavailableError:
        pytest.skip("the Sachs data need cdt's files (pip install --no-deps cdt)")

    args = ["--quick", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]
    metrics = sachs_demo.main(args)
    assert metrics["heldout_loglik"] < 0 and "pmek" in metrics
    assert az.from_netcdf(str(tmp_path / "do_pka_high.nc")).posterior["PKA"].shape[1] == 4000
    assert "held-out log-likelihood" in (tmp_path / "summary.md").read_text()


# the quick demo trains on few digits: some counterfactual digits are flagged as extrapolations
@pytest.mark.filterwarnings("ignore::pyro_scm.extrapolation.ExtrapolationWarning")
def test_diffusion_program_writes_counterfactuals(tmp_path):
    from pyro_scm.inference import diffusion_demo

    args = ["--quick", "--epochs", "1", "--units", "3", "--out", str(tmp_path), "--no-progress"]
    metrics = diffusion_demo.main(args)
    idata = az.from_netcdf(str(tmp_path / "counterfactual.nc"))
    assert idata.posterior["image"].shape == (1, 1, 3, 1, 14, 14)
    assert 0 <= metrics["target_hit"] <= 1
    assert matplotlib.image.imread(tmp_path / "counterfactuals.png").ndim == 3
    with pytest.raises(SystemExit):
        diffusion_demo.parse_args(["--units", "0"])


def test_console_bench_runs_the_benchmark_runner(tmp_path):
    assert cli.main(["bench", "--smoke", "--no-peers", "--no-speed", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.json").exists()
