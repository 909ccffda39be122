"""C text of the native runtime hooks the generated code calls: GEMM and threads.

The generated translation unit links against no BLAS: `netc_runtime_init`
receives the addresses runtime/blas.py resolved (MKL, NumPy's OpenBLAS or a
system cblas) and whether they take 64-bit ints, so one compiled object runs
with whichever BLAS the process has. `netc_sgemm`/`netc_dgemm` are row-major
with 0/1 transpose flags, C = alpha op(A) op(B) + beta C; the ILP64/LP64 choice
is one predictable branch per GEMM. `netc_threads` and `netc_par_min` carry
runtime/threads.py's decision into the loops:
`#pragma omp parallel for simd if(N >= netc_par_min) num_threads(netc_threads)`.
"""
from __future__ import annotations

C_RUNTIME = r"""
/* ---- netc runtime hooks (compiler/c_runtime.py) ---- */
#include <omp.h>
typedef void (*netc_sgemm32_t)(int, int, int, int, int, int, float, const float*, int,
                               const float*, int, float, float*, int);
typedef void (*netc_sgemm64_t)(int, int, int, long long, long long, long long, float, const float*,
                               long long, const float*, long long, float, float*, long long);
typedef void (*netc_dgemm32_t)(int, int, int, int, int, int, double, const double*, int,
                               const double*, int, double, double*, int);
typedef void (*netc_dgemm64_t)(int, int, int, long long, long long, long long, double, const double*,
                               long long, const double*, long long, double, double*, long long);
static void* netc_sgemm_ptr = 0;
static void* netc_dgemm_ptr = 0;
static int netc_blas_ilp64 = 0;
static int netc_threads = 1;
static long long netc_par_min = 1LL << 62;

int netc_runtime_init(void* sgemm, void* dgemm, int ilp64, int threads, long long par_min) {
    netc_sgemm_ptr = sgemm;
    netc_dgemm_ptr = dgemm;
    netc_blas_ilp64 = ilp64;
    netc_threads = threads > 0 ? threads : 1;
    netc_par_min = par_min > 0 ? par_min : 1;
    omp_set_num_threads(netc_threads);
    return 0;
}

/* CBLAS enums: CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 */
static inline void netc_sgemm(int ta, int tb, long long m, long long n, long long k, float alpha,
                              const float* A, long long lda, const float* B, long long ldb,
                              float beta, float* C, long long ldc) {
    if (netc_blas_ilp64)
        ((netc_sgemm64_t)netc_sgemm_ptr)(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha,
                                         A, lda, B, ldb, beta, C, ldc);
    else
        ((netc_sgemm32_t)netc_sgemm_ptr)(101, ta ? 112 : 111, tb ? 112 : 111, (int)m, (int)n, (int)k,
                                         alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static inline void netc_dgemm(int ta, int tb, long long m, long long n, long long k, double alpha,
                              const double* A, long long lda, const double* B, long long ldb,
                              double beta, double* C, long long ldc) {
    if (netc_blas_ilp64)
        ((netc_dgemm64_t)netc_dgemm_ptr)(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha,
                                         A, lda, B, ldb, beta, C, ldc);
    else
        ((netc_dgemm32_t)netc_dgemm_ptr)(101, ta ? 112 : 111, tb ? 112 : 111, (int)m, (int)n, (int)k,
                                         alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
/* ---- end netc runtime hooks ---- */
"""
