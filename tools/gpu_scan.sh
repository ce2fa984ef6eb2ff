#!/usr/bin/env bash
# The selective scan on the GPU host in one call, most important first: build (module, checker and, with
# .anchors carried, mamba_ssm in the background), the checker's float64 comparisons of every scan kernel
# variant and the kernels' own times, the scan's GPU tests, the Mamba-1 op rows side by side with mamba_ssm,
# our scan under other MAMBA_JAX_SCAN choices, prefill side by side (mamba-2.8b 2048 / 65536), our prefill
# with MAMBA_JAX_SCAN=tp, memcheck and racecheck over small cases, and Nsight Compute of our scan kernels.
# Logs come back as $OUT/r.tgz.
#
#   OUT=/tmp/o tools/gpu_scan.sh
source "$(dirname "$0")/gpu_packed_run.sh"
[ -d .anchors ] && (python3 .anchors/build.py > "$R/anchors-build.log" 2>&1) &
anchors_pid=$!
stamp "build, checker, kernel times"
OUT="$R/g" STEPS="build check kernels" tools/gpu_all.sh 2>&1 | grep -vE "^kernel (linear|causal|selective_state|ssd|add_rms|mamba)" | tail -6 | tee -a "$R/run.log"
grep -E "^  scan.*FAIL" "$R/g/check.log" | head -20 | tee -a "$R/run.log"
grep -c "^  scan.*ok" "$R/g/check.log" | sed 's/^/scan comparisons ok: /' | tee -a "$R/run.log"
grep -E "FAIL|PASSED|FAILED" "$R/g/check.log" | tail -3 | tee -a "$R/run.log"
grep -E "kernel selective_scan" "$R/g/kernels.log" | tee -a "$R/run.log"
stamp "GPU tests: ${SCAN_TESTS:=tests/ops/test_selective_scan.py tests/test_cuda.py}"
timeout "${TEST_TIMEOUT:-120}" python3 -m pytest -q -n 8 -p no:cacheprovider $SCAN_TESTS -k "${SCAN_TEST_K:-ffi or scan}" \
  > "$R/tests.log" 2>&1
echo "pytest exit $?" | tee -a "$R/run.log"; tail -2 "$R/tests.log" | tee -a "$R/run.log"
grep -E "^(FAILED|ERROR)" "$R/tests.log" | head -20 | tee -a "$R/run.log"
if [ -n "${SBS-1}" ]; then
  wait $anchors_pid 2>/dev/null; tail -2 "$R/anchors-build.log" | tee -a "$R/run.log"
  stamp "op rows side by side"
  timeout 200 python3 benchmarks/bench_side_by_side.py --ops "${SBS_OPS:-selective_scan,causal_conv1d,selective_state_update,causal_conv1d_update}" \
    --what ops --gen-cases '' --prefill-lens '' --timeout 150 --work "$R/sbs" --out "$R/side-by-side-ops.json" > "$R/sbs.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; tail -14 "$R/sbs.log" | tee -a "$R/run.log"
fi
for v in ${SCAN_CHOICES-lane tp tp:8:8}; do
  stamp "bench_ops selective_scan, MAMBA_JAX_SCAN=$v"
  env MAMBA_JAX_SCAN="$v" timeout 60 python3 benchmarks/bench_ops.py --backend gpu --op selective_scan --impls ffi \
    --no-memory --chain-outputs last --out "$R/ops-${v//:/_}.json" > "$R/ops-${v//:/_}.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; grep -E "^selective_scan" "$R/ops-${v//:/_}.log" | tee -a "$R/run.log"
done
if [ -n "${PREFILL-1}" ]; then
  stamp "prefill side by side"
  timeout 150 make gpu-side-by-side-prefill OUT="$R" > "$R/sbs-prefill.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; tail -5 "$R/sbs-prefill.log" | tee -a "$R/run.log"
  stamp "our prefill, MAMBA_JAX_SCAN=tp"
  MAMBA_JAX_SCAN=tp timeout 90 python3 -m mamba_jax.cli bench generate --cases mamba-2.8b:1 --impls auto --prefill-lens 2048,65536 \
    --no-plots --no-progress --out "$R/prefill-tp.json" > "$R/prefill-tp.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; grep -E "prefill" "$R/prefill-tp.log" | head -4 | tee -a "$R/run.log"
fi
for tool in ${SANITIZERS-memcheck racecheck}; do
  stamp "compute-sanitizer $tool: scan test cases"
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 9 python3 -m pytest -q -x -p no:cacheprovider \
    tests/ops/test_selective_scan.py -k "${SAN_K:-ffi and matches_oracle and (L113 or L2048-D64 or L2048-D40 or D36)}" \
    > "$R/$tool.log" 2>&1
  echo "$tool exit $?" | tee -a "$R/run.log"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$R/$tool.log" | tail -2 | tee -a "$R/run.log"
done
if [ -n "${NCU-1}" ]; then
stamp "Nsight Compute: our scan at ${NCU_SCAN_SHAPES:=1,2048,1536 1,2048,5120}"
MAMBA_JAX_SCAN=${NCU_SCAN_CHOICE:-tp} timeout 90 ncu --clock-control none --section SpeedOfLight --section Occupancy \
  --section LaunchStats --section WarpStateStats --section SchedulerStats -k "regex:selective_scan_(tp_)?kernel|scan_carry" \
  python3 benchmarks/ncu_scan.py --side ours --shapes $NCU_SCAN_SHAPES > "$R/ncu-scan-ours.txt" 2>&1
echo "ncu exit $?" | tee -a "$R/run.log"
grep -E "Duration|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|No Eligible" "$R/ncu-scan-ours.txt" | head -16 | tee -a "$R/run.log"
fi
stamp "done"
