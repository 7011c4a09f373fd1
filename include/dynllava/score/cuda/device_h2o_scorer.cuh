// SPDX-License-Identifier: Apache-2.0
/// @file device_h2o_scorer.cuh
/// @brief H2O's accumulated-attention scorer on CUDA, the twin of `h2o_scorer`
/// (score/h2o_scorer.hpp) and the CUDA model of `stateful_token_scorer<S, cuda::on_stream>`: one
/// fp64 accumulator per tracked token, `[batch, capacity]` in device memory, with the tracked
/// counts in device memory too. Every update (`append`, `accumulate`, `retain`) is one check
/// kernel and one apply kernel on the caller's stream: no allocation, no host synchronisation.
/// An update that the device finds invalid changes nothing and raises `invalid_flag()`; the
/// host twin throws there. `tracked(b)` reads a count back and therefore synchronises: it is for
/// set-up and tests, not for the decode loop.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/core/cuda/error.cuh>
#include <dynllava/core/cuda/execution.cuh>
#include <dynllava/core/error.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/score/concepts.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace dynllava::cuda {

namespace detail {

/// One block: `*failed = 1` (and `*sticky = 1`) unless every `counts[b] >= 0` fits `capacity`.
template <int = 0>
__global__ void h2o_append_check_kernel(const index_t* lengths, const index_t* counts,
                                        std::size_t batch, index_t capacity, int* failed,
                                        int* sticky) {
  bool ok = true;
  for (std::size_t b = threadIdx.x; b < batch; b += blockDim.x) {
    ok = ok && counts[b] >= 0 && static_cast<long long>(lengths[b]) + counts[b] <= capacity;
  }
  if (__syncthreads_and(ok ? 1 : 0) == 0 && threadIdx.x == 0) {
    *failed = 1;
    *sticky = 1;
  }
}

/// Grid over the batch: zeroes the new accumulators and grows the tracked counts.
template <int = 0>
__global__ void h2o_append_kernel(index_t* lengths, double* acc, const index_t* counts,
                                  std::size_t batch, index_t capacity, const int* failed) {
  if (*failed != 0) return;
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t n = lengths[b];
    double* row = acc + b * static_cast<std::size_t>(capacity);
    for (index_t j = n + static_cast<index_t>(threadIdx.x); j < n + counts[b];
         j += static_cast<index_t>(blockDim.x)) {
      row[j] = 0.0;
    }
    __syncthreads();  // every thread has read lengths[b]
    if (threadIdx.x == 0) lengths[b] = n + counts[b];
  }
}

/// One block: checks that every sequence's probabilities are whole rows of its tracked tokens.
template <int = 0>
__global__ void h2o_accumulate_check_kernel(const index_t* lengths, const index_t* indptr,
                                            std::size_t batch, std::size_t values, int* failed,
                                            int* sticky) {
  bool ok = true;
  if (threadIdx.x == 0) ok = indptr[0] == 0 && static_cast<std::size_t>(indptr[batch]) == values;
  for (std::size_t b = threadIdx.x; b < batch; b += blockDim.x) {
    const long long size = static_cast<long long>(indptr[b + 1]) - indptr[b];
    const index_t n = lengths[b];
    ok = ok && size >= 0 && (n == 0 ? size == 0 : size % n == 0);
  }
  if (__syncthreads_and(ok ? 1 : 0) == 0 && threadIdx.x == 0) {
    *failed = 1;
    *sticky = 1;
  }
}

/// Grid over the batch: `acc[b][j] += sum_r probs_b[r, j]`, rows in order.
template <int = 0>
__global__ void h2o_accumulate_kernel(const index_t* lengths, double* acc, const float* probs,
                                      const index_t* indptr, std::size_t batch, index_t capacity,
                                      const int* failed) {
  if (*failed != 0) return;
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const auto n = static_cast<std::size_t>(lengths[b]);
    if (n == 0) continue;
    const auto first = static_cast<std::size_t>(indptr[b]);
    const std::size_t rows = (static_cast<std::size_t>(indptr[b + 1]) - first) / n;
    double* row = acc + b * static_cast<std::size_t>(capacity);
    for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) {
      double sum = row[j];
      for (std::size_t r = 0; r < rows; ++r) sum += probs[first + r * n + j];
      row[j] = sum;
    }
  }
}

/// Grid over the batch: checks the kept lists (CSR into `kept_size` entries, ascending, below
/// each sequence's count).
template <int = 0>
__global__ void h2o_retain_check_kernel(const index_t* lengths, const index_t* indptr,
                                        const index_t* kept, std::size_t kept_size,
                                        std::size_t batch, int* failed, int* sticky) {
  const std::size_t b = blockIdx.x;
  bool ok = true;
  if (b == 0 && threadIdx.x == 0) ok = indptr[0] == 0;
  const index_t begin = indptr[b];
  const index_t end = indptr[b + 1];
  ok = ok && begin >= 0 && end >= begin && static_cast<std::size_t>(end) <= kept_size &&
       end - begin <= lengths[b];
  if (ok) {
    for (index_t j = begin + static_cast<index_t>(threadIdx.x); j < end;
         j += static_cast<index_t>(blockDim.x)) {
      ok = ok && kept[j] >= 0 && kept[j] < lengths[b] && (j == begin || kept[j] > kept[j - 1]);
    }
  }
  if (!ok) {
    atomicExch(failed, 1);
    atomicExch(sticky, 1);
  }
}

/// @brief Grid over the batch: keeps the accumulators at the kept positions, in place. Tiles of
/// `blockDim.x` go in ascending order; each tile reads all its sources before writing, and a
/// source `kept[j] >= j` is never below a position an earlier tile wrote.
template <int = 0>
__global__ void h2o_retain_kernel(index_t* lengths, double* acc, const index_t* indptr,
                                  const index_t* kept, std::size_t batch, index_t capacity,
                                  const int* failed) {
  if (*failed != 0) return;
  for (std::size_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const index_t begin = indptr[b];
    const index_t count = indptr[b + 1] - begin;
    double* row = acc + b * static_cast<std::size_t>(capacity);
    for (index_t base = 0; base < count; base += static_cast<index_t>(blockDim.x)) {
      const index_t j = base + static_cast<index_t>(threadIdx.x);
      const double v = j < count ? row[kept[begin + j]] : 0.0;
      __syncthreads();  // every source of the tile is read
      if (j < count) row[j] = v;
      __syncthreads();
    }
    if (threadIdx.x == 0) lengths[b] = count;
  }
}

/// One block: every tracked accumulator, sequence by sequence, as fp32 into `out`
/// (`out_size` entries); raises the flags when they do not match the tracked total.
template <int = 0>
__global__ void h2o_scores_kernel(const index_t* lengths, const double* acc, std::size_t batch,
                                  index_t capacity, float* out, std::size_t out_size, int* sticky) {
  std::size_t offset = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const auto n = static_cast<std::size_t>(lengths[b]);
    if (offset + n > out_size) break;
    const double* row = acc + b * static_cast<std::size_t>(capacity);
    for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) {
      out[offset + j] = static_cast<float>(row[j]);
    }
    offset += n;
  }
  std::size_t total = 0;
  for (std::size_t b = 0; b < batch; ++b) total += static_cast<std::size_t>(lengths[b]);
  if (threadIdx.x == 0 && total != out_size) *sticky = 1;
}

/// One block: raises the flag unless `indptr` lists exactly `lengths[b]` rows per sequence.
template <int = 0>
__global__ void h2o_rows_check_kernel(const index_t* lengths, const index_t* indptr,
                                      std::size_t batch, int* sticky) {
  bool ok = true;
  if (threadIdx.x == 0) ok = indptr[0] == 0;
  for (std::size_t b = threadIdx.x; b < batch; b += blockDim.x) {
    ok = ok && indptr[b + 1] - indptr[b] == lengths[b];
  }
  if (__syncthreads_and(ok ? 1 : 0) == 0 && threadIdx.x == 0) *sticky = 1;
}

inline unsigned batch_grid(std::size_t batch) {
  return static_cast<unsigned>(std::clamp<std::size_t>(batch, 1, 65535));
}

}  // namespace detail

/// @brief H2O's scorer on CUDA (owning: the accumulators, counts and flags are allocated at
/// construction; every later call only enqueues work).
class h2o_device_scorer {
 public:
  /// Tracks `batch` sequences of at most `capacity` tokens each, none yet. Allocates.
  /// @throws dynllava::error on a negative capacity, dynllava::cuda_error on a CUDA failure.
  explicit h2o_device_scorer(std::size_t batch = 0, index_t capacity = 4096)
      : batch_(batch), capacity_(capacity) {
    DYNLLAVA_EXPECTS(capacity >= 0, "h2o_device_scorer: capacity must be >= 0, got {}", capacity);
    lengths_ = device_buffer<index_t>(std::vector<index_t>(batch, 0));
    acc_ = device_buffer<double>(batch * static_cast<std::size_t>(capacity));
    flags_ = device_buffer<int>(std::vector<int>{0, 0});
  }

  std::size_t batch() const noexcept { return batch_; }
  index_t capacity() const noexcept { return capacity_; }
  /// Tracked counts per sequence, in device memory (`[batch]`).
  device_span<const index_t> lengths() const noexcept { return {lengths_.data(), batch_}; }
  /// Device int raised (never cleared by the scorer) when an update or read was invalid.
  int* invalid_flag() const noexcept { return flags_.data() + 1; }

  /// Tokens tracked for sequence `b`: reads the count back, **synchronising** with the device.
  /// @throws dynllava::error on `b >= batch()`, dynllava::cuda_error on a CUDA failure.
  index_t tracked(std::size_t b) const {
    DYNLLAVA_EXPECTS(b < batch_, "h2o_device_scorer::tracked: sequence {} is not in [0, {})", b,
                     batch_);
    index_t n = 0;
    DYNLLAVA_CUDA_TRY(cudaMemcpy(&n, lengths_.data() + b, sizeof(index_t), cudaMemcpyDeviceToHost));
    return n;
  }

  /// Starts tracking `counts[b]` new tokens per sequence with score 0 (`counts` [batch] device).
  void append(on_stream exec, device_span<const index_t> counts) {
    DYNLLAVA_EXPECTS(counts.size() == batch_,
                     "h2o_device_scorer::append: counts must have one entry per sequence ({}), "
                     "got {}",
                     batch_, counts.size());
    if (batch_ == 0) return;
    start(exec);
    detail::h2o_append_check_kernel<<<1, 256, 0, exec.stream>>>(
        lengths_.data(), counts.data(), batch_, capacity_, status(), invalid_flag());
    detail::h2o_append_kernel<<<detail::batch_grid(batch_), 256, 0, exec.stream>>>(
        lengths_.data(), acc_.data(), counts.data(), batch_, capacity_, status());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }

  /// Adds attention mass: sequence `b`'s values are a row-major `[rows, tracked(b)]` block.
  void accumulate(on_stream exec, ragged_span<const float, device_space> probs) {
    DYNLLAVA_EXPECTS(probs.batch() == batch_,
                     "h2o_device_scorer::accumulate: probs cover {} sequences, expected {}",
                     probs.batch(), batch_);
    if (batch_ == 0) return;
    start(exec);
    detail::h2o_accumulate_check_kernel<<<1, 256, 0, exec.stream>>>(
        lengths_.data(), probs.indptr.data(), batch_, probs.values.size(), status(),
        invalid_flag());
    detail::h2o_accumulate_kernel<<<detail::batch_grid(batch_), 256, 0, exec.stream>>>(
        lengths_.data(), acc_.data(), probs.values.data(), probs.indptr.data(), batch_, capacity_,
        status());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }

  /// Keeps only the tracked tokens at `kept` (CSR, local, ascending; device).
  void retain(on_stream exec, ragged_span<const index_t, device_space> kept) {
    DYNLLAVA_EXPECTS(kept.batch() == batch_,
                     "h2o_device_scorer::retain: kept covers {} sequences, expected {}",
                     kept.batch(), batch_);
    if (batch_ == 0) return;
    start(exec);
    detail::h2o_retain_check_kernel<<<static_cast<unsigned>(batch_), 256, 0, exec.stream>>>(
        lengths_.data(), kept.indptr.data(), kept.values.data(), kept.values.size(), batch_,
        status(), invalid_flag());
    detail::h2o_retain_kernel<<<detail::batch_grid(batch_), 256, 0, exec.stream>>>(
        lengths_.data(), acc_.data(), kept.indptr.data(), kept.values.data(), batch_, capacity_,
        status());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }

  /// Every tracked token's accumulated attention, sequence by sequence (`out` must have one
  /// entry per tracked token; the device checks it and raises `invalid_flag()` otherwise).
  void scores(on_stream exec, device_span<float> out) const {
    if (batch_ == 0) return;
    detail::h2o_scores_kernel<<<1, 256, 0, exec.stream>>>(
        lengths_.data(), acc_.data(), batch_, capacity_, out.data(), out.size(), invalid_flag());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }

  /// As a `token_scorer`: `hidden` lists the tracked tokens themselves (contents unused; the
  /// device checks the counts) and each gets its accumulated attention.
  void score(on_stream exec, ragged_rows<const float, device_space> hidden,
             device_span<float> out) const {
    DYNLLAVA_EXPECTS(hidden.batch() == batch_,
                     "h2o_device_scorer::score: {} sequences, expected {}", hidden.batch(), batch_);
    DYNLLAVA_EXPECTS(out.size() == hidden.rows(),
                     "h2o_device_scorer::score: out must have one entry per row ({}), got {}",
                     hidden.rows(), out.size());
    if (batch_ == 0) return;
    detail::h2o_rows_check_kernel<<<1, 256, 0, exec.stream>>>(lengths_.data(), hidden.indptr.data(),
                                                              batch_, invalid_flag());
    scores(exec, out);
  }

 private:
  int* status() const noexcept { return flags_.data(); }
  /// Clears the per-call status (stream-ordered, capturable).
  void start(on_stream exec) const {
    DYNLLAVA_CUDA_TRY(cudaMemsetAsync(status(), 0, sizeof(int), exec.stream));
  }

  std::size_t batch_ = 0;
  index_t capacity_ = 0;
  device_buffer<index_t> lengths_;
  device_buffer<double> acc_;
  device_buffer<int> flags_;  ///< [0] this call's status, [1] the sticky invalid flag
};
static_assert(stateful_token_scorer<h2o_device_scorer, on_stream>);
static_assert(!stateful_token_scorer<h2o_device_scorer, host_t>);

}  // namespace dynllava::cuda
