# Sourced by the GPU scripts whose results come back as one archive (gpu_profiles.sh, gpu_scan.sh):
# logs go to $R = $OUT/r, `stamp` notes elapsed seconds in $R/run.log, and on exit (a timeout's TERM
# included) $R is packed into $OUT/r.tgz, which the device tool returns as one file.
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
