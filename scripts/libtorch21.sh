#!/usr/bin/env bash
# Builds and checks spa against libtorch 2.1.2 with CUDA 12.1 (PyTorch's official build, from its
# PyPI wheel), the libtorch that gotch v0.9.1 targets, on a machine with or without a GPU:
#
#   1. a pinned virtual environment with torch 2.1.2 (scripts/libtorch21/requirements.txt, about
#      4.7 GB with the CUDA libraries; installed once);
#   2. a copy of the working tree in build/libtorch21, built with make build LIBTORCH=<the wheel's
#      torch folder>, so this checkout's own build (Debian's libtorch) stays as it is;
#   3. spa doctor (libtorch 2.1.2, CUDA build, MKL, the GPU line);
#   4. the tests of every package that links libtorch, as make test runs them, against it;
#   5. spa bench model beside PyTorch 2.1.2 eager on the same libtorch;
#   6. on a machine without a GPU, that --device cuda fails with an error that says why.
#
#   scripts/libtorch21.sh            (make libtorch21)
#
# It needs PyPI, the Go module proxy and what scripts/setup.sh installs. A GPU machine runs
# scripts/gpu-check.sh instead. The log is build/libtorch21/check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf 'libtorch21: %s\n' "$*"; }
die() { printf 'libtorch21: error: %s\n' "$*" >&2; exit 1; }

PYENV_NO_DEPS=1 bash scripts/pyenv.sh scripts/libtorch21
py=scripts/libtorch21/.venv/bin/python
[ -x "$py" ] || die "no scripts/libtorch21/.venv: pip could not install torch 2.1.2 (is PyPI reachable?)"
libtorch=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)
[ -f "$libtorch/lib/libtorch_cpu.so" ] || die "torch in scripts/libtorch21/.venv has no lib/libtorch_cpu.so"

work=build/libtorch21
mkdir -p "$work/tree"
# The tracked and untracked (not ignored) files, as they are now; third_party/, go.work and bin/
# are made by the build there.
git ls-files -z --cached --others --exclude-standard | tar --null -cf - -T - | tar -xf - -C "$work/tree"
ln -sfn "$root/../shared" "$work/shared"
log=$root/$work/check.log
: > "$log"
step() { say "$*"; printf '\n### %s\n' "$*" >> "$log"; }
run() { "$@" 2>&1 | tee -a "$log"; }

cd "$work/tree"
step "build against $libtorch"
run make build LIBTORCH="$libtorch" >/dev/null
eval "$(make -s env LIBTORCH="$libtorch")"

step "spa doctor"
doctor=$(bin/spa doctor 2>&1 || true)
printf '%s\n' "$doctor" | tee -a "$log"
grep -q 'libtorch .*2\.1\.2.*CUDA 12\.1 build' <<<"$doctor" || die "doctor does not report libtorch 2.1.2 with CUDA 12.1"
grep -q 'blas .*MKL' <<<"$doctor" || die "doctor does not report MKL"
grep -q '^gpu' <<<"$doctor" || die "doctor has no gpu line"
gpus=$(grep -c 'CUDA device(s)' <<<"$doctor" || true)

# Every package that links libtorch, as make test runs them (scripts/test.sh), one at a time.
torch_pkgs=$(go list -f '{{.ImportPath}}{{range .Deps}}{{if eq . "github.com/sugarme/gotch"}} torch{{end}}{{end}}' ./... | awk 'NF == 2 {print $1}')
step "go test of every libtorch package against libtorch 2.1.2"
# Tests share the machine, so their OpenMP threads do not spin (scripts/test.sh says why); the
# benchmark below runs as users run it.
OMP_WAIT_POLICY=PASSIVE run go test -count=1 -p 1 -timeout 25m $torch_pkgs

step "spa bench model beside PyTorch 2.1.2 on the same libtorch"
run bin/spa bench model --python "$root/$py" --peer-env own --steps 6

if [ "$gpus" = 0 ]; then
  step "--device cuda without a GPU"
  if out=$(bin/spa bench model --device cuda --python /nonexistent 2>&1); then
    die "bench model --device cuda succeeded on a machine whose doctor saw no GPU: $out"
  fi
  printf '%s\n' "$out" | tee -a "$log"
  grep -q 'has CUDA 12.1 but sees no GPU' <<<"$out" || die "--device cuda failed without saying why: $out"
fi
say "ok: spa builds, passes its libtorch tests and runs against libtorch 2.1.2 (log: $log)"
