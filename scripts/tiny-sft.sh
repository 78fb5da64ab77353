#!/usr/bin/env bash
# Makes a checkpoint the learner wrote, for the interop checks and the GPU check: a fresh tiny model
# (WORK/init), then two SFT steps on a few world-model conversations (WORK/sft). Prints the
# checkpoint's path; the learner's own output goes to stderr. Flags after WORK go to spa learn (the
# GPU check sets learner.device); SPA names the binary (default bin/spa).
#   scripts/tiny-sft.sh WORK [spa learn flags]
set -euo pipefail
work=$1
shift
spa=${SPA:-bin/spa}
"$spa" model init --preset tiny --corpus-seeds 20 --out "$work/init" >/dev/null 2>&1
for _ in 1 2 3 4 5 6 7 8; do
  printf '%s\n' '{"messages":[{"role":"system","content":"You are solving a Sokoban puzzle."},{"role":"user","content":"Turn 1:\nState:\n######\n#_P__#\n#_X_O#\n######"},{"role":"assistant","content":"<think><observation>P at (1,2)</observation><prediction>P at (2,2)</prediction></think><answer>Down</answer>"}]}'
done > "$work/data.jsonl"
"$spa" learn --stage sft --model "$work/init" --data "$work/data.jsonl" --max-steps 2 --out "$work/sft" "$@" >&2
echo "$work/sft/$(cat "$work/sft/LATEST")"
