"""pyro_scm.lightning: training on a Trainer (one process and 2-process DDP), resuming from a
checkpoint, sharded queries equal to one-process ones, and the optional import."""

import copy
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from lightning_ddp_job import build
from torch.utils.data import Dataset

import pyro_scm as ps
from benchmarks.ranks import free_port, run_ranks
from pyro_scm.errors import (
    DataError,
    InterventionError,
    MissingNodeError,
    ShapeError,
    UnknownNodeError,
)
from pyro_scm.infer import BacktrackingWarning

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Lightning's own advice (worker counts, small logging intervals) is not under test here; the
# sharded backtracking checks use tiny MALA runs (equality with the one-process answer, not
# convergence), whose R-hat and ESS rightly warn.
pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore::pyro_scm.infer.diagnostics.SamplerWarning"),
]

FIT = {"epochs": 10, "batch_size": 128, "lr": 2e-2, "patience": 10, "seed": 0}


def _frame(n=600, seed=0) -> pd.DataFrame:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    y = torch.exp(x / 2) + 0.25 * torch.randn(n, generator=g)
    return pd.DataFrame({"x": x.numpy(), "y": y.numpy()})


def _trainer(tmp_path=None, device=None, **kwargs) -> L.Trainer:
    options = dict(
        accelerator="gpu" if device is not None and device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path) if tmp_path else None,
    )
    return L.Trainer(**{**options, **kwargs})


def _factual(frame, units=30) -> dict:
    return {k: torch.tensor(frame[k].to_numpy()[:units]) for k in frame}


@pytest.fixture(scope="module")
def fitted():
    frame = _frame()
    scm = build(frame)
    history = scm.fit(frame, progress=False, **FIT)
    return frame, scm, history


def _equal(a: ps.QueryResult, b: ps.QueryResult) -> None:
    assert a.kind == b.kind and a.num_chains == b.num_chains
    for group in ("values", "noise", "sample_stats", "diagnostics", "factual"):
        x, y = getattr(a, group) or {}, getattr(b, group) or {}
        assert x.keys() == y.keys(), group
        for k in x:
            assert torch.equal(x[k], y[k]) or (
                torch.equal(x[k].isnan(), y[k].isnan())
                and (torch.equal(x[k].nan_to_num(), y[k].nan_to_num()))
            ), (group, k)


# -- training -------------------------------------------------------------------------------


def test_trainer_fit_matches_scm_fit_in_one_process(fitted, tmp_path, device):
    frame, _, single = fitted
    scm = build(frame)
    options = {k: v for k, v in FIT.items() if k != "epochs"}
    trainer = _trainer(tmp_path, device, max_epochs=FIT["epochs"])
    history = scm.fit(frame, trainer=trainer, **options)
    assert list(history.columns) == ["epoch", "node", "train", "val"]
    assert set(history.node) == {"x", "y"} and history.epoch.max() == FIT["epochs"] - 1
    best, best_single = history.groupby("node").val.min(), single.groupby("node").val.min()
    assert best.sum() == pytest.approx(best_single.sum(), rel=0.02)
    # the model is ordinary afterwards: it saves, loads and answers queries
    scm.save(tmp_path / "m.pt")
    again = build(frame).load(tmp_path / "m.pt")
    f = _factual(frame)
    torch.testing.assert_close(
        scm.cpu().counterfactual(f, do={"x": 0.0})["y"], again.counterfactual(f, do={"x": 0.0})["y"]
    )


def test_best_weights_are_restored_and_match_the_logged_validation_loss(tmp_path):
    frame = _frame(400)
    scm = build(frame)
    history = ps.lightning.fit(
        scm, frame, trainer=_trainer(tmp_path, max_epochs=40), lr=5e-2, patience=3
    )
    assert history.epoch.max() < 39  # every mechanism stopped early
    module = ps.lightning.SCMDataModule(scm, frame, val_fraction=0.1, seed=0)
    val = {k: v[module.val_index] for k, v in module.values.items()}
    from pyro_scm.fitting import mechanism_losses

    losses = mechanism_losses(scm, val)
    best = history.groupby("node").val.min()
    for node in ("x", "y"):
        assert losses[node].item() == pytest.approx(best[node], rel=1e-5)


def test_standardisation_uses_all_training_units(tmp_path):
    from pyro_scm.fitting import prepare

    frame = _frame(300)
    scm, fresh = build(frame), build(frame)
    ps.lightning.fit(scm, frame, trainer=_trainer(tmp_path, max_epochs=1), val_fraction=0.2)
    module = ps.lightning.SCMDataModule(fresh, frame, val_fraction=0.2, seed=0)
    before = {k: v.clone() for k, v in fresh.named_buffers()}
    prepare(fresh, module.training_units())
    buffers = dict(scm.named_buffers())
    assert any(not torch.equal(before[k], v) for k, v in fresh.named_buffers())
    for k, v in fresh.named_buffers():
        assert torch.equal(buffers[k], v), k


def test_resuming_from_a_lightning_checkpoint_equals_an_uninterrupted_run(tmp_path):
    frame = _frame(300)
    full = build(frame)
    h_full = ps.lightning.fit(full, frame, trainer=_trainer(tmp_path / "a", max_epochs=4))
    first = build(frame)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path / "b", max_epochs=2, enable_checkpointing=True, callbacks=[ckpt])
    ps.lightning.fit(first, frame, trainer=trainer)
    shutil.move(tmp_path / "ckpt" / "last.ckpt", tmp_path / "resume.ckpt")
    shutil.rmtree(tmp_path / "ckpt")  # the same callback, an empty folder: no warnings
    resumed = build(frame)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path / "c", max_epochs=4, enable_checkpointing=True, callbacks=[ckpt])
    h_res = ps.lightning.fit(
        resumed,
        frame,
        trainer=trainer,
        ckpt_path=str(tmp_path / "resume.ckpt"),
    )
    pd.testing.assert_frame_equal(h_full, h_res)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(v, resumed.state_dict()[k], rtol=0, atol=1e-6)


class _Images(Dataset):
    """Units read one at a time, as from files on disk: node -> (*event)."""

    def __init__(self, frame):
        self.x = torch.tensor(frame["x"].to_numpy())
        self.y = torch.tensor(frame["y"].to_numpy())

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def test_a_map_style_dataset_trains_like_the_same_units_in_memory(tmp_path):
    frame = _frame(200)
    a, b = build(frame), build(frame)
    ha = ps.lightning.fit(a, frame, trainer=_trainer(tmp_path, max_epochs=2))
    hb = ps.lightning.fit(b, _Images(frame), trainer=_trainer(tmp_path, max_epochs=2))
    pd.testing.assert_frame_equal(ha, hb)


def test_without_validation_units_training_losses_stop_early(tmp_path):
    frame = _frame(300)
    scm = build(frame)
    trainer = _trainer(tmp_path, max_epochs=30)
    history = ps.lightning.fit(scm, frame, trainer=trainer, val_fraction=0, lr=5e-2, patience=2)
    assert history.val.isna().all() and len(history) > 0
    assert history.epoch.max() < 29


def test_fit_rejects_bad_arguments(tmp_path):
    frame = _frame(100)
    scm = build(frame)
    trainer = _trainer(tmp_path, max_epochs=1)
    with pytest.raises(DataError, match=r"lightning\.Trainer"):
        ps.lightning.fit(scm, frame, trainer="gpu")
    with pytest.raises(DataError, match="max_epochs"):
        scm.fit(frame, trainer=trainer, epochs=3)
    with pytest.raises(DataError, match="batch_size"):
        ps.lightning.fit(scm, frame, trainer=trainer, batch_size=0)
    with pytest.raises(DataError, match="val_fraction"):
        ps.lightning.fit(scm, frame, trainer=trainer, val_fraction=1.0)
    with pytest.raises(DataError, match="lr_decay"):
        ps.lightning.fit(scm, frame, trainer=trainer, lr_decay=2.0)
    with pytest.raises(DataError, match="patience"):
        ps.lightning.fit(scm, frame, trainer=trainer, patience=0)
    with pytest.raises(MissingNodeError, match="'y'"):
        ps.lightning.fit(scm, frame[["x"]], trainer=trainer)

    class Broken(_Images):
        def __getitem__(self, i):
            return {"x": self.x[i]}

    with pytest.raises(MissingNodeError, match="'y'"):
        ps.lightning.fit(scm, Broken(frame), trainer=trainer)


def test_several_ranks_need_units_and_chunks_for_each(fitted, tmp_path):
    frame, scm, _ = fitted
    ddp = _trainer(tmp_path, devices=2, strategy="ddp")  # starts no process until fit/predict
    assert ddp.world_size == 2
    with pytest.raises(DataError, match="each of 2 ranks"):
        ps.lightning.fit(build(frame), frame.iloc[:12], trainer=ddp, val_fraction=0.05)
    f = _factual(frame, 3)
    with pytest.raises(DataError, match="chunk_size <= 1"):
        ps.lightning.counterfactual(scm, f, chunk_size=5, trainer=ddp, out_dir=tmp_path)
    with pytest.raises(DataError, match="shared folder"):
        ps.lightning.counterfactual(scm, f, chunk_size=1, trainer=ddp)


def test_the_main_job_takes_devices():
    from pyro_scm.inference import morpho_demo

    args = morpho_demo.parse_args(["--devices", "2", "--quick"])
    trainer = morpho_demo._trainer(args)
    assert trainer.world_size == 2 and trainer.max_epochs == 6
    with pytest.raises(SystemExit):
        morpho_demo.parse_args(["--devices", "0"])


# -- sharded queries in one process -----------------------------------------------------------


def test_chunked_queries_equal_unchunked_ones_up_to_floating_point(fitted):
    frame, scm, _ = fitted
    f = _factual(frame)
    plain = scm.counterfactual(f, do={"x": 1.0})
    chunked = ps.sharded.counterfactual(scm, f, do={"x": 1.0}, chunk_size=7)
    assert chunked.num_units == 30 and chunked.kind == "counterfactual"
    for k in plain:
        torch.testing.assert_close(chunked[k], plain[k])
    torch.testing.assert_close(chunked.factual["y"], plain.factual["y"])
    torch.testing.assert_close(chunked.interventions["x"], plain.interventions["x"])


def test_one_process_trainer_predict_equals_the_chunked_query(fitted, tmp_path, device):
    frame, scm, _ = fitted
    scm = copy.deepcopy(scm).to(device)  # the Trainer moves it to its device
    f = _factual(frame, 11)
    trainer = _trainer(tmp_path, device)
    shift = {"do": {"x": lambda x: x + 1}}
    mala = {"antecedent": {"y": 2.0}, "method": "mala", "num_samples": 5, "warmup": 5}
    for query, kwargs in [(ps.sharded.counterfactual, shift), (ps.sharded.backtrack, mala)]:
        local = query(scm, f, chunk_size=4, seed=3, **kwargs)
        sharded = query(scm, f, chunk_size=4, seed=3, trainer=trainer, **kwargs)
        _equal(local, sharded)
        if query is ps.sharded.counterfactual:
            assert sharded.interventions["x"] is shift["do"]["x"]
            torch.testing.assert_close(sharded["x"][0].cpu(), f["x"].float() + 1)
    path = tmp_path / "r.nc"
    ps.sharded.sample(scm, 9, {"x": 0.5}, chunk_size=4, seed=1, netcdf=path)
    assert path.stat().st_size > 0


def test_chunk_seeds_make_draws_independent_of_the_global_generator(fitted):
    _, scm, _ = fitted
    torch.manual_seed(1)
    a = ps.sharded.sample(scm, 10, chunk_size=3, seed=5)
    b = ps.sharded.sample(scm, 10, chunk_size=3, seed=5)
    c = ps.sharded.sample(scm, 10, chunk_size=3, seed=6)
    _equal(a, b)
    assert a.kind == "observational" and a["y"].shape == (10, 1)
    assert not torch.equal(a["y"], c["y"])
    chunks = {ps.sharded.chunk_seed(s, i) for s in range(20) for i in range(20)}
    assert len(chunks) == 400


def test_chunk_warnings_are_raised_again_once_with_their_units(fitted):
    frame, scm, _ = fitted
    f = _factual(frame, 6)
    with pytest.warns(BacktrackingWarning, match=r"units 0\.\.2 \(chunk 0\): 3 of 3") as seen:
        result = ps.sharded.backtrack(scm, f, {"y": 50.0}, chunk_size=3, max_iter=1)
    assert len(seen) == 1 and "[the same warning for units 3..5: 2 of 2 chunks]" in str(seen[0])
    assert not result.sample_stats["converged"].any()
    # many chunks: still one warning of each kind, naming the first units and the count
    f = _factual(frame, 24)
    with pytest.warns(BacktrackingWarning) as seen:
        ps.sharded.backtrack(scm, f, {"y": 50.0}, chunk_size=3, max_iter=1)
    assert len(seen) == 1, [str(w.message) for w in seen]
    assert str(seen[0].message).startswith("units 0..2 (chunk 0): 3 of 3")
    assert "3..5, 6..8, 9..11 and 4 more chunks: 8 of 8 chunks]" in str(seen[0].message)


def test_counterfactual_without_extrapolation_scores(fitted):
    frame, scm, _ = fitted
    f = _factual(frame, 12)
    scored = ps.sharded.counterfactual(scm, f, {"x": 4.0}, chunk_size=5)
    fast = ps.sharded.counterfactual(scm, f, {"x": 4.0}, chunk_size=5, extrapolation=False)
    assert "extrapolation_y" in scored.sample_stats
    assert not any(k.startswith("extrapolat") for k in fast.sample_stats)
    for k in scored.values:
        assert torch.equal(scored.values[k], fast.values[k])
    with pytest.raises(DataError, match="extrapolation must be True or False"):
        ps.sharded.counterfactual(scm, f, extrapolation="no")


def test_unsupported_strategies_are_refused_before_any_work(fitted, tmp_path, monkeypatch):
    from lightning.pytorch.strategies import FSDPStrategy

    from pyro_scm.errors import ArgumentError

    frame, scm, _ = fitted
    f = _factual(frame, 4)
    spawn = _trainer(tmp_path, strategy="ddp_spawn")
    with pytest.raises(ArgumentError, match="spawn/fork"):
        ps.lightning.fit(build(frame), frame, trainer=spawn)
    with pytest.raises(ArgumentError, match="spawn/fork"):
        ps.lightning.counterfactual(scm, f, chunk_size=2, trainer=spawn)
    # Lightning refuses FSDP on the CPU itself; with a GPU we refuse it (parameter groups per
    # mechanism over whole parameters). Here the strategy is put into a CPU trainer by hand.
    with pytest.raises(ValueError, match="requires a GPU"):
        L.Trainer(accelerator="cpu", strategy="fsdp", logger=False)
    fsdp = _trainer(tmp_path)
    monkeypatch.setattr(fsdp._accelerator_connector, "strategy", FSDPStrategy())
    with pytest.raises(ArgumentError, match="FSDPStrategy is not supported"):
        ps.lightning.fit(build(frame), frame, trainer=fsdp)
    with pytest.raises(ArgumentError, match="FSDPStrategy is not supported"):
        ps.lightning.backtrack(scm, f, {"y": 1.0}, chunk_size=2, trainer=fsdp)
    assert not list(tmp_path.iterdir())  # nothing was trained or written


def test_sharded_queries_reject_bad_arguments(fitted, tmp_path):
    frame, scm, _ = fitted
    f = _factual(frame, 5)
    with pytest.raises(DataError, match="chunk_size"):
        ps.sharded.counterfactual(scm, f, chunk_size=0)
    with pytest.raises(DataError, match="seed"):
        ps.sharded.counterfactual(scm, f, chunk_size=2, seed=-1)
    with pytest.raises(DataError, match="num_samples"):
        ps.sharded.counterfactual(scm, f, num_samples=0)
    with pytest.raises(UnknownNodeError, match="'w'"):
        ps.sharded.counterfactual(scm, f, do={"w": 1.0})
    with pytest.raises(InterventionError, match="positive int"):
        ps.sharded.sample(scm, 0)
    with pytest.raises(DataError, match="no option 'sigmaa'"):
        ps.sharded.backtrack(scm, f, {"y": 1.0}, sigmaa=0.1)
    with pytest.raises(ValueError, match="unknown backtracking method"):
        ps.sharded.backtrack(scm, f, {"y": 1.0}, method="gibbs")
    with pytest.raises(ValueError, match="non-empty"):
        ps.sharded.backtrack(scm, f, {})
    with pytest.raises(ShapeError, match="antecedent on 'y'"):
        ps.sharded.backtrack(scm, f, {"y": torch.zeros(3)})
    with pytest.raises(UnknownNodeError, match="'w'"):
        ps.sharded.backtrack(scm, f, {"w": 1.0})
    with pytest.raises(DataError, match="out_dir"):
        ps.sharded.counterfactual(scm, f, out_dir=tmp_path)
    with pytest.raises(DataError, match=r"lightning\.Trainer"):
        ps.sharded.counterfactual(scm, f, trainer=object())


def test_merge_shards_reports_missing_chunks(fitted, tmp_path):
    frame, scm, _ = fitted
    f = _factual(frame, 9)
    ps.lightning.counterfactual(scm, f, chunk_size=4, trainer=_trainer(tmp_path), out_dir=tmp_path)
    _equal(ps.lightning.merge_shards(tmp_path), ps.sharded.counterfactual(scm, f, chunk_size=4))
    next(tmp_path.glob("chunk-*.pt")).unlink()
    with pytest.raises(DataError, match="missing"):
        ps.lightning.merge_shards(tmp_path)
    with pytest.raises(DataError, match="manifest"):
        ps.lightning.merge_shards(tmp_path / "nowhere")


# -- two processes ----------------------------------------------------------------------------


def test_two_process_ddp_training_and_sharded_queries(fitted, tmp_path):
    frame, scm, single = fitted
    scm.save(tmp_path / "single.pt")
    f = _factual(frame)  # 30 units in chunks of 7: 5 chunks, ranks get 3 and 2, the last has 2
    queries = {
        "factual": f,
        "cf": {"chunk_size": 7, "seed": 2},
        "bt": {"chunk_size": 7, "seed": 2},
        "mala": {"chunk_size": 7, "seed": 2, "method": "mala", "num_samples": 4, "warmup": 4},
        "unconv": {"chunk_size": 7, "max_iter": 1},
        "n": 17,
    }
    fit = {**FIT, "batch_size": FIT["batch_size"] // 2}  # the same global batch on 2 ranks
    torch.save({"frame": frame, "fit": fit, "queries": queries}, tmp_path / "setup.pt")
    # both ranks start at once, as torchrun would start them (Lightning reads the variables)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    paths = [tmp_path / f"rank-{rank}.log" for rank in range(2)]
    envs = [{**env, "LOCAL_RANK": str(rank), "NODE_RANK": "0"} for rank in range(2)]
    command = [sys.executable, str(HERE / "lightning_ddp_job.py"), str(tmp_path)]
    codes, _ = run_ranks(command, envs, paths, timeout=240, cwd=tmp_path)
    logs = [path.read_text() for path in paths]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    out = torch.load(tmp_path / "ddp.pt", weights_only=False)

    # the chunks' warnings come once, from rank 0 (an undrained stderr pipe of rank 1 once
    # filled up with them and hung the job); the flags are in every rank's result
    chunk = re.compile(r": units \d+\.\.\d+ \(chunk ")
    warned = [[line for line in log.splitlines() if chunk.search(line)] for log in logs]
    assert not warned[1], logs[1][-3000:]
    unconverged = [line for line in warned[0] if "did not meet the antecedent" in line]
    assert len(unconverged) == 1 and "units 0..6 (chunk 0): 7 of 7 units" in unconverged[0]
    assert "and 1 more chunks: 5 of 5 chunks]" in unconverged[0], logs[0][-3000:]
    assert not out["unconverged"].sample_stats["converged"].any()

    # DDP training reaches the single-process validation loss within 2 %
    best, best_single = out["history"].groupby("node").val.min(), single.groupby("node").val.min()
    print("val loss, DDP:", best.to_dict(), "one process:", best_single.to_dict())
    assert best.sum() == pytest.approx(best_single.sum(), rel=0.02)
    assert (best - best_single).abs().max() < 0.02  # nats, per node
    assert set(out["history"].node) == {"x", "y"}

    # sharded answers equal the one-process chunked answers exactly, in unit order
    _equal(out["counterfactual"], ps.sharded.counterfactual(scm, f, {"x": 1.0}, **queries["cf"]))
    _equal(out["backtrack"], ps.sharded.backtrack(scm, f, {"y": 2.0}, **queries["bt"]))
    _equal(out["mala"], ps.sharded.backtrack(scm, f, {"y": 2.0}, **queries["mala"]))
    _equal(out["sample"], ps.sharded.sample(scm, 17, {"x": 0.5}, chunk_size=7))
    assert torch.equal(out["backtrack"].factual["x"], f["x"].to(torch.float32))
    assert out["counterfactual"].num_units == 30


def test_pyro_scm_imports_without_lightning():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["lightning"] = None  # any import of lightning fails
        import pyro_scm as ps
        import scms
        r = ps.sharded.sample(scms.Linear(), 4, chunk_size=3)
        assert r["z"].shape == (4, 1)
        try:
            ps.lightning
        except ImportError as e:
            assert "pyro-scm[lightning]" in str(e)
        else:
            raise AssertionError("pyro_scm.lightning imported without lightning")
        assert "lightning" not in {m.split(".")[0] for m in sys.modules if sys.modules[m]}
        """
    )
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    job = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert job.returncode == 0, job.stderr[-3000:]
