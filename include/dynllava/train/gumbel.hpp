// SPDX-License-Identifier: Apache-2.0
/// @file gumbel.hpp
/// @brief Hard Gumbel-Softmax over 2-way keep logits with a straight-through gradient (CPU), the
/// temperature schedule, and the per-token functions shared with the CUDA twins.
///
/// Per token `t` with logits `l = (l0, l1)` (channel 0 = keep) and Gumbel noise `g = (g0, g1)`:
///
///     lp     = log_softmax(l)
///     y_soft = softmax((lp + g) / tau)
///     keep   = y_hard[0] = (y_soft[0] >= y_soft[1])     (ties keep, like torch's argmax)
///
/// Forward returns the one-hot decision `keep` (exactly 0 or 1) and `y_soft[0]`. Backward is the
/// straight-through estimator `y_hard - y_soft.detach() + y_soft`: the gradient of `keep` is
/// passed to `y_soft[0]` and back through the softmax and log_softmax,
/// `dl0 = y0 * y1 * d_keep / tau`, `dl1 = -dl0`. Only channel 0 is consumed downstream (as in the
/// reference `gumbel_softmax(...)[:, :, 0:1]`), so channel 1 of the output receives no gradient.
/// In the 2-way case `lp0 - lp1 = l0 - l1`, so `y0 = sigmoid((l0 - l1 + g0 - g1) / tau)`; this is
/// how it is evaluated (stable for any magnitude). A NaN logit drops the token (`keep = 0`).
///
/// Noise: `g_c = -log(-log(u_c))` with `u_c` the uniform of word `c` of `philox_draw(key, t)`
/// (`philox.hpp`), so token `t`'s noise does not depend on the batch layout or on the backend.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/train/philox.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace dynllava {

/// @brief Exponential temperature schedule of the reference trainer:
/// `tau = start * (end / start) ^ (step / max_steps)`; defaults give `0.1 ^ (step / max_steps)`.
/// @param[in] step current optimiser step, clamped to [0, max_steps]
/// @param[in] max_steps total number of steps, > 0
/// @throws dynllava::error when `max_steps <= 0` or a temperature is not positive.
inline double gumbel_temperature(std::int64_t step, std::int64_t max_steps, double start = 1.0,
                                 double end = 0.1) {
  DYNLLAVA_EXPECTS(max_steps > 0, "gumbel_temperature: max_steps must be > 0, got {}", max_steps);
  DYNLLAVA_EXPECTS(start > 0.0 && end > 0.0,
                   "gumbel_temperature: start and end must be > 0, got start = {}, end = {}", start,
                   end);
  const std::int64_t s = step < 0 ? 0 : (step > max_steps ? max_steps : step);
  return start * std::pow(end / start, static_cast<double>(s) / static_cast<double>(max_steps));
}

/// Result of the per-token forward.
template <class T>
struct gumbel_token {
  T keep;  ///< y_hard[0]: 1 keep, 0 drop
  T soft;  ///< y_soft[0]
};

/// Stable `sigmoid(d)` and `sigmoid(-d)` for the 2-way softmax.
template <class T>
DYNLLAVA_HOST_DEVICE void sigmoid_pair(T d, T& p, T& q) noexcept {
  const T one = T(1);
#if defined(__CUDA_ARCH__)
  const T e = ::exp(-(d < T(0) ? -d : d));
#else
  const T e = std::exp(-(d < T(0) ? -d : d));
#endif
  const T big = one / (one + e);
  const T small = e / (one + e);
  p = d >= T(0) ? big : small;
  q = d >= T(0) ? small : big;
}

/// @brief Forward of one token. @param tau temperature, > 0
template <class T>
DYNLLAVA_HOST_DEVICE gumbel_token<T> gumbel_token_forward(T l0, T l1, T g0, T g1, T tau) noexcept {
  const T d = ((l0 - l1) + (g0 - g1)) / tau;
  T p = T(0), q = T(0);
  sigmoid_pair(d, p, q);
  const bool keep = d >= T(0);  // false for NaN
  return {keep ? T(1) : T(0), d != d ? d : p};
}

/// @brief Straight-through backward of one token: gradient of logit 0 (that of logit 1 is its
/// negation). @param d_keep upstream gradient of `keep`
template <class T>
DYNLLAVA_HOST_DEVICE T gumbel_token_backward(T l0, T l1, T g0, T g1, T tau, T d_keep) noexcept {
  const T d = ((l0 - l1) + (g0 - g1)) / tau;
  T p = T(0), q = T(0);
  sigmoid_pair(d, p, q);
  return p * q * d_keep / tau;
}

/// Checks the shared shapes of the Gumbel calls. @throws dynllava::error
inline void check_gumbel_shapes(const char* fn, std::size_t logits, std::size_t noise,
                                const char* name_a, std::size_t per_token_a, const char* name_b,
                                std::size_t per_token_b, double tau) {
  DYNLLAVA_EXPECTS(logits % 2 == 0, "{}: logits must be [num_tokens, 2], got {} values", fn,
                   logits);
  const std::size_t n = logits / 2;
  DYNLLAVA_EXPECTS(noise == 2 * n, "{}: noise must be [num_tokens, 2] = {} values, got {}", fn,
                   2 * n, noise);
  DYNLLAVA_EXPECTS(per_token_a == n, "{}: {} must have num_tokens = {} values, got {}", fn, name_a,
                   n, per_token_a);
  DYNLLAVA_EXPECTS(per_token_b == n, "{}: {} must have num_tokens = {} values, got {}", fn, name_b,
                   n, per_token_b);
  // Checked in float, the narrowest type the operators run in: 1e-50 would become 0 there.
  const auto tau_f = static_cast<float>(tau);
  DYNLLAVA_EXPECTS(tau_f > 0.0f && std::isfinite(tau_f),
                   "{}: tau must be finite and > 0 (in float), got {}", fn, tau);
}

namespace cpu {

/// @brief Gumbel noise for `noise.size() / 2` tokens: `noise[t, c] = -log(-log(u))`, `u` from
/// word `c` of `philox_draw(key, first_token + t)`.
/// @param[in] key seed and offset of the stream
/// @param[out] noise [num_tokens, 2] host
/// @param[in] first_token counter of row 0 (lets a caller draw a slice of a larger batch)
/// @throws dynllava::error when `noise.size()` is odd or the counters overflow 32 bits.
template <class T>
void gumbel_noise(philox_key key, host_span<T> noise, std::uint32_t first_token = 0) {
  static_assert(std::is_floating_point_v<T>, "gumbel_noise: T must be a floating-point type");
  DYNLLAVA_EXPECTS(noise.size() % 2 == 0,
                   "gumbel_noise: noise must be [num_tokens, 2], got {} values", noise.size());
  const std::size_t n = noise.size() / 2;
  DYNLLAVA_EXPECTS(n + first_token <= (std::size_t{1} << 32),
                   "gumbel_noise: token counters must fit 32 bits, got {} tokens from {}", n,
                   first_token);
  for (std::size_t t = 0; t < n; ++t) {
    const philox_block w = philox_draw(key, first_token + static_cast<std::uint32_t>(t));
    noise[2 * t] = gumbel_from_uniform<T>(uniform_open01(w.v[0]));
    noise[2 * t + 1] = gumbel_from_uniform<T>(uniform_open01(w.v[1]));
  }
}

/// @brief Hard Gumbel-Softmax forward (see the file comment).
/// @param[in] logits [num_tokens, 2] host, read-only (channel 0 = keep)
/// @param[in] noise [num_tokens, 2] host, read-only (e.g. from `gumbel_noise`)
/// @param[in] tau temperature, finite and > 0
/// @param[out] keep [num_tokens] host: 1 keep, 0 drop
/// @param[out] soft [num_tokens] host: `y_soft[0]`
/// @throws dynllava::error on a shape mismatch or a bad `tau`.
template <class T>
void gumbel_hard_forward(std::type_identity_t<host_span<const T>> logits,
                         std::type_identity_t<host_span<const T>> noise, double tau,
                         host_span<T> keep, host_span<T> soft) {
  check_gumbel_shapes("gumbel_hard_forward", logits.size(), noise.size(), "keep", keep.size(),
                      "soft", soft.size(), tau);
  const T t = static_cast<T>(tau);
  for (std::size_t i = 0; i < keep.size(); ++i) {
    const auto r = gumbel_token_forward<T>(logits[2 * i], logits[2 * i + 1], noise[2 * i],
                                           noise[2 * i + 1], t);
    keep[i] = r.keep;
    soft[i] = r.soft;
  }
}

/// @brief Straight-through backward: `d_logits` from the gradient of `keep`.
/// @param[in] logits [num_tokens, 2] host, read-only (the forward's input)
/// @param[in] noise [num_tokens, 2] host, read-only (the forward's noise)
/// @param[in] tau the forward's temperature
/// @param[in] d_keep [num_tokens] host, read-only: dL/d keep
/// @param[out] d_logits [num_tokens, 2] host: dL/d logits
/// @throws dynllava::error on a shape mismatch or a bad `tau`.
template <class T>
void gumbel_hard_backward(std::type_identity_t<host_span<const T>> logits,
                          std::type_identity_t<host_span<const T>> noise, double tau,
                          std::type_identity_t<host_span<const T>> d_keep, host_span<T> d_logits) {
  DYNLLAVA_EXPECTS(d_logits.size() == logits.size(),
                   "gumbel_hard_backward: d_logits must have {} values (like logits), got {}",
                   logits.size(), d_logits.size());
  check_gumbel_shapes("gumbel_hard_backward", logits.size(), noise.size(), "d_keep", d_keep.size(),
                      "d_logits / 2", d_logits.size() / 2, tau);
  const T t = static_cast<T>(tau);
  for (std::size_t i = 0; i < d_keep.size(); ++i) {
    const T g = gumbel_token_backward<T>(logits[2 * i], logits[2 * i + 1], noise[2 * i],
                                         noise[2 * i + 1], t, d_keep[i]);
    d_logits[2 * i] = g;
    d_logits[2 * i + 1] = -g;
  }
}

}  // namespace cpu

/// Execution-tag entry point. @see cpu::gumbel_noise
template <class T>
void gumbel_noise(host_t, philox_key key, host_span<T> noise, std::uint32_t first_token = 0) {
  cpu::gumbel_noise<T>(key, noise, first_token);
}

/// Execution-tag entry point. @see cpu::gumbel_hard_forward
template <class T>
void gumbel_hard_forward(host_t, std::type_identity_t<host_span<const T>> logits,
                         std::type_identity_t<host_span<const T>> noise, double tau,
                         host_span<T> keep, host_span<T> soft) {
  cpu::gumbel_hard_forward<T>(logits, noise, tau, keep, soft);
}

/// Execution-tag entry point. @see cpu::gumbel_hard_backward
template <class T>
void gumbel_hard_backward(host_t, std::type_identity_t<host_span<const T>> logits,
                          std::type_identity_t<host_span<const T>> noise, double tau,
                          std::type_identity_t<host_span<const T>> d_keep, host_span<T> d_logits) {
  cpu::gumbel_hard_backward<T>(logits, noise, tau, d_keep, d_logits);
}

}  // namespace dynllava
