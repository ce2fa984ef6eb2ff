#!/usr/bin/env bash
# Issue 13's fused Mamba-1 decode step (ops.mamba1_step, ffi/mamba1_step/) on the GPU host, in one call:
# build, its tests (float64 oracle, pools, vmap, grads, fused == unfused model step), compute-sanitizer
# memcheck and racecheck over its small cases, its op benchmark against the unfused step, Nsight Compute on
# its three kernels (a mamba-2.8b layer), profiles of the fused decode step, then decode ms/token with
# MAMBA_JAX_FUSED_STEP=0 and =1 in the same call (mamba-2.8b and mamba-130m, batches 1..16). Logs and JSON
# go to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*"; }

if ! python3 -c "import mamba_jax.ops as o; assert o.cuda_available('mamba1_step')" 2>/dev/null; then
  stamp "build"
  OUT=$OUT STEPS="build" tools/gpu_all.sh | tail -2
fi
stamp "tests/ops/test_mamba1_step.py"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/ops/test_mamba1_step.py > "$OUT/pytest-mamba1-step.log" 2>&1
echo "pytest exit $?"; tail -3 "$OUT/pytest-mamba1-step.log"
for tool in memcheck racecheck; do
  stamp "compute-sanitizer $tool"
  timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 python3 -m pytest -q -x -p no:cacheprovider \
    tests/ops/test_mamba1_step.py -k "ffi and (B3 or slot_pool)" > "$OUT/$tool-mamba1-step.log" 2>&1
  echo "$tool exit $?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$OUT/$tool-mamba1-step.log" | tail -2
done
stamp "mamba1_step: ffi (fused) vs xla (unfused) per step in a donated loop (bench_ops)"
timeout 150 python3 benchmarks/bench_ops.py --backend gpu --op mamba1_step --no-memory \
  --out "$OUT/ops-mamba1-step.json" > "$OUT/ops-mamba1-step.log" 2>&1
echo "exit $?"; sed -n '/^op /,$p' "$OUT/ops-mamba1-step.log"
if command -v ncu > /dev/null; then
  for b in ${NCU_BATCHES:-1}; do
    stamp "ncu on the three kernels, a mamba-2.8b layer, batch $b"
    B=$b timeout 200 ncu --clock-control none -k regex:mamba1_step -c 6 --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section MemoryWorkloadAnalysis --section WarpStateStats \
      python3 -c "
import os, jax, jax.numpy as jnp
from mamba_jax import ops
b, e, n, r, w = int(os.environ['B']), 5120, 16, 160, 4
k = iter(jax.random.split(jax.random.key(0), 12))
a = lambda s, sc=1.0: (jax.random.normal(next(k), s) * sc).astype(jnp.bfloat16)
f = lambda s, sc=1.0: jax.random.normal(next(k), s) * sc
x = dict(xz=a((b, 2 * e)), conv_state=a((b, e, w - 1)), ssm_state=f((b, e, n)), conv_weight=f((e, w), 0.5),
         conv_bias=f((e,), 0.5), x_proj=a((e, r + 2 * n), e ** -0.5), dt_proj=a((r, e), r ** -0.5),
         dt_bias=f((e,), 0.1) - 4.0, A=-jnp.exp(f((e, n), 0.5)), D=f((e,)))
step = jax.jit(lambda kw: ops.mamba1_step(**kw, implementation='ffi'))
for _ in range(2): jax.block_until_ready(step(x))
" > "$OUT/ncu-mamba1-step-b$b.txt" 2>&1
    echo "exit $?"; grep -E "mamba1_step_|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued" \
      "$OUT/ncu-mamba1-step-b$b.txt" | head -24
  done
fi
for b in ${PROFILE_BATCHES-1 8}; do  # PROFILE_BATCHES="" for none
  stamp "profile of the fused decode step, mamba-2.8b batch $b"
  MAMBA_JAX_FUSED_STEP=1 timeout 120 python3 benchmarks/profile_decode.py --model mamba-2.8b --batch $b \
    > "$OUT/profile-fused-b$b.log" 2>&1
  echo "exit $?"; grep -iE "mamba1_step|per step|busy|idle" "$OUT/profile-fused-b$b.log" | head -12
done
for flag in 0 1; do
  stamp "decode with MAMBA_JAX_FUSED_STEP=$flag"
  MAMBA_JAX_FUSED_STEP=$flag timeout ${GEN_TIMEOUT:-200} python3 -m mamba_jax.cli bench generate \
    --cases ${CASES:-mamba-2.8b:1,mamba-2.8b:4,mamba-2.8b:8,mamba-2.8b:16,mamba-130m:1,mamba-130m:8} --impls auto --prefill-lens '' \
    --out "$OUT/generate-fused$flag.json" > "$OUT/genbench-fused$flag.log" 2>&1
  echo "exit $?"; tail -8 "$OUT/genbench-fused$flag.log"
done
stamp done
