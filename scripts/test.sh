#!/usr/bin/env bash
# The test suite, as `make test` runs it (after setup and build).
#
# Packages that do not link libtorch run side by side, then again under the race detector. The
# libtorch packages run once, one at a time: each sizes its work to every core (OMP_NUM_THREADS),
# two of them on a 2-core machine starve each other's process tests, and their time goes to torch
# work that the detector would slow several-fold without seeing inside it. -timeout bounds a hang in each package; no test carries its own
# guess of how fast the machine is (internal/testdeadline).
set -euo pipefail
cd "$(dirname "$0")/.."
timeout=${TEST_TIMEOUT:-25m}
pkgs=$(go list -f '{{.ImportPath}}{{range .Deps}}{{if eq . "github.com/sugarme/gotch"}} torch{{end}}{{end}}' ./...)
light=$(awk 'NF == 1 {print $1}' <<<"$pkgs")
torch=$(awk 'NF == 2 {print $1}' <<<"$pkgs")
# OpenMP threads that spin at barriers (libgomp's default) stall when another process holds a
# core: beside one CPU-bound process, the tiny model trained at 406 tokens/s with spinning threads
# against 7.2k with OMP_WAIT_POLICY=PASSIVE (11.2k and 10.6k on an idle machine; docs/build.md).
# Tests share the machine with each other and with whatever else runs, so they do not spin.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
start=$SECONDS
status=0
# phase prints how long the phase before it took, in wall time and in the CPU time of the
# processes that ended in it (bash's times), so a slow run shows where its time went and whether
# it waited for the CPU or for something else. The background build's CPU time counts in the
# phase in which it ends.
last=$SECONDS
lastcpu=0
timesfile=$(mktemp)
trap 'rm -f "$timesfile"' EXIT
phase() {
  # times must run in this shell, not in a $(...) subshell, to count this shell's children.
  times >"$timesfile"
  local now
  now=$(awk 'NR == 2 {for (i = 1; i <= 2; i++) {split($i, t, /[ms]/); s += 60 * t[1] + t[2]}; printf "%d", s}' "$timesfile")
  printf 'tests: %s in %ds (CPU %ds)\n' "$1" $((SECONDS - last)) $((now - lastcpu))
  last=$SECONDS lastcpu=$now
}
# A fresh build spends most of its time in one g++ process compiling gotch's wrappers, on one core;
# the packages that do not link libtorch need none of it, so they run on the other core meanwhile.
# Go's build cache does not share work in progress between processes, so the standard library and
# the light packages are built first, once, and the two go commands after it do not both compile
# them. Only the libtorch packages wait for the build.
build=
if (($#)); then
  go build $light
  buildlog=$(mktemp)
  "$@" >"$buildlog" 2>&1 &
  build=$!
  trap '[ -z "$build" ] || kill "$build" 2>/dev/null; rm -f "$buildlog" "$timesfile"' EXIT
fi
# Both groups run even when the first fails, so one run reports every failure.
go test -count=1 -timeout "$timeout" $light || status=1
phase "packages without libtorch"
# The same packages under the race detector, those whose code runs anything at once: it starts
# goroutines, or shares memory through sync, atomics or channels. The detector sees races only
# where goroutines run; the other packages' code (puzzle generators, parsers) runs concurrently
# only inside the tests of the packages that run it so (rollout's workers, the env hosts), where
# the detector watches it. In a fresh clone beside a CPU-bound process the pass took 162 s over
# every light package and 124-139 s over these (docs/build.md). -short skips the single-threaded
# sweeps (thousands of generated puzzles), which the line above ran.
racy=$(go list -f '{{.ImportPath}} {{.Dir}} {{join .GoFiles " "}}' $light | while read -r pkg dir files; do
  if [ -n "$files" ] && (cd "$dir" && grep -qE '(^|[^[:alnum:]_])go (func|[[:alnum:]_.]+\()|"sync"|"sync/atomic"|(^|[^[:alnum:]_])chan[^[:alnum:]_]' $files); then
    echo "$pkg"
  fi
done)
go test -count=1 -race -short -timeout "$timeout" $racy || status=1
phase "$(wc -w <<<"$racy") of them under the race detector"
if [ -n "$build" ]; then
  wait "$build" || { echo "build failed:"; cat "$buildlog"; build=; exit 1; }
  build=
  cat "$buildlog"
  phase "the rest of the build"
fi
harness=$(grep '/harness$' <<<"$torch" || true)
go test -count=1 -timeout "$timeout" -p 1 $(grep -v '/harness$' <<<"$torch") || status=1
# harness on its own and verbose: the learning-signal test logs each case's success per step, its
# time and any second seed, which a passing run would otherwise hide (a green run that took twice
# as long once could not say why).
go test -count=1 -timeout "$timeout" -v $harness | grep -v '^=== \(RUN\|PAUSE\|CONT\)' || status=1
phase "libtorch packages"
# The fuzz targets of what reads untrusted input, a few seconds each (go test fuzzes one target
# per run). Their seed corpora already ran above; this looks a little further.
# A count, not a duration: go1.26's fuzz coordinator can report its own -fuzztime deadline as a
# failure ("context deadline exceeded", no crasher) when a worker is mid-input as time runs out
# (golang/go#75804, fixed in Go 1.27); a fresh-clone run under load hit it once. 20,000 inputs
# take a few seconds per target.
fuzztime=${FUZZ_TIME:-20000x}
fuzzlog=$(mktemp)
for target in model/weights:FuzzParseHeader model/weights:FuzzReadShard model/weights:FuzzParseIndex inference/wire:FuzzRequest; do
  if ! go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$fuzztime" "./${target%%:*}" >"$fuzzlog" 2>&1; then
    echo "fuzz ${target} failed:"; tail -30 "$fuzzlog"; status=1
  fi
done
rm -f "$fuzzlog"
phase "fuzzing"
lastcpu=0
last=$start
phase "$(wc -w <<<"$light $torch") packages"
exit $status
