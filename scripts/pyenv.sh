#!/usr/bin/env bash
# Sets up DIR/.venv (git-ignored) with DIR/requirements.txt's pinned packages, for the tests that
# run Python: sdk/python (the environment SDK, the default) and inference/testdata/python (the
# official openai SDK against spa serve). Idempotent: it reinstalls only when the requirements
# change. Without a usable python3 it says so and exits 0; those tests then skip with the same
# message.
#
#   scripts/pyenv.sh [DIR]
#
# PYENV_PYTHON chooses the interpreter (default: python3 on PATH); PYENV_SYSTEM_SITE=1 lets the
# environment see that interpreter's packages (model/testdata/hf uses Debian's python3-torch);
# PYENV_NO_DEPS=1 installs exactly the requirements, resolving nothing (they must be complete).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'pyenv: %s\n' "$*"; }
dir=${1:-sdk/python}
venv=$dir/.venv
req=$dir/requirements.txt
stamp=$venv/.spa-requirements
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi
py=${PYENV_PYTHON:-$(command -v python3 || true)}
if [ -z "$py" ] || ! "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
  say "no python3 (>= 3.9, with venv and ensurepip): the tests that need $venv will skip"
  exit 0
fi
rm -rf "$venv"
say "creating $venv with $("$py" --version) and installing $(grep -v '^#' "$req" | tr '\n' ' ')"
site=()
[ "${PYENV_SYSTEM_SITE:-}" = 1 ] && site=(--system-site-packages)
nodeps=()
[ "${PYENV_NO_DEPS:-}" = 1 ] && nodeps=(--no-deps)
if ! "$py" -m venv "${site[@]}" "$venv" >/dev/null || ! "$venv/bin/pip" install -q --disable-pip-version-check --no-input "${nodeps[@]}" -r "$req"; then
  rm -rf "$venv"
  say "warning: could not set up $venv (is PyPI reachable?); the tests that need it will skip"
  exit 0
fi
echo "$want" > "$stamp"
