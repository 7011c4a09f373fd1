// SPDX-License-Identifier: Apache-2.0
/// @file read_tensor.hpp
/// @brief The tensor-table visitor that loaders share: reads one announced tensor from a
/// checkpoint into what the table holds it in.
#pragma once

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

/// @brief Reads `name` (shape `s.shape`) as a `[shape[0], rest]` matrix.
/// @throws dynllava::error naming a missing, wrongly shaped or non-float tensor.
inline void read_tensor(const checkpoint& ckpt, const std::string& name, const nn::tensor_spec& s,
                        nn::stored_matrix& out) {
  out = nn::stored_matrix(ckpt.read_f32(name, s.shape), s.matrix_rows(), s.matrix_cols());
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
