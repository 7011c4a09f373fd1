// SPDX-License-Identifier: Apache-2.0
/// @file parallel.hpp
/// @brief The host thread count of the nn blocks, and independent tasks spread over that many
/// threads: the caller and the threads of a pool kept for the process.
#pragma once

#include <dynllava/core/error.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <vector>

namespace dynllava::nn {

namespace detail {

inline std::atomic<int>& thread_count_slot() noexcept {
  static std::atomic<int> count{
      static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
  return count;
}

/// @brief Threads kept for the process that run the worker loops of one `parallel_for` at a
/// time. Created on first use, grown to the largest count asked, never destroyed (a static
/// destructor could run while another static's destructor still computes); idle threads spin
/// for about 50 us after a call (the next call of a layer usually comes sooner), then sleep.
class task_pool {
 public:
  /// The worker loop of one call: run by the caller as worker 0 and by pool threads as
  /// `1 .. workers - 1`; must not throw.
  using body = void (*)(void* context, std::size_t worker);

  static task_pool& instance() {
    static task_pool* pool = new task_pool;  // never deleted, see above
    return *pool;
  }

  /// @brief Runs `b(context, w)` for every `w` in `[0, workers)`, `w = 0` on the calling
  /// thread, and returns once all have returned. Returns false, running nothing, when the pool
  /// is busy (a call from another thread, or from inside a task) or was created by a parent of
  /// this process (after `fork` it has no threads); the caller then starts its own threads.
  bool run(std::size_t workers, body b, void* context) {
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
    if (::getpid() != owner_) {
      busy_.store(false, std::memory_order_release);
      return false;
    }
    {
      const std::lock_guard lock(mutex_);
      try {
        while (threads_.size() + 1 < workers) {
          const std::size_t index = threads_.size() + 1;
          threads_.emplace_back([this, index] { loop(index); });
        }
      } catch (...) {
        // no more threads to be had (std::system_error, std::bad_alloc): run on those there are
      }
      workers = std::min(workers, threads_.size() + 1);
      body_ = b;
      context_ = context;
      active_ = workers;
      pending_.store(workers - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    b(context, 0);
    wait_done();
    busy_.store(false, std::memory_order_release);
    return true;
  }

 private:
  task_pool() = default;

  static void pause() noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__CUDACC__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  template <class Ready>
  static bool spin_until(Ready ready) noexcept {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (unsigned i = 0;; ++i) {
      if (ready()) return true;
      pause();
      if ((i & 63u) == 63u && std::chrono::steady_clock::now() > until) return false;
    }
  }

  void wait_done() {
    const auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
    if (spin_until(done)) return;
    std::unique_lock lock(mutex_);
    done_.wait(lock, done);
  }

  void loop(std::size_t index) {
    std::uint64_t seen = 0;
    for (;;) {
      const auto fresh = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      body b = nullptr;
      void* context = nullptr;
      bool mine = false;
      if (!spin_until(fresh)) {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, fresh);
      }
      {
        const std::lock_guard lock(mutex_);
        seen = generation_.load(std::memory_order_relaxed);
        mine = index < active_;
        b = body_;
        context = context_;
      }
      if (!mine) continue;
      b(context, index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        const std::lock_guard lock(mutex_);  // no lost wake-up between the check and the wait
        done_.notify_one();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::size_t> pending_{0};
  std::atomic<bool> busy_{false};
  std::size_t active_ = 0;
  body body_ = nullptr;
  void* context_ = nullptr;
  const ::pid_t owner_ = ::getpid();
};

}  // namespace detail

/// @brief Sets the number of threads every later nn call of the process spreads its work over
/// (the calling thread and up to `threads - 1` threads of a pool). The initial count is the
/// number of cores (`std::thread::hardware_concurrency()`). Results do not depend on it: work
/// is split into tasks whose arithmetic is the same whichever thread runs them.
/// @throws dynllava::error when `threads < 1`.
inline void set_thread_count(int threads) {
  DYNLLAVA_EXPECTS(threads >= 1, "set_thread_count: threads must be >= 1, got {}", threads);
  detail::thread_count_slot().store(threads, std::memory_order_relaxed);
}

/// The number of threads the nn calls spread their work over.
inline int thread_count() noexcept {
  return detail::thread_count_slot().load(std::memory_order_relaxed);
}

/// Up to `thread_count()` workers, about one per `grain` units of `work`, and at most `tasks`.
inline std::size_t workers_for(double work, double grain, std::size_t tasks) noexcept {
  const double by_work = work / grain;
  const auto wanted = by_work < 1.0 ? std::size_t{1} : static_cast<std::size_t>(by_work);
  return std::max<std::size_t>(1,
                               std::min({static_cast<std::size_t>(thread_count()), wanted, tasks}));
}

/// @brief Runs `fn(task, worker)` once for every `task` in `[0, tasks)` on `workers` threads
/// (the calling thread and `workers - 1` threads of the pool, or threads started for the call
/// when the pool is busy), `worker` in `[0, workers)`; tasks are taken in increasing order as
/// threads become free. Which worker runs a task must not change its result: give each worker
/// its own scratch, indexed by `worker`. With `workers <= 1` the tasks run in order on the
/// calling thread. The first exception a task throws is rethrown after every thread has
/// stopped; tasks not yet started are skipped.
template <std::invocable<std::size_t, std::size_t> Fn>
void parallel_for(std::size_t tasks, std::size_t workers, Fn&& fn) {
  workers = std::min(workers, tasks);
  if (workers <= 1) {
    for (std::size_t t = 0; t < tasks; ++t) fn(t, std::size_t{0});
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](std::size_t worker) noexcept {
    for (std::size_t t = next.fetch_add(1); t < tasks && !failed.load(); t = next.fetch_add(1)) {
      try {
        fn(t, worker);
      } catch (...) {
        const std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true);
      }
    }
  };
  using work_type = decltype(work);
  const auto body = [](void* context, std::size_t worker) {
    (*static_cast<work_type*>(context))(worker);
  };
  if (!detail::task_pool::instance().run(workers, body, &work)) {
    std::vector<std::jthread> threads;
    threads.reserve(workers - 1);
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(work, w);
    work(0);
  }  // joined
  if (error) std::rethrow_exception(error);
}

/// @brief `fn(begin, end)` over `[0, n)` in contiguous chunks of at least `grain` items whose
/// starts are multiples of `align`, on up to `thread_count()` threads; one call `fn(0, n)` on
/// the calling thread when `n < 2 grain`. For elementwise and row-wise work whose result per
/// item does not depend on the chunking.
template <std::invocable<std::size_t, std::size_t> Fn>
void parallel_chunks(std::size_t n, std::size_t grain, std::size_t align, Fn&& fn) {
  const std::size_t workers =
      workers_for(static_cast<double>(n), static_cast<double>(grain), std::max<std::size_t>(1, n));
  if (workers <= 1) {
    if (n > 0) fn(std::size_t{0}, n);
    return;
  }
  align = std::max<std::size_t>(align, 1);
  const std::size_t chunk = ((n + workers - 1) / workers + align - 1) / align * align;
  const std::size_t chunks = (n + chunk - 1) / chunk;
  parallel_for(chunks, chunks, [&](std::size_t t, std::size_t) {
    const std::size_t begin = t * chunk;
    fn(begin, std::min(n, begin + chunk));
  });
}

/// `fn(begin, end)` over `rows` rows of `width` values each, in chunks of about 2^15 values
/// (`parallel_chunks`), for row-wise work such as the norms.
template <std::invocable<std::size_t, std::size_t> Fn>
void parallel_rows(std::size_t rows, std::size_t width, Fn&& fn) {
  const std::size_t grain =
      std::max<std::size_t>(1, (std::size_t{1} << 15) / std::max<std::size_t>(width, 1));
  parallel_chunks(rows, grain, 1, fn);
}

/// `x[i] += y[i]` for `n` host values, on up to `thread_count()` threads.
inline void add_inplace(float* x, const float* y, std::size_t n) {
  parallel_chunks(n, std::size_t{1} << 17, 1, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) x[i] += y[i];
  });
}

}  // namespace dynllava::nn
