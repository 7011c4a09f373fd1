// SPDX-License-Identifier: Apache-2.0
/// @file parallel.hpp
/// @brief Independent host tasks spread over a few threads for one call (the caller is one of
/// them).
#pragma once

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace dynllava::nn {

/// @brief Runs `fn(task, worker)` once for every `task` in `[0, tasks)` on `workers` threads
/// (the calling thread and `workers - 1` started for the call), `worker` in `[0, workers)`;
/// tasks are taken in increasing order as threads become free. Which worker runs a task must
/// not change its result: give each worker its own scratch, indexed by `worker`. With
/// `workers <= 1` the tasks run in order on the calling thread. The first exception a task
/// throws is rethrown after every thread has stopped; tasks not yet started are skipped.
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
  auto work = [&](std::size_t worker) {
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
  {
    std::vector<std::jthread> threads;
    threads.reserve(workers - 1);
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(work, w);
    work(0);
  }  // joined
  if (error) std::rethrow_exception(error);
}

}  // namespace dynllava::nn
