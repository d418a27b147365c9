#!/usr/bin/env bash
# The tests: set up .venv, check style with ruff, run the suite (arguments go to pytest,
# e.g. --device cuda), build the docs with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "test,docs"
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest -q "$@"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir site
