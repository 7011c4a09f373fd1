// SPDX-License-Identifier: Apache-2.0
#include "cli_options.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <array>
#include <charconv>
#include <cmath>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace dynllava::llava {

namespace {

/// `--threads` above this is surely a typo (and would start that many BLAS threads).
constexpr int max_threads = 1024;

constexpr std::array<std::pair<std::string_view, run_mode>, 6> modes{{
    {"dense", run_mode::dense},
    {"fastv", run_mode::fastv},
    {"h2o", run_mode::h2o},
    {"streaming", run_mode::streaming},
    {"dynamic-image", run_mode::dynamic_image},
    {"dynamic", run_mode::dynamic},
}};

}  // namespace

std::string_view to_string(run_mode mode) noexcept {
  for (const auto& [name, m] : modes) {
    if (m == mode) return name;
  }
  return "?";
}

run_mode parse_mode(std::string_view text, std::string_view option) {
  for (const auto& [name, m] : modes) {
    if (name == text) return m;
  }
  DYNLLAVA_FAIL("{}: expected dense, fastv, h2o, streaming, dynamic-image or dynamic, got {}",
                option, quote_untrusted(text));
}

bool parse_switch(std::string_view text, std::string_view option) {
  if (text == "on" || text == "true" || text == "1") return true;
  if (text == "off" || text == "false" || text == "0") return false;
  DYNLLAVA_FAIL("{}: expected on or off, got {}", option, quote_untrusted(text));
}

void generation_settings::validate(std::string_view where) const {
  // Command line: "--top-p"; a batch line (`where` = "--batch FILE:LINE"): its JSON key.
  auto name = [&](std::string_view option, std::string_view key) {
    return where.empty() ? fmt::format("--{}", option) : fmt::format("{}: \"{}\"", where, key);
  };
  DYNLLAVA_EXPECTS(max_new_tokens >= 0, "{}: expected a count >= 0, got {}",
                   name("max-new-tokens", "max_new_tokens"), max_new_tokens);
  DYNLLAVA_EXPECTS(std::isfinite(temperature) && temperature >= 0.0f,
                   "{}: expected a finite value >= 0 (0: greedy), got {}",
                   name("temperature", "temperature"), temperature);
  DYNLLAVA_EXPECTS(top_p > 0.0f && top_p <= 1.0f, "{}: expected a value in (0, 1], got {}",
                   name("top-p", "top_p"), top_p);
  DYNLLAVA_EXPECTS(kv_cache || (mode != run_mode::h2o && mode != run_mode::streaming),
                   "{}: {} evicts tokens from the KV cache and needs {}", name("mode", "mode"),
                   to_string(mode),
                   where.empty() ? "--kv-cache on" : "\"kv_cache\": true (or \"on\")");
}

void check_prompt_text(std::string_view prompt, std::string_view option) {
  DYNLLAVA_EXPECTS(prompt.find("<image>") == std::string_view::npos,
                   "{}: the text contains \"<image>\"; give pictures with --image (or a batch "
                   "line's \"image\"/\"images\"): they are placed before the question",
                   option);
}

std::uint64_t parse_seed(std::string_view text, std::string_view option) {
  std::uint64_t seed = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seed);
  DYNLLAVA_EXPECTS(!text.empty() && ec == std::errc{} && end == text.data() + text.size(),
                   "{}: expected an integer in [0, 18446744073709551615], got {}", option,
                   quote_untrusted(text));
  return seed;
}

void add_options(CLI::App& app, program_options& o, std::string& mode, std::string& kv_cache,
                 std::string& seed) {
  app.add_option("--model", o.model,
                 "LLaVA or Dynamic-LLaVA checkpoint folder (config.json, *.safetensors, "
                 "tokenizer.model)")
      ->required();
  app.add_option("--vision-tower", o.vision_tower,
                 "folder of the CLIP tower when the checkpoint does not hold it");
  app.add_option("--image", o.images,
                 "an image file (PNG or JPEG); repeat it to ask the question about each image in "
                 "turn (several images in one prompt: --batch with \"images\")");
  app.add_option("--prompt", o.prompt, "the question");
  app.add_option("--mode", mode,
                 "dense | fastv | h2o | streaming | dynamic-image | dynamic (default: dynamic)");
  app.add_option("--kv-cache", kv_cache, "on | off: decode with a KV cache (default: on)");
  app.add_option("--max-new-tokens", o.settings.max_new_tokens,
                 "most tokens generated per answer (default: 64)");
  app.add_option("--temperature", o.settings.temperature, "0: greedy (default); > 0: sample");
  app.add_option("--top-p", o.settings.top_p, "nucleus sampling mass, in (0, 1] (default: 1)");
  app.add_option("--seed", seed, "seed of the sampler, in [0, 2^64) (default: 0)");
  app.add_option("--threads", o.threads,
                 "compute threads, 1 to 1024; 0 or none: the number of cores");
  app.add_option("--batch", o.batch,
                 "JSON lines, one request each ({\"image\" or \"images\", \"prompt\", and any of "
                 "mode, kv_cache, max_new_tokens, temperature, top_p, seed}); answers are "
                 "written to stdout as JSON lines");
  app.add_flag("--json", o.json,
               "print the answer and the summary as one JSON object (one line per image with "
               "repeated --image)");
  app.add_option("--visualize", o.visualize,
                 "write the paper's Figure-6 view of the run (dropped patches whitened, tokens "
                 "left out of the KV cache greyed, the summary) as one HTML file");
}

void finish_options(program_options& o, std::string_view mode, std::string_view kv_cache,
                    std::string_view seed) {
  if (!mode.empty()) o.settings.mode = parse_mode(mode, "--mode");
  if (!kv_cache.empty()) o.settings.kv_cache = parse_switch(kv_cache, "--kv-cache");
  if (!seed.empty()) o.settings.seed = parse_seed(seed, "--seed");
  o.settings.validate("");
  DYNLLAVA_EXPECTS(o.threads >= 0 && o.threads <= max_threads,
                   "--threads: expected a count in [1, {}] (0: the number of cores), got {}",
                   max_threads, o.threads);
  if (o.batch) {
    DYNLLAVA_EXPECTS(!o.prompt && o.images.empty(),
                     "--batch: the requests come from the file; --prompt and --image cannot be "
                     "given with it");
    DYNLLAVA_EXPECTS(!o.visualize,
                     "--visualize: shows one run; it cannot be combined with --batch");
  } else {
    DYNLLAVA_EXPECTS(o.prompt.has_value(), "--prompt: required (or --batch FILE)");
    check_prompt_text(*o.prompt, "--prompt");
  }
  if (o.visualize) {
    const std::string name = quote_untrusted(o.visualize->string());
    DYNLLAVA_EXPECTS(!o.visualize->empty() && o.visualize->has_filename() &&
                         !std::filesystem::is_directory(*o.visualize),
                     "--visualize: expected the path of an HTML file to write, got {}", name);
    const auto folder = o.visualize->parent_path();
    DYNLLAVA_EXPECTS(folder.empty() || std::filesystem::is_directory(folder),
                     "--visualize: the folder of {} does not exist", name);
    DYNLLAVA_EXPECTS(::access(folder.empty() ? "." : folder.c_str(), W_OK) == 0,
                     "--visualize: the folder of {} is not writable", name);
    DYNLLAVA_EXPECTS(
        !std::filesystem::exists(*o.visualize) || (std::filesystem::is_regular_file(*o.visualize) &&
                                                   ::access(o.visualize->c_str(), W_OK) == 0),
        "--visualize: {} exists and is not a writable file", name);
    DYNLLAVA_EXPECTS(o.images.size() <= 1,
                     "--visualize: shows one run; it cannot be combined with {} --image options",
                     o.images.size());
  }
}

}  // namespace dynllava::llava
