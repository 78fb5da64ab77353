package torchrt

// #cgo CXXFLAGS: -std=c++17
// #cgo LDFLAGS: -ltorch_cpu -lc10 -ldl
// #include <stdlib.h>
// #include "runtime.h"
import "C"

import "unsafe"

func goString(p *C.char) string {
	if p == nil {
		return ""
	}
	defer C.free(unsafe.Pointer(p))
	return C.GoString(p)
}

func torchConfig() string  { return goString(C.spa_torch_config()) }
func blasConfig() string   { return goString(C.spa_blas_config()) }
func blasCorename() string { return goString(C.spa_blas_corename()) }
func mallocName() string   { return C.GoString(C.spa_malloc_name()) }
func getThreads() int      { return int(C.spa_torch_get_threads()) }
func setThreads(n int)     { C.spa_torch_set_threads(C.int(n)) }
func cudaDevices() int     { return int(C.spa_cuda_device_count()) }
func cudaRuntime() int     { return int(C.spa_cuda_runtime_version()) }
