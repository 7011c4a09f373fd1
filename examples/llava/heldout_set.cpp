// SPDX-License-Identifier: Apache-2.0
#include "heldout_set.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <optional>

namespace dynllava::llava {

namespace {

/// Lines longer than this are refused (a question's prompt ids and patch map are a few KB).
constexpr std::size_t max_line_bytes = std::size_t{1} << 20;
/// Answers longer than this are refused (generation runs to their length).
constexpr std::size_t max_answer_ids = 64;

const nlohmann::json& field(const nlohmann::json& j, const std::string& where, const char* key) {
  const auto it = j.find(key);
  DYNLLAVA_EXPECTS(it != j.end(), "--eval {}: missing field \"{}\"", where, key);
  return *it;
}

std::string string_field(const nlohmann::json& j, const std::string& where, const char* key) {
  const auto& v = field(j, where, key);
  DYNLLAVA_EXPECTS(v.is_string(), "--eval {}: \"{}\" must be a string, got {}", where, key,
                   v.type_name());
  return v.get<std::string>();
}

/// A non-empty array of ids in [0, vocab) (and `extra`, the image placeholder, where given).
std::vector<std::int64_t> ids_field(const nlohmann::json& j, const std::string& where,
                                    const char* key, std::int64_t vocab,
                                    std::optional<std::int64_t> extra) {
  const auto& v = field(j, where, key);
  DYNLLAVA_EXPECTS(v.is_array() && !v.empty(),
                   "--eval {}: \"{}\" must be a non-empty array of token ids, got {}", where, key,
                   v.is_array() ? std::string("[]") : std::string(v.type_name()));
  std::vector<std::int64_t> out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto& e = v[i];
    DYNLLAVA_EXPECTS(e.is_number_integer(), "--eval {}: \"{}\"[{}] must be an integer, got {}",
                     where, key, i, e.type_name());
    const auto id = e.get<std::int64_t>();
    DYNLLAVA_EXPECTS((id >= 0 && id < vocab) || id == extra,
                     "--eval {}: \"{}\"[{}] = {} is outside [0, {}){}", where, key, i, id, vocab,
                     extra ? fmt::format(" and is not {}", *extra) : std::string());
    out.push_back(id);
  }
  return out;
}

heldout_item parse_item(const std::filesystem::path& folder, const std::string& where,
                        const std::string& text, int grid, std::int64_t image_token,
                        std::int64_t vocab) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  DYNLLAVA_EXPECTS(!j.is_discarded(), "--eval {}: not valid JSON", where);
  DYNLLAVA_EXPECTS(j.is_object(), "--eval {}: expected a JSON object, got {}", where,
                   j.type_name());
  heldout_item it;
  if (const auto id = j.find("id"); id != j.end()) {
    DYNLLAVA_EXPECTS(id->is_number_integer() || id->is_string(),
                     "--eval {}: \"id\" must be an integer or a string, got {}", where,
                     id->type_name());
    it.id = id->is_string() ? id->get<std::string>() : id->dump();
  }
  const std::string image = string_field(j, where, "image");
  DYNLLAVA_EXPECTS(!image.empty(), "--eval {}: \"image\" is empty", where);
  it.image =
      std::filesystem::path(image).is_absolute() ? std::filesystem::path(image) : folder / image;
  it.question = string_field(j, where, "question");
  it.kind = string_field(j, where, "kind");
  DYNLLAVA_EXPECTS(!it.kind.empty(), "--eval {}: \"kind\" is empty", where);
  if (j.contains("answer")) it.answer = string_field(j, where, "answer");
  it.prompt_ids = ids_field(j, where, "prompt_ids", vocab, image_token);
  const auto images = std::count(it.prompt_ids.begin(), it.prompt_ids.end(), image_token);
  DYNLLAVA_EXPECTS(images == 1,
                   "--eval {}: \"prompt_ids\" must hold exactly one image placeholder ({}), "
                   "got {}",
                   where, image_token, images);
  const auto answer = ids_field(j, where, "answer_ids", vocab, std::nullopt);
  DYNLLAVA_EXPECTS(answer.size() <= max_answer_ids,
                   "--eval {}: \"answer_ids\" holds {} ids, at most {} expected", where,
                   answer.size(), max_answer_ids);
  it.answer_ids.assign(answer.begin(), answer.end());
  const auto& patches = field(j, where, "object_patches");
  DYNLLAVA_EXPECTS(patches.is_array() && patches.size() == static_cast<std::size_t>(grid),
                   "--eval {}: \"object_patches\" must be an array of {} strings (the model's "
                   "{} x {} patch grid), got {}",
                   where, grid, grid, grid,
                   patches.is_array() ? fmt::format("{} entries", patches.size())
                                      : std::string(patches.type_name()));
  it.object_patch.reserve(static_cast<std::size_t>(grid) * static_cast<std::size_t>(grid));
  for (std::size_t r = 0; r < patches.size(); ++r) {
    const auto& row = patches[r];
    DYNLLAVA_EXPECTS(row.is_string(), "--eval {}: \"object_patches\"[{}] must be a string, got {}",
                     where, r, row.type_name());
    const auto& s = row.get_ref<const std::string&>();
    DYNLLAVA_EXPECTS(s.size() == static_cast<std::size_t>(grid) &&
                         s.find_first_not_of("01") == std::string::npos,
                     "--eval {}: \"object_patches\"[{}] must be {} characters '0' or '1', got {}",
                     where, r, grid, quote_untrusted(s));
    for (char c : s) it.object_patch.push_back(c == '1' ? 1 : 0);
  }
  return it;
}

}  // namespace

std::vector<heldout_item> read_heldout(const std::filesystem::path& file, std::size_t limit,
                                       int grid, std::int64_t image_token, std::int64_t vocab) {
  const std::string name = quote_untrusted(file.string());
  DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(file),
                   "--eval: {} is not a file (expected the held-out questions, JSON lines)", name);
  std::ifstream in(file, std::ios::binary);
  DYNLLAVA_EXPECTS(in.good(), "--eval: cannot read {}", name);
  const std::filesystem::path folder = file.parent_path();
  std::vector<heldout_item> out;
  std::string text;
  for (std::size_t line = 1; std::getline(in, text); ++line) {
    const std::string where = fmt::format("{}:{}", name, line);
    DYNLLAVA_EXPECTS(text.size() <= max_line_bytes, "--eval {}: the line is longer than {} bytes",
                     where, max_line_bytes);
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back(parse_item(folder, where, text, grid, image_token, vocab));
    out.back().line = line;
    if (limit != 0 && out.size() == limit) break;
  }
  DYNLLAVA_EXPECTS(!out.empty(), "--eval: {} holds no questions", name);
  return out;
}

}  // namespace dynllava::llava
