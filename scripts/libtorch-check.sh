#!/usr/bin/env bash
# Builds and checks spa against one of PyTorch's official CUDA builds, from its PyPI wheel, on a
# machine with or without a GPU:
#
#   scripts/libtorch-check.sh scripts/libtorch21     (make libtorch21: libtorch 2.1.2, CUDA 12.1,
#                                                     the version gotch v0.9.1 targets)
#   scripts/libtorch-check.sh scripts/libtorch211    (make libtorch211: libtorch 2.11.0, CUDA 13.0,
#                                                     what the lent GPU machines have)
#
#   1. a pinned virtual environment, DIR/requirements.txt (about 4.7 GB with the CUDA libraries;
#      installed once, DIR/.venv);
#   2. a copy of the working tree in build/<DIR's name>, built with make build LIBTORCH=<the
#      wheel's torch folder>, so this checkout's own build (Debian's libtorch) stays as it is;
#   3. spa doctor (the version, a CUDA build, MKL, the GPU line);
#   4. the tests of every package that links libtorch, as make test runs them, against it;
#   5. spa bench model beside that PyTorch eager on the same libtorch;
#   6. on a machine without a GPU, that --device cuda fails with an error that says why.
#
# The binary it leaves, build/<name>/tree/bin/spa, is what a GPU machine without Go runs
# (scripts/gpu-check.sh with GPU_CHECK_SPA; docs/gpu.md). It needs PyPI, the Go module proxy and what
# scripts/setup.sh installs. The log is build/<name>/check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
env_dir=${1:?usage: scripts/libtorch-check.sh DIR (a folder with requirements.txt, e.g. scripts/libtorch21)}
env_dir=${env_dir%/}
name=$(basename "$env_dir")
say() { printf '%s: %s\n' "$name" "$*"; }
die() { printf '%s: error: %s\n' "$name" "$*" >&2; exit 1; }
[ -f "$env_dir/requirements.txt" ] || die "$env_dir/requirements.txt does not exist"
want=$(sed -n 's/^torch==//p' "$env_dir/requirements.txt")

PYENV_NO_DEPS=1 bash scripts/pyenv.sh "$env_dir"
py=$env_dir/.venv/bin/python
[ -x "$py" ] || die "no $env_dir/.venv: pip could not install torch $want (is PyPI reachable?)"
libtorch=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)
[ -f "$libtorch/lib/libtorch_cpu.so" ] || die "torch in $env_dir/.venv has no lib/libtorch_cpu.so"
cuda=$(sed -n 's/^nvidia-cuda-runtime\(-cu[0-9]*\)\{0,1\}==\([0-9]*\.[0-9]*\).*/\2/p' "$env_dir/requirements.txt" | head -1)

work=build/$name
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
grep -q "libtorch .*${want}, CUDA ${cuda} build" <<<"$doctor" || die "doctor does not report libtorch $want with CUDA $cuda"
grep -q 'blas .*MKL' <<<"$doctor" || die "doctor does not report MKL"
grep -q '^gpu' <<<"$doctor" || die "doctor has no gpu line"
gpus=$(grep -c 'CUDA device(s)' <<<"$doctor" || true)

# Every package that links libtorch, as make test runs them (scripts/test.sh), one at a time.
torch_pkgs=$(go list -f '{{.ImportPath}}{{range .Deps}}{{if eq . "github.com/sugarme/gotch"}} torch{{end}}{{end}}' ./... | awk 'NF == 2 {print $1}')
step "go test of every libtorch package against libtorch $want"
# Tests share the machine, so their OpenMP threads do not spin (scripts/test.sh says why); the
# benchmark below runs as users run it.
OMP_WAIT_POLICY=PASSIVE run go test -count=1 -p 1 -timeout 25m $torch_pkgs

step "spa bench model beside PyTorch $want on the same libtorch"
run bin/spa bench model --python "$root/$py" --peer-env own --steps 6

if [ "$gpus" = 0 ]; then
  step "--device cuda without a GPU"
  if out=$(bin/spa bench model --device cuda --python /nonexistent 2>&1); then
    die "bench model --device cuda succeeded on a machine whose doctor saw no GPU: $out"
  fi
  printf '%s\n' "$out" | tee -a "$log"
  grep -q "has CUDA $cuda but sees no GPU" <<<"$out" || die "--device cuda failed without saying why: $out"
fi
say "ok: spa builds, passes its libtorch tests and runs against libtorch $want (log: $log; binary: $work/tree/bin/spa)"
