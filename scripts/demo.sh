#!/usr/bin/env bash
# The main job: set up .venv, then train the Morpho-MNIST SCM and answer interventional,
# counterfactual and backtracking queries (arguments pass through, e.g. --quick, --out DIR,
# --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
python -m pyro_scm.inference.morpho_demo "$@"
