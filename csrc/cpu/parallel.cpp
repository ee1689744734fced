// The worker pool behind every variant's loops (see parallel.h).  Baseline-compiled on purpose: the
// std:: thread and container templates used here must have a single, baseline instantiation.
#include "cpu/parallel.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace sqat::parallel {
namespace {

// Below this many values a thread is not worth starting; work is handed out in chunks of at least
// kMinValuesPerChunk values.
constexpr int64_t kMinValuesPerThread = 16384;
constexpr int64_t kMinValuesPerChunk = 4096;

// The CPU's hint that this is a spin-wait loop (x86 PAUSE: saves power, frees the core's sibling).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

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
    static constexpr int kMaxWorkers = 1 << 15;

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

    // Runs task(ctx, 0) on the caller and task(ctx, w) on each pool thread w in [1, workers) that picks
    // the job up before the caller's own task(ctx, 0) has returned; returns once those have finished.
    // The task must therefore be complete whichever workers join (a shared queue of chunks is).  A
    // sleeping thread can take a millisecond to wake on a virtual machine: the caller does not wait for
    // one that has not joined by then.  False (nothing run) when the pool is busy with another caller's job.
    bool run(int workers, Task task, void* ctx) {
        std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        const uint64_t before = state_.load(std::memory_order_relaxed);
        while (static_cast<int>(threads_.size()) < workers - 1) {
            const int id = static_cast<int>(threads_.size()) + 1;
            // the job below is new to the thread
            threads_.emplace_back([this, id, before] { work(id, seq_of(before)); });
        }
        task_ = task;
        ctx_ = ctx;
        {
            std::lock_guard<std::mutex> lk(wake_mutex_);
            const uint64_t seq = (seq_of(before) + 1) & 0xffffffffu;
            state_.store((seq << 32) | (static_cast<uint64_t>(workers) << 16) | kOpen,
                         std::memory_order_release);
        }
        wake_.notify_all();
        task(ctx, 0);
        state_.fetch_and(~kOpen, std::memory_order_acq_rel);  // no thread joins from here on
        for (int spins = 0; (state_.load(std::memory_order_acquire) & kActive) != 0; ++spins)
            if (spins > 64) std::this_thread::yield();
        return true;
    }

   private:
    // state_: (job sequence number << 32) | (worker count << 16) | open flag | threads inside the job.
    // Threads join only while the job is open, so the caller, having closed it, waits for exactly those
    // that read task_ and ctx_; the others never touch them (the next job may already be rewriting them).
    static constexpr uint64_t kOpen = 1u << 15;
    static constexpr uint64_t kActive = kOpen - 1;
    static uint64_t seq_of(uint64_t s) { return s >> 32; }
    static int workers_of(uint64_t s) { return static_cast<int>((s >> 16) & 0xffffu); }

    explicit WorkerPool(long pid) : pid_(pid), cpus_(usable_cpus()) {}

    static int usable_cpus() {
#if defined(__linux__)
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
        return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    }

    void work(int id, uint64_t seen) {
        for (;;) {
            uint64_t s = state_.load(std::memory_order_acquire);
            const bool yield = workers_of(s) > cpus_;  // more threads than CPUs: see kPollTime
            const auto poll_until = std::chrono::steady_clock::now() + kPollTime;
            for (unsigned spins = 1; seq_of(s) == seen; ++spins) {
                if (yield) {
                    std::this_thread::yield();
                } else {
                    cpu_relax();
                }
                if (spins % 64 == 0 && std::chrono::steady_clock::now() >= poll_until) break;
                s = state_.load(std::memory_order_acquire);
            }
            if (seq_of(s) == seen) {
                std::unique_lock<std::mutex> lk(wake_mutex_);
                wake_.wait(lk, [&] { return seq_of(s = state_.load(std::memory_order_acquire)) != seen; });
            }
            seen = seq_of(s);
            while ((s & kOpen) != 0 && id < workers_of(s) && seq_of(s) == seen) {
                if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                                 std::memory_order_acquire)) {
                    task_(ctx_, id);
                    state_.fetch_sub(1, std::memory_order_release);
                    break;
                }
            }
        }
    }

    // How long a worker polls between jobs before it sleeps.  Where the threads fit the CPUs it polls with
    // the CPU's spin-wait hint, not sched_yield: measured on a 2-vCPU Linux 6.18 VM, on 1.3 ms jobs that
    // followed 5 ms of process idleness, a worker that had yielded before going to sleep joined only after
    // the whole job in 81-89 of 100 calls, one that had not in 30-35.  Where they do not fit (8 threads on 2
    // CPUs), spinning cost 2-3 ms per call and not polling at all 0.45 ms back to back; yielding, 10-20 us.
    static constexpr std::chrono::microseconds kPollTime{1000};

    const long pid_;
    const int cpus_;  // CPUs this process may run on, when the pool was made
    std::mutex run_mutex_;
    std::vector<std::thread> threads_;
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    std::atomic<uint64_t> state_{0};
    Task task_ = nullptr;
    void* ctx_ = nullptr;
};

// Chunks of [0, n) for whichever threads ask first.
struct ChunkQueue {
    ChunkFn fn;
    void* fn_ctx;
    int64_t n, chunk;
    std::atomic<int64_t> next{0};

    static void drain(void* self) {
        ChunkQueue& q = *static_cast<ChunkQueue*>(self);
        for (;;) {
            const int64_t b = q.next.fetch_add(q.chunk, std::memory_order_relaxed);
            if (b >= q.n) return;
            q.fn(q.fn_ctx, b, std::min(q.n, b + q.chunk));
        }
    }
};

// The OpenMP team of a runtime some other library of this process loaded globally (PyTorch's libgomp;
// LLVM's and Intel's runtimes export the same GOMP_parallel entry).  Running on that team instead of our
// own workers matters when both are in one process: after each of its parallel ops, PyTorch's threads keep
// spinning on every core for a while, and a worker of ours then shares a core with a spinner; a chunk it
// holds when the scheduler preempts it delays the whole call by a time slice (measured: a 512x512 Q8_0
// fake quant right after a backward pass took 3.9 ms instead of 0.2).  On the team, the spinning threads
// themselves pick the job up.  Found by symbol at run time, so the module neither links nor needs OpenMP.
using OpenMpParallel = void (*)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);

std::atomic<bool> g_openmp_allowed{true};
// A forked child must not use the team: GNU libgomp's thread pool does not survive fork, and a child that
// asks the parent's pool for threads waits forever.
std::atomic<bool> g_forked{false};

OpenMpParallel openmp_team() {
    if (!g_openmp_allowed.load(std::memory_order_relaxed) || g_forked.load(std::memory_order_relaxed))
        return nullptr;
    static std::atomic<OpenMpParallel> found{nullptr};
    OpenMpParallel p = found.load(std::memory_order_relaxed);
    if (p == nullptr) {  // looked up again while absent: the runtime may be loaded later (import torch)
        p = reinterpret_cast<OpenMpParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
        found.store(p, std::memory_order_relaxed);
    }
    return p;
}

[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, [] { g_forked.store(true); });

}  // namespace

void set_openmp_allowed(bool allowed) { g_openmp_allowed.store(allowed); }

bool openmp_available() { return openmp_team() != nullptr; }

// Dynamic hand-out keeps both cores busy to the end even when one of them is slowed by other load,
// where a fixed half each would leave one waiting.
void run_chunks(int64_t n, int64_t values_per_item, int nthreads, ChunkFn fn, void* fn_ctx) {
    int64_t workers = std::min<int64_t>(std::max(1, nthreads), WorkerPool::kMaxWorkers - 1);
    const int64_t by_size = std::max<int64_t>(1, (n * values_per_item) / kMinValuesPerThread);
    workers = std::min(workers, std::min(by_size, std::max<int64_t>(1, n)));
    if (workers == 1) {
        fn(fn_ctx, 0, n);
        return;
    }
    // About sixteen chunks per worker, none below kMinValuesPerChunk values.
    const int64_t min_items = std::max<int64_t>(1, kMinValuesPerChunk / std::max<int64_t>(1, values_per_item));
    const int64_t chunk = std::max(min_items, (n + 16 * workers - 1) / (16 * workers));
    ChunkQueue queue{fn, fn_ctx, n, chunk};
    if (const OpenMpParallel team = openmp_team()) {
        team(ChunkQueue::drain, &queue, static_cast<unsigned>(workers), 0);
        return;
    }
    const WorkerPool::Task task = [](void* q, int) { ChunkQueue::drain(q); };
    if (WorkerPool::get().run(static_cast<int>(workers), task, &queue)) return;
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (int64_t w = 1; w < workers; ++w) {
        try {
            pool.emplace_back([&queue] { ChunkQueue::drain(&queue); });
        } catch (const std::system_error&) {
            break;  // no thread to be had (a loaded machine): the chunks are shared, the caller takes the rest
        }
    }
    ChunkQueue::drain(&queue);
    for (auto& t : pool) t.join();
}

}  // namespace sqat::parallel
