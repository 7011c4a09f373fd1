// SPDX-License-Identifier: Apache-2.0
/// @file tokenizer.cpp
/// @brief The SentencePiece wrapper: loading, validation, encoding and decoding.
#include "tokenizer.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/io/detail/json_fields.hpp>
#include <dynllava/io/json_document.hpp>

#include "model_framing.hpp"
#include "utf8.hpp"

#include <array>
#include <fstream>
#include <sentencepiece_processor.h>
#include <system_error>

namespace dynllava::llava {

struct tokenizer::impl {
  sentencepiece::SentencePieceProcessor sp;
  sentencepiece::SentencePieceProcessor sp_no_prefix;  // the same model without the dummy prefix
  bool legacy = false;
  std::string name;
  std::vector<std::string> pieces;  // [vocab]
  std::vector<token_kind> kinds;    // [vocab]
  std::vector<std::uint8_t> bytes;  // [vocab], the byte of each byte piece
  std::int32_t bos = -1, eos = -1, unk = -1;
  bool dummy_prefix = false;
};

namespace {

/// `<0xNN>` (upper-case hex, as SentencePiece writes byte pieces) -> the byte.
std::optional<std::uint8_t> parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) return std::nullopt;
    value = value * 16 + digit;
  }
  return static_cast<std::uint8_t>(value);
}

token_kind kind_of(const sentencepiece::SentencePieceProcessor& sp, int id) {
  if (sp.IsUnknown(id)) return token_kind::unknown;
  if (sp.IsControl(id)) return token_kind::control;
  if (sp.IsByte(id)) return token_kind::byte;
  if (sp.IsUnused(id)) return token_kind::unused;
  // SentencePiece exposes no IsUserDefined; user-defined pieces decode like normal ones.
  return token_kind::normal;
}

}  // namespace

tokenizer::tokenizer(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

tokenizer tokenizer::load(const std::filesystem::path& path, const tokenizer_options& options) {
  const std::string name = quote_untrusted(path.string());
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  DYNLLAVA_EXPECTS(!ec && std::filesystem::exists(status), "tokenizer: {}: no such file", name);
  DYNLLAVA_EXPECTS(!std::filesystem::is_directory(status),
                   "tokenizer: {}: is a directory, expected a SentencePiece tokenizer.model", name);
  DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(status), "tokenizer: {}: not a regular file",
                   name);
  const auto size = std::filesystem::file_size(path, ec);
  DYNLLAVA_EXPECTS(!ec, "tokenizer: {}: cannot read its size ({})", name, ec.message());
  DYNLLAVA_EXPECTS(size <= options.max_bytes,
                   "tokenizer: {}: {} bytes, more than the limit of {} bytes", name, size,
                   options.max_bytes);
  std::string bytes(static_cast<std::size_t>(size), '\0');
  std::ifstream in(path, std::ios::binary);
  DYNLLAVA_EXPECTS(in.good(), "tokenizer: {}: cannot open it", name);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  DYNLLAVA_EXPECTS(static_cast<std::size_t>(in.gcount()) == bytes.size(),
                   "tokenizer: {}: read {} of its {} bytes", name, in.gcount(), bytes.size());
  return from_memory(bytes, path.string(), options);
}

tokenizer tokenizer::from_memory(std::string_view model, std::string_view name,
                                 const tokenizer_options& options) {
  auto t = std::make_unique<impl>();
  t->name = quote_untrusted(name);
  DYNLLAVA_EXPECTS(!model.empty(), "tokenizer: {}: the file is empty", t->name);
  DYNLLAVA_EXPECTS(model.size() <= options.max_bytes,
                   "tokenizer: {}: {} bytes, more than the limit of {} bytes", t->name,
                   model.size(), options.max_bytes);
  detail::check_model_framing(model, t->name, options.max_pieces);
  const auto loaded = t->sp.LoadFromSerializedProto(model);
  DYNLLAVA_EXPECTS(loaded.ok(), "tokenizer: {}: not a SentencePiece model ({})", t->name,
                   quote_untrusted(loaded.ToString()));
  // The same model with `normalizer_spec.add_dummy_prefix = false`: a second `normalizer_spec`
  // (field 3) holding only that (field 3, varint 0) is appended; protobuf merges repeated
  // message fields, so every other setting stays.
  t->legacy = options.legacy;
  const auto plain = t->sp_no_prefix.LoadFromSerializedProto(std::string(model) +
                                                             std::string("\x1a\x02\x18\x00", 4));
  DYNLLAVA_EXPECTS(plain.ok(), "tokenizer: {}: not a SentencePiece model ({})", t->name,
                   quote_untrusted(plain.ToString()));

  const int vocab = t->sp.GetPieceSize();
  DYNLLAVA_EXPECTS(vocab > 0, "tokenizer: {}: the model has no pieces", t->name);
  t->pieces.reserve(static_cast<std::size_t>(vocab));
  t->kinds.reserve(static_cast<std::size_t>(vocab));
  t->bytes.assign(static_cast<std::size_t>(vocab), 0);
  for (int id = 0; id < vocab; ++id) {
    t->pieces.push_back(t->sp.IdToPiece(id));
    t->kinds.push_back(kind_of(t->sp, id));
    if (t->kinds.back() == token_kind::byte) {
      const auto byte = parse_byte_piece(t->pieces.back());
      DYNLLAVA_EXPECTS(byte.has_value(),
                       "tokenizer: {}: piece {} ({}) is a byte piece but not spelled <0xNN>",
                       t->name, id, quote_untrusted(t->pieces.back()));
      t->bytes[static_cast<std::size_t>(id)] = *byte;
    } else {
      // Text pieces are emitted as they are by the streaming decoder: they must be UTF-8.
      DYNLLAVA_EXPECTS(detail::is_valid_utf8(t->pieces.back()),
                       "tokenizer: {}: piece {} ({}) is not valid UTF-8", t->name, id,
                       quote_untrusted(t->pieces.back()));
    }
  }
  t->unk = t->sp.unk_id();
  DYNLLAVA_EXPECTS(t->unk >= 0 && t->unk < vocab &&
                       t->kinds[static_cast<std::size_t>(t->unk)] == token_kind::unknown,
                   "tokenizer: {}: the model has no unknown piece (id {})", t->name, t->unk);
  const auto special_id = [&](const char* what, int model_id,
                              std::optional<std::int32_t> given) -> std::int32_t {
    const std::int32_t id = given.value_or(model_id);
    DYNLLAVA_EXPECTS(id >= 0 && id < vocab,
                     "tokenizer: {}: the {} id {} is outside the vocabulary [0, {}){}", t->name,
                     what, id, vocab, given ? " (given by the caller)" : " (the model has none)");
    DYNLLAVA_EXPECTS(t->kinds[static_cast<std::size_t>(id)] == token_kind::control,
                     "tokenizer: {}: the {} id {} (piece {}) is not a control piece", t->name, what,
                     id, quote_untrusted(t->pieces[static_cast<std::size_t>(id)]));
    return id;
  };
  t->bos = special_id("BOS", t->sp.bos_id(), options.bos_id);
  t->eos = special_id("EOS", t->sp.eos_id(), options.eos_id);

  // What the prompt builder and the streaming decoder rely on: text is not normalised (spaces
  // and newlines survive encode -> decode), and whether a "▁" is prepended to each text.
  tokenizer result(std::move(t));
  constexpr std::string_view probe = "a  b\n c ";
  const auto probe_ids = result.encode(probe);
  DYNLLAVA_EXPECTS(result.decode(probe_ids) == probe,
                   "tokenizer: {}: the model does not give text back unchanged ({} decodes as "
                   "{}: it normalises text or lacks byte pieces); LLaMA's tokenizer does",
                   result.impl_->name, quote_untrusted(probe),
                   quote_untrusted(result.decode(probe_ids)));
  std::string raw;
  for (auto id : probe_ids) {
    const auto k = result.impl_->kinds[static_cast<std::size_t>(id)];
    if (k == token_kind::byte) {
      raw.push_back(static_cast<char>(result.impl_->bytes[static_cast<std::size_t>(id)]));
    } else {
      raw += result.impl_->pieces[static_cast<std::size_t>(id)];
    }
  }
  result.impl_->dummy_prefix = std::string_view(raw).starts_with("\xE2\x96\x81");
  return result;
}

std::int32_t tokenizer::vocab_size() const noexcept {
  return static_cast<std::int32_t>(impl_->pieces.size());
}
std::int32_t tokenizer::bos_id() const noexcept { return impl_->bos; }
std::int32_t tokenizer::eos_id() const noexcept { return impl_->eos; }
std::int32_t tokenizer::unk_id() const noexcept { return impl_->unk; }
bool tokenizer::adds_dummy_prefix() const noexcept { return impl_->dummy_prefix; }
bool tokenizer::legacy() const noexcept { return impl_->legacy; }

std::vector<std::int32_t> tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  DYNLLAVA_EXPECTS(status.ok(), "tokenizer: {}: encoding {} bytes failed ({})", impl_->name,
                   text.size(), quote_untrusted(status.ToString()));
  return {ids.begin(), ids.end()};
}

std::vector<std::int32_t> tokenizer::encode_with_special_tokens(std::string_view text) const {
  // The Hugging Face slow tokenizer's special tokens: unk, bos, eos (no pad in LLaMA's).
  const std::array<std::int32_t, 3> specials{impl_->unk, impl_->bos, impl_->eos};
  std::vector<std::int32_t> out;
  const char* const first = text.data();
  while (!text.empty()) {
    std::size_t at = std::string_view::npos;
    std::int32_t found = -1;
    for (auto id : specials) {
      const auto& p = impl_->pieces[static_cast<std::size_t>(id)];
      const auto pos = text.find(p);
      // The earliest match wins; at the same place the longer piece (none of LLaMA's overlap).
      if (pos < at || (pos == at && pos != std::string_view::npos &&
                       p.size() > impl_->pieces[static_cast<std::size_t>(found)].size())) {
        at = pos;
        found = id;
      }
    }
    const auto piece = text.substr(0, at);
    if (text.data() == first || impl_->legacy) {
      const auto chunk = encode(piece);
      out.insert(out.end(), chunk.begin(), chunk.end());
    } else {
      std::vector<int> ids;
      const auto status = impl_->sp_no_prefix.Encode(piece, &ids);
      DYNLLAVA_EXPECTS(status.ok(), "tokenizer: {}: encoding {} bytes failed ({})", impl_->name,
                       piece.size(), quote_untrusted(status.ToString()));
      out.insert(out.end(), ids.begin(), ids.end());
    }
    if (at == std::string_view::npos) break;
    out.push_back(found);
    text.remove_prefix(at + impl_->pieces[static_cast<std::size_t>(found)].size());
  }
  return out;
}

std::string tokenizer::decode(std::span<const std::int32_t> ids) const {
  std::vector<int> v;
  v.reserve(ids.size());
  for (auto id : ids) {
    DYNLLAVA_EXPECTS(id >= 0 && id < vocab_size(),
                     "tokenizer: {}: decode: id {} is outside the vocabulary [0, {})", impl_->name,
                     id, vocab_size());
    v.push_back(id);
  }
  std::string text;
  const auto status = impl_->sp.Decode(v, &text);
  DYNLLAVA_EXPECTS(status.ok(), "tokenizer: {}: decoding {} ids failed ({})", impl_->name, v.size(),
                   quote_untrusted(status.ToString()));
  return text;
}

const std::string& tokenizer::piece(std::int32_t id) const {
  DYNLLAVA_EXPECTS(id >= 0 && id < vocab_size(),
                   "tokenizer: {}: piece: id {} is outside the vocabulary [0, {})", impl_->name, id,
                   vocab_size());
  return impl_->pieces[static_cast<std::size_t>(id)];
}

std::optional<std::int32_t> tokenizer::find_piece(std::string_view p) const {
  const int id = impl_->sp.PieceToId(p);
  if (id < 0 || id >= vocab_size() || impl_->pieces[static_cast<std::size_t>(id)] != p) {
    return std::nullopt;
  }
  return id;
}

token_kind tokenizer::kind(std::int32_t id) const {
  DYNLLAVA_EXPECTS(id >= 0 && id < vocab_size(),
                   "tokenizer: {}: kind: id {} is outside the vocabulary [0, {})", impl_->name, id,
                   vocab_size());
  return impl_->kinds[static_cast<std::size_t>(id)];
}

std::uint8_t tokenizer::byte_value(std::int32_t id) const {
  DYNLLAVA_EXPECTS(kind(id) == token_kind::byte,
                   "tokenizer: {}: byte_value: id {} ({}) is not a byte piece", impl_->name, id,
                   quote_untrusted(piece(id)));
  return impl_->bytes[static_cast<std::size_t>(id)];
}

tokenizer_options read_tokenizer_options(const std::filesystem::path& model_dir) {
  tokenizer_options o;
  const std::filesystem::path file = model_dir / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(file, ec))) return o;
  const std::string label = quote_untrusted(file.string(), 200);
  const io::json_limits limits;
  const auto doc =
      io::parse_json_document(io::read_small_file(file, label, limits.max_bytes), label, limits);
  const io::detail::json_fields top(doc, label, "");
  if (top.has("legacy")) o.legacy = top.boolean("legacy");
  return o;
}

}  // namespace dynllava::llava
