# spa's build. `make test` and `make run` set up everything on a fresh Debian machine first.
SHELL := /bin/bash

# LIBTORCH=DIR builds against another libtorch than Debian's: an unpacked official C++ distribution
# (libtorch-*.zip) or a PyTorch wheel's torch folder, such as libtorch 2.1 with CUDA (docs/build.md).
LIBTORCH ?=
ifeq ($(LIBTORCH),)
TORCH_INCLUDE ?= /usr/include/torch/csrc/api/include
# cgo: libtorch's C++ API headers, no warnings from gotch's generated code; stub CUDA libraries
# (made by setup) satisfy gotch's link line and --as-needed keeps them out of the binary. -O1:
# gotch's wrappers compile in 104 s instead of 129 s (one 760 kB file, so one core, the longest
# step of a fresh build), and spa bench model trains and generates as fast (docs/build.md).
export CGO_CXXFLAGS := -I$(TORCH_INCLUDE) -w -O1
export CGO_LDFLAGS := -L$(CURDIR)/third_party/gotch/spa-stubs -Wl,--as-needed
else
override LIBTORCH := $(abspath $(LIBTORCH))
export LIBTORCH
# The C++ ABI the library was built with (PyPI's wheels and the zip without "cxx11-abi" in its name
# use the old one), as its CMake config says; gotch's std::string calls must match it.
LIBTORCH_ABI := $(or $(shell sed -n 's/.*_GLIBCXX_USE_CXX11_ABI=\([01]\).*/\1/p' $(LIBTORCH)/share/cmake/Torch/TorchConfig.cmake 2>/dev/null | head -1),1)
export CGO_CXXFLAGS := -I$(LIBTORCH)/include -I$(LIBTORCH)/include/torch/csrc/api/include -D_GLIBCXX_USE_CXX11_ABI=$(LIBTORCH_ABI) -w -O1
export CGO_LDFLAGS := -L$(LIBTORCH)/lib -Wl,-rpath,$(LIBTORCH)/lib -L$(CURDIR)/third_party/gotch/spa-stubs -Wl,--as-needed
# A CUDA libtorch: link libtorch_cuda even though nothing names it (torchrt/cuda.go says why).
ifneq ($(wildcard $(LIBTORCH)/lib/libtorch_cuda.so),)
export GOFLAGS := $(strip $(GOFLAGS) -tags=spa_cuda)
endif
endif
export OMP_NUM_THREADS ?= $(shell nproc)

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
GO_LDFLAGS := -X main.version=$(VERSION)

.PHONY: all setup build test run bench lint env clean interop interop-vllm libtorch21 libtorch211 gpu-check

all: build

setup:
	@bash scripts/setup.sh

# The one build of bin/spa, for build and for test (which runs it beside the light packages).
BUILD_SPA = go build -ldflags '$(GO_LDFLAGS)' -o bin/spa ./cmd/spa

build: setup
	$(BUILD_SPA)

# The suite: light packages side by side, libtorch packages one at a time (scripts/test.sh). It
# builds bin/spa itself, beside the packages that need no libtorch: a fresh build is mostly one
# g++ process on one core.
test: setup
	@bash scripts/test.sh $(BUILD_SPA)
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

# spa built against PyTorch's official CUDA builds (pinned wheels, 4.7 GB each) in build/<name>:
# libtorch 2.1.2 (what gotch targets) and 2.11.0 (what the lent GPU machines have), with every
# libtorch package's tests and a benchmark beside that PyTorch (scripts/libtorch-check.sh).
libtorch21 libtorch211:
	@bash scripts/libtorch-check.sh scripts/$@

# On a machine with a GPU: build, doctor, model and learner benchmarks beside PyTorch on the GPU
# and PPO steps of a Qwen2.5-0.5B-shaped model (scripts/gpu-check.sh; docs/gpu.md).
gpu-check:
	@bash scripts/gpu-check.sh

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
	@$(if $(LIBTORCH),echo 'export LIBTORCH=$(LIBTORCH)',echo 'unset LIBTORCH')
	@$(if $(GOFLAGS),echo 'export GOFLAGS="$(GOFLAGS)"',echo 'unset GOFLAGS')

clean:
	rm -rf bin third_party go.work go.work.sum
