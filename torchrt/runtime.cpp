// Runtime facts read from the libtorch and BLAS that are actually loaded, not from headers.
#include "runtime.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

extern "C" {

char *spa_torch_config(void) {
  try {
    return strdup(at::show_config().c_str());
  } catch (...) {
    return NULL;
  }
}

// OpenBLAS exports these; reference BLAS and others do not, so look them up at run time.
static char *blas_string(const char *symbol) {
  void *f = dlsym(RTLD_DEFAULT, symbol);
  if (f == NULL) return NULL;
  const char *s = ((const char *(*)(void))f)();
  return s == NULL ? NULL : strdup(s);
}

char *spa_blas_config(void) { return blas_string("openblas_get_config"); }
char *spa_blas_corename(void) { return blas_string("openblas_get_corename"); }

// The malloc that serves this process: tcmalloc and jemalloc export their own entry points
// beside malloc, glibc's does not.
const char *spa_malloc_name(void) {
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != NULL) return "tcmalloc";
  if (dlsym(RTLD_DEFAULT, "mallctl") != NULL) return "jemalloc";
  return "glibc";
}

int spa_torch_get_threads(void) { return at::get_num_threads(); }
void spa_torch_set_threads(int n) { at::set_num_threads(n); }

int spa_cuda_device_count(void) {
  try {
    return (int)torch::cuda::device_count();
  } catch (...) {
    return 0;
  }
}

long spa_cuda_runtime_version(void) {
  try {
    return at::detail::getCUDAHooks().versionCUDART();
  } catch (...) {
    return -1;
  }
}
}
