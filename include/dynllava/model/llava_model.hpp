// SPDX-License-Identifier: Apache-2.0
/// @file llava_model.hpp
/// @brief The reference LLaVA-1.5 model on the CPU: the CLIP vision tower, the projector and the
/// LLaMA decoder. It models `decoder` and `probing_decoder` (the decoder's calls are the LLaMA
/// model's), so every mode runs through the library's drivers; `encode_images` and `prompt`
/// turn images and token ids into the rows and segments those drivers take.
#pragma once

#include <dynllava/core/config.hpp>
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/kvcache/contiguous_kv_cache.hpp>
#include <dynllava/kvcache/kv_storage.hpp>
#include <dynllava/kvcache/paged_kv_cache.hpp>
#include <dynllava/model/clip.hpp>
#include <dynllava/model/clip_weights.hpp>
#include <dynllava/model/llama.hpp>
#include <dynllava/model/llama_weights.hpp>
#include <dynllava/model/llava_config.hpp>
#include <dynllava/model/projector.hpp>
#include <dynllava/model/prompt_rows.hpp>
#include <dynllava/pipeline/decoder.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace dynllava {

/// Every weight of a LLaVA model (host; matrices in their stored width).
struct llava_weights {
  llama_weights text;   ///< the language model
  clip_weights vision;  ///< the tower's first `llava_config::vision_layer()` layers (or more)
  projector_weights projector;  ///< the projector
};

/// @brief Random weights for tests and benchmarks, seeded (each part from its own seed), the
/// tower holding the layers LLaVA runs.
inline llava_weights random_llava_weights(const llava_config& c, std::uint64_t seed) {
  c.validate();
  return {random_llama_weights(c.text, seed),
          random_clip_weights(c.vision, seed + 1, c.vision_layer()),
          random_projector_weights(projector_config::of(c), seed + 2)};
}

/// @brief LLaVA-1.5. Owns its parts; `const` calls are thread-safe.
class llava_model {
 public:
  /// @throws dynllava::error on an invalid config, weights of another shape (naming the tensor),
  /// or a tower holding fewer layers than `c.vision_layer()`.
  llava_model(const llava_config& c, llava_weights w)
      : c_(checked(c)),
        text_(c.text, std::move(w.text)),
        vision_(c.vision, std::move(w.vision)),
        projector_(projector_config::of(c), std::move(w.projector)) {
    DYNLLAVA_EXPECTS(vision_.held_layers() >= c_.vision_layer(),
                     "llava_model: the tower holds {} layers but the image features are layer {} "
                     "(mm_vision_select_layer {})",
                     vision_.held_layers(), c_.vision_layer(), c_.vision_select_layer);
  }

  const llava_config& config() const noexcept { return c_; }
  const llama_model& language_model() const noexcept { return text_; }
  const clip_vision_tower& vision_tower() const noexcept { return vision_; }
  const projector& mm_projector() const noexcept { return projector_; }

  /// @name The `decoder` / `probing_decoder` models: the language model's calls.
  /// @{
  index_t layers() const noexcept { return text_.layers(); }
  index_t hidden() const noexcept { return text_.hidden(); }
  index_t vocab() const noexcept { return text_.vocab(); }
  index_t heads() const noexcept { return text_.heads(); }
  void embed(host_t, host_span<const std::int32_t> tokens, host_span<float> out) const {
    text_.embed(tokens, out);
  }
  template <host_kv_storage C>
  void layer(host_t, index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             const C* cache, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    text_.layer(host, l, hidden, positions, cache, k_out, v_out, probes);
  }
  void layer(host_t, index_t l, host_ragged_rows<float> hidden, host_span<const index_t> positions,
             std::nullptr_t, host_span<float> k_out, host_span<float> v_out,
             layer_probes probes = {}) const {
    text_.layer(host, l, hidden, positions, nullptr, k_out, v_out, probes);
  }
  void logits(host_t, host_span<const float> rows, host_span<float> out) const {
    text_.logits(host, rows, out);
  }
  /// @}

  /// Values of one preprocessed image, `C * S * S`.
  std::size_t pixels_per_image() const noexcept { return vision_.pixels_per_image(); }
  /// Rows each image becomes (`llava_config::image_tokens()`: 576 for LLaVA-1.5).
  index_t image_rows() const noexcept { return c_.image_tokens(); }

  /// @brief The language-model rows of `images` preprocessed images: the tower's features of
  /// layer `vision_layer()` (class token dropped or kept per `select_feature`), projected.
  /// @param pixels [images, C, S, S] host, normalised (CLIP preprocessing)
  /// @param out [images, image_rows(), H] host
  /// @throws dynllava::error on a wrong size.
  void encode_images(host_span<const float> pixels, std::size_t images,
                     host_span<float> out) const {
    const auto rows = static_cast<std::size_t>(image_rows());
    DYNLLAVA_EXPECTS(out.size() == images * rows * static_cast<std::size_t>(hidden()),
                     "llava_model::encode_images: out must be [images = {}, rows = {}, H = {}] "
                     "({} values), got {} values",
                     images, rows, hidden(), images * rows * static_cast<std::size_t>(hidden()),
                     out.size());
    std::vector<float> features(images * rows * static_cast<std::size_t>(c_.vision.hidden));
    vision_.encode(pixels, images, c_.vision_layer(), c_.select_feature, make_host_span(features));
    projector_.apply(make_host_span(std::as_const(features)), out);
  }
  /// `encode_images` into a new `[images, image_rows(), H]` vector.
  std::vector<float> encode_images(host_span<const float> pixels, std::size_t images) const {
    std::vector<float> out(images * static_cast<std::size_t>(image_rows()) *
                           static_cast<std::size_t>(hidden()));
    encode_images(pixels, images, make_host_span(out));
    return out;
  }

  /// @brief A batch's prompt rows and segments (prompt_rows.hpp): text embedded, each image
  /// placeholder (`config().image_token_id`, single or expanded) replaced by its image's rows.
  /// @param tokens [batch] ragged token ids
  /// @param pixels [images, C, S, S] host: every image of the batch in order of appearance
  /// @param first_prompt false for a later turn of a cached conversation (no system segment)
  /// @throws dynllava::error as `build_prompt_rows` and `encode_images` do.
  prompt_rows prompt(host_ragged<const std::int64_t> tokens, host_span<const float> pixels,
                     bool first_prompt = true) const {
    const std::size_t per = pixels_per_image();
    DYNLLAVA_EXPECTS(pixels.size() % per == 0,
                     "llava_model::prompt: pixels must hold whole images of {} values, got {}", per,
                     pixels.size());
    const std::vector<float> features = encode_images(pixels, pixels.size() / per);
    return build_prompt_rows(*this, tokens, make_host_span(features),
                             {.image_token_id = c_.image_token_id,
                              .image_rows = image_rows(),
                              .first_prompt = first_prompt});
  }

 private:
  static const llava_config& checked(const llava_config& c) {
    c.validate();
    return c;
  }

  llava_config c_;
  llama_model text_;
  clip_vision_tower vision_;
  projector projector_;
};

static_assert(probing_decoder<llava_model, host_t, paged_kv_cache>);
static_assert(probing_decoder<llava_model, host_t, contiguous_kv_cache>);

}  // namespace dynllava
