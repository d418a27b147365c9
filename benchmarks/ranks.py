"""Start the ranks of a multi-process job at once, as torchrun would, and wait for them.

Each rank's stderr goes to a file: a pipe that nobody drains fills up (64 KiB) and blocks the
rank that writes to it, while the others wait for it in a collective. The job stops when a rank
fails (the others are killed) or when time runs out (every rank still running is killed). Used
by ``benchmarks/lightning_throughput.py`` and by the 2-process test of ``tests/test_lightning.py``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

__all__ = ["free_port", "run_ranks"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    command: list[str],
    envs: list[dict],
    logs: list[Path],
    timeout: float,
    cwd: Path | None = None,
) -> tuple[list[int], int | None]:
    """Run ``command`` once per rank (rank r with environment ``envs[r]``, stderr to ``logs[r]``).

    Returns:
        every rank's exit code (negative: killed) and the rank that failed first or was still
        running at the deadline (None: every rank exited with 0).
    """
    ranks = []
    for env, log in zip(envs, logs, strict=True):
        with log.open("w") as stderr:
            ranks.append(
                subprocess.Popen(
                    command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr
                )
            )
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while True:
            codes = [p.poll() for p in ranks]
            failed = next((r for r, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None or all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                failed = next(r for r, c in enumerate(codes) if c is None)
                break
            time.sleep(0.2)
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
            p.wait()
    return [p.returncode for p in ranks], failed
