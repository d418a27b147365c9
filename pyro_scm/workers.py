"""Independent shares of CPU work in forked worker processes, the first share in this process.

Forking copies the models and data without pickling them (user-defined mechanisms need not be
importable) and costs milliseconds. It is used only where it is safe and useful: on Linux, in a
process that is not a daemon (those may not have children), for CPU tensors (a forked child cannot
use an initialised CUDA context); and by default, from Python 3.12, only in a single-threaded
process (Python 3.12 deprecates forking a multi-threaded one; an explicit request still forks).
Results travel back pickled with the standard pickler (tensors by value); a child's warnings are
raised again here, and a child's exception is re-raised here with the child's traceback attached.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

__all__ = ["can_fork", "fork_map", "usable_workers"]

T = TypeVar("T")
R = TypeVar("R")


def _os_threads() -> int:
    """Threads of this process (Linux), 0 if unknown."""
    try:
        with open("/proc/self/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Threads:")), 0)
    except OSError:
        return 0


def can_fork(device: torch.device) -> bool:
    """Whether work on ``device`` can run in forked children at all: CPU tensors, Linux, and
    a process that is not a daemon."""
    linux = sys.platform.startswith("linux")
    return device.type == "cpu" and linux and not mp.current_process().daemon


def usable_workers(device: torch.device) -> int:
    """How many processes :func:`fork_map` should use by default for work on ``device``: the
    CPUs this process may run on where :func:`can_fork`, else 1; from Python 3.12, which warns
    when a multi-threaded process forks, 1 unless the process has a single thread."""
    if not can_fork(device):
        return 1
    if sys.version_info >= (3, 12) and _os_threads() != 1:
        return 1
    return len(os.sched_getaffinity(0))


def _child(fn: Callable, share: object, conn, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(share)
        payload = ("ok", out, [(w.message, w.category) for w in caught])
    except BaseException as e:  # sent to the parent, which raises it
        payload = ("error", e, traceback.format_exc())
    try:
        data = pickle.dumps(payload)
    except Exception as e:  # an unpicklable result or exception
        data = pickle.dumps(("error", RuntimeError(f"worker result not picklable: {e}"), ""))
    conn.send_bytes(data)
    conn.close()


def fork_map(fn: Callable[[T], R], shares: Sequence[T]) -> list[R]:
    """``[fn(s) for s in shares]``, concurrently: ``shares[0]`` here, each other share in a
    forked child. Intra-op threads are split between the processes while they run.

    ``fn`` must not depend on state that other shares change (each child works on its own copy
    of the process). Raises whatever ``fn`` raised (in this process or a child), or
    ``RuntimeError`` if a child died without an answer.
    """
    if len(shares) <= 1:
        return [fn(s) for s in shares]
    ctx = mp.get_context("fork")
    threads = torch.get_num_threads()
    share_threads = max(1, threads // len(shares))
    children = []
    try:
        for share in shares[1:]:
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(fn, share, send, share_threads), daemon=True)
            proc.start()
            send.close()
            children.append((proc, recv))
        torch.set_num_threads(share_threads)
        results = [fn(shares[0])]
        for proc, recv in children:
            try:
                status, value, extra = pickle.loads(recv.recv_bytes())
            except EOFError:
                proc.join()
                raise RuntimeError(
                    f"a worker process died (exit code {proc.exitcode}) before it answered"
                ) from None
            proc.join()
            if status == "error":
                if extra:
                    value.add_note(f"in a worker process:\n{extra}")
                raise value
            for message, category in extra:
                warnings.warn(message, category, stacklevel=2)
            results.append(value)
        return results
    finally:
        torch.set_num_threads(threads)
        for proc, recv in children:
            if proc.is_alive():
                proc.terminate()
                proc.join()
            recv.close()
