#!/usr/bin/env bash
# make interop: spa against the real ecosystem, with pinned Python environments (scripts/pyenv.sh)
# and the built binary's code. Each check says what it runs; docs/interop.md has the results and
# versions. Not part of make test: the environments are larger, though the fixtures the checks
# produce are committed and make test checks those without Python.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'interop: %s\n' "$*"; }
status=0

say "setting up the pinned environments"
bash scripts/pyenv.sh sdk/python
bash scripts/pyenv.sh inference/testdata/python
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  PYENV_PYTHON=/usr/bin/python3 PYENV_SYSTEM_SITE=1 PYENV_NO_DEPS=1 bash scripts/pyenv.sh model/testdata/hf
else
  say "Debian's python3-torch is missing (apt-get install python3-torch): the transformers checks will not run"
fi

if [ -x model/testdata/hf/.venv/bin/python ]; then
  say "transformers and PEFT: remaking the parity fixtures and comparing them with the committed ones"
  out=$(mktemp -d)
  model/testdata/hf/.venv/bin/python model/testdata/hf/make_fixture.py "$out" 2>/dev/null | tail -1
  for f in qwen2-tiny/model.safetensors qwen2-tiny/logits.json qwen2-tiny-tied/model.safetensors qwen2-tiny-tied/logits.json \
    qwen2-tiny-lora/adapter_model.safetensors qwen2-tiny-lora/adapter_config.json qwen2-tiny-lora/logits.json spa-tiny-check.json spa-lora-check.json; do
    if cmp -s "$out/$f" "model/testdata/hf/$f"; then say "  $f: identical"; else say "  $f: DIFFERS"; status=1; fi
  done
  rm -rf "$out"

  say "transformers apply_chat_template on the shared Qwen3 tokenizer: text and ids, against the committed cases"
  if [ -d ../shared/testdata/tokenizer/qwen3 ]; then
    out=$(mktemp)
    (cd model/chat/testdata && ../../testdata/hf/.venv/bin/python gen_hf.py "$out" 2>/dev/null | tail -1)
    if cmp -s "$out" model/chat/testdata/qwen3-hf.jsonl; then say "  qwen3-hf.jsonl: identical"; else say "  qwen3-hf.jsonl: DIFFERS"; status=1; fi
    rm -f "$out"
  else
    say "  ../shared/testdata/tokenizer/qwen3 is missing: skipped"
  fi

  say "a checkpoint the learner wrote after two SFT steps, in transformers and against spa serve"
  work=$(mktemp -d)
  port=$((20000 + RANDOM % 20000))
  ckpt=$(bash scripts/tiny-sft.sh "$work")
  bin/spa serve --model "$ckpt" --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
  serve=$!
  for _ in $(seq 60); do curl -sf "127.0.0.1:$port/v1/models" >/dev/null && break; sleep 0.5; done
  model/testdata/hf/.venv/bin/python model/testdata/hf/check_checkpoint.py "$ckpt" "$work/init" "http://127.0.0.1:$port" 2>&1 | grep -v 'Starting from v4.46' || status=1
  kill "$serve" 2>/dev/null; wait "$serve" 2>/dev/null || true
  rm -rf "$work"
fi

say "go tests that run the real peers: transformers fixtures, the openai SDKs, Python and Gymnasium hosts, Gymnasium's FrozenLake"
go test -count=1 -run 'HuggingFace|SpaFixture|PEFT|SpaLoRA' ./model || status=1
go test -count=1 -run 'SDK' -v ./inference 2>&1 | grep -E '^(---|ok|FAIL)|"sdk"' || status=1
go test -count=1 -run 'Python|Gymnasium|Node' ./envs/busenv ./envs/frozenlake || status=1
[ $status -eq 0 ] && say "all checks passed" || say "some checks FAILED"
exit $status
