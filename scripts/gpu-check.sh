#!/usr/bin/env bash
# The GPU check, at most 8 minutes on a machine with an NVIDIA GPU (make gpu-check; docs/gpu.md):
#
#   1. nvidia-smi, and spa built against a CUDA libtorch (make build LIBTORCH=...), or a binary
#      built elsewhere against the same libtorch (GPU_CHECK_SPA) where this machine has no Go;
#   2. spa doctor, which must report the GPU;
#   3. spa bench model on the GPU beside PyTorch eager on the same GPU: the tiny preset and
#      Qwen2.5-0.5B's shapes (random weights);
#   4. spa bench learner on the GPU beside PyTorch eager, Qwen2.5-0.5B's shapes: SFT and PPO
#      updates, then PPO steps of the production loop (the engine generating on the GPU, scoring,
#      update, checkpoint, weight sync);
#   5. spa learn --stage sft with learner.device cuda from the configuration, as a user sets it.
#
# Environment: LIBTORCH, a CUDA libtorch's folder (default: python3's torch); PYTHON, the Python
# whose torch is the PyTorch side (default: the one LIBTORCH came from); OUT, where the report goes (default build/gpu-check; commit it as
# docs/gpu-check.txt); GPU_CHECK_DEVICE (default cuda) and GPU_CHECK_PRESET (default qwen2.5-0.5b)
# exist so that the script itself can be run through on a machine without a GPU. (None of these
# begins with SPA_: spa reads every SPA_* variable as configuration and refuses unknown ones.)
set -uo pipefail
cd "$(dirname "$0")/.."
say() { printf 'gpu-check: %s\n' "$*"; }
die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 1; }
device=${GPU_CHECK_DEVICE:-cuda}
preset=${GPU_CHECK_PRESET:-qwen2.5-0.5b}
out=${OUT:-build/gpu-check}
mkdir -p "$out"
report=$out/gpu-check.txt
: > "$report"
started=$(date +%s)
# The whole check stays within 8 minutes (GPU_CHECK_BUDGET seconds): each step gets its own limit
# or what is left, whichever is less.
budget=${GPU_CHECK_BUDGET:-470}
# step NAME SECONDS CMD...: runs CMD with a deadline, its output in the report; a failed step is
# reported and the check goes on, so that one run shows everything that works.
failed=()
step() {
  local name=$1 limit=$2
  shift 2
  local left=$(( budget - ($(date +%s) - started) ))
  if (( left < 10 )); then
    printf '\n### %s: skipped, the %ss budget is spent\n' "$name" "$budget" | tee -a "$report"
    failed+=("$name (no time left)")
    return
  fi
  (( limit > left )) && limit=$left
  printf '\n### %s (limit %ss): %s\n' "$name" "$limit" "$*" | tee -a "$report"
  local s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$report"
  local rc=${PIPESTATUS[0]}
  printf -- '--- %s: rc=%s, %ss\n' "$name" "$rc" "$(( $(date +%s) - s ))" | tee -a "$report"
  [ "$rc" = 0 ] || failed+=("$name")
}

if [ -z "${LIBTORCH:-}" ]; then
  for py in python3; do
    if dir=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) && [ -f "$dir/lib/libtorch_cpu.so" ]; then
      LIBTORCH=$dir PYTHON=${PYTHON:-$(command -v "$py")}
      break
    fi
  done
fi
[ -n "${LIBTORCH:-}" ] || die "no libtorch: set LIBTORCH to a CUDA libtorch's folder, or install torch for python3"
PYTHON=${PYTHON:-python3}
export LIBTORCH
say "libtorch $LIBTORCH, PyTorch side $PYTHON, device $device, preset $preset; report $report"
{ date -u; uname -a; } >> "$report"
command -v nvidia-smi >/dev/null && step nvidia-smi 20 nvidia-smi

if [ -n "${GPU_CHECK_SPA:-}" ]; then
  spa=$GPU_CHECK_SPA
  # A binary built elsewhere finds libtorch through its rpath or here.
  export LD_LIBRARY_PATH=$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  command -v go >/dev/null || die "no Go on this machine: build bin/spa elsewhere against the same libtorch and set GPU_CHECK_SPA (docs/gpu.md)"
  step build 240 make build LIBTORCH="$LIBTORCH"
  spa=bin/spa
fi
[ -x "$spa" ] || die "no spa binary at $spa (see the build step above)"

step doctor 30 "$spa" doctor
step "bench model, tiny, $device" 60 "$spa" bench model --device "$device" --python "$PYTHON" --peer-env own
step "bench model, $preset, $device" 150 "$spa" bench model --device "$device" --preset "$preset" --python "$PYTHON" --peer-env own --steps 6 --new-tokens 32
step "bench learner, $preset, $device" 240 "$spa" bench learner --device "$device" --preset "$preset" --python "$PYTHON" --peer-env own --steps 2 --loop-steps 3

# learner.device from the configuration: two SFT steps of a tiny checkpoint (scripts/tiny-sft.sh),
# so the path a user takes is exercised, not only the benchmark's.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step "spa learn with learner.device $device" 90 env SPA="$spa" bash scripts/tiny-sft.sh "$work" --set learner.device="$device"

total=$(( $(date +%s) - started ))
if ((${#failed[@]})); then
  printf '\ngpu-check: %ss; failed: %s\n' "$total" "${failed[*]}" | tee -a "$report"
  exit 1
fi
printf '\ngpu-check: %ss; every step passed\n' "$total" | tee -a "$report"
