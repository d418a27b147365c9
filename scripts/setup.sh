#!/usr/bin/env bash
# Create .venv (if missing) and install pyro_scm with the extras given as arguments.
# The CPU build of torch 2.13.0 is installed first and pinned: an unpinned torch pulls a
# multi-GB CUDA build on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[${extras}]"
# cdt ships the Sachs data; its own dependencies are not needed to read the files.
python -m pip install --quiet --no-deps "cdt>=0.6"
