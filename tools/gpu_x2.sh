#!/usr/bin/env bash
# The two-GPU host (device kind nvidia-h200-x2): issue 14's runs and issue 16's single-GPU figures, in
# calls that each stay under the device tool's 10-minute limit; run them back to back on the warm machine
# so the build is reused. Logs and JSON go to $OUT.
#   PHASE=1: build, tests/test_sharding.py on the two GPUs, bench_sharded --part small for mamba-2.8b
#   PHASE=2: bench_sharded --part small for mamba2-2.7b, then --part huge (d_model 12288, 96 layers)
#   PHASE=3: on GPU 0 only: the state and serving tests, the 1M-token chunked prefill, continuous batching
# NVLink multicast stays off, as the host requires.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*"; }
built() { python3 -c "import mamba_jax.ops as o; assert o.cuda_available()" 2>/dev/null; }

if [ "${PHASE:-1}" = 1 ] || ! built; then
  stamp "machine"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee "$OUT/machine.log"
  nvidia-smi topo -m >> "$OUT/machine.log" 2>&1; tail -6 "$OUT/machine.log"
  stamp "build"
  OUT=$OUT STEPS="build" tools/gpu_all.sh | tail -3
fi

case "${PHASE:-1}" in
1)
  stamp "tests/test_sharding.py on the GPUs"
  timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -p no:cacheprovider tests/test_sharding.py > "$OUT/pytest-sharding.log" 2>&1
  echo "pytest exit $?"; tail -4 "$OUT/pytest-sharding.log"
  stamp "bench_sharded small mamba-2.8b"
  timeout ${BENCH_TIMEOUT:-270} python3 benchmarks/bench_sharded.py --part small --models mamba-2.8b --meshes ${M1_MESHES:-1,1x2,2x1} --profile \
    --out "$OUT/sharded-small-mamba1.json" 2>&1 | grep -v Warning | tail -20
  ;;
2)
  stamp "bench_sharded small mamba2-2.7b"
  timeout ${BENCH_TIMEOUT:-250} python3 benchmarks/bench_sharded.py --part small --models mamba2-2.7b --profile \
    --out "$OUT/sharded-small-mamba2.json" 2>&1 | grep -v Warning | tail -20
  stamp "bench_sharded huge"
  timeout ${HUGE_TIMEOUT:-300} python3 benchmarks/bench_sharded.py --part huge --profile --reps 2 --new-tokens 32 \
    --out "$OUT/sharded-huge.json" 2>&1 | grep -v Warning | tail -20
  ;;
3)
  export CUDA_VISIBLE_DEVICES=0
  stamp "1M-token chunked prefill (mamba-2.8b, bf16) against unchunked 65536"
  timeout ${LONG_TIMEOUT:-240} python3 benchmarks/bench_long_prefill.py --model mamba-2.8b --tokens 1048576 \
    --baseline-tokens 65536 --out "$OUT/long-prefill.json" 2>&1 | grep -v Warning | tail -12
  stamp "continuous batching vs static batches (mamba-130m)"
  timeout ${SERVE_TIMEOUT:-150} python3 benchmarks/bench_serving.py --model mamba-130m --requests 128 --slots 32 \
    --out "$OUT/serving.json" 2>&1 | grep -v Warning | tail -12
  stamp "state and serving tests on the GPU"
  timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -n 4 -p no:cacheprovider tests/test_state.py tests/test_serving.py \
    > "$OUT/pytest-state.log" 2>&1
  echo "pytest exit $?"; tail -4 "$OUT/pytest-state.log"
  ;;
esac
stamp done
