"""Throughput of pyro_scm.lightning with 1 and 2 processes: training and sharded queries.

    python -m benchmarks.lightning_throughput              # CPU, 1 and 2 processes (~13 min loaded)
    python -m benchmarks.lightning_throughput --size smoke # tiny sizes (~3 min loaded)
    python -m benchmarks.lightning_throughput --size gpu --accelerator gpu   # 1 and 2 GPUs

The model is the speed table's ladder10 SCM (10 scalar nodes, NSF mechanisms). For each process
count the ranks start at once (torchrun-style variables, one thread each) and run the same job:
train with DDP (the same global batch: ``batch_size / processes`` per rank), then a sharded
counterfactual and a sharded mode-backtracking query (antecedent x4 := x4 + 0.5) under
``Trainer.predict``, both asked of the model the 1-process job trained. Rank 0 measures

- training throughput: training units per second, median over the epochs after the first;
- query throughput: units per second of the whole call (predict, shard files, merge), best of 2.

The report gives the ratios of 2 processes to 1 (measured in the same run), the same ratio for
plain one-thread compute (the machine's ceiling at that moment: about 2 on 2 idle cores, lower when
other work shares them), whether the two
sharded answers are identical, and the relative difference of the best validation losses.
Writes ``lightning_throughput.json`` and ``.md`` to ``--out`` (default ``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {
    "smoke": {
        "train_units": 2000,
        "epochs": 2,
        "batch_size": 256,
        "hidden": [16, 16],
        "cf_units": 20_000,
        "cf_chunk": 2_500,
        "bt_units": 32,
        "bt_chunk": 8,
    },
    "cpu": {
        "train_units": 16_000,
        "epochs": 4,
        "batch_size": 512,
        "hidden": [64, 64],
        "cf_units": 400_000,
        "cf_chunk": 25_000,
        "bt_units": 256,
        "bt_chunk": 32,
    },
    "gpu": {
        "train_units": 1_000_000,
        "epochs": 3,
        "batch_size": 16_384,
        "hidden": [256, 256],
        "cf_units": 20_000_000,
        "cf_chunk": 1_000_000,
        "bt_units": 65_536,
        "bt_chunk": 4_096,
    },
}


# -- one rank of a job --------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Train, then answer the sharded queries; rank 0 writes timings and answers to ``--out``."""
    import lightning as L
    import torch

    import pyro_scm as ps
    from benchmarks.speed import ladder10
    from pyro_scm.datasets.true_models import learned_scm

    torch.set_num_threads(1)
    size, n = SIZES[args.size], args.processes
    syn = ladder10()
    data = syn.sample(size["train_units"], seed=0)
    torch.manual_seed(0)
    scm = learned_scm(syn, data, "nsf", hidden=tuple(size["hidden"]), transforms=2)

    timer = _epoch_timer()
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=n,
        strategy="ddp" if n > 1 else "auto",
        max_epochs=size["epochs"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(args.out),
    )
    batch = size["batch_size"] // n
    history = ps.lightning.fit(
        scm, data, trainer=trainer, batch_size=batch, lr=3e-3, patience=size["epochs"]
    )
    n_train = size["train_units"] - round(size["train_units"] * 0.1)
    epoch_s = statistics.median(timer.seconds[1:] or timer.seconds)

    # the queries of both jobs ask the model the 1-process job trained, so answers can match
    if n == 1 and trainer.is_global_zero:
        scm.save(args.out / "model-1.pt")
    trainer.strategy.barrier()
    scm.load(args.out / "model-1.pt").eval()
    cf_factual = syn.sample(size["cf_units"], seed=1)
    bt_factual = syn.sample(size["bt_units"], seed=2)
    queries = {
        "counterfactual": lambda: ps.lightning.counterfactual(
            scm,
            cf_factual,
            do={"x1": 0.5},
            chunk_size=size["cf_chunk"],
            trainer=trainer,
            out_dir=args.out / f"shards-cf-{n}",
        ),
        "backtracking": lambda: ps.lightning.backtrack(
            scm,
            bt_factual,
            {"x4": lambda x: x + 0.5},
            chunk_size=size["bt_chunk"],
            trainer=trainer,
            out_dir=args.out / f"shards-bt-{n}",
        ),
    }
    timings, answers = {}, {}
    for name, query in queries.items():
        best = float("inf")
        for _ in range(2):
            trainer.strategy.barrier()
            start = time.perf_counter()
            answers[name] = query()
            best = min(best, time.perf_counter() - start)
        units = size["cf_units"] if name == "counterfactual" else size["bt_units"]
        timings[name] = {"seconds": best, "units_per_s": units / best}
    if trainer.is_global_zero:
        out = {
            "processes": n,
            "train": {
                "epoch_seconds": timer.seconds,
                "units_per_s": n_train / epoch_s,
                "best_val": float(history.groupby("node").val.min().sum()),
            },
            "queries": timings,
        }
        (args.out / f"worker-{n}.json").write_text(json.dumps(out, indent=1))
        torch.save({k: v.values for k, v in answers.items()}, args.out / f"answers-{n}.pt")


def _epoch_timer():
    """A callback recording the seconds of every training epoch (its validation included)."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


# -- the driver ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, processes: int) -> dict:
    """Start the ``processes`` ranks of one job at once and wait; returns rank 0's timings."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    if processes > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        env.update(WORLD_SIZE=str(processes), NODE_RANK="0")
    command = [sys.executable, "-m", "benchmarks.lightning_throughput", "--worker"]
    command += ["--processes", str(processes), "--size", args.size, "--out", str(args.out)]
    command += ["--accelerator", args.accelerator]
    ranks = [
        subprocess.Popen(
            command,
            env={**env, "LOCAL_RANK": str(r)} if processes > 1 else env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(processes)
    ]
    errors = [p.communicate()[1] for p in ranks]
    if any(p.returncode for p in ranks):
        raise RuntimeError(f"the {processes}-process job failed:\n" + errors[0][-4000:])
    return json.loads((args.out / f"worker-{processes}.json").read_text())


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
    ratio = {
        "training": two["train"]["units_per_s"] / one["train"]["units_per_s"],
        **{
            q: two["queries"][q]["units_per_s"] / one["queries"][q]["units_per_s"]
            for q in one["queries"]
        },
    }
    val_diff = abs(two["train"]["best_val"] - one["train"]["best_val"])
    val_diff /= abs(one["train"]["best_val"])
    result = {
        "size": args.size,
        "accelerator": args.accelerator,
        "settings": SIZES[args.size],
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "one_process": one,
        "two_processes": two,
        "ratio_2_to_1": ratio,
        "machine_ratio_2_to_1": ceiling,
        "answers_identical": _identical(*answers),
        "val_loss_relative_difference": val_diff,
        "targets": {"training": 1.6, "query": 1.7, "val_loss_relative_difference": 0.02},
    }
    rows = [
        ("training (units/s)", one["train"]["units_per_s"], two["train"]["units_per_s"]),
        *[
            (f"{q} (units/s)", one["queries"][q]["units_per_s"], two["queries"][q]["units_per_s"])
            for q in one["queries"]
        ],
    ]
    lines = [
        f"pyro_scm.lightning throughput, size {args.size}, {args.accelerator}, "
        f"load average {result['load_average'][0]:.1f} on {os.cpu_count()} cores",
        "",
        "| | 1 process | 2 processes | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for name, a, b in rows:
        target = 1.6 if name.startswith("training") else 1.7
        lines.append(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | >= {target}x |")
    lines.append(
        f"| plain compute, this machine now | 1 | {ceiling:.2f} | {ceiling:.2f}x | (ceiling) |"
    )
    lines += [
        "",
        f"sharded answers identical for 1 and 2 processes: {result['answers_identical']}",
        f"best validation loss: 1 process {one['train']['best_val']:.4f}, "
        f"2 processes {two['train']['best_val']:.4f} ({val_diff:.2%} apart; target <= 2%)",
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
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args)
        return None
    ceiling = machine_ratio()
    one, two = launch(args, 1), launch(args, 2)
    return report(args, one, two, ceiling)


if __name__ == "__main__":
    main()
