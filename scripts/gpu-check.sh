#!/usr/bin/env bash
# On a machine with a GPU: the test suite on CUDA, then the speed benchmarks at GPU sizes.
#   bash scripts/gpu-check.sh [extra pytest arguments]
# Writes benchmarks/out/gpu-check/ (lightning_throughput.{json,md}, speed.json).
# Setup installs the CPU build of torch; on a GPU machine install a CUDA build first, e.g.
#   .venv/bin/python -m pip install torch --index-url https://download.pytorch.org/whl/cu124
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh "test,docs,lightning"
. .venv/bin/activate
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no CUDA device (install a CUDA build of torch)")
print(f"gpu-check: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
PY
out=benchmarks/out/gpu-check
mkdir -p "$out"

# 1. the suite on CUDA (the tests take --device; the 2-process DDP test stays on CPU/gloo)
python -m pytest -q -x -p no:cacheprovider --device cuda "$@"

# 2. Lightning: training and sharded-query throughput on 1 and 2 GPUs (2 needs two devices)
if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  python -m benchmarks.lightning_throughput --size gpu --accelerator gpu --out "$out"
else
  echo "gpu-check: one GPU only; skipping the 1-vs-2-GPU throughput benchmark"
fi

# 3. query speed at GPU sizes: counterfactuals and sampling of ladder10 (NSF) on cuda
python - "$out" <<'PY'
import json, sys, time, torch
from benchmarks.speed import ladder10
from pyro_scm.datasets.true_models import learned_scm

syn = ladder10()
scm = learned_scm(syn, syn.sample(20_000, seed=0), "nsf", hidden=(256, 256)).to("cuda")
rows = {}
for units in (100_000, 1_000_000, 10_000_000):
    factual = {k: v.to("cuda") for k, v in syn.sample(units, seed=1).items()}
    for name, query in {
        "counterfactual": lambda: scm.counterfactual(factual, do={"x1": 0.5}, chunk_size=1_000_000),
        "observational": lambda: scm.sample(units),
    }.items():
        query(); torch.cuda.synchronize()
        start = time.perf_counter(); query(); torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows[f"{name} {units}"] = {"seconds": seconds, "units_per_s": units / seconds}
        print(f"{name:>15} {units:>10,} units: {seconds:8.3f} s  {units / seconds:14,.0f} units/s")
json.dump(rows, open(f"{sys.argv[1]}/speed.json", "w"), indent=1)
PY
