#!/usr/bin/env bash
# Serving benchmarks on the lent GPU (issue 6 §5), through the real server and bench_serving.py.
# Run from the repo root on the device after `source .device/env.sh`, with a model folder holding
# a real config.json plus a tokenizer (weights are random: --load-format dummy), e.g.
#   MODEL=.device/llama8b bash benchmarks/gpu_serving_suite.sh
# Scaled-down shapes so the whole suite fits one 10-minute device call (see docs/benchmarks.md).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
MODEL=${MODEL:?set MODEL to a config+tokenizer folder}
BACKEND=${BACKEND:-triton}
NUM_PROMPTS=${NUM_PROMPTS:-300}
GSP_GROUPS=${GSP_GROUPS:-16}
PORT=30000
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/setup.log" 2>&1 || cat "$OUT/setup.log"

start_server() {  # tag, extra flags...
  local tag=$1; shift
  python3 -m radixlm.launch_server --model-path "$MODEL" --load-format dummy --port $PORT \
    --grammar-backend none --attention-backend "$BACKEND" --chunked-prefill-size 8192 \
    --max-prefill-tokens 16384 "$@" >"$OUT/server-$tag.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 300); do
    curl -sf localhost:$PORT/health_generate >/dev/null && return 0
    kill -0 $SERVER 2>/dev/null || { tail -30 "$OUT/server-$tag.log"; return 1; }
    sleep 1
  done
  return 1
}

bench() {  # tag, bench_serving args...
  local tag=$1; shift
  timeout 240 python3 benchmarks/bench_serving.py --backend radixlm --port $PORT --tokenizer "$MODEL" \
    --request-rate inf --seed 1 --warmup-requests 1 --flush-cache --output-file "$OUT/serving.jsonl" \
    "$@" 2>&1 | tee "$OUT/bench-$tag.log" | tail -25
}

GSP=(--dataset-name generated-shared-prefix --gsp-num-groups "$GSP_GROUPS" --gsp-prompts-per-group 16
     --gsp-system-prompt-len 2048 --gsp-question-len 128 --gsp-output-len 256)

echo "=== radix cache on $(date -u +%T)"
if start_server cache-on; then
  bench offline --dataset-name random-ids --random-input-len 1024 --random-output-len 1024 \
    --random-range-ratio 1.0 --num-prompts "$NUM_PROMPTS"
  bench gsp-on "${GSP[@]}"
  kill -TERM $SERVER; wait $SERVER
fi
echo "=== radix cache off $(date -u +%T)"
if start_server cache-off --disable-radix-cache; then
  bench gsp-off "${GSP[@]}"
  kill -TERM $SERVER; wait $SERVER
fi
echo "=== done $(date -u +%T)"
