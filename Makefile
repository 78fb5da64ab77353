# spa's build. `make test` and `make run` set up everything on a fresh Debian machine first.
SHELL := /bin/bash

TORCH_INCLUDE ?= /usr/include/torch/csrc/api/include
# cgo: libtorch's C++ API headers, no warnings from gotch's generated code; stub CUDA libraries
# (made by setup) satisfy gotch's link line and --as-needed keeps them out of the binary.
export CGO_CXXFLAGS := -I$(TORCH_INCLUDE) -w -O2
export CGO_LDFLAGS := -L$(CURDIR)/third_party/gotch/spa-stubs -Wl,--as-needed
export OMP_NUM_THREADS ?= $(shell nproc)

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
GO_LDFLAGS := -X main.version=$(VERSION)

.PHONY: all setup build test run bench lint env clean interop interop-vllm

all: build

setup:
	@bash scripts/setup.sh

build: setup
	go build -ldflags '$(GO_LDFLAGS)' -o bin/spa ./cmd/spa

# The suite: light packages side by side, libtorch packages one at a time (scripts/test.sh).
test: build
	@bash scripts/test.sh
	bin/spa doctor

# The main job: the SPA pipeline on the embedded default with the quick preset (Sokoban, tiny
# model; docs/run.md gives the measured time on 2 cores). The report lands in runs/<id>/report.md.
run: build
	bin/spa run --preset quick

# spa against transformers, the openai SDKs and Gymnasium, in pinned Python environments
# (scripts/interop.sh; results in docs/interop.md).
interop: build
	@bash scripts/interop.sh

# spa against a live vLLM on the CPU (scripts/interop-vllm.sh; a 6 GB environment, so not in interop).
interop-vllm: build
	@bash scripts/interop-vllm.sh

bench: build
	go test -run '^$$' -bench . -benchtime 2s ./...

lint: setup
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...

# Print the build environment, for running go commands by hand: eval "$$(make -s env)"
env:
	@echo 'export CGO_CXXFLAGS="$(CGO_CXXFLAGS)"'
	@echo 'export CGO_LDFLAGS="$(CGO_LDFLAGS)"'
	@echo 'export OMP_NUM_THREADS=$(OMP_NUM_THREADS)'

clean:
	rm -rf bin third_party go.work go.work.sum
