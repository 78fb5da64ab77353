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
fi

say "go tests that run the real peers: transformers fixtures, the openai SDKs, Python and Gymnasium hosts, Gymnasium's FrozenLake"
go test -count=1 -run 'HuggingFace|SpaFixture|PEFT|SpaLoRA' ./model || status=1
go test -count=1 -run 'SDK' -v ./inference 2>&1 | grep -E '^(---|ok|FAIL)|"sdk"' || status=1
go test -count=1 -run 'Python|Gymnasium|Node' ./envs/busenv ./envs/frozenlake || status=1
[ $status -eq 0 ] && say "all checks passed" || say "some checks FAILED"
exit $status
