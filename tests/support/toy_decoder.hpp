// SPDX-License-Identifier: Apache-2.0
/// @file toy_decoder.hpp
/// @brief A tiny attention decoder defined by the tests (not a bundled model), whose arithmetic
/// is host/device functions: `toy_host_decoder` drives the host instantiation of the KV mode's
/// decode step; the CUDA tests wrap the same functions in kernels for the CUDA instantiation.
/// Per layer `l`, a row's key is `(1 + l / 4) * row + 0.01 * position` and its value the row;
/// the row adds the softmax-weighted values of what it may see (the layer's cache for its
/// sequence, then the call's rows of its sequence up to itself), with logits `q . k / 2` and
/// `q` its own key.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>

#include <cstddef>
#include <cstdint>
#include <math.h>

namespace dynllava::test {

inline constexpr index_t toy_layers = 3;
inline constexpr index_t toy_hidden = 8;
inline constexpr index_t toy_vocab = 11;

/// Element `j` of token `token`'s embedding.
DYNLLAVA_HOST_DEVICE float toy_embedding(std::int32_t token, index_t j) {
  return sinf(0.7f * static_cast<float>(token + 1) * static_cast<float>(j + 1));
}

/// Layer `l`'s key and value `[toy_hidden]` of a row `in` at position `pos`.
DYNLLAVA_HOST_DEVICE void toy_key_value(index_t l, const float* in, index_t pos, float* k,
                                        float* v) {
  const float scale = 1.0f + 0.25f * static_cast<float>(l);
  for (index_t j = 0; j < toy_hidden; ++j) {
    k[j] = scale * in[j] + 0.01f * static_cast<float>(pos);
    v[j] = in[j];
  }
}

/// Row `r` of a call attends to `cached` cache rows (`ck`, `cv`: `[cached, toy_hidden]`) and the
/// call's rows `first .. r` (`k`, `v`: the call's keys and values), adding the result to `row`.
/// `T` is the keys' and values' element type (`float`, or a CUDA test's `__half`), read as float.
template <class T>
DYNLLAVA_HOST_DEVICE void toy_attend(const T* ck, const T* cv, index_t cached, const T* k,
                                     const T* v, index_t first, index_t r, float* row) {
  const T* q = k + static_cast<std::size_t>(r) * toy_hidden;
  const auto logit = [&](const T* key) {
    float d = 0.0f;
    for (index_t j = 0; j < toy_hidden; ++j)
      d += static_cast<float>(q[j]) * static_cast<float>(key[j]);
    return 0.5f * d;
  };
  const auto key_of = [&](index_t i) {
    return i < cached ? ck + static_cast<std::size_t>(i) * toy_hidden
                      : k + static_cast<std::size_t>(first + i - cached) * toy_hidden;
  };
  const auto value_of = [&](index_t i) {
    return i < cached ? cv + static_cast<std::size_t>(i) * toy_hidden
                      : v + static_cast<std::size_t>(first + i - cached) * toy_hidden;
  };
  const index_t seen = cached + (r - first + 1);
  float most = logit(key_of(0));
  for (index_t i = 1; i < seen; ++i) most = fmaxf(most, logit(key_of(i)));
  float acc[toy_hidden] = {};
  float sum = 0.0f;
  for (index_t i = 0; i < seen; ++i) {
    const float w = expf(logit(key_of(i)) - most);
    sum += w;
    const T* val = value_of(i);
    for (index_t j = 0; j < toy_hidden; ++j) acc[j] += w * static_cast<float>(val[j]);
  }
  for (index_t j = 0; j < toy_hidden; ++j) row[j] += acc[j] / sum;
}

/// Logit `t` of a final row.
DYNLLAVA_HOST_DEVICE float toy_logit(const float* row, index_t t) {
  float acc = 0.0f;
  for (index_t j = 0; j < toy_hidden; ++j)
    acc += row[j] * cosf(0.37f * static_cast<float>(t * toy_hidden + j));
  return acc;
}

/// The host model of the toy decoder over a host `contiguous_kv_cache`.
struct toy_host_decoder {
  index_t layers() const { return toy_layers; }
  index_t hidden() const { return toy_hidden; }
  index_t vocab() const { return toy_vocab; }

  void embed(host_t, host_span<const std::int32_t> tokens, host_span<float> out) const {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      for (index_t j = 0; j < toy_hidden; ++j)
        out[i * toy_hidden + static_cast<std::size_t>(j)] = toy_embedding(tokens[i], j);
    }
  }

  void layer(host_t, index_t l, host_ragged_rows<float> rows, host_span<const index_t> pos,
             const contiguous_kv_cache* cache, host_span<float> k, host_span<float> v) const {
    for (std::size_t r = 0; r < rows.rows(); ++r)
      toy_key_value(l, rows.row(r), pos[r], &k[r * toy_hidden], &v[r * toy_hidden]);
    for (std::size_t b = 0; b < rows.batch(); ++b) {
      const index_t cached = cache == nullptr ? 0 : cache->length(l, b);
      const float* ck = cached == 0 ? nullptr : cache->key(l, b, 0);
      const float* cv = cached == 0 ? nullptr : cache->value(l, b, 0);
      for (index_t r = rows.indptr[b]; r < rows.indptr[b + 1]; ++r)
        toy_attend(ck, cv, cached, k.data(), v.data(), rows.indptr[b], r,
                   rows.row(static_cast<std::size_t>(r)));
    }
  }

  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    for (std::size_t r = 0; r < rows.size() / toy_hidden; ++r) {
      for (index_t t = 0; t < toy_vocab; ++t)
        out[r * toy_vocab + static_cast<std::size_t>(t)] = toy_logit(&rows[r * toy_hidden], t);
    }
  }
};

}  // namespace dynllava::test
