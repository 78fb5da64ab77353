//go:build spa_cuda

package torchrt

// A CUDA libtorch registers CUDA from the static initialisers of libtorch_cuda and libc10_cuda, and
// nothing calls into them by name, so the build's -Wl,--as-needed would drop them and CUDA would
// never be available. The Makefile sets the spa_cuda tag when LIBTORCH has libtorch_cuda.so; the
// flags live here, not in CGO_LDFLAGS, so that only binaries that load libtorch need them (a Go
// binary without libtorch, linked internally, would otherwise depend on libtorch_cuda without
// finding it). libtorch 2.1's libtorch_cpu happens to dlopen libnvfuser_codegen, which loads
// libtorch_cuda too; later versions dropped nvfuser, so spa does not rely on it.

// #cgo LDFLAGS: -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed
import "C"
