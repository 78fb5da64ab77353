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
#ifdef __cplusplus
}
#endif
#endif
