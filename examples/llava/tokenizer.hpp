// SPDX-License-Identifier: Apache-2.0
/// @file tokenizer.hpp
/// @brief LLaMA's SentencePiece tokenizer (`tokenizer.model`) for the LLaVA example.
///
/// A thin, validating wrapper over SentencePiece's C++ library. LLaMA conventions: BOS 1,
/// EOS 2, unknown 0 (read from the model, overridable), byte fallback pieces `<0xNN>`, a
/// dummy prefix ("▁") at the start of every encoded piece of text, no normalisation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dynllava::llava {

/// What a vocabulary entry is (SentencePiece's piece types).
enum class token_kind : std::uint8_t { normal, unknown, control, user_defined, byte, unused };

/// Loading options. The special ids default to the model's own; a checkpoint's `config.json`
/// may name others (each must be a control piece of the model).
struct tokenizer_options {
  std::optional<std::int32_t> bos_id;  ///< default: the model's BOS (LLaMA: 1)
  std::optional<std::int32_t> eos_id;  ///< default: the model's EOS (LLaMA: 2)
  std::size_t max_bytes = 16u << 20;   ///< larger files are refused before reading
  std::size_t max_pieces = 1u << 18;   ///< more pieces are refused before parsing
  /// The Hugging Face `LlamaTokenizer` setting `legacy` (`tokenizer_config.json`): true encodes
  /// the text after a special piece with a dummy prefix ("</s>USER" -> `</s>`, "▁USER"), false
  /// without ("</s>", "US", "ER"), as Vicuna-1.5 / LLaVA-1.5 checkpoints set it.
  bool legacy = false;
};

/// A loaded SentencePiece model. Move-only; every call is const and thread-safe.
class tokenizer {
 public:
  /// Reads `path` (a regular file of at most `options.max_bytes`, with at most
  /// `options.max_pieces` pieces: LLaMA's has 32000 pieces in 500 KB). Loading takes about
  /// 250 bytes of memory per piece; the piece limit bounds that before SentencePiece parses.
  /// @throws dynllava::error naming the file: missing, a directory, empty, too large,
  ///         unreadable, not a SentencePiece model (with SentencePiece's message), or a model
  ///         that breaks the conventions above (no unknown piece, BOS/EOS not control pieces,
  ///         a byte piece not spelled `<0xNN>`, text normalisation).
  [[nodiscard]] static tokenizer load(const std::filesystem::path& path,
                                      const tokenizer_options& options = {});
  /// The same from the serialised model in memory; `name` stands for the file in messages.
  [[nodiscard]] static tokenizer from_memory(std::string_view model, std::string_view name,
                                             const tokenizer_options& options = {});

  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  [[nodiscard]] std::int32_t vocab_size() const noexcept;
  [[nodiscard]] std::int32_t bos_id() const noexcept;
  [[nodiscard]] std::int32_t eos_id() const noexcept;
  [[nodiscard]] std::int32_t unk_id() const noexcept;
  /// Whether the model prepends "▁" to each encoded text (LLaMA: yes).
  [[nodiscard]] bool adds_dummy_prefix() const noexcept;
  /// `tokenizer_options::legacy` as loaded.
  [[nodiscard]] bool legacy() const noexcept;

  /// SentencePiece's encoding of `text`, without BOS/EOS; `<s>` in the text is plain characters.
  /// @throws dynllava::error when SentencePiece fails.
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const;
  /// As the Hugging Face slow `LlamaTokenizer` tokenises: the text is split at the special
  /// pieces (`<unk>`, `<s>`, `</s>`), each becomes its id, and every piece of text between them
  /// is encoded on its own: the first with the dummy prefix, the ones after a special piece with
  /// it only when `tokenizer_options::legacy`. No BOS is added.
  [[nodiscard]] std::vector<std::int32_t> encode_with_special_tokens(std::string_view text) const;
  /// SentencePiece's decoding (control pieces vanish, unknown is " ⁇ ", invalid UTF-8 from byte
  /// pieces becomes U+FFFD). @throws dynllava::error for an id outside the vocabulary.
  [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const;

  /// The piece of `id` ("▁the", "<0x0A>", "</s>"). @throws dynllava::error when out of range.
  [[nodiscard]] const std::string& piece(std::int32_t id) const;
  /// The id of `piece`, if the vocabulary has it.
  [[nodiscard]] std::optional<std::int32_t> find_piece(std::string_view piece) const;
  /// @throws dynllava::error when `id` is out of range.
  [[nodiscard]] token_kind kind(std::int32_t id) const;
  /// The byte a `byte` piece stands for. @pre `kind(id) == token_kind::byte`.
  [[nodiscard]] std::uint8_t byte_value(std::int32_t id) const;

 private:
  struct impl;
  explicit tokenizer(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> impl_;
};

/// @brief The options a model folder's `tokenizer_config.json` gives: its `legacy` field (true,
/// false, or null / absent for the default `false`, as transformers' `LlamaTokenizer` takes it).
/// Without the file, the defaults.
/// @throws dynllava::error naming the file and the field when the file is malformed, too large
/// or `legacy` is not a boolean.
[[nodiscard]] tokenizer_options read_tokenizer_options(const std::filesystem::path& model_dir);

}  // namespace dynllava::llava
