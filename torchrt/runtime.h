#ifndef SPA_TORCHRT_H
#define SPA_TORCHRT_H
#ifdef __cplusplus
extern "C" {
#endif
// Each returns a malloc'd string the caller frees, or NULL.
char *spa_torch_config(void);
char *spa_blas_config(void);
char *spa_blas_corename(void);
// A static string naming the allocator in use.
const char *spa_malloc_name(void);
int spa_torch_get_threads(void);
void spa_torch_set_threads(int n);
// How many CUDA devices libtorch sees: 0 for a CPU-only build or without a driver.
int spa_cuda_device_count(void);
// The CUDA runtime version libtorch's CUDA library was built with (12010 for 12.1), or -1 when
// that library is not loaded: its hooks are what make CUDA available.
long spa_cuda_runtime_version(void);
#ifdef __cplusplus
}
#endif
#endif
