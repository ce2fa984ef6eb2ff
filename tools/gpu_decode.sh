#!/usr/bin/env bash
# The decode path on the GPU host in one call (issue 13): build (the module, the checker and, with .anchors
# carried, mamba_ssm in the background), the checker's float64 comparisons, the decode ops' GPU tests and
# compute-sanitizer over their small cases, then decode ms/token side by side with mamba_ssm
# (benchmarks/bench_side_by_side.py --what gen), and our decode again under each VARIANTS environment
# (e.g. "MAMBA_JAX_STEP_CHANNELS=32"), and the decode profiles of PROFILES (model:batch). Everything is
# appended to $OUT/decode.log; JSON rows and the profiles beside it. TESTS, SAN_RUNS ("file|-k expression"
# per line) and CASES (empty: no side by side) pick what runs.
#
#   OUT=/tmp/o tools/gpu_decode.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
LOG="$OUT/decode.log"
CASES=${CASES-mamba-2.8b:1,mamba-2.8b:16,mamba-2.8b:64,mamba-130m:1,mamba-130m:64,mamba2-2.7b:1,mamba2-2.7b:16}
TESTS=${TESTS:-tests/ops/test_add_rms_norm.py tests/ops/test_mamba1_step.py tests/ops/test_mamba2_step.py tests/test_generate.py tests/test_cuda.py::test_add_rms_norm_real_size tests/test_cuda_ssd.py::test_mamba2_step_real_size}
SAN_K=${SAN_K:-ffi and matches_oracle and (F7- or F2560- or 3x4097)}
SAN_STEP_K=${SAN_STEP_K:-ffi and matches_oracle and (B1- or B2- or B3-)}  # mamba1_step's 1-, 2- and 4-row dt_ssm
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0))s] $*" | tee -a "$LOG"; }

stamp "build"
[ -d .anchors ] && (python3 .anchors/build.py > /tmp/anchors-build.log 2>&1; echo "anchors build exit $?" >> /tmp/anchors-build.log) &
OUT=/tmp/gpu-build STEPS=build tools/gpu_all.sh 2>&1 | tail -2 | tee -a "$LOG"

stamp "checker: float64 comparisons of every kernel"
/tmp/cuda_kernel_check check > /tmp/check.log 2>&1; echo "check exit $?" | tee -a "$LOG"
grep -E "add_rms_norm|FAIL|PASSED" /tmp/check.log | tail -12 | tee -a "$LOG"

stamp "GPU tests: $TESTS"
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -p no:cacheprovider $TESTS -k "${TEST_K:-not hub}" > /tmp/tests.log 2>&1
echo "pytest exit $?" | tee -a "$LOG"; tail -4 /tmp/tests.log | tee -a "$LOG"
grep -E "^(FAILED|ERROR)" /tmp/tests.log | head -20 | tee -a "$LOG"

# compute-sanitizer runs: one "test file|-k expression" per line of SAN_RUNS
SAN_RUNS=${SAN_RUNS:-"tests/ops/test_add_rms_norm.py|$SAN_K
tests/ops/test_mamba1_step.py|$SAN_STEP_K
tests/ops/test_mamba2_step.py|ffi and (matches_oracle or slot_pool) and (H3- or H4- or H6- or H1-)"}
for tool in memcheck racecheck; do
  i=0
  while IFS='|' read -r file kexpr; do
    [ -z "$file" ] && continue
    i=$((i + 1))
    stamp "compute-sanitizer $tool: $file -k '$kexpr'"
    timeout "${SAN_TIMEOUT:-120}" compute-sanitizer --tool $tool --error-exitcode 9 python3 -m pytest -q -x \
      -p no:cacheprovider "$file" -k "$kexpr" > /tmp/$tool-$i.log 2>&1
    echo "$tool exit $?" | tee -a "$LOG"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" /tmp/$tool-$i.log | tail -2 | tee -a "$LOG"
  done <<< "$SAN_RUNS"
done

if [ -n "$CASES" ]; then
stamp "decode side by side: $CASES"
wait  # the anchors build
cat /tmp/anchors-build.log 2>/dev/null | tail -2 | tee -a "$LOG"
timeout "${SBS_TIMEOUT:-300}" python3 benchmarks/bench_side_by_side.py --ops '' --what gen --gen-cases "$CASES" \
  --gen-models "${GEN_MODELS:-mamba-130m,mamba-2.8b,mamba2-2.7b}" --prefill-lens '' --timeout 250 --work /tmp/sbs \
  --out "$OUT/side-by-side-gen.json" > /tmp/sbs.log 2>&1
echo "side by side exit $?" | tee -a "$LOG"; tail -12 /tmp/sbs.log | tee -a "$LOG"
else
  wait  # the anchors build
fi

for v in ${VARIANTS:-}; do
  stamp "decode with $v"
  env "$v" timeout "${GEN_TIMEOUT:-120}" python3 -m mamba_jax.cli bench generate --cases "${VARIANT_CASES:-mamba-2.8b:1,mamba-130m:1}" \
    --impls auto --prefill-lens '' --no-plots --no-progress --out "$OUT/gen-${v//[^A-Za-z0-9_]/_}.json" > /tmp/gen-v.log 2>&1
  echo "exit $?" | tee -a "$LOG"; grep "ms/token" /tmp/gen-v.log | tee -a "$LOG"
done
for spec in ${PROFILES-mamba-2.8b:1 mamba-130m:1}; do
  IFS=: read -r model batch <<< "$spec"
  stamp "decode profile: $model batch $batch (kernels per step)"
  timeout "${PROF_TIMEOUT:-100}" python3 benchmarks/profile_decode.py --model "$model" --batch "$batch" --impl auto \
    > "$OUT/profile-$model-b$batch.log" 2>&1
  echo "exit $?" | tee -a "$LOG"; grep -iE "ms/token|idle|per step" "$OUT/profile-$model-b$batch.log" | head -6 | tee -a "$LOG"
done
for f in /tmp/check.log /tmp/tests.log /tmp/sbs.log /tmp/memcheck-*.log /tmp/racecheck-*.log; do
  [ -f "$f" ] && { echo "===== $f"; tail -60 "$f"; } >> "$OUT/tails.log"
done
stamp "done"
