#!/usr/bin/env bash
# The selective scan on the GPU host in one call: build (module + checker), the checker's float64
# comparisons of every scan kernel variant, the scan's GPU tests (op, CuPy real size, model), memcheck and
# racecheck over small test cases, the kernels' own times (checker, CUDA events), and bench_ops per-call
# times of the op under each MAMBA_JAX_SCAN choice. Logs come back as $OUT/r.tgz.
#
#   OUT=/tmp/o tools/gpu_scan.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
R="$OUT/r"
mkdir -p "$R"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*" | tee -a "$R/run.log"; }
pack() { tar czf "$OUT/r.tgz" -C "$OUT" r && rm -rf "$R"; }
trap pack EXIT
trap "exit 143" TERM
stamp "build, checker, kernel times"
OUT="$R/g" STEPS="build check kernels" tools/gpu_all.sh 2>&1 | tail -12 | tee -a "$R/run.log"
grep -E "^  scan.*FAIL" "$R/g/check.log" | head -20 | tee -a "$R/run.log"
grep -c "^  scan.*ok" "$R/g/check.log" | sed 's/^/scan comparisons ok: /' | tee -a "$R/run.log"
grep -E "kernel selective_scan" "$R/g/kernels.log" | tee -a "$R/run.log"
stamp "GPU tests: ${SCAN_TESTS:=tests/ops/test_selective_scan.py tests/test_cuda.py tests/test_model.py}"
timeout "${TEST_TIMEOUT:-180}" python3 -m pytest -q -n 8 -p no:cacheprovider $SCAN_TESTS -k "${SCAN_TEST_K:-not hub}" \
  > "$R/tests.log" 2>&1
echo "pytest exit $?" | tee -a "$R/run.log"; tail -3 "$R/tests.log" | tee -a "$R/run.log"
grep -E "^(FAILED|ERROR)" "$R/tests.log" | head -20 | tee -a "$R/run.log"
for tool in memcheck racecheck; do
  stamp "compute-sanitizer $tool: scan test cases"
  timeout "${SAN_TIMEOUT:-100}" compute-sanitizer --tool $tool --error-exitcode 9 python3 -m pytest -q -x -p no:cacheprovider \
    tests/ops/test_selective_scan.py -k "${SAN_K:-ffi and matches_oracle and (L113 or L2048-D64 or L2048-D40 or D36)}" \
    > "$R/$tool.log" 2>&1
  echo "$tool exit $?" | tee -a "$R/run.log"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$R/$tool.log" | tail -2 | tee -a "$R/run.log"
done
for v in ${SCAN_CHOICES-default lane tp:2:8}; do
  impls=ffi; [ "$v" = default ] && impls=ffi,xla
  stamp "bench_ops selective_scan, MAMBA_JAX_SCAN=$v"
  env MAMBA_JAX_SCAN="${v/default/}" timeout "${BENCH_TIMEOUT:-90}" python3 benchmarks/bench_ops.py --backend gpu \
    --op selective_scan --impls $impls --no-memory --chain-outputs last --out "$R/ops-${v//:/_}.json" > "$R/ops-${v//:/_}.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; sed -n '/^op /,$p' "$R/ops-${v//:/_}.log" | head -12 | tee -a "$R/run.log"
done
stamp "done"
