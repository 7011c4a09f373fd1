// SPDX-License-Identifier: Apache-2.0
/// @file no_predictor.hpp
/// @brief `no_predictor`: the predictor type of a driver built with a null predictor (dense
/// vision or dense text); `predictor_type_t` maps a pointer argument to its predictor type.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/score/concepts.hpp>

#include <cstddef>
#include <type_traits>

namespace dynllava {

/// @brief Stands for "no predictor": a driver given `nullptr` holds a null `const no_predictor*`,
/// which the option checks never let it call (`decode_step` takes a null one as "no gate", for
/// any execution tag). Calling it anyway throws.
struct no_predictor {
  index_t hidden() const noexcept { return 0; }
  template <execution_tag Tag>
  void score(Tag, ragged_rows_for<Tag, const float>, span_for<Tag, float>) const {
    fail();
  }
  template <execution_tag Tag>
  void logits(Tag, ragged_rows_for<Tag, const float>, span_for<Tag, float>) const {
    fail();
  }

 private:
  [[noreturn]] static void fail() {
    DYNLLAVA_FAIL("no_predictor: this driver was given no predictor");
  }
};
static_assert(two_way_predictor<no_predictor, host_t>);

/// The predictor type behind a driver's pointer argument: `P` for `P*` / `const P*`,
/// `no_predictor` for `nullptr`.
template <class T>
using predictor_type_t =
    std::conditional_t<std::is_null_pointer_v<std::remove_cvref_t<T>>, no_predictor,
                       std::remove_cv_t<std::remove_pointer_t<std::remove_cvref_t<T>>>>;

/// A predictor argument: a pointer to a `two_way_predictor<host_t>`, or `nullptr`.
template <class T>
concept predictor_argument =
    (std::is_null_pointer_v<std::remove_cvref_t<T>> ||
     std::is_pointer_v<std::remove_cvref_t<T>>)&&two_way_predictor<predictor_type_t<T>, host_t>;

}  // namespace dynllava
