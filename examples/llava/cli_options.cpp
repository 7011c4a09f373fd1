// SPDX-License-Identifier: Apache-2.0
#include "cli_options.hpp"

#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>

#include <CLI/CLI.hpp>
#include <array>
#include <cmath>
#include <utility>

namespace dynllava::llava {

namespace {

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

void generation_settings::validate(std::string_view prefix) const {
  DYNLLAVA_EXPECTS(max_new_tokens >= 0, "{}max-new-tokens: expected a count >= 0, got {}", prefix,
                   max_new_tokens);
  DYNLLAVA_EXPECTS(std::isfinite(temperature) && temperature >= 0.0f,
                   "{}temperature: expected a finite value >= 0 (0: greedy), got {}", prefix,
                   temperature);
  DYNLLAVA_EXPECTS(top_p > 0.0f && top_p <= 1.0f, "{}top-p: expected a value in (0, 1], got {}",
                   prefix, top_p);
  DYNLLAVA_EXPECTS(kv_cache || (mode != run_mode::h2o && mode != run_mode::streaming),
                   "{}mode: {} evicts tokens from the KV cache and needs {}kv-cache on", prefix,
                   to_string(mode), prefix);
}

void add_options(CLI::App& app, program_options& o, std::string& mode, std::string& kv_cache) {
  app.add_option("--model", o.model,
                 "LLaVA or Dynamic-LLaVA checkpoint folder (config.json, *.safetensors, "
                 "tokenizer.model)")
      ->required();
  app.add_option("--vision-tower", o.vision_tower,
                 "folder of the CLIP tower when the checkpoint does not hold it");
  app.add_option("--image", o.images,
                 "an image file (PNG or JPEG); repeat for several images "
                 "in one prompt");
  app.add_option("--prompt", o.prompt, "the question");
  app.add_option("--mode", mode,
                 "dense | fastv | h2o | streaming | dynamic-image | dynamic (default: dynamic)");
  app.add_option("--kv-cache", kv_cache, "on | off: decode with a KV cache (default: on)");
  app.add_option("--max-new-tokens", o.settings.max_new_tokens,
                 "most tokens generated per answer (default: 64)");
  app.add_option("--temperature", o.settings.temperature, "0: greedy (default); > 0: sample");
  app.add_option("--top-p", o.settings.top_p, "nucleus sampling mass, in (0, 1] (default: 1)");
  app.add_option("--seed", o.settings.seed, "seed of the sampler (default: 0)");
  app.add_option("--threads", o.threads, "compute threads (default: the number of cores)");
  app.add_option("--batch", o.batch,
                 "JSON lines, one request each ({\"image\" or \"images\", \"prompt\", and any of "
                 "mode, kv_cache, max_new_tokens, temperature, top_p, seed}); answers are "
                 "written to stdout as JSON lines");
  app.add_flag("--json", o.json, "print the answer and the summary as one JSON object");
  app.add_option("--visualize", o.visualize,
                 "write the paper's Figure-6 view of the run (dropped patches whitened, tokens "
                 "left out of the KV cache greyed, the summary) as one HTML file");
}

void finish_options(program_options& o, std::string_view mode, std::string_view kv_cache) {
  if (!mode.empty()) o.settings.mode = parse_mode(mode, "--mode");
  if (!kv_cache.empty()) o.settings.kv_cache = parse_switch(kv_cache, "--kv-cache");
  o.settings.validate("--");
  DYNLLAVA_EXPECTS(o.threads >= 0,
                   "--threads: expected a count >= 1 (0: the number of cores), got {}", o.threads);
  if (o.batch) {
    DYNLLAVA_EXPECTS(!o.prompt && o.images.empty(),
                     "--batch: the requests come from the file; --prompt and --image cannot be "
                     "given with it");
    DYNLLAVA_EXPECTS(!o.visualize,
                     "--visualize: shows one run; it cannot be combined with --batch");
  } else {
    DYNLLAVA_EXPECTS(o.prompt.has_value(), "--prompt: required (or --batch FILE)");
  }
  if (o.visualize) {
    const auto folder = o.visualize->parent_path();
    DYNLLAVA_EXPECTS(folder.empty() || std::filesystem::is_directory(folder),
                     "--visualize: the folder of {} does not exist",
                     quote_untrusted(o.visualize->string()));
  }
}

}  // namespace dynllava::llava
