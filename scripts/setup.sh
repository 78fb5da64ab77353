#!/usr/bin/env bash
# Installs what spa needs on a Debian machine. Idempotent: each step checks before it acts, so a
# second run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# 1. Debian packages. libopenblas0-openmp is not optional: libtorch's BLAS calls go through the
#    libblas.so.3 alternative, and the reference BLAS is about 10x slower. nats-server is for the
#    tests that run a cluster on a stock NATS server (spa itself embeds one). libtcmalloc-minimal4
#    is the allocator spa preloads for libtorch (docs/build.md: glibc's malloc either fragments or,
#    tuned not to, makes training 2-3x slower).
#    LIBTORCH=DIR builds against another libtorch instead (the official C++ distribution or a
#    PyTorch wheel's torch folder, docs/build.md), which brings its own BLAS.
packages=(g++ libtorch-dev libopenblas0-openmp libtcmalloc-minimal4 nats-server)
torch_root=/usr
if [ -n "${LIBTORCH:-}" ]; then
  torch_root=$LIBTORCH
  [ -f "$torch_root/include/torch/csrc/api/include/torch/version.h" ] && [ -f "$torch_root/lib/libtorch_cpu.so" ] ||
    die "LIBTORCH=$LIBTORCH has no include/torch/csrc/api/include/torch/version.h and lib/libtorch_cpu.so; point it at an unpacked libtorch zip or a PyTorch wheel's torch folder"
  packages=(g++ libtcmalloc-minimal4 nats-server)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# apt_install installs Debian packages, as root or with password-less sudo; it fails otherwise.
apt_install() {
  command -v apt-get >/dev/null || { say "missing $* and no apt-get: spa's setup supports Debian (bookworm) and derivatives"; return 1; }
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n);
  else say "missing Debian packages: $*. Run as root, or: sudo apt-get install -y --no-install-recommends $*"; return 1; fi
  say "installing $*"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ((${#missing[@]})); then
  apt_install "${missing[@]}" || die "could not install ${missing[*]}"
fi
command -v go >/dev/null || die "Go is not on PATH; spa needs Go 1.26 (https://go.dev/dl)"

# 2. A copy of gotch patched for this machine's libtorch (tools/gotchpatch explains why).
#    GOWORK=off: the workspace points at the copy we are about to make.
gotch_version=$(GOWORK=off go list -m -f '{{.Version}}' github.com/sugarme/gotch)
gotch_src=$(GOWORK=off go mod download -json "github.com/sugarme/gotch@${gotch_version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$gotch_src" ] || die "could not download github.com/sugarme/gotch@${gotch_version} from the Go module proxy"
#    -consumer .: only the generated wrappers spa's code reaches are kept (about 130 of 2,500), which
#    takes most of a fresh build's one-core C++ compile away; a change to what spa calls of gotch
#    changes the stamp, and this derives the copy again.
GOWORK=off go run ./tools/gotchpatch -src "$gotch_src" -dst third_party/gotch -torch-root "$torch_root" -consumer .

# 3. go.work points the build at the patched copy (git-ignored, so go.mod stays clean).
if [ -d third_party/gotch ]; then
  want=$(printf 'go 1.26.0\n\nuse .\n\nreplace github.com/sugarme/gotch %s => ./third_party/gotch\n' "$gotch_version")
  if [ ! -f go.work ] || [ "$(cat go.work)" != "$want" ]; then
    printf '%s\n' "$want" > go.work
    say "wrote go.work (gotch -> third_party/gotch)"
  fi
fi

# 4. npm packages for the Node.js tests: the example environment (run through spa's remote env)
#    and the official openai SDK (run against spa serve). Optional: without node those tests skip
#    and say so.
if command -v node >/dev/null && command -v npm >/dev/null; then
  for dir in examples/node-env inference/testdata/npm; do
    if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      say "installing $dir's npm packages"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || say "warning: npm ci in $dir failed; its tests will skip"
    fi
  done
else
  say "node/npm not found: the Node.js tests will skip"
fi

# 5. Python virtual environments with pinned packages: the environment SDK's (sdk/python), for the
#    tests that serve environments from Python and Gymnasium, and the official openai SDK
#    (inference/testdata/python), run against spa serve. Optional like node: without Python those
#    tests skip and say so.
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3 python3-venv || say "warning: no python3 with venv; the Python SDK tests will skip"
fi
bash scripts/pyenv.sh sdk/python
bash scripts/pyenv.sh inference/testdata/python
say "done in ${SECONDS}s"
