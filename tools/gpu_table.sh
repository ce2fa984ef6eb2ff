#!/usr/bin/env bash
# Issue 13's side-by-side table re-measured in one GPU call (needs .anchors carried): build (mamba_ssm in
# the background), the CUDA tests (test_cuda.py and the ops' FFI tests), the op rows side by side twice
# (the per-call overhead's run-to-run spread), the decode rows (GEN_CASES), prefill of mamba-2.8b at 2048
# and 65536 tokens side by side, and our decode under each VARIANTS environment. Steps run most wanted
# first; PARTS picks them (default: all). Logs and JSON come back as $OUT/r.tgz.
#
#   OUT=/tmp/o PARTS="tests ops prefill" tools/gpu_table.sh
source "$(dirname "$0")/gpu_packed_run.sh"
PARTS=${PARTS:-tests ops prefill gen variants}
has() { [[ " $PARTS " == *" $1 "* ]]; }
stamp "build"
[ -d .anchors ] && (python3 .anchors/build.py > "$R/anchors-build.log" 2>&1) &
anchors_pid=$!
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$R/pip.log" 2>&1; echo "pip exit $?" | tee -a "$R/run.log"
if has tests; then
  stamp "GPU tests: ${TESTS:=tests/test_cuda.py tests/ops}"
  timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -n 8 -p no:cacheprovider $TESTS -k "${TEST_K:-ffi or cuda or kernel}" \
    > "$R/tests.log" 2>&1
  echo "pytest exit $?" | tee -a "$R/run.log"; tail -2 "$R/tests.log" | tee -a "$R/run.log"
  grep -E "^(FAILED|ERROR)" "$R/tests.log" | head -20 | tee -a "$R/run.log"
fi
wait $anchors_pid 2>/dev/null; tail -2 "$R/anchors-build.log" 2>/dev/null | tee -a "$R/run.log"
OPS=selective_scan,causal_conv1d,selective_state_update,causal_conv1d_update
for i in 1 2; do
  has ops || break
  stamp "op rows side by side, run $i"
  timeout 200 python3 benchmarks/bench_side_by_side.py --ops $OPS --what ops --gen-cases '' --prefill-lens '' \
    --timeout 150 --work "$R/sbs-ops$i" --out "$R/side-by-side-ops$i.json" > "$R/sbs-ops$i.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; tail -14 "$R/sbs-ops$i.log" | tee -a "$R/run.log"
done
if has prefill; then
  stamp "prefill side by side"
  timeout 240 make gpu-side-by-side-prefill OUT="$R" > "$R/sbs-prefill.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; tail -5 "$R/sbs-prefill.log" | tee -a "$R/run.log"
fi
if has gen; then
  stamp "decode rows side by side: ${GEN_CASES:=mamba-2.8b:1,mamba-2.8b:16,mamba-2.8b:64,mamba-130m:1,mamba-130m:64,mamba2-2.7b:1,mamba2-2.7b:16}"
  timeout 300 python3 benchmarks/bench_side_by_side.py --ops '' --gen-cases "$GEN_CASES" --prefill-lens '' --what gen \
    --gen-models mamba-130m,mamba-2.8b,mamba2-2.7b --timeout 240 --work "$R/sbs-gen" --out "$R/side-by-side-gen.json" \
    > "$R/sbs-gen.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; tail -12 "$R/sbs-gen.log" | tee -a "$R/run.log"
fi
for v in ${VARIANTS-}; do
  has variants || break
  for e in "MAMBA_JAX_NONE=1" "$v"; do  # the baseline first: env needs an assignment, and this one is read by nothing
    stamp "decode with $e"
    env "$e" timeout "${GEN_TIMEOUT:-90}" python3 -m mamba_jax.cli bench generate --cases "${VARIANT_CASES:-mamba-2.8b:64,mamba-130m:64}" \
      --impls auto --prefill-lens '' --no-plots --no-progress --out "$R/gen-${e//[^A-Za-z0-9_]/_}.json" > "$R/gen-${e//[^A-Za-z0-9_]/_}.log" 2>&1
    echo "exit $?" | tee -a "$R/run.log"; grep "ms/token" "$R/gen-${e//[^A-Za-z0-9_]/_}.log" | tee -a "$R/run.log"
  done
done
stamp "done"
