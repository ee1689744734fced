// The CPU loops compiled for the "avx512" variant (compile flags set per file in CMakeLists.txt).
#define SQAT_CPU_VARIANT sqat_variant_avx512
#define SQAT_CPU_TABLE sqat_cpu_kernels_avx512
#include "cpu/variant_impl.inc"
