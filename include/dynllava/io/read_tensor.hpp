// SPDX-License-Identifier: Apache-2.0
/// @file read_tensor.hpp
/// @brief The tensor-table visitor that loaders share: reads one announced tensor from a
/// checkpoint into what the table holds it in.
#pragma once

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/nn/stored_matrix.hpp>
#include <dynllava/nn/tensor_table.hpp>

#include <string>
#include <vector>

namespace dynllava::io {

/// @brief Reads `name` (shape `s.shape`, F32/F16/BF16) as fp32 values.
/// @throws dynllava::error naming a missing, wrongly shaped or non-float tensor.
inline void read_tensor(const checkpoint& ckpt, const std::string& name, const nn::tensor_spec& s,
                        std::vector<float>& out) {
  out = ckpt.read_f32(name, s.shape);
}

/// @brief `name` (shape `s.shape`) as a `[shape[0], rest]` matrix in its stored width (F32,
/// F16 or BF16): a view into the memory-mapped shard, which the matrix keeps alive (also after
/// `ckpt` is gone). Nothing is copied.
/// @throws dynllava::error naming a missing, wrongly shaped or non-float tensor.
inline void read_tensor(const checkpoint& ckpt, const std::string& name, const nn::tensor_spec& s,
                        nn::stored_matrix& out) {
  const tensor_view v = ckpt.view(name, s.shape);
  nn::element_type type = nn::element_type::f32;
  switch (v.type) {
    case dtype::f32:
      break;
    case dtype::f16:
      type = nn::element_type::f16;
      break;
    case dtype::bf16:
      type = nn::element_type::bf16;
      break;
    default:
      DYNLLAVA_FAIL("checkpoint: {}: tensor {} has dtype {}, expected F32, F16 or BF16",
                    ckpt.shard_label(name), quote_untrusted(name), to_string(v.type));
  }
  out = nn::stored_matrix::view(type, v.bytes.data(), s.matrix_rows(), s.matrix_cols(),
                                ckpt.shard_of(name));
}

/// A tensor-table visitor reading every tensor as `prefix + name`.
struct prefixed_tensor_reader {
  const checkpoint& ckpt;
  std::string prefix;
  template <class T>
  void operator()(const nn::tensor_spec& s, T& out) const {
    read_tensor(ckpt, prefix + s.name, s, out);
  }
};

}  // namespace dynllava::io
