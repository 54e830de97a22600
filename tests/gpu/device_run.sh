#!/usr/bin/env bash
# Runs the GPU tests and/or benchmarks on the lent GPU machine (see docs/gpu.md).
# From the repo root, after `source .device/env.sh` (wheels on PYTHONPATH, flashinfer JIT cache):
#   bash tests/gpu/device_run.sh setup test cache bench-latency bench-batch1 bench-sweep bench-kernels
#   GEMV_CONFIGS=$OUT/kernels.jsonl bash tests/gpu/device_run.sh bench-gemv profile-variants
# Logs and JSON results go to $OUT (default ./gpu-out).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
for stage in "$@"; do
  echo "=== $stage $(date -u +%T)"
  case $stage in
    setup)
      # The package-dir mapping (radixlm -> frontend/, radixlm.kernels -> kernels/, ...) needs an
      # install; an editable one builds offline from the image's setuptools and wheel.
      python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/setup.log" 2>&1 \
        || { cat "$OUT/setup.log"; exit 1; }
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
      python3 -c "import torch, triton, radixlm.kernels; print('torch', torch.__version__, 'triton', triton.__version__)"
      python3 -c "import flashinfer; print('flashinfer', flashinfer.__version__)" || true
      ;;
    test)
      python3 -m pytest -q -rfE -p no:cacheprovider --timeout 900 tests/gpu 2>&1 | tee "$OUT/pytest.log" | tail -40
      ;;
    test-kernels)
      # PYTEST_ARGS narrows it, e.g. PYTEST_ARGS="-k gemv or pdl".
      python3 -m pytest -q -rfE -p no:cacheprovider --timeout 600 tests/gpu/test_kernels.py \
        ${PYTEST_ARGS:+-k "$PYTEST_ARGS"} 2>&1 | tee "$OUT/pytest-kernels.log" | tail -20
      ;;
    cache)
      tar czf "$OUT/flashinfer-cache.tgz" -C ~/.cache flashinfer && ls -la "$OUT/flashinfer-cache.tgz"
      ;;
    bench-latency)
      for model in smollm2-135m qwen2.5-0.5b llama-3.1-8b; do
        for backend in ${BACKENDS:-flashinfer triton}; do
          python3 benchmarks/bench_one_batch.py --model-path $model --attention-backend $backend \
            --batch-size 1 --input-len 1024 --output-len 256 --result-filename "$OUT/one_batch.jsonl"
        done
      done
      ;;
    bench-batch1)
      # Issue 6's batch-1 target: Llama-3.1-8B, triton, serial loop, the overlapped one, and the
      # overlapped one without PDL (what programmatic dependent launch buys).
      for loop in "" --overlap "--overlap --disable-pdl"; do
        python3 benchmarks/bench_one_batch.py --model-path llama-3.1-8b --attention-backend triton \
          --batch-size 1 --input-len 1024 --output-len 256 $loop \
          --result-filename "$OUT/one_batch.jsonl"
      done
      ;;
    bench-sweep)
      python3 benchmarks/bench_one_batch.py --model-path llama-3.1-8b --attention-backend flashinfer \
        --batch-size 1 8 32 64 128 256 --input-len 128 --output-len 8 \
        --result-filename "$OUT/one_batch.jsonl"
      ;;
    bench-sweep-triton)
      python3 benchmarks/bench_one_batch.py --model-path llama-3.1-8b --attention-backend triton \
        --batch-size 1 8 32 64 128 256 --input-len 128 --output-len 8 \
        --result-filename "$OUT/one_batch.jsonl"
      ;;
    bench-hf)
      python3 benchmarks/bench_one_batch.py --model-path llama-3.1-8b --attention-backend flashinfer \
        --batch-size 1 64 --input-len 1024 --output-len 32 --hf-peer --hf-batch-size 1 64 \
        --result-filename "$OUT/one_batch.jsonl"
      ;;
    profile)
      for spec in "llama-3.1-8b triton" "llama-3.1-8b flashinfer" "smollm2-135m triton"; do
        set -- $spec
        python3 benchmarks/bench_gpu_profile.py --model-path $1 --attention-backend $2 \
          | tee -a "$OUT/profile.log"
      done
      ;;
    profile-variants)
      # Graph replay of the 8B step with PDL off/on and GEMV configs; GEMV_CONFIGS: the
      # kernels.jsonl of a bench-gemv run (its per-shape best configs).
      python3 benchmarks/bench_gpu_profile.py --model-path llama-3.1-8b --attention-backend triton \
        --variants ${GEMV_CONFIGS:+--gemv-configs "$GEMV_CONFIGS"} | tee -a "$OUT/profile.log"
      ;;
    bench-gemv)
      python3 benchmarks/bench_gpu_kernels.py --only gemv --result-filename "$OUT/kernels.jsonl"
      ;;
    bench-kernels)
      python3 benchmarks/bench_gpu_kernels.py --only other --result-filename "$OUT/kernels.jsonl"
      ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
