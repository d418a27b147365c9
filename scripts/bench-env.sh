#!/usr/bin/env bash
# Create .venv-bench: pyro_scm plus the peer libraries of the benchmarks (DoWhy gcm, ChiRho).
# Peers stay out of the library's own environment: dowhy 0.14 pins scipy <= 1.15.3 on
# Python < 3.13. Then: .venv-bench/bin/python -m benchmarks.run --quick; the peer tests
# (skipped in .venv) run with .venv-bench/bin/python -m pytest tests/test_benchmarks.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/python -m pip install --quiet --upgrade pip
.venv-bench/bin/python -m pip install --quiet "torch==2.13.0"
.venv-bench/bin/python -m pip install --quiet -e ".[bench,test]" "dowhy==0.14" "chirho==0.3.0"
.venv-bench/bin/python -m pip install --quiet --no-deps "cdt>=0.6"
.venv-bench/bin/python -c "import dowhy, chirho, pyro_scm; print('peers ok:', dowhy.__version__, chirho.__version__)"
