"""Execution backends behind the public API: the native CPU loops and the native CUDA kernels."""
