#!/usr/bin/env bash
# Issue 13's explaining profiles in one GPU call: prefill side by side (mamba-2.8b 2048 / 65536 tokens,
# both sides, peak memory), the decode profiles of PROFILES (model:batch), the prefill profile of
# mamba-2.8b at PREFILL_PROFILE_LEN tokens, and our decode under each VARIANTS environment. Logs and JSON
# go to $OUT/r and come back as $OUT/r.tgz.
#
#   OUT=/tmp/o tools/gpu_profiles.sh
source "$(dirname "$0")/gpu_packed_run.sh"
stamp "build"
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$R/pip.log" 2>&1; echo "pip exit $?" | tee -a "$R/run.log"
if [ -n "${PREFILL_SBS-1}" ]; then
  stamp "prefill side by side"
  timeout "${SBS_TIMEOUT:-240}" make gpu-side-by-side-prefill OUT="$R" > "$R/sbs-prefill.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; tail -6 "$R/sbs-prefill.log" | tee -a "$R/run.log"
fi
for spec in ${PROFILES-mamba-2.8b:64 mamba-130m:64 mamba2-2.7b:1}; do
  IFS=: read -r model batch <<< "$spec"
  stamp "decode profile: $model batch $batch"
  timeout "${PROF_TIMEOUT:-90}" python3 benchmarks/profile_decode.py --model "$model" --batch "$batch" \
    > "$R/profile-$model-b$batch.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; grep -iE "ms/token|idle" "$R/profile-$model-b$batch.log" | head -4 | tee -a "$R/run.log"
done
if [ -n "${PREFILL_PROFILE_LEN-65536}" ]; then
  stamp "prefill profile: mamba-2.8b ${PREFILL_PROFILE_LEN:-65536} tokens"
  timeout "${PROF_TIMEOUT:-90}" python3 benchmarks/profile_decode.py --model mamba-2.8b --prefill \
    --prompt-len "${PREFILL_PROFILE_LEN:-65536}" > "$R/profile-prefill.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; grep -E "prefill|idle" "$R/profile-prefill.log" | head -4 | tee -a "$R/run.log"
fi
for v in ${VARIANTS-MAMBA_JAX_PDL=1 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false}; do
  stamp "decode with $v"
  env "$v" timeout "${GEN_TIMEOUT:-90}" python3 -m mamba_jax.cli bench generate --cases "${VARIANT_CASES:-mamba-2.8b:1,mamba-2.8b:64}" \
    --impls auto --prefill-lens '' --no-plots --no-progress --out "$R/gen-${v//[^A-Za-z0-9_]/_}.json" > "$R/gen-v.log" 2>&1
  echo "exit $?" | tee -a "$R/run.log"; grep "ms/token" "$R/gen-v.log" | tee -a "$R/run.log"
done
stamp "done"
