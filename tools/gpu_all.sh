#!/usr/bin/env bash
# Everything issue 3 checks on the GPU host, in one call, from the repository root:
#   build (pip install -e . with the CUDA module for one architecture) and the standalone checker;
#   the checker's small cases of every kernel against a float64 host reference, then the same run
#   under compute-sanitizer memcheck and racecheck (in the background, while the tests run);
#   the test suite with the CUDA kernels (tests/, the model/loading tests excluded unless TEST_K="");
#   the selective-scan lane-layout sweep; the op benchmarks (benchmarks/bench_ops.py --backend gpu).
# Logs and the benchmark JSON go to $OUT (default ./gpu-out). Steps can be picked with STEPS.
#
#   make gpu-all                      # or: OUT=/tmp/x STEPS="build check test" tools/gpu_all.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
STEPS=${STEPS:-build check sanitize test sweep bench}  # also: genbench anchors kernels ncu ncu1 opprof chain decodeprof ncuscan pdlops
ARCH=${CUDA_ARCH:-90}
TEST_TIMEOUT=${TEST_TIMEOUT:-210}
TEST_K=${TEST_K-not model and not loading}  # set TEST_K="" for everything (":-" would treat "" as unset)
TEST_PATHS=${TEST_PATHS:-tests}
SANITIZERS=${SANITIZERS:-memcheck racecheck}
SAN_TIMEOUT=${SAN_TIMEOUT:-240}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
CHECKER=/tmp/cuda_kernel_check
t_start=$(date +%s)
stamp() { echo "[$(($(date +%s) - t_start))s] $*"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }
rc=0

if has build; then
  stamp "build: pip install -e . (CUDA arch $ARCH) and the checker, in parallel"
  nvcc -O3 -std=c++17 --use_fast_math -lineinfo -gencode "arch=compute_$ARCH,code=sm_$ARCH" -I ffi \
    tools/cuda_kernel_check.cu -o "$CHECKER" > /tmp/checker-build.log 2>&1 &
  nvcc_pid=$!
  if ! python3 -m pip install --no-build-isolation --no-deps -e . \
      "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH" > "$OUT/build.log" 2>&1; then
    echo "BUILD FAILED"; tail -60 "$OUT/build.log"; exit 1
  fi
  if ! wait $nvcc_pid; then
    cat /tmp/checker-build.log >> "$OUT/build.log"; echo "CHECKER BUILD FAILED"; tail -30 /tmp/checker-build.log; exit 1
  fi
  python3 -c "import mamba_jax.ops as o; print('CUDA kernels registered:', o.cuda_available())" | tee -a "$OUT/build.log"
fi

if has check; then
  stamp "standalone kernel checks"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv > "$OUT/check.log" 2>&1
  "$CHECKER" check >> "$OUT/check.log" 2>&1 || rc=1
  grep -E "FAIL|PASSED|FAILED" "$OUT/check.log" | head -20
fi

sanitizing=
if has sanitize; then
  stamp "compute-sanitizer memcheck + racecheck of the checker (background)"
  for tool in $SANITIZERS; do
    extra=; [ "$tool" = racecheck ] && extra="--racecheck-report all"
    ( timeout "$SAN_TIMEOUT" compute-sanitizer --tool "$tool" $extra --error-exitcode 3 "$CHECKER" check \
        > "$OUT/$tool.log" 2>&1
      echo "$tool exit code $?" >> "$OUT/$tool.log" ) &
  done
  sanitizing=1
fi

if has test; then
  stamp "test suite with the CUDA kernels (pytest -n 12, timeout ${TEST_TIMEOUT}s)"
  timeout "$TEST_TIMEOUT" python3 -m pytest -v -n 12 --maxfail=25 --tb=short -p no:cacheprovider -rs $TEST_PATHS \
    -k "$TEST_K" > "$OUT/pytest.log" 2>&1
  code=$?
  echo "pytest exit code $code" >> "$OUT/pytest.log"
  [ $code -eq 0 ] || rc=1
  grep -cE " PASSED" "$OUT/pytest.log" | sed 's/^/tests passed: /'
  grep -E " FAILED| ERROR|passed|failed" "$OUT/pytest.log" | tail -30
fi

if [ -n "$sanitizing" ]; then
  wait
  stamp "sanitizers done"
  for f in $SANITIZERS; do
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|exit code|PASSED|FAILED" "$OUT/$f.log" | tail -4
  done
fi

if has sweep; then
  stamp "selective-scan lane layouts (S states x G lanes per channel)"
  "$CHECKER" kernels | tee -a "$OUT/check.log"
  [ -n "${NO_SWEEP:-}" ] || "$CHECKER" sweep | tee -a "$OUT/check.log"
fi

if has kernels; then
  stamp "kernel-only times (checker, CUDA events)"
  "$CHECKER" kernels | tee "$OUT/kernels.log"
fi

if has ncu; then
  stamp "Nsight Compute on one launch of each hot kernel (clocks left alone)"
  for k in ${NCU_KERNELS:-selective_scan_kernel causal_conv1d_vec_kernel selective_state_update_rows_kernel}; do
    timeout 120 ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
      --section MemoryWorkloadAnalysis -k "regex:$k" --launch-skip 3 --launch-count 1 "$CHECKER" kernels \
      > "$OUT/ncu-$k.txt" 2>&1
    grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Theoretical Occupancy|Stall" "$OUT/ncu-$k.txt" | head -20 | sed "s/^/[$k] /"
  done
fi

if has ncu1; then
  stamp "Nsight Compute on the checker's profile launches (state update tile / generic, rmw ceiling, conv1d, conv update)"
  timeout 240 ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis "$CHECKER" profile > "$OUT/ncu-profile.txt" 2>&1
  echo "ncu exit $?"
  grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|Memory Throughput|L2 Cache Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|No Eligible" \
    "$OUT/ncu-profile.txt" | head -120
fi

if has ncuscan; then  # ours and mamba_ssm's selective scan on the same shapes (needs .anchors built)
  stamp "Nsight Compute: selective scan, ours and mamba_ssm's, at ${NCU_SCAN_SHAPES:=1,2048,5120 1,2048,1536}"
  sec="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats"
  timeout 200 ncu --clock-control none $sec -k "regex:selective_scan_(tp_)?kernel|scan_carry" \
    python3 benchmarks/ncu_scan.py --side ours --shapes $NCU_SCAN_SHAPES > "$OUT/ncu-scan-ours.txt" 2>&1
  echo "ncu ours exit $?"
  timeout 200 ncu --clock-control none $sec -k "regex:selective_scan_fwd" \
    python3 benchmarks/ncu_scan.py --side theirs --shapes $NCU_SCAN_SHAPES > "$OUT/ncu-scan-theirs.txt" 2>&1
  echo "ncu theirs exit $?"
  for f in ours theirs; do
    grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Block Size|Grid Size" \
      "$OUT/ncu-scan-$f.txt" | head -80 | sed "s/^/[$f] /"
  done
fi

if has pdlops; then  # the ops whose launches are programmatic dependents, with PDL off and on (MAMBA_JAX_PDL)
  for v in 0 1; do
    stamp "op benchmark ${PDL_OPS:=mamba1_step,mamba2_step}, MAMBA_JAX_PDL=$v"
    MAMBA_JAX_PDL=$v timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_ops.py --backend gpu --op "$PDL_OPS" \
      --impls ffi --no-memory --out "$OUT/ops-pdl$v.json" > "$OUT/ops-pdl$v.log" 2>&1
    echo "exit $?"; sed -n '/^op /,$p' "$OUT/ops-pdl$v.log" | head -30
  done
fi

if has opprof; then
  # Each XLA_FLAGS variant in its own process: the default command buffers, custom calls left out of
  # them, and none at all (does a donated loop re-record its custom calls every execution?).
  for flags in "" "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN" "--xla_gpu_enable_command_buffer="; do
    tag=$(echo "$flags" | md5sum | cut -c1-6)
    stamp "op programs under the profiler, XLA_FLAGS='$flags' (benchmarks/profile_ops.py)"
    XLA_FLAGS="$flags" timeout "${PROF_TIMEOUT:-150}" python3 benchmarks/profile_ops.py \
      --op "${PROF_OPS:-selective_state_update,causal_conv1d_update}" --batches "${PROF_BATCHES:-1,64}" \
      --out "$OUT/profile-ops-$tag.json" > "$OUT/profile-ops-$tag.log" 2>&1
    echo "exit $?"; grep -E "^==|module" "$OUT/profile-ops-$tag.log" | head -16
  done
fi

if has chain; then
  # Where a short chain of prefill-op calls costs more than its kernels (NOTES-cuda.md, session 7): the op
  # benchmark's chains (harness.CHAIN_K) returning every call's output or only the last one's, and the 12-call
  # program under the profiler with its host events; CHAIN_FLAGS lists XLA_FLAGS variants ("off" = none).
  for flags in ${CHAIN_FLAGS:-default}; do
    xf=; [ "$flags" = off ] && xf="--xla_gpu_enable_command_buffer="
    for outs in ${CHAIN_OUTPUTS:-all last}; do
      tag="$flags-$outs"
      stamp "chained prefill ops, XLA_FLAGS='$xf', chain outputs $outs"
      XLA_FLAGS="$xf" timeout "${PROF_TIMEOUT:-150}" python3 benchmarks/bench_ops.py --backend gpu \
        --op "${CHAIN_OPS:-selective_scan,causal_conv1d}" --impls "${CHAIN_IMPLS:-ffi,xla}" --no-memory \
        --chain-outputs "$outs" --out "$OUT/chain-ops-$tag.json" > "$OUT/chain-ops-$tag.log" 2>&1
      echo "exit $?"; sed -n '/^op /,$p' "$OUT/chain-ops-$tag.log" | head -20
      XLA_FLAGS="$xf" timeout "${PROF_TIMEOUT:-150}" python3 benchmarks/profile_ops.py \
        --op "${CHAIN_OPS:-selective_scan,causal_conv1d}" --impls "${CHAIN_IMPLS:-ffi,xla}" --calls 12 --reps 10 \
        --chain-outputs "$outs" --out "$OUT/chain-profile-$tag.json" > "$OUT/chain-profile-$tag.log" 2>&1
      echo "exit $?"; grep -E "^==|module|us/call  x" "$OUT/chain-profile-$tag.log" | head -40
    done
  done
fi

if has decodeprof; then
  stamp "decode profile: kernels per step, GPU busy vs wall, XLA command-buffer variants"
  for spec in ${DECODE_PROF:-"mamba-130m:1:auto:" "mamba-130m:1:xla:" "mamba-130m:1:auto:--xla_gpu_enable_command_buffer=" "mamba-130m:1:auto:--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1" "mamba-2.8b:1:auto:"}; do
    IFS=: read -r model batch impl flags <<< "$spec"
    tag="$model-b$batch-$impl-$(echo "$flags" | md5sum | cut -c1-6)"
    echo "== $model batch $batch impl $impl XLA_FLAGS='$flags'" | tee -a "$OUT/decodeprof.log"
    XLA_FLAGS="$flags" timeout "${PROF_TIMEOUT:-150}" python3 benchmarks/profile_decode.py --model "$model" --batch "$batch" \
      --impl "$impl" --dump-hlo "/tmp/hlo-$tag" > "/tmp/prof-$tag.log" 2>&1
    echo "exit $?" >> "/tmp/prof-$tag.log"
    cat "/tmp/prof-$tag.log" >> "$OUT/decodeprof.log"
    grep -iE "ms/token|per step|idle|command_buffer|custom-call|fusion|exit" "/tmp/prof-$tag.log" | head -14
    [ -n "${KEEP_HLO:-}" ] && [ -f "/tmp/hlo-$tag/decode.hlo.txt" ] && [ ! -f "$OUT/decode-$model.hlo.txt" ] && \
      cp "/tmp/hlo-$tag/decode.hlo.txt" "$OUT/decode-$model.hlo.txt"
  done
fi

if has bench; then
  stamp "benchmarks"
  timeout "${BENCH_TIMEOUT:-480}" python3 benchmarks/bench_ops.py --backend gpu ${BENCH_ARGS:-} --out "$OUT/ops-gpu.json" \
    > "$OUT/bench.log" 2>&1 || rc=1
  sed -n '/^op /,$p' "$OUT/bench.log"
fi
if has genbench; then
  stamp "generation benchmark (decode ms/token, prefill, peak memory; ratio to the pure-JAX loop)"
  timeout "${GEN_TIMEOUT:-240}" python3 -m mamba_jax.cli bench ${GEN_ARGS:-} --out "$OUT/generate-gpu.json" \
    > "$OUT/genbench.log" 2>&1 || rc=1
  tail -25 "$OUT/genbench.log"
fi

if has anchors; then  # mamba_ssm on the same shapes, rows beside ours (carry .anchors: ../shared/anchors/README.md)
  stamp "mamba_ssm anchors"
  if [ -d .anchors ]; then
    timeout "${ANCHOR_TIMEOUT:-300}" python3 .anchors/build.py > "$OUT/anchors.log" 2>&1 || rc=1
    for what in ${ANCHOR_WHAT:-ops ops2}; do
      timeout "${ANCHOR_TIMEOUT:-300}" python3 .anchors/bench_mamba_ssm.py $what >> "$OUT/mamba_ssm.jsonl" 2>> "$OUT/anchors.log" || rc=1
    done
    python3 benchmarks/mamba_ssm_rows.py "$OUT/mamba_ssm.jsonl" --merge $(ls "$OUT"/ops-gpu.json "$OUT"/generate-gpu.json 2>/dev/null) \
      --out "$OUT/side-by-side.json" || rc=1
  else
    echo "no .anchors folder: cp -r ../shared/anchors .anchors and carry it"
  fi
fi
stamp "done (exit $rc)"
exit $rc
