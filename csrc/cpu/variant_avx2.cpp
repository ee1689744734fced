// The CPU loops compiled for the "avx2" variant (compile flags set per file in CMakeLists.txt).
#define SQAT_CPU_VARIANT sqat_variant_avx2
#define SQAT_CPU_TABLE sqat_cpu_kernels_avx2
#include "cpu/variant_impl.inc"
