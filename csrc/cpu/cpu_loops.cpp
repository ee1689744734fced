#include "cpu_loops.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "sqat/grid.h"

namespace sqat::cpu {
namespace {

// Below this many values a thread is not worth starting.
constexpr int64_t kMinValuesPerThread = 16384;

// Runs f(begin, end, worker) over [0, n) split into contiguous ranges, one per worker.
template <class F>
void parallel_ranges(int64_t n, int64_t values_per_item, int nthreads, F&& f) {
    int64_t workers = std::max<int64_t>(1, nthreads);
    const int64_t by_size = std::max<int64_t>(1, (n * values_per_item) / kMinValuesPerThread);
    workers = std::min(workers, std::min(by_size, std::max<int64_t>(1, n)));
    if (workers == 1) {
        f(int64_t{0}, n, 0);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    const int64_t chunk = (n + workers - 1) / workers;
    for (int64_t w = 1; w < workers; ++w) {
        const int64_t b = std::min(n, w * chunk), e = std::min(n, (w + 1) * chunk);
        pool.emplace_back([&f, b, e, w] { f(b, e, static_cast<int>(w)); });
    }
    f(int64_t{0}, std::min(n, chunk), 0);
    for (auto& t : pool) t.join();
}

inline bool all_finite(const float* x, int n) {
    bool ok = true;
    for (int i = 0; i < n; ++i) ok &= (f32_bits(x[i]) & 0x7f800000u) != 0x7f800000u;
    return ok;
}

inline int first_nonfinite(const float* x, int n) {
    for (int i = 0; i < n; ++i)
        if ((f32_bits(x[i]) & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
}

// One instantiation per type so the format switch folds away inside the hot loop.  Rows are
// contiguous, so the input and output pointers simply advance block by block; only the column
// (imatrix offset) and the row (sigma2) are tracked.
template <int T>
int64_t quantize_range(const QuantizeArgs& a, int64_t b0, int64_t b1) {
    const Geometry geo = geometry(T);
    const BlockLocation start = locate_block(b0, a.n_per_row, geo);
    int64_t row = start.row, col = start.col;
    const float* xb = a.x + start.x_offset;
    uint8_t* yb = a.y + start.y_offset;
    for (int64_t i = b0; i < b1; ++i) {
        if (!all_finite(xb, geo.block_size)) return (xb - a.x) + first_nonfinite(xb, geo.block_size);
        const float* qw = a.imatrix ? a.imatrix + col : nullptr;
        const float s2 = a.row_sigma2 ? a.row_sigma2[row] : 0.0f;
        quantize_block(T, xb, qw, s2, yb);
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

using QuantizeRange = int64_t (*)(const QuantizeArgs&, int64_t, int64_t);
using DequantizeRange = void (*)(const DequantizeArgs&, int64_t, int64_t);

template <int T>
constexpr QuantizeRange q_entry() { return &quantize_range<T>; }
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

DequantizeRange dequantize_range_for(int type) {
    switch (type) {
#define SQAT_CASE(T) case T: return dq_entry<T>();
        SQAT_FOR_EACH_TYPE(SQAT_CASE)
#undef SQAT_CASE
        default: return nullptr;
    }
}

}  // namespace

int64_t quantize_rows(int type, const float* x, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      uint8_t* y, int nthreads) {
    const Geometry g = geometry(type);
    const QuantizeRange run = quantize_range_for(type);
    if (run == nullptr || g.block_size == 0 || nrows == 0 || n_per_row == 0) return -1;

    // Plain float conversions have no use for an importance matrix.
    if (type == kF32 || type == kF16 || type == kBF16) imatrix = nullptr;
    std::vector<float> sigma2;
    QuantizeArgs a{type, x, imatrix, nullptr, y, nrows, n_per_row};
    if (imatrix != nullptr && uses_row_sigma2(type)) {
        // Rows with a non-finite value get a garbage sigma2 here; they are rejected below anyway.
        sigma2.resize(static_cast<size_t>(nrows));
        parallel_ranges(nrows, n_per_row, nthreads, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) sigma2[r] = row_sigma2(x + r * n_per_row, n_per_row);
        });
        a.row_sigma2 = sigma2.data();
    }

    const int64_t total = nrows * (n_per_row / g.block_size);
    std::vector<int64_t> first_bad(static_cast<size_t>(std::max(1, nthreads)), -1);
    parallel_ranges(total, g.block_size, nthreads, [&](int64_t b0, int64_t b1, int w) {
        first_bad[w] = run(a, b0, b1);
    });
    int64_t bad = -1;
    for (int64_t v : first_bad)
        if (v >= 0 && (bad < 0 || v < bad)) bad = v;
    return bad;
}

void dequantize_rows(int type, const uint8_t* y, int64_t nrows, int64_t n_per_row, float* x, int nthreads) {
    const Geometry g = geometry(type);
    const DequantizeRange run = dequantize_range_for(type);
    if (run == nullptr || g.block_size == 0 || nrows == 0 || n_per_row == 0) return;
    const DequantizeArgs a{type, y, x, nrows, n_per_row};
    const int64_t total = nrows * (n_per_row / g.block_size);
    parallel_ranges(total, g.block_size, nthreads, [&](int64_t b0, int64_t b1, int) { run(a, b0, b1); });
}

}  // namespace sqat::cpu
