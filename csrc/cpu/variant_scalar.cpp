// The CPU loops compiled for the baseline instruction set of the target (the fallback everywhere).
#define SQAT_CPU_VARIANT sqat_variant_scalar
#define SQAT_CPU_TABLE sqat_cpu_kernels_scalar
#include "cpu/variant_impl.inc"
