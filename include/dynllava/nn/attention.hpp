// SPDX-License-Identifier: Apache-2.0
/// @file attention.hpp
/// @brief Multi-head softmax attention of one sequence's rows over a read-only view of its
/// cached keys and values plus the rows' own keys and values, optionally causal. The QK^T and
/// PV products are SGEMMs; heads and row blocks run on up to `thread_count()` threads.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/nn/blas.hpp>
#include <dynllava/nn/exp.hpp>
#include <dynllava/nn/parallel.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynllava::nn {

/// @brief A read-only view of the keys and values cached for one sequence. Requirements, for
/// `const V& v` and a token `i` in `[0, v.size())`:
///   1. `v.size()` is the number of cached tokens;
///   2. `v.key(i)` and `v.value(i)` point to `heads * head_dim` host floats (token `i`, heads
///      concatenated), in attention order; the view does not own them.
template <class V>
concept kv_view = requires(const V& v, index_t i) {
  { v.size() } -> std::convertible_to<index_t>;
  { v.key(i) } -> std::convertible_to<const float*>;
  { v.value(i) } -> std::convertible_to<const float*>;
};

/// The empty `kv_view`: nothing cached.
struct no_cached_kv {
  index_t size() const noexcept { return 0; }
  const float* key(index_t) const noexcept { return nullptr; }
  const float* value(index_t) const noexcept { return nullptr; }
};
static_assert(kv_view<no_cached_kv>);

/// A host row-major matrix `[rows, ld]` read from column `0`: `data + r * ld` is row `r`.
struct row_block {
  const float* data = nullptr;
  std::size_t ld = 0;
};

/// Shape and masking of one attention call.
struct attention_options {
  index_t heads = 1;
  index_t head_dim = 1;
  bool causal = true;  ///< row `r` of the call sees the cache and rows `0..r` of the call
};

namespace detail {

/// Keys and values of `count` consecutive keys: key `j` at `k + j * k_ld`, value at `v + j * v_ld`.
struct kv_segment {
  const float* k;
  const float* v;
  std::size_t k_ld, v_ld, count;
};

/// The cached keys as maximal runs of rows that lie `width` floats apart, then the new rows.
template <kv_view V>
std::vector<kv_segment> kv_segments(const V& cached, row_block k, row_block v, std::size_t n,
                                    std::size_t width) {
  std::vector<kv_segment> s;
  const index_t m = cached.size();
  for (index_t i = 0; i < m; ++i) {
    const float* ki = cached.key(i);
    const float* vi = cached.value(i);
    if (!s.empty()) {
      auto& last = s.back();
      const std::uintptr_t step = last.count * width * sizeof(float);
      if (reinterpret_cast<std::uintptr_t>(ki) == reinterpret_cast<std::uintptr_t>(last.k) + step &&
          reinterpret_cast<std::uintptr_t>(vi) == reinterpret_cast<std::uintptr_t>(last.v) + step) {
        ++last.count;
        continue;
      }
    }
    s.push_back({ki, vi, width, width, 1});
  }
  s.push_back({k.data, v.data, k.ld, v.ld, n});
  return s;
}

/// `c[rows, cols] = alpha * a[rows, inner] b^T` with `b [cols, inner]`, all row-major.
inline void gemm_abt(std::size_t rows, std::size_t cols, std::size_t inner, float alpha,
                     const float* a, std::size_t lda, const float* b, std::size_t ldb, float* c,
                     std::size_t ldc) {
  if (rows == 1) {
    std::fill(c, c + cols, 0.0f);
    hold_blas_to_one_thread();
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(cols), static_cast<int>(inner), alpha,
                b, static_cast<int>(ldb), a, 1, 0.0f, c, 1);
  } else {
    hold_blas_to_one_thread();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(cols), static_cast<int>(inner), alpha, a, static_cast<int>(lda), b,
                static_cast<int>(ldb), 0.0f, c, static_cast<int>(ldc));
  }
}

/// `c[rows, cols] = a[rows, inner] b + beta c` with `b [inner, cols]`, all row-major.
inline void gemm_ab(std::size_t rows, std::size_t cols, std::size_t inner, const float* a,
                    std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                    std::size_t ldc) {
  if (rows == 1) {
    if (beta == 0.0f) std::fill(c, c + cols, 0.0f);  // never scale what was not written
    hold_blas_to_one_thread();
    cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(inner), static_cast<int>(cols), 1.0f, b,
                static_cast<int>(ldb), a, 1, beta, c, 1);
  } else {
    hold_blas_to_one_thread();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                static_cast<int>(cols), static_cast<int>(inner), 1.0f, a, static_cast<int>(lda), b,
                static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
  }
}

}  // namespace detail

/// @brief `out = softmax(q k^T / sqrt(head_dim)) v` per head for the `n` rows of one sequence.
/// The keys are the `m = cached.size()` cached tokens followed by the `n` new rows; with
/// `causal`, new row `r` sees keys `[0, m + r]`, otherwise all `m + n`. Cached tokens whose rows
/// lie back to back (a contiguous cache, a page) are read in place, not copied. Heads and
/// blocks of 128 rows are spread over up to `thread_count()` threads when the call is large
/// enough; each head's arithmetic is the same whatever
/// the thread count, so the results are too, bit for bit. Score buffers are kept by the calling
/// thread between calls.
/// @param q [n, heads * head_dim] rows of `q.ld` floats (host)
/// @param k, v [n, heads * head_dim] the new rows' keys and values (host)
/// @param out [n, heads * head_dim] rows of `out_ld` floats (host); must not alias the inputs
/// @param key_mass null, or `[m + n]` host floats to which each key's attention probability,
///   summed over heads and rows, is added
template <kv_view V>
void attention(const attention_options& o, const V& cached, row_block q, row_block k, row_block v,
               std::size_t n, float* out, std::size_t out_ld, float* key_mass = nullptr) {
  DYNLLAVA_EXPECTS(o.heads > 0 && o.head_dim > 0,
                   "attention: heads ({}) and head_dim ({}) must be > 0", o.heads, o.head_dim);
  if (n == 0) return;
  const auto hd = static_cast<std::size_t>(o.head_dim);
  const auto heads = static_cast<std::size_t>(o.heads);
  const std::size_t width = heads * hd;
  const auto m = static_cast<std::size_t>(cached.size());
  const std::size_t keys = m + n;
  const std::vector<detail::kv_segment> segments = detail::kv_segments(cached, k, v, n, width);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  constexpr std::size_t block = 128;  // rows per SGEMM: bounds the score buffer
  const std::size_t blocks = (n + block - 1) / block;
  const std::size_t p_size = std::min(n, block) * keys;
  // Tasks: one (row block, head) each; with key_mass one head each (all its blocks in order),
  // so that each head's key mass is summed over rows in one order into its own partial.
  const std::size_t tasks = key_mass != nullptr ? heads : blocks * heads;
  // Workers: up to the thread count, about one per 2^19 multiply-adds of q k^T (tens of
  // microseconds of work: a thread costs about that to start).
  const std::size_t seen = o.causal ? n * m + n * (n + 1) / 2 : n * keys;  // scores per head
  const std::size_t work = seen * width;
  const std::size_t workers = workers_for(static_cast<double>(work), 524288.0, tasks);
  // Scratch kept by the calling thread: a score buffer per worker, and per-head key mass.
  thread_local std::vector<float> scratch;
  const std::size_t mass_size = key_mass != nullptr ? heads * keys : 0;
  if (scratch.size() < workers * p_size + mass_size) scratch.resize(workers * p_size + mass_size);
  float* const buffers = scratch.data();  // not `scratch` in the tasks: each thread has its own
  float* const mass = buffers + workers * p_size;
  std::fill(mass, mass + mass_size, 0.0f);

  // Rows [r0, r0 + rows) of head h with the score buffer p: out and (if asked) mass_h.
  auto run = [&](std::size_t r0, std::size_t h, float* p, float* mass_h) {
    const std::size_t rows = std::min(block, n - r0);
    const std::size_t cols = o.causal ? m + r0 + rows : keys;  // keys any row of the block sees
    const std::size_t off = h * hd;
    std::size_t c0 = 0;  // p[:, c0 .. c0 + count) = scale * q_h k_h^T, segment by segment
    for (const auto& s : segments) {
      const std::size_t count = std::min(s.count, cols - c0);
      if (count > 0) {
        detail::gemm_abt(rows, count, hd, scale, q.data + r0 * q.ld + off, q.ld, s.k + off, s.k_ld,
                         p + c0, cols);
      }
      c0 += count;
    }
    for (std::size_t r = 0; r < rows; ++r) {
      float* pr = p + r * cols;
      const std::size_t visible = o.causal ? m + r0 + r + 1 : keys;
      const float inv = 1.0f / exp_shifted_sum(pr, visible, row_max(pr, visible));
      row_scale(pr, visible, inv);
      std::fill(pr + visible, pr + cols, 0.0f);
      if (mass_h != nullptr) {
        for (std::size_t j = 0; j < visible; ++j) mass_h[j] += pr[j];
      }
    }
    c0 = 0;  // out_h = sum over segments of p[:, segment] v_h[segment]
    for (const auto& s : segments) {
      const std::size_t count = std::min(s.count, cols - c0);
      if (count > 0) {
        detail::gemm_ab(rows, hd, count, p + c0, cols, s.v + off, s.v_ld, c0 == 0 ? 0.0f : 1.0f,
                        out + r0 * out_ld + off, out_ld);
      }
      c0 += count;
    }
  };
  auto task = [&](std::size_t t, std::size_t worker) {
    float* p = buffers + worker * p_size;
    if (key_mass != nullptr) {
      for (std::size_t b = 0; b < blocks; ++b) run(b * block, t, p, mass + t * keys);
    } else {
      run((t / heads) * block, t % heads, p, nullptr);
    }
  };
  // Each task's BLAS calls run on its own thread: the same arithmetic as one worker running
  // every task, so results do not depend on the thread count.
  parallel_for(tasks, workers, task);
  if (key_mass != nullptr) {
    for (std::size_t h = 0; h < heads; ++h) {
      const float* mh = mass + h * keys;
      for (std::size_t j = 0; j < keys; ++j) key_mass[j] += mh[j];
    }
  }
}

}  // namespace dynllava::nn
