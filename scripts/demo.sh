#!/usr/bin/env bash
# The main job: set up .venv, then run the end-to-end demo (arguments pass through,
# e.g. --quick, --out DIR, --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pyro_scm.inference.tabular_demo "$@"
