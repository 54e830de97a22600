#!/usr/bin/env bash
# Serving benchmarks on the lent GPU (issue 6 §5), through the real server and bench_serving.py.
# Run from the repo root on the device after `source .device/env.sh`, with a model folder holding
# a real config.json plus a tokenizer (weights are random: --load-format dummy), e.g.
#   MODEL=.device/llama8b bash benchmarks/gpu_serving_suite.sh
# PARTS picks what runs: offline (random-ids 1024/1024), itl (one request at a time, random-ids
# 1024/256, ITL_PROMPTS of them: the server's batch-1 inter-token latency), gsp-on and gsp-off
# (shared prefix, radix cache on / off). Defaults are the full shapes (1000 prompts,
# 64 x 16 groups);
# BENCH_TIMEOUT bounds each client run so a slow part cannot eat the whole device call.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
MODEL=${MODEL:?set MODEL to a config+tokenizer folder}
BACKEND=${BACKEND:-triton}
NUM_PROMPTS=${NUM_PROMPTS:-1000}
GSP_GROUPS=${GSP_GROUPS:-64}
PARTS=${PARTS:-"offline gsp-on gsp-off"}
ITL_PROMPTS=${ITL_PROMPTS:-16}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-400}
CUDA_GRAPH_MAX_BS=${CUDA_GRAPH_MAX_BS:-512}
SERVER_ARGS=${SERVER_ARGS:-}  # more server flags, e.g. --disable-overlap-schedule
PORT=30000
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/setup.log" 2>&1 || cat "$OUT/setup.log"

start_server() {  # tag, extra flags...
  local tag=$1; shift
  python3 -m radixlm.launch_server --model-path "$MODEL" --load-format dummy --port $PORT \
    --grammar-backend none --attention-backend "$BACKEND" --chunked-prefill-size 8192 \
    --max-prefill-tokens 16384 --cuda-graph-max-bs "$CUDA_GRAPH_MAX_BS" $SERVER_ARGS "$@" \
    >"$OUT/server-$tag.log" 2>&1 &
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
  timeout "$BENCH_TIMEOUT" python3 benchmarks/bench_serving.py --backend radixlm --port $PORT --tokenizer "$MODEL" \
    --request-rate inf --seed 1 --warmup-requests 1 --flush-cache --output-file "$OUT/serving.jsonl" \
    "$@" 2>&1 | tee "$OUT/bench-$tag.log" | tail -25
}

GSP=(--dataset-name generated-shared-prefix --gsp-num-groups "$GSP_GROUPS" --gsp-prompts-per-group 16
     --gsp-system-prompt-len 2048 --gsp-question-len 128 --gsp-output-len 256)

has() { [[ " $PARTS " == *" $1 "* ]]; }

stop_server() {  # tag: the scheduler's periodic decode lines show the running batch and rate
  kill -TERM $SERVER; wait $SERVER
  grep -E "Decode batch" "$OUT/server-$1.log" | awk 'NR % 10 == 0' | tail -12
}

if has offline || has itl || has gsp-on; then
  echo "=== radix cache on $(date -u +%T)"
  if start_server cache-on; then
    if has itl; then
      bench itl --dataset-name random-ids --random-input-len 1024 --random-output-len 256 \
        --random-range-ratio 1.0 --num-prompts "$ITL_PROMPTS" --max-concurrency 1
    fi
    if has offline; then
      bench offline --dataset-name random-ids --random-input-len 1024 --random-output-len 1024 \
        --random-range-ratio 1.0 --num-prompts "$NUM_PROMPTS"
    fi
    if has gsp-on; then bench gsp-on "${GSP[@]}"; fi
    stop_server cache-on
  fi
fi
if has gsp-off; then
  echo "=== radix cache off $(date -u +%T)"
  if start_server cache-off --disable-radix-cache; then
    bench gsp-off "${GSP[@]}"
    stop_server cache-off
  fi
fi
echo "=== done $(date -u +%T)"
