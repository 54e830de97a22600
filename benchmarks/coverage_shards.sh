#!/usr/bin/env bash
# Runs benchmarks/jsonschemabench_coverage.py over every JSONSchemaBench file in N parallel
# shards (one per core to spare), then prints the merged table.
# Usage: benchmarks/coverage_shards.sh BACKENDS SHARDS OUT_DIR [extra coverage args...]
set -euo pipefail
backends=$1 shards=$2 out=$3
shift 3
mkdir -p "$out"
for ((i = 0; i < shards; i++)); do
  python3 benchmarks/jsonschemabench_coverage.py --per-subset 100000 --backends "$backends" \
    --shard "$i/$shards" --out "$out/shard$i.json" "$@" > "$out/shard$i.log" 2>&1 &
done
wait
python3 benchmarks/jsonschemabench_coverage.py --merge "$out"/shard*.json
