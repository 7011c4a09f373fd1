// SPDX-License-Identifier: Apache-2.0
/// @file model_framing.cpp
/// @brief The protobuf wire-format walk of `check_model_framing`.
#include "model_framing.hpp"

#include <dynllava/core/error.hpp>

#include <cstdint>
#include <string>
#include <unordered_set>

namespace dynllava::llava::detail {
namespace {

/// A cursor over one message's bytes; `base` is its offset in the whole file (for messages).
struct cursor {
  std::string_view bytes;
  std::size_t pos = 0;
  std::size_t base = 0;
  std::string_view name;

  [[nodiscard]] bool done() const noexcept { return pos == bytes.size(); }

  std::uint64_t varint(const char* what) {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      DYNLLAVA_EXPECTS(pos < bytes.size(),
                       "tokenizer: {}: not a SentencePiece model (the {} at byte {} is cut off)",
                       name, what, base + pos);
      const auto b = static_cast<unsigned char>(bytes[pos++]);
      value |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return value;
    }
    DYNLLAVA_FAIL(
        "tokenizer: {}: not a SentencePiece model (the {} at byte {} is longer than 10 "
        "bytes)",
        name, what, base + pos);
  }

  void skip(std::size_t n, const char* what) {
    DYNLLAVA_EXPECTS(n <= bytes.size() - pos,
                     "tokenizer: {}: not a SentencePiece model (the {} at byte {} needs {} bytes, "
                     "{} remain)",
                     name, what, base + pos, n, bytes.size() - pos);
    pos += n;
  }

  /// One field: its number, wire type, start offset and, when length-delimited, its bytes.
  struct field_view {
    std::uint64_t number;
    int wire_type;
    std::size_t start;
    std::string_view payload;
    std::size_t payload_offset;
  };

  field_view field() {
    field_view f{};
    f.start = base + pos;
    const std::uint64_t tag = varint("field tag");
    f.number = tag >> 3;
    f.wire_type = static_cast<int>(tag & 7);
    DYNLLAVA_EXPECTS(f.number >= 1 && f.number <= 536870911,
                     "tokenizer: {}: not a SentencePiece model (field number {} at byte {})", name,
                     f.number, f.start);
    switch (f.wire_type) {
      case 0:
        (void)varint("varint");
        break;
      case 1:
        skip(8, "fixed64 field");
        break;
      case 5:
        skip(4, "fixed32 field");
        break;
      case 2: {
        const std::uint64_t length = varint("field length");
        DYNLLAVA_EXPECTS(length <= bytes.size() - pos,
                         "tokenizer: {}: not a SentencePiece model (field {} at byte {} claims {} "
                         "bytes, {} remain)",
                         name, f.number, f.start, length, bytes.size() - pos);
        f.payload = bytes.substr(pos, static_cast<std::size_t>(length));
        f.payload_offset = base + pos;
        pos += static_cast<std::size_t>(length);
        break;
      }
      default:
        DYNLLAVA_FAIL(
            "tokenizer: {}: not a SentencePiece model (field {} at byte {} has wire type "
            "{})",
            name, f.number, f.start, f.wire_type);
    }
    return f;
  }
};

/// Calls `on_field(field_view)` for each field of the message `bytes` (at offset `base`).
template <class F>
void walk(std::string_view bytes, std::size_t base, std::string_view name, F&& on_field) {
  cursor c{bytes, 0, base, name};
  while (!c.done()) on_field(c.field());
}

}  // namespace

void check_model_framing(std::string_view model, std::string_view name, std::size_t max_pieces) {
  // ModelProto: 1 pieces (repeated SentencePiece: 1 piece, 2 score, 3 type), 2 trainer_spec,
  // 3 normalizer_spec, 4 self_test_data, 5 denormalizer_spec (all messages).
  std::unordered_set<std::string_view> pieces;
  std::size_t index = 0;
  walk(model, 0, name, [&](const cursor::field_view& f) {
    if (f.number < 1 || f.number > 5) return;  // unknown fields: protobuf skips them
    DYNLLAVA_EXPECTS(f.wire_type == 2,
                     "tokenizer: {}: not a SentencePiece model (field {} at byte {} is not a "
                     "message)",
                     name, f.number, f.start);
    std::string_view piece;
    bool has_piece = false;
    walk(f.payload, f.payload_offset, name, [&](const cursor::field_view& inner) {
      if ((f.number == 3 || f.number == 5) && inner.number == 2) {
        DYNLLAVA_EXPECTS(inner.payload.empty(),
                         "tokenizer: {}: the model has a {} table (precompiled_charsmap, {} bytes "
                         "at byte {}); LLaMA's tokenizer.model has none and SentencePiece does "
                         "not validate one, so it is refused",
                         name, f.number == 3 ? "normaliser" : "denormaliser", inner.payload.size(),
                         inner.start);
      }
      if (f.number == 1 && inner.number == 1) {  // the last occurrence counts, as in protobuf
        DYNLLAVA_EXPECTS(inner.wire_type == 2,
                         "tokenizer: {}: not a SentencePiece model (piece {} at byte {} is not a "
                         "string)",
                         name, index, inner.start);
        piece = inner.payload;
        has_piece = true;
      }
    });
    if (f.number != 1) return;
    DYNLLAVA_EXPECTS(index < max_pieces,
                     "tokenizer: {}: more than {} pieces (the limit; LLaMA has 32000)", name,
                     max_pieces);
    // SentencePiece builds a trie of the pieces (Darts), which aborts the process on an empty
    // piece, a NUL byte or a repeated piece instead of reporting an error.
    DYNLLAVA_EXPECTS(has_piece && !piece.empty(), "tokenizer: {}: piece {} (at byte {}) is empty",
                     name, index, f.start);
    DYNLLAVA_EXPECTS(piece.find('\0') == std::string_view::npos,
                     "tokenizer: {}: piece {} (at byte {}) contains a NUL byte", name, index,
                     f.start);
    DYNLLAVA_EXPECTS(pieces.insert(piece).second,
                     "tokenizer: {}: piece {} (at byte {}) repeats an earlier piece", name, index,
                     f.start);
    ++index;
  });
}

}  // namespace dynllava::llava::detail
