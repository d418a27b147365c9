"""The ``pyro-scm`` command: runs the example programs shipped with the package.

``pyro-scm demo [--quick] [--out DIR] [--device cuda]`` runs the main job (Morpho-MNIST: do,
counterfactual and backtracking queries); ``pyro-scm tabular [...]`` the tabular demo;
``pyro-scm bench [...]`` runs the benchmark suite of a source checkout (``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyro-scm`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="pyro-scm", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["demo", "tabular", "bench"], help="what to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the program")
    parsed = parser.parse_args(argv[:1])
    rest = argv[1:]
    if parsed.command == "demo":
        from .inference import morpho_demo

        morpho_demo.main(rest)
        return 0
    if parsed.command == "tabular":
        from .inference import tabular_demo

        tabular_demo.main(rest)
        return 0
    runner = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    if not runner.exists():
        parser.error("the benchmarks live in a source checkout of pyro_scm; none was found")
    sys.argv = [str(runner), *rest]
    runpy.run_path(str(runner), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
