// The CPU worker pool shared by every instruction-set variant (compiled once, for the baseline).
#pragma once

#include <stdint.h>

namespace sqat::parallel {

using ChunkFn = void (*)(void* ctx, int64_t begin, int64_t end);

// Runs fn(ctx, begin, end) over [0, n) in contiguous chunks handed out in increasing order to up to
// nthreads workers (the caller is one of them); returns when all are done.  values_per_item sizes the
// chunks and decides how many threads are worth starting.
// The threads are those of an OpenMP runtime already loaded globally in the process (PyTorch's), when
// there is one and it is allowed, else a pool of our own.
void run_chunks(int64_t n, int64_t values_per_item, int nthreads, ChunkFn fn, void* ctx);

// Allows (default) or forbids running on a loaded OpenMP runtime's threads; bytes are the same either way.
void set_openmp_allowed(bool allowed);

// Whether run_chunks would use an OpenMP runtime's threads now (allowed, loaded, not a forked child).
bool openmp_available();

}  // namespace sqat::parallel
