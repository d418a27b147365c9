"""Throughput of pyro_scm.lightning with 1 and 2 processes: training and sharded queries.

    PYTHONPATH=. python -m benchmarks.lightning_throughput --out DIR            # CPU, ~6 min quiet
    PYTHONPATH=. python -m benchmarks.lightning_throughput --size smoke --out DIR  # ~1 min quiet
    PYTHONPATH=. python -m benchmarks.lightning_throughput --size gpu --accelerator gpu --out DIR

What is compared: ONE process with ONE thread against TWO processes with ONE thread each
(``OMP_NUM_THREADS=MKL_NUM_THREADS=1``, ``torch.set_num_threads(1)``), so on 2 idle cores the
ceiling is 2x. The model is the speed table's ladder10 SCM (10 scalar nodes, NSF mechanisms). For
each process count the ranks start at once (torchrun-style variables) and run the same job:

- training with DDP at the same global batch (``batch / processes`` per rank, so both runs take
  the same optimisation steps), once at a large batch and once at a small one. One optimiser step
  of the 10 mechanisms has a fixed cost (~90 ms in one thread: Pyro's trace, zuko's splines,
  autograd, Adam, whatever the batch) that every rank pays in full, plus ~0.04 ms per unit; only
  the per-unit part is divided among the ranks. At a global batch B the ceiling of the ratio is
  (90 + 0.04 B) / (90 + 0.02 B): 1.1x at B = 512, 1.8x at B = 16,384, 1.9x at B = 32,768.
- sharded queries under ``Trainer.predict`` (shards written, merged on every rank): the
  counterfactual do(x1 := 0.5) as the library answers it by default (with the extrapolation
  scores) and with ``extrapolation=False``, and mode backtracking (antecedent x4 := x4 + 0.5);
  all asked of the model the 1-process job trained, so the answers can be compared.

Steady state: training throughput is training units per second, median over the epochs after the
first (validation included); a query's is units per second of the whole call (predict, shard
files, merge), best of 2, with the ranks already running. Process start-up is excluded from
both and reported apart (the wall time of each job, imports, data and start-up included).

The report gives the ratios of 2 processes to 1 (measured in the same run), the same ratio for
plain one-thread compute (the machine's ceiling at that moment: about 2 on 2 idle cores, lower when
other work shares them), the load average, whether the sharded answers are identical, and the
relative difference of the best validation losses. Each rank's stderr goes to ``DIR/rank-*.log``
(never an undrained pipe); a rank that fails or outlives ``--timeout`` stops the job.
Writes ``lightning_throughput.json`` and ``.md`` to ``--out`` (shards and models too: a scratch
folder, never committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ranks import free_port, run_ranks

# train: (label, training units, epochs, global batch); the first is the one compared for loss
SIZES = {
    "smoke": {
        "train": [("large batch", 8192, 3, 2048), ("small batch", 2000, 2, 256)],
        "hidden": [16, 16],
        "cf_units": 20_000,
        "cf_chunk": 2_500,
        "cf_fast_units": 40_000,
        "cf_fast_chunk": 5_000,
        "bt_units": 32,
        "bt_chunk": 8,
    },
    "cpu": {
        "train": [("large batch", 131_072, 5, 32_768), ("small batch", 16_000, 3, 512)],
        "hidden": [64, 64],
        "cf_units": 160_000,
        "cf_chunk": 20_000,
        "cf_fast_units": 400_000,
        "cf_fast_chunk": 25_000,
        "bt_units": 256,
        "bt_chunk": 32,
    },
    "gpu": {
        "train": [("large batch", 1_000_000, 3, 65_536), ("small batch", 1_000_000, 2, 16_384)],
        "hidden": [256, 256],
        "cf_units": 4_000_000,
        "cf_chunk": 500_000,
        "cf_fast_units": 20_000_000,
        "cf_fast_chunk": 1_000_000,
        "bt_units": 65_536,
        "bt_chunk": 4_096,
    },
}
QUERIES = ("counterfactual", "counterfactual, extrapolation=False", "backtracking")


# -- one rank of a job --------------------------------------------------------------------------


def _trainer(args: argparse.Namespace, epochs: int, callbacks: list):
    import lightning as L

    n = args.processes
    return L.Trainer(
        accelerator=args.accelerator,
        devices=n,
        strategy="ddp" if n > 1 else "auto",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(args.out),
    )


def worker(args: argparse.Namespace) -> None:
    """Train, then answer the sharded queries; rank 0 writes timings and answers to ``--out``."""
    import torch

    import pyro_scm as ps
    from benchmarks.speed import ladder10
    from pyro_scm.datasets.true_models import learned_scm

    torch.set_num_threads(1)
    size, n = SIZES[args.size], args.processes
    syn = ladder10()
    train, scm, trainer = {}, None, None
    for label, units, epochs, batch in size["train"]:
        data = syn.sample(units, seed=0)
        torch.manual_seed(0)
        model = learned_scm(syn, data, "nsf", hidden=tuple(size["hidden"]), transforms=2)
        timer = _epoch_timer()
        job = _trainer(args, epochs, [timer])
        history = ps.lightning.fit(
            model, data, trainer=job, batch_size=batch // n, lr=3e-3, patience=epochs
        )
        n_train = units - round(units * 0.1)
        epoch_s = statistics.median(timer.seconds[1:] or timer.seconds)
        train[label] = {
            "units": units,
            "global_batch": batch,
            "batch_per_rank": batch // n,
            "steps_per_epoch": timer.steps[0] if timer.steps else 0,
            "epoch_seconds": timer.seconds,
            "units_per_s": n_train / epoch_s,
            "step_ms": 1e3 * statistics.median(timer.step_seconds[1:] or timer.step_seconds),
            "best_val": float(history.groupby("node").val.min().sum()),
        }
        if scm is None:
            scm, trainer = model, job

    # the queries of both jobs ask the model the 1-process job trained, so answers can match
    if n == 1 and trainer.is_global_zero:
        scm.save(args.out / "model-1.pt")
    trainer.strategy.barrier()
    scm.load(args.out / "model-1.pt").eval()
    cf_factual = syn.sample(size["cf_units"], seed=1)
    fast_factual = syn.sample(size["cf_fast_units"], seed=1)
    bt_factual = syn.sample(size["bt_units"], seed=2)
    queries = {
        "counterfactual": (
            size["cf_units"],
            lambda: ps.lightning.counterfactual(
                scm,
                cf_factual,
                do={"x1": 0.5},
                chunk_size=size["cf_chunk"],
                trainer=trainer,
                out_dir=args.out / f"shards-cf-{n}",
            ),
        ),
        "counterfactual, extrapolation=False": (
            size["cf_fast_units"],
            lambda: ps.lightning.counterfactual(
                scm,
                fast_factual,
                do={"x1": 0.5},
                chunk_size=size["cf_fast_chunk"],
                extrapolation=False,
                trainer=trainer,
                out_dir=args.out / f"shards-cf-fast-{n}",
            ),
        ),
        "backtracking": (
            size["bt_units"],
            lambda: ps.lightning.backtrack(
                scm,
                bt_factual,
                {"x4": lambda x: x + 0.5},
                chunk_size=size["bt_chunk"],
                trainer=trainer,
                out_dir=args.out / f"shards-bt-{n}",
            ),
        ),
    }
    timings, answers = {}, {}
    for name, (units, query) in queries.items():
        seconds = []
        for _ in range(2):
            trainer.strategy.barrier()
            start = time.perf_counter()
            answers[name] = query()
            seconds.append(time.perf_counter() - start)
        timings[name] = {"seconds": seconds, "units_per_s": units / min(seconds)}
    if trainer.is_global_zero:
        out = {"processes": n, "train": train, "queries": timings}
        (args.out / f"worker-{n}.json").write_text(json.dumps(out, indent=1))
        torch.save({k: v.values for k, v in answers.items()}, args.out / f"answers-{n}.pt")


def _epoch_timer():
    """A callback recording the seconds of every training epoch (its validation included)."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self):
            self.seconds: list[float] = []
            self.steps: list[int] = []
            self.step_seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()
            self.steps.append(0)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._step = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.step_seconds.append(time.perf_counter() - self._step)
            self.steps[-1] += 1

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


# -- the driver ---------------------------------------------------------------------------------


def launch(args: argparse.Namespace, processes: int) -> dict:
    """Start the ``processes`` ranks of one job at once and wait; returns rank 0's timings.

    Each rank's stderr goes to ``--out/rank-<processes>-<rank>.log`` (:func:`run_ranks`); the
    job stops when a rank fails (the others are killed) or after ``--timeout``.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    if processes > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        env.update(WORLD_SIZE=str(processes), NODE_RANK="0")
    command = [sys.executable, "-m", "benchmarks.lightning_throughput", "--worker"]
    command += ["--processes", str(processes), "--size", args.size, "--out", str(args.out)]
    command += ["--accelerator", args.accelerator]
    logs = [args.out / f"rank-{processes}-{r}.log" for r in range(processes)]
    start = time.perf_counter()
    envs = [{**env, "LOCAL_RANK": str(r)} if processes > 1 else env for r in range(processes)]
    _, failed = run_ranks(command, envs, logs, args.timeout)
    if failed is not None:
        tail = logs[failed].read_text()[-4000:]
        raise RuntimeError(f"the {processes}-process job failed (rank {failed}):\n{tail}")
    out = json.loads((args.out / f"worker-{processes}.json").read_text())
    out["job_seconds"] = time.perf_counter() - start
    return out


_BURN = """
import time, torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
start = time.perf_counter()
for _ in range(1500):
    a = torch.tanh(a @ a * 0.01)
print(time.perf_counter() - start)
"""


def machine_ratio() -> float:
    """Throughput of 2 concurrent one-thread compute processes over 1: this machine's ceiling now.

    About 2 on an idle machine with 2 free cores; lower when other work shares the cores.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(k: int) -> float:
        procs = [
            subprocess.Popen([sys.executable, "-c", _BURN], env=env, stdout=subprocess.PIPE)
            for _ in range(k)
        ]
        return max(float(p.communicate()[0]) for p in procs)

    return 2 * run(1) / run(2)


def _identical(a: dict, b: dict) -> bool:
    import torch

    return all(
        a[q].keys() == b[q].keys() and all(torch.equal(a[q][k], b[q][k]) for k in a[q]) for q in a
    )


def report(args: argparse.Namespace, one: dict, two: dict, ceiling: float) -> dict:
    """Ratios, identity and the validation-loss difference; prints a table, writes JSON/md."""
    import torch

    answers = [torch.load(args.out / f"answers-{n}.pt", weights_only=True) for n in (1, 2)]
    rows = [
        (
            f"training, {k} {v['global_batch']:,} "
            f"({two['train'][k]['batch_per_rank']:,}/rank on 2)",
            "training",
        )
        for k, v in one["train"].items()
    ]
    values = [
        (one["train"][k]["units_per_s"], two["train"][k]["units_per_s"]) for k in one["train"]
    ]
    rows += [(q, "query") for q in QUERIES]
    values += [
        (one["queries"][q]["units_per_s"], two["queries"][q]["units_per_s"]) for q in QUERIES
    ]
    ratio = {name: b / a for (name, _), (a, b) in zip(rows, values, strict=True)}
    first = next(iter(one["train"]))
    best = one["train"][first]["best_val"], two["train"][first]["best_val"]
    val_diff = abs(best[1] - best[0]) / abs(best[0])
    targets = {"training": 1.6, "query": 1.7}
    result = {
        "size": args.size,
        "accelerator": args.accelerator,
        "compared": "1 process x 1 thread vs 2 processes x 1 thread each",
        "settings": SIZES[args.size],
        "cpu_count": os.cpu_count(),
        "load_average_before": args.load_before,
        "load_average_after": os.getloadavg(),
        "one_process": one,
        "two_processes": two,
        "ratio_2_to_1": ratio,
        "machine_ratio_2_to_1": ceiling,
        "answers_identical": _identical(*answers),
        "val_loss_relative_difference": val_diff,
        "targets": {**targets, "val_loss_relative_difference": 0.02},
    }
    before, after = args.load_before, result["load_average_after"]
    lines = [
        f"pyro_scm.lightning throughput, size {args.size}, {args.accelerator}: 1 process x 1 "
        f"thread vs 2 processes x 1 thread; load average (1/5/15 min) before "
        f"{before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, after "
        f"{after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f} on {os.cpu_count()} cores",
        "",
        "| units/s, steady state | 1 process | 2 processes | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for (name, kind), (a, b) in zip(rows, values, strict=True):
        lines.append(f"| {name} | {a:,.1f} | {b:,.1f} | {b / a:.2f}x | >= {targets[kind]}x |")
    lines.append(
        f"| plain compute, this machine now | 1 | {ceiling:.2f} | {ceiling:.2f}x | (ceiling) |"
    )
    steps = ", ".join(
        f"{k}: {one['train'][k]['step_ms']:.0f} ms (1 process) / "
        f"{two['train'][k]['step_ms']:.0f} ms (2)"
        for k in one["train"]
    )
    lines += [
        "",
        f"median training step: {steps}",
        f"job wall time, start-up included: 1 process {one['job_seconds']:.0f} s, "
        f"2 processes {two['job_seconds']:.0f} s",
        f"sharded answers identical for 1 and 2 processes: {result['answers_identical']}",
        f"best validation loss ({first}): 1 process {best[0]:.4f}, 2 processes {best[1]:.4f} "
        f"({val_diff:.2%} apart; target <= 2%)",
    ]
    table = "\n".join(lines)
    print(table)
    (args.out / "lightning_throughput.json").write_text(json.dumps(result, indent=1))
    (args.out / "lightning_throughput.md").write_text(table + "\n")
    return result


def main(argv: list[str] | None = None) -> dict | None:
    """Run the benchmark (or, with ``--worker``, one rank of it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default="cpu")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds a job may take")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args)
        return None
    args.load_before = os.getloadavg()
    ceiling = machine_ratio()
    one, two = launch(args, 1), launch(args, 2)
    return report(args, one, two, ceiling)


if __name__ == "__main__":
    main()
