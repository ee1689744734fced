#include "cpu_loops.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "sqat/grid.h"

namespace sqat::cpu {
namespace {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr bool kLittleEndian = true;
#else
constexpr bool kLittleEndian = false;
#endif

// Below this many values a thread is not worth starting; work is handed out in chunks of at least
// kMinValuesPerChunk values.
constexpr int64_t kMinValuesPerThread = 16384;
constexpr int64_t kMinValuesPerChunk = 4096;

// A small persistent worker pool.  Starting and joining std::threads costs tens of microseconds per
// call, which is a large share of a call on a 1M-value tensor for the fast formats; parked workers
// pick a job up in a few microseconds.  After a job a worker polls for the next one for a short while
// (back-to-back calls are the common case), then sleeps on a condition variable.
// One job at a time: a caller that finds the pool busy (another thread quantizing concurrently) falls
// back to short-lived threads.  A forked child gets a fresh pool (the parent's threads do not exist
// there); the old one is leaked, as is the pool at exit, so no destructor ever waits on a thread.
class WorkerPool {
   public:
    using Task = void (*)(void* ctx, int worker);
    static constexpr int kMaxWorkers = 1 << 16;

    static WorkerPool& get() {
        static std::atomic<WorkerPool*> instance{nullptr};
        static std::mutex create_mutex;
        WorkerPool* p = instance.load(std::memory_order_acquire);
        const long pid = static_cast<long>(getpid());
        if (p == nullptr || p->pid_ != pid) {
            std::lock_guard<std::mutex> lk(create_mutex);
            p = instance.load(std::memory_order_acquire);
            if (p == nullptr || p->pid_ != pid) {
                p = new WorkerPool(pid);
                instance.store(p, std::memory_order_release);
            }
        }
        return *p;
    }

    // Runs task(ctx, w) for w in [1, workers) on pool threads and task(ctx, 0) on the caller; returns
    // once all have finished.  False (nothing run) when the pool is busy with another caller's job.
    bool run(int workers, Task task, void* ctx) {
        std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        const uint64_t before = job_.load(std::memory_order_relaxed);
        while (static_cast<int>(threads_.size()) < workers - 1) {
            const int id = static_cast<int>(threads_.size()) + 1;
            threads_.emplace_back([this, id, before] { work(id, before); });  // the job below is new to it
        }
        task_ = task;
        ctx_ = ctx;
        remaining_.store(workers - 1, std::memory_order_relaxed);
        {
            // The job word carries the worker count, so that threads left out of this job never read
            // the fields above (which the next job may already be rewriting).
            std::lock_guard<std::mutex> lk(wake_mutex_);
            const uint64_t seq = (before >> 16) + 1;
            job_.store((seq << 16) | static_cast<uint64_t>(workers), std::memory_order_release);
        }
        wake_.notify_all();
        task(ctx, 0);
        for (int spins = 0; remaining_.load(std::memory_order_acquire) != 0; ++spins)
            if (spins > 64) std::this_thread::yield();
        return true;
    }

   private:
    explicit WorkerPool(long pid) : pid_(pid) {}

    void work(int id, uint64_t seen) {
        for (;;) {
            uint64_t job = job_.load(std::memory_order_acquire);
            for (int spins = 0; job == seen && spins < kPollSpins; ++spins) {
                if (spins > 64) std::this_thread::yield();
                job = job_.load(std::memory_order_acquire);
            }
            if (job == seen) {
                std::unique_lock<std::mutex> lk(wake_mutex_);
                wake_.wait(lk, [&] { return (job = job_.load(std::memory_order_acquire)) != seen; });
            }
            seen = job;
            if (id < static_cast<int>(job & 0xffffu)) {
                task_(ctx_, id);
                remaining_.fetch_sub(1, std::memory_order_release);
            }
        }
    }

    static constexpr int kPollSpins = 2000;  // yields between jobs before sleeping (about a millisecond)

    const long pid_;
    std::mutex run_mutex_;
    std::vector<std::thread> threads_;
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    std::atomic<uint64_t> job_{0};  // (sequence number << 16) | worker count of the latest job
    std::atomic<int> remaining_{0};
    Task task_ = nullptr;
    void* ctx_ = nullptr;
};

// Runs f(begin, end) over [0, n) in contiguous chunks handed out in increasing order to up to nthreads
// workers (the caller is one of them).  Dynamic hand-out keeps both cores busy to the end even when
// one of them is slowed by other load, where a fixed half each would leave one waiting.
template <class F>
void parallel_chunks(int64_t n, int64_t values_per_item, int nthreads, F&& f) {
    int64_t workers = std::min<int64_t>(std::max(1, nthreads), WorkerPool::kMaxWorkers - 1);
    const int64_t by_size = std::max<int64_t>(1, (n * values_per_item) / kMinValuesPerThread);
    workers = std::min(workers, std::min(by_size, std::max<int64_t>(1, n)));
    if (workers == 1) {
        f(int64_t{0}, n);
        return;
    }
    // About sixteen chunks per worker, none below kMinValuesPerChunk values.
    const int64_t min_items = std::max<int64_t>(1, kMinValuesPerChunk / std::max<int64_t>(1, values_per_item));
    const int64_t chunk = std::max(min_items, (n + 16 * workers - 1) / (16 * workers));
    struct Ctx {
        std::remove_reference_t<F>* f;
        int64_t n, chunk;
        std::atomic<int64_t> next{0};
    } ctx{&f, n, chunk};
    const WorkerPool::Task task = [](void* p, int) {
        Ctx& c = *static_cast<Ctx*>(p);
        for (;;) {
            const int64_t b = c.next.fetch_add(c.chunk, std::memory_order_relaxed);
            if (b >= c.n) return;
            (*c.f)(b, std::min(c.n, b + c.chunk));
        }
    };
    if (WorkerPool::get().run(static_cast<int>(workers), task, &ctx)) return;
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (int64_t w = 1; w < workers; ++w) {
        pool.emplace_back([&ctx, task, w] { task(&ctx, static_cast<int>(w)); });
    }
    task(&ctx, 0);
    for (auto& t : pool) t.join();
}

// Bit 31 set exactly when v is inf or NaN: adding 2^23 to |v|'s bits carries into bit 31 exactly when
// the exponent field is all ones.  OR-ed over many values, it is a test that vectorises.
inline uint32_t nonfinite_bit(float v) { return (f32_bits(v) & 0x7fffffffu) + 0x00800000u; }

// True when none of x[0..n) is inf or NaN.
inline bool all_finite(const float* x, int n) {
    uint32_t acc = 0;
    for (int i = 0; i < n; ++i) acc |= nonfinite_bit(x[i]);
    return (acc & 0x80000000u) == 0;
}

inline int first_nonfinite(const float* x, int n) {
    for (int i = 0; i < n; ++i)
        if ((f32_bits(x[i]) & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
}

// One instantiation per type so the format switch folds away inside the hot loop.  Rows are
// contiguous, so the input and output pointers simply advance block by block; only the column
// (imatrix offset) and the row (sigma2) are tracked.
// kFake: write dequantize(quantize(x)) as floats to `fake_out` instead of the packed bytes to a.y.
template <int T, bool kFake>
int64_t encode_range(const QuantizeArgs& a, float* fake_out, int64_t b0, int64_t b1) {
    const Geometry geo = geometry(T);
    if constexpr (T == kF32 || T == kF16 || T == kBF16) {  // one value per "block"
        // Plain float conversions run as one tight (vectorised) loop per chunk of values, with the
        // finiteness test folded in; a chunk holding a non-finite value is then searched for it.
        constexpr int64_t kChunk = 1024;
        for (int64_t c0 = b0; c0 < b1; c0 += kChunk) {
            const int n = static_cast<int>(std::min(kChunk, b1 - c0));
            const float* xc = a.x + c0;
            uint8_t* yc = a.y + c0 * geo.type_size;
            uint32_t acc = 0;
            for (int i = 0; i < n; ++i) {
                acc |= nonfinite_bit(xc[i]);
                if constexpr (kFake) {
                    fake_out[c0 + i] = T == kF32   ? xc[i]
                                       : T == kF16 ? fp16_to_fp32(fp32_to_fp16(xc[i]))
                                                   : bf16_to_fp32(fp32_to_bf16(xc[i]));
                } else if constexpr (T == kF32) {
                    memcpy(yc + 4 * i, xc + i, 4);
                } else if constexpr (kLittleEndian) {
                    // a whole uint16 per value: byte-wise stores would defeat the vectoriser
                    const uint16_t h = T == kF16 ? fp32_to_fp16(xc[i]) : fp32_to_bf16(xc[i]);
                    memcpy(yc + 2 * i, &h, 2);
                } else {
                    quantize_block(T, xc + i, nullptr, 0.0f, yc + 2 * i);
                }
            }
            if (acc & 0x80000000u) return c0 + first_nonfinite(xc, n);
        }
        return -1;
    }
    const BlockLocation start = locate_block(b0, a.n_per_row, geo);
    int64_t row = start.row, col = start.col;
    const float* xb = a.x + start.x_offset;
    uint8_t* yb = a.y + start.y_offset;
    for (int64_t i = b0; i < b1; ++i) {
        if (!all_finite(xb, geo.block_size)) return (xb - a.x) + first_nonfinite(xb, geo.block_size);
        const float* qw = a.imatrix ? a.imatrix + col : nullptr;
        const float s2 = a.row_sigma2 ? a.row_sigma2[row] : 0.0f;
        if constexpr (kFake) {
            fake_quant_block(T, xb, qw, s2, fake_out + (xb - a.x));
        } else {
            quantize_block(T, xb, qw, s2, yb);
        }
        xb += geo.block_size;
        yb += geo.type_size;
        col += geo.block_size;
        if (col == a.n_per_row) {
            col = 0;
            ++row;
        }
    }
    return -1;
}

template <int T>
void dequantize_range(const DequantizeArgs& a, int64_t b0, int64_t b1) {
    const Geometry geo = geometry(T);
    const BlockLocation start = locate_block(b0, a.n_per_row, geo);
    const uint8_t* yb = a.y + start.y_offset;
    float* xb = a.x + start.x_offset;
    for (int64_t i = b0; i < b1; ++i, yb += geo.type_size, xb += geo.block_size) dequantize_block(T, yb, xb);
}

using QuantizeRange = int64_t (*)(const QuantizeArgs&, float*, int64_t, int64_t);
using DequantizeRange = void (*)(const DequantizeArgs&, int64_t, int64_t);

template <int T>
constexpr QuantizeRange q_entry() { return &encode_range<T, false>; }
template <int T>
constexpr QuantizeRange fq_entry() { return &encode_range<T, true>; }
template <int T>
constexpr DequantizeRange dq_entry() { return &dequantize_range<T>; }

#define SQAT_FOR_EACH_TYPE(X) \
    X(kF32) X(kF16) X(kBF16) X(kQ8_0) X(kQ4_0) X(kQ4_1) X(kQ5_0) X(kQ5_1) X(kIQ4_NL) X(kQ4_K) X(kQ5_K) X(kQ6_K) X(kIQ4_XS)

QuantizeRange quantize_range_for(int type) {
    switch (type) {
#define SQAT_CASE(T) case T: return q_entry<T>();
        SQAT_FOR_EACH_TYPE(SQAT_CASE)
#undef SQAT_CASE
        default: return nullptr;
    }
}

QuantizeRange fake_quant_range_for(int type) {
    switch (type) {
#define SQAT_CASE(T) case T: return fq_entry<T>();
        SQAT_FOR_EACH_TYPE(SQAT_CASE)
#undef SQAT_CASE
        default: return nullptr;
    }
}

DequantizeRange dequantize_range_for(int type) {
    switch (type) {
#define SQAT_CASE(T) case T: return dq_entry<T>();
        SQAT_FOR_EACH_TYPE(SQAT_CASE)
#undef SQAT_CASE
        default: return nullptr;
    }
}

}  // namespace

namespace {

// Fills `storage` with each row's Σx²/n when the type's imatrix path needs it; returns its data or nullptr.
const float* row_sigma2_if_needed(const QuantizeArgs& a, std::vector<float>& storage, int nthreads) {
    if (a.imatrix == nullptr || !uses_row_sigma2(a.type)) return nullptr;
    storage.resize(static_cast<size_t>(a.nrows));
    parallel_chunks(a.nrows, a.n_per_row, nthreads, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) storage[r] = row_sigma2(a.x + r * a.n_per_row, a.n_per_row);
    });
    return storage.data();
}

// Shared driver of quantize_rows and fake_quant_rows: exactly one of y / fake_out is non-null.
int64_t encode_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix, uint8_t* y,
                    float* fake_out, int nthreads) {
    const Geometry g = geometry(type);
    const QuantizeRange run = fake_out ? fake_quant_range_for(type) : quantize_range_for(type);
    if (run == nullptr || g.block_size == 0 || nrows == 0 || n_per_row == 0) return -1;

    // Plain float conversions have no use for an importance matrix.
    if (type == kF32 || type == kF16 || type == kBF16) imatrix = nullptr;
    std::vector<float> sigma2;
    // The fake-quant path never writes through a.y; pointing it at the float output (at least as many
    // bytes as any packed form) keeps the shared pointer arithmetic inside a real buffer.
    uint8_t* packed = fake_out ? reinterpret_cast<uint8_t*>(fake_out) : y;
    QuantizeArgs a{type, x, imatrix, nullptr, packed, nrows, n_per_row};
    // Rows with a non-finite value get a garbage sigma2 here; they are rejected below anyway.
    a.row_sigma2 = row_sigma2_if_needed(a, sigma2, nthreads);

    // The first non-finite value overall: chunks are handed out in order, so a chunk that starts past
    // a value already found bad can be skipped, and the smallest index found is the first one.
    const int64_t total = nrows * (n_per_row / g.block_size);
    std::atomic<int64_t> first_bad{INT64_MAX};
    parallel_chunks(total, g.block_size, nthreads, [&](int64_t b0, int64_t b1) {
        if (b0 * g.block_size > first_bad.load(std::memory_order_relaxed)) return;
        const int64_t bad = run(a, fake_out, b0, b1);
        if (bad < 0) return;
        int64_t cur = first_bad.load(std::memory_order_relaxed);
        while (bad < cur && !first_bad.compare_exchange_weak(cur, bad, std::memory_order_relaxed)) {
        }
    });
    const int64_t bad = first_bad.load();
    return bad == INT64_MAX ? -1 : bad;
}

}  // namespace

int64_t quantize_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      uint8_t* y, int nthreads) {
    return encode_rows(type, x, nrows, n_per_row, imatrix, y, nullptr, nthreads);
}

int64_t fake_quant_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                        float* out, int nthreads) {
    return encode_rows(type, x, nrows, n_per_row, imatrix, nullptr, out, nthreads);
}

void clipped_grad_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                       const float* grad, float* grad_out, int nthreads) {
    const Geometry g = geometry(type);
    if (g.block_size == 0 || nrows == 0 || n_per_row == 0) return;
    // No packed output here; the argument block only carries the input side.
    QuantizeArgs a{type, x, imatrix, nullptr, nullptr, nrows, n_per_row};
    std::vector<float> sigma2;
    a.row_sigma2 = row_sigma2_if_needed(a, sigma2, nthreads);
    const int64_t total = nrows * (n_per_row / g.block_size);
    parallel_chunks(total, g.block_size, nthreads, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) {
            const BlockLocation loc = locate_block(i, n_per_row, g);
            const float* qw = imatrix ? imatrix + loc.col : nullptr;
            const float s2 = a.row_sigma2 ? a.row_sigma2[loc.row] : 0.0f;
            clipped_grad_block(type, x + loc.x_offset, qw, s2, grad + loc.x_offset, grad_out + loc.x_offset);
        }
    });
}

void dequantize_rows(int type, const uint8_t* y, int64_t nrows, int64_t n_per_row, float* x, int nthreads) {
    const Geometry g = geometry(type);
    const DequantizeRange run = dequantize_range_for(type);
    if (run == nullptr || g.block_size == 0 || nrows == 0 || n_per_row == 0) return;
    const DequantizeArgs a{type, y, x, nrows, n_per_row};
    const int64_t total = nrows * (n_per_row / g.block_size);
    parallel_chunks(total, g.block_size, nthreads, [&](int64_t b0, int64_t b1) { run(a, b0, b1); });
}

}  // namespace sqat::cpu
