// SPDX-License-Identifier: Apache-2.0
#include "batch_requests.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <string>

namespace dynllava::llava {

namespace {

/// Lines longer than this are refused (a request is a prompt and a few paths).
constexpr std::size_t max_line_bytes = std::size_t{1} << 20;

/// One line's request; `where` is "FILE:LINE".
batch_entry parse_entry(const std::string& where, const std::string& text,
                        const generation_settings& defaults) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  DYNLLAVA_EXPECTS(!j.is_discarded(), "--batch {}: not valid JSON", where);
  DYNLLAVA_EXPECTS(j.is_object(), "--batch {}: expected a JSON object, got {}", where,
                   j.type_name());
  batch_entry e;
  e.settings = defaults;
  bool prompt = false;
  auto string_of = [&](const nlohmann::json& v, const std::string& key) {
    DYNLLAVA_EXPECTS(v.is_string(), "--batch {}: \"{}\" must be a string, got {}", where, key,
                     v.type_name());
    return v.get<std::string>();
  };
  for (const auto& [key, v] : j.items()) {
    if (key == "prompt") {
      e.req.prompt = string_of(v, key);
      prompt = true;
    } else if (key == "image") {
      e.req.images.emplace_back(string_of(v, key));
    } else if (key == "images") {
      DYNLLAVA_EXPECTS(v.is_array(), "--batch {}: \"images\" must be an array of paths, got {}",
                       where, v.type_name());
      for (const auto& p : v) e.req.images.emplace_back(string_of(p, "images"));
    } else if (key == "mode") {
      e.settings.mode = parse_mode(string_of(v, key), "--batch " + where + ": \"mode\"");
    } else if (key == "kv_cache") {
      DYNLLAVA_EXPECTS(v.is_boolean() || v.is_string(),
                       "--batch {}: \"kv_cache\" must be true, false, \"on\" or \"off\", got {}",
                       where, v.type_name());
      e.settings.kv_cache = v.is_boolean() ? v.get<bool>()
                                           : parse_switch(v.get<std::string>(),
                                                          "--batch " + where + ": \"kv_cache\"");
    } else if (key == "max_new_tokens") {
      DYNLLAVA_EXPECTS(v.is_number_integer() && v.get<std::int64_t>() >= 0 &&
                           v.get<std::int64_t>() <= std::numeric_limits<index_t>::max(),
                       "--batch {}: \"max_new_tokens\" must be an integer >= 0, got {}", where,
                       quote_untrusted(v.dump()));
      e.settings.max_new_tokens = v.get<index_t>();
    } else if (key == "temperature" || key == "top_p") {
      DYNLLAVA_EXPECTS(v.is_number(), "--batch {}: \"{}\" must be a number, got {}", where, key,
                       v.type_name());
      (key == "temperature" ? e.settings.temperature : e.settings.top_p) = v.get<float>();
    } else if (key == "seed") {
      DYNLLAVA_EXPECTS(v.is_number_unsigned(),
                       "--batch {}: \"seed\" must be an integer >= 0, got {}", where,
                       quote_untrusted(v.dump()));
      e.settings.seed = v.get<std::uint64_t>();
    } else {
      DYNLLAVA_FAIL(
          "--batch {}: unknown key {} (expected prompt, image, images, mode, kv_cache, "
          "max_new_tokens, temperature, top_p, seed)",
          where, quote_untrusted(key));
    }
  }
  DYNLLAVA_EXPECTS(prompt, "--batch {}: \"prompt\" is missing", where);
  check_prompt_text(e.req.prompt, "--batch " + where + ": \"prompt\"");
  for (const auto& image : e.req.images) {
    DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(image),
                     "--batch {}: image {} is not a file (relative paths are read from the "
                     "current folder)",
                     where, quote_untrusted(image.string()));
  }
  e.settings.validate("--batch " + where);
  return e;
}

}  // namespace

std::vector<batch_entry> read_batch_file(const std::filesystem::path& file,
                                         const generation_settings& defaults) {
  const std::string name = quote_untrusted(file.string());
  DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(file), "--batch: {} is not a readable file",
                   name);
  std::ifstream in(file, std::ios::binary);
  DYNLLAVA_EXPECTS(in.good(), "--batch: cannot open {}", name);
  std::vector<batch_entry> out;
  std::string text;
  for (std::size_t line = 1; std::getline(in, text); ++line) {
    const std::string where = fmt::format("{}:{}", name, line);
    DYNLLAVA_EXPECTS(text.size() <= max_line_bytes, "--batch {}: the line is longer than {} bytes",
                     where, max_line_bytes);
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(parse_entry(where, text, defaults));
    out.back().line = line;
  }
  DYNLLAVA_EXPECTS(!in.bad(), "--batch: error while reading {}", name);
  DYNLLAVA_EXPECTS(!out.empty(), "--batch: {} holds no request", name);
  return out;
}

std::vector<std::vector<std::size_t>> group_batches(const std::vector<batch_entry>& entries) {
  std::vector<std::vector<std::size_t>> batches;
  std::vector<bool> placed(entries.size(), false);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (placed[i]) continue;
    batches.emplace_back();
    for (std::size_t k = i; k < entries.size() && batches.back().size() < max_batch_requests; ++k) {
      if (!placed[k] && entries[k].settings == entries[i].settings) {
        batches.back().push_back(k);
        placed[k] = true;
      }
    }
  }
  return batches;
}

}  // namespace dynllava::llava
