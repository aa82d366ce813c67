#!/usr/bin/env bash
# Every figure of docs/benchmarks.md, one benchmark after another (never two at once: on a
# 2-core machine two processes slow each other several-fold), each writing its JSON to
# docs/benchmarks/. The phantom, the cache and the trained model are the ones of
# docs/training.md:
#   vipet phantom --n 600 --out /tmp/ph600 --seed 0 --workers 2
#   vipet preprocess /tmp/ph600 --out /tmp/cache64 --workers 2
#   vipet train --config configs/cpu-small.yaml --data /tmp/ph600 --cache /tmp/cache64
#
# usage: benchmarks/all.sh [MODEL] [DATA] [CACHE]
#   (defaults: runs/cpu-small/model /tmp/ph600 /tmp/cache64; `make bench` runs it)
set -euo pipefail
MODEL=${1:-runs/cpu-small/model}
DATA=${2:-/tmp/ph600}
CACHE=${3:-/tmp/cache64}
PY=${PYTHON:-.venv/bin/python}
OUT=docs/benchmarks
export HF_HUB_OFFLINE=1
for path in "$MODEL" "$DATA" "$CACHE"; do
    [ -e "$path" ] || { echo "benchmarks/all.sh: $path does not exist (see the header)" >&2; exit 2; }
done
mkdir -p "$OUT"
run() { echo "== $*"; "$PY" "$@"; }
run benchmarks/preprocess.py --repeats 3 --json "$OUT/preprocess.json"
run benchmarks/train_throughput.py --config configs/cpu-small.yaml --data "$DATA" \
    --cache "$CACHE" --weights "$MODEL" --json "$OUT/train_throughput.json"
run benchmarks/head_level.py --json "$OUT/head_level.json"
run benchmarks/precision.py --repeats 1 --json "$OUT/precision.json"
run benchmarks/generation.py --preset cpu-small --json "$OUT/generation.json"
run benchmarks/inference.py --checkpoint "$MODEL" --data "$DATA" --json "$OUT/inference.json"
run benchmarks/serve_load.py --checkpoint "$MODEL" --json "$OUT/serve_load.json"
