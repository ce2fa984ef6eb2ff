#!/usr/bin/env bash
# A session's two GPU calls, each well under the device tool's 10-minute limit (run B right after A, on
# the still-warm machine, so the build is reused):
#   PHASE=A: build, standalone kernel checks, compute-sanitizer, the whole test suite (both SSD scan
#            kernel versions), the SSD op tests through the chunk-parallel kernel (v3)
#   PHASE=B: the SSD v2/v3/xla timings, generation (Mamba-2 and Mamba-1 decode), op benchmarks, mamba_ssm
#            on the same shapes (carry .anchors: ../shared/anchors/README.md), rows merged side by side
# Logs and JSON go to $OUT.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*"; }

if [ "${PHASE:-A}" = A ]; then
  OUT=$OUT STEPS="build check sanitize test" TEST_K="${TEST_K-not notebook}" TEST_TIMEOUT=${TEST_TIMEOUT:-400} tools/gpu_all.sh
  stamp "ssd op tests through the chunk-parallel kernel (v3)"
  MAMBA_JAX_SSD_SCAN=v3 timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/ops/test_ssd_scan.py \
    > "$OUT/pytest-ssd-v3.log" 2>&1
  tail -3 "$OUT/pytest-ssd-v3.log"
  stamp "compute-sanitizer memcheck of the SSD kernels (small cases, v2 and v3)"
  for v in v2 v3; do
    MAMBA_JAX_SSD_SCAN=$v timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
      -p no:cacheprovider tests/test_cuda_ssd.py -k "$v and (packed or vmap)" > "$OUT/memcheck-ssd-$v.log" 2>&1
    echo "memcheck ssd $v exit $?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/memcheck-ssd-$v.log" | tail -2
  done
else
  stamp "ssd_scan v2 / v3 / xla"
  timeout 120 python3 tests/test_cuda_ssd.py --bench "$OUT/ssd-v2-v3.json" 2>&1 | grep -v Warning | tail -12
  if [ -d .anchors ]; then
    stamp "mamba_ssm: build (background), then ops2 and Mamba-2 decode"
    timeout 200 python3 .anchors/build.py > "$OUT/anchors.log" 2>&1 &
    anchors_pid=$!
  fi
  stamp "generation (decode ms/token, prefill, peak memory)"
  timeout ${GEN_TIMEOUT:-200} python3 -m mamba_jax.cli bench generate ${GEN_ARGS:---cases mamba2-2.7b:1,mamba2-2.7b:16,mamba-2.8b:1 --prefill-lens 2048,65536} \
    --out "$OUT/generate-gpu.json" > "$OUT/genbench.log" 2>&1; echo "genbench exit $?"; tail -12 "$OUT/genbench.log"
  stamp "op benchmarks (${BENCH_OPS:-selective_scan,causal_conv1d,ssd_state_update})"
  timeout ${BENCH_TIMEOUT:-150} python3 benchmarks/bench_ops.py --backend gpu --op "${BENCH_OPS:-selective_scan,causal_conv1d,ssd_state_update}" \
    --no-memory --out "$OUT/ops-gpu.json" > "$OUT/bench.log" 2>&1; echo "bench exit $?"; sed -n '/^op /,$p' "$OUT/bench.log" | head -30
  if [ -n "${anchors_pid:-}" ] && wait $anchors_pid; then
    IFS=, read -ra whats <<< "${ANCHOR_WHAT:-ops2,gen mamba2-2.7b}"  # also: ops, prefill, gen mamba-2.8b
    for what in "${whats[@]}"; do
      timeout 150 python3 .anchors/bench_mamba_ssm.py $what >> "$OUT/mamba_ssm.jsonl" 2>> "$OUT/anchors.log"
    done
    cat "$OUT/mamba_ssm.jsonl"
    python3 benchmarks/mamba_ssm_rows.py "$OUT/mamba_ssm.jsonl" --merge "$OUT/ops-gpu.json" "$OUT/generate-gpu.json" \
      --out "$OUT/side-by-side.json" > /dev/null 2>&1 || echo "merge failed"
  fi
fi
stamp done
