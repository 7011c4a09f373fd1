// SPDX-License-Identifier: Apache-2.0
/// @file dynllava_cost.cpp
/// @brief `dynllava_cost`: prefill and decode FLOPs and KV-cache bytes of dense, FastV,
/// Dynamic-LLaVA and H2O schedules for LLaVA-1.5 7B / 13B; prints a table and writes a CSV of
/// cost against output length (tools/plot_cost.py turns it into docs/plots/).
#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/output_sweep.hpp>
#include <dynllava/cost/paper_formula.hpp>
#include <dynllava/cost/schedule.hpp>
#include <dynllava/cost/schedule_trace.hpp>

#include <fmt/format.h>
#include <fmt/os.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

using namespace dynllava;
using namespace dynllava::cost;

constexpr std::string_view usage = R"(usage: dynllava_cost [options]

Prefill and decode FLOPs and KV-cache bytes of token schedules for LLaVA-1.5 (docs/cost.md).

model and request
  --model 7b|13b              LLaVA-1.5 preset (default 7b)
  --hidden C                  override the preset: residual width (the predictors follow it)
  --layers L                  override the preset: decoder layers
  --heads N                   override the preset: attention heads
  --head-dim D                override the preset: per-head width (default hidden / heads)
  --intermediate I            override the preset: SwiGLU MLP width
  --vocab V                   override the preset: vocabulary size
  --kv-bytes B                override the preset: bytes per cached K/V element (default 2)
  --schedule NAME             dense | fastv | dynamic-llava | h2o | all (default all)
  --batch B                   sequences per batch (default 1)
  --system-tokens N           prompt tokens before the image (default 35)
  --image-tokens N            image tokens (default 576)
  --instruction-tokens N      prompt tokens after the image (default 20)
  --output-tokens T           output length for the table (default 1024)
schedule parameters
  --sparse-layer L            Dynamic-LLaVA: first sparse layer (default 2)
  --vision-keep R             Dynamic-LLaVA: kept image fraction (default 0.2)
  --output-keep R             Dynamic-LLaVA: kept fraction of generated tokens (default 0.5)
  --fastv-layer K             FastV: first pruned layer (default 3)
  --fastv-keep R              FastV: kept image fraction (default 0.25)
  --h2o-budget R              H2O: kept cache fraction (default 0.5)
  --h2o-recent N              H2O: recent tokens always kept (default 32)
  --h2o-full-layers N         H2O: leading layers left uncompressed (default 10)
CSV of cost against output length (T = 0, step, ... max)
  --csv FILE                  write it to FILE
  --csv-max T                 last output length (default 4096)
  --csv-step S                output length step (default 64)
  --help                      this text
)";

struct cli_options {
  std::string model = "7b";
  std::optional<index_t> hidden, layers, heads, head_dim, intermediate, vocab, kv_bytes;
  std::string schedule_arg = "all";
  request req{};
  std::int64_t output_tokens = 1024;
  dynamic_llava_schedule dyn{};
  fastv_schedule fastv{};
  h2o_schedule h2o{};
  std::optional<std::string> csv;
  std::int64_t csv_max = 4096;
  std::int64_t csv_step = 64;
  bool help = false;
};

/// Parses an integer in [lo, hi] or throws naming the option.
std::int64_t parse_int(std::string_view option, std::string_view text, std::int64_t lo,
                       std::int64_t hi) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  DYNLLAVA_EXPECTS(ec == std::errc{} && end == text.data() + text.size(),
                   "{}: expected an integer, got '{}'", option, text);
  DYNLLAVA_EXPECTS(value >= lo && value <= hi, "{}: expected a value in [{}, {}], got {}", option,
                   lo, hi, value);
  return value;
}

index_t parse_index(std::string_view option, std::string_view text, std::int64_t lo) {
  return static_cast<index_t>(parse_int(option, text, lo, std::numeric_limits<index_t>::max()));
}

/// Parses a fraction in [0, 1] or throws naming the option.
double parse_fraction(std::string_view option, std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  DYNLLAVA_EXPECTS(ec == std::errc{} && end == text.data() + text.size(),
                   "{}: expected a number, got '{}'", option, text);
  DYNLLAVA_EXPECTS(value >= 0.0 && value <= 1.0, "{}: expected a value in [0, 1], got {}", option,
                   value);
  return value;
}

cli_options parse(int argc, char** argv) {
  cli_options o;
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view opt = args[i];
    if (opt == "--help" || opt == "-h") {
      o.help = true;
      continue;
    }
    DYNLLAVA_EXPECTS(opt.starts_with("--"), "unexpected argument '{}' (see --help)", opt);
    DYNLLAVA_EXPECTS(i + 1 < args.size(), "{}: missing value (see --help)", opt);
    const std::string_view v = args[++i];
    constexpr std::int64_t max_tokens = 1 << 24;
    if (opt == "--model") {
      DYNLLAVA_EXPECTS(v == "7b" || v == "13b", "--model: expected 7b or 13b, got '{}'", v);
      o.model = v;
    } else if (opt == "--hidden") {
      o.hidden = parse_index(opt, v, 1);
    } else if (opt == "--layers") {
      o.layers = parse_index(opt, v, 1);
    } else if (opt == "--heads") {
      o.heads = parse_index(opt, v, 1);
    } else if (opt == "--head-dim") {
      o.head_dim = parse_index(opt, v, 1);
    } else if (opt == "--intermediate") {
      o.intermediate = parse_index(opt, v, 1);
    } else if (opt == "--vocab") {
      o.vocab = parse_index(opt, v, 1);
    } else if (opt == "--kv-bytes") {
      o.kv_bytes = parse_index(opt, v, 1);
    } else if (opt == "--schedule") {
      DYNLLAVA_EXPECTS(
          v == "dense" || v == "fastv" || v == "dynamic-llava" || v == "h2o" || v == "all",
          "--schedule: expected dense, fastv, dynamic-llava, h2o or all, got '{}'", v);
      o.schedule_arg = v;
    } else if (opt == "--batch") {
      o.req.batch = static_cast<index_t>(parse_int(opt, v, 1, 4096));
    } else if (opt == "--system-tokens") {
      o.req.system_tokens = static_cast<index_t>(parse_int(opt, v, 0, max_tokens));
    } else if (opt == "--image-tokens") {
      o.req.image_tokens = static_cast<index_t>(parse_int(opt, v, 0, max_tokens));
    } else if (opt == "--instruction-tokens") {
      o.req.instruction_tokens = static_cast<index_t>(parse_int(opt, v, 0, max_tokens));
    } else if (opt == "--output-tokens") {
      o.output_tokens = parse_int(opt, v, 0, max_tokens);
    } else if (opt == "--sparse-layer") {
      o.dyn.sparse_layer = parse_index(opt, v, 0);
    } else if (opt == "--vision-keep") {
      o.dyn.vision_keep = parse_fraction(opt, v);
    } else if (opt == "--output-keep") {
      o.dyn.output_keep = parse_fraction(opt, v);
    } else if (opt == "--fastv-layer") {
      o.fastv.layer = parse_index(opt, v, 0);
    } else if (opt == "--fastv-keep") {
      o.fastv.image_keep = parse_fraction(opt, v);
    } else if (opt == "--h2o-budget") {
      o.h2o.budget = parse_fraction(opt, v);
    } else if (opt == "--h2o-recent") {
      o.h2o.recent = parse_index(opt, v, 0);
    } else if (opt == "--h2o-full-layers") {
      o.h2o.full_layers = parse_index(opt, v, 0);
    } else if (opt == "--csv") {
      DYNLLAVA_EXPECTS(!v.empty(), "--csv: expected a file name");
      o.csv = std::string(v);
    } else if (opt == "--csv-max") {
      o.csv_max = parse_int(opt, v, 0, max_tokens);
    } else if (opt == "--csv-step") {
      o.csv_step = parse_int(opt, v, 1, max_tokens);
    } else {
      DYNLLAVA_FAIL("unknown option '{}' (see --help)", opt);
    }
  }
  return o;
}

/// The preset, with any size given on the command line in place of its own.
llava_sizes model_config(const cli_options& o) {
  llava_sizes c = o.model == "13b" ? llava_1_5_13b() : llava_1_5_7b();
  const bool custom =
      o.hidden || o.layers || o.heads || o.head_dim || o.intermediate || o.vocab || o.kv_bytes;
  if (custom) c.name = o.model == "13b" ? "llava-1.5-13b-custom" : "llava-1.5-7b-custom";
  if (o.hidden) c.hidden = c.predictor.hidden = *o.hidden;
  if (o.layers) c.layers = *o.layers;
  if (o.heads) c.heads = *o.heads;
  // Attention width follows the residual width (LLaMA: heads * head_dim = hidden) unless the
  // head size is given too.
  if (o.head_dim) {
    c.head_dim = *o.head_dim;
  } else if (o.hidden || o.heads) {
    DYNLLAVA_EXPECTS(c.hidden % c.heads == 0,
                     "--hidden {} is not a multiple of --heads {} (give --head-dim for another "
                     "attention width)",
                     c.hidden, c.heads);
    c.head_dim = c.hidden / c.heads;
  }
  if (o.intermediate) c.intermediate = *o.intermediate;
  if (o.vocab) c.vocab = *o.vocab;
  if (o.kv_bytes) c.kv_bytes_per_element = *o.kv_bytes;
  c.validate();
  return c;
}

std::vector<schedule> selected_schedules(const cli_options& o) {
  std::vector<schedule> all{dense_schedule{}, o.fastv, o.dyn, o.h2o};
  if (o.schedule_arg == "all") return all;
  std::vector<schedule> one;
  for (const schedule& s : all) {
    if (schedule_name(s) == o.schedule_arg) one.push_back(s);
  }
  return one;
}

std::string optional_number(const std::optional<double>& x, double scale, int decimals) {
  return x ? fmt::format("{:.{}f}", *x / scale, decimals) : std::string("-");
}

void print_table(const llava_sizes& config, const cli_options& o,
                 const std::vector<schedule>& schedules) {
  const request& r = o.req;
  fmt::print(
      "model {} (C {}, {} layers, {} heads x {}, MLP {}), batch {}, prompt {} = {} system + "
      "{} image + {} instruction tokens, output length T = {}\n\n",
      config.name, config.hidden, config.layers, config.heads, config.head_dim, config.intermediate,
      r.batch, r.prompt_tokens(), r.system_tokens, r.image_tokens, r.instruction_tokens,
      o.output_tokens);
  fmt::print("{:<14} {:>9} {:>9} | {:>11} {:>11} | {:>11} {:>11} | {:>9}\n", "", "paper", "exact",
             "step no-KV", "step KV", "total no-KV", "total KV", "KV cache");
  fmt::print("{:<14} {:>9} {:>9} | {:>11} {:>11} | {:>11} {:>11} | {:>9}\n", "schedule", "prefill",
             "prefill", "decode", "decode", "T tokens", "T tokens", "at T");
  fmt::print("{:<14} {:>9} {:>9} | {:>11} {:>11} | {:>11} {:>11} | {:>9}\n", "", "TFLOPs", "TFLOPs",
             "GFLOPs", "GFLOPs", "TFLOPs", "TFLOPs", "GiB");
  for (const schedule& s : schedules) {
    const double paper = paper_prefill_flops(config, s, r.batch, r.image_tokens);
    const auto points = cost_vs_output_length(config, s, r, o.output_tokens,
                                              o.output_tokens > 0 ? o.output_tokens : 1);
    const length_point& at = points.back();
    fmt::print("{:<14} {:>9.1f} {:>9.2f} | {:>11} {:>11.1f} | {:>11} {:>11.1f} | {:>9.2f}\n",
               schedule_name(s), paper / 1e12, at.prefill_flops / 1e12,
               optional_number(at.step_flops_no_cache, 1e9, 1), at.step_flops_kv_cache / 1e9,
               optional_number(at.total_flops_no_cache, 1e12, 1), at.total_flops_kv_cache / 1e12,
               static_cast<double>(at.kv_cache_bytes) / (1024.0 * 1024.0 * 1024.0));
  }
  fmt::print(
      "\npaper prefill: 32 B N C^2 + 4 B N^2 C per layer, N = image tokens that layer sees.\n"
      "exact: every prompt token, LLaMA's MLP width, causal attention, norms/softmax/RoPE, "
      "lm_head for the last row, predictors.\n"
      "step = the decode step for generated token T; total = prefill + steps 0..T-1; KV cache "
      "({} bytes per element) after T generated tokens. '-': not defined (H2O needs a KV cache).\n",
      config.kv_bytes_per_element);
}

void write_csv(const llava_sizes& config, const cli_options& o,
               const std::vector<schedule>& schedules) {
  auto out = fmt::output_file(*o.csv);
  out.print(
      "model,schedule,batch,prompt_tokens,output_tokens,prefill_flops,step_flops_no_cache,"
      "total_flops_no_cache,step_flops_kv_cache,total_flops_kv_cache,kv_cache_bytes\n");
  const auto cell = [](const std::optional<double>& x) {
    return x ? fmt::format("{:.17g}", *x) : std::string();
  };
  for (const schedule& s : schedules) {
    for (const length_point& p : cost_vs_output_length(config, s, o.req, o.csv_max, o.csv_step)) {
      out.print("{},{},{},{},{},{:.17g},{},{},{:.17g},{:.17g},{}\n", config.name, schedule_name(s),
                o.req.batch, o.req.prompt_tokens(), p.output_tokens, p.prefill_flops,
                cell(p.step_flops_no_cache), cell(p.total_flops_no_cache), p.step_flops_kv_cache,
                p.total_flops_kv_cache, p.kv_cache_bytes);
    }
  }
  out.close();
  fmt::print("wrote {} (T = 0..{} step {})\n", *o.csv, o.csv_max, o.csv_step);
}

}  // namespace

int main(int argc, char** argv) {
  cli_options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "dynllava_cost: {}\n", e.what());
    return 2;
  }
  if (o.help) {
    fmt::print("{}", usage);
    return 0;
  }
  try {
    const llava_sizes config = model_config(o);
    const std::vector<schedule> schedules = selected_schedules(o);
    for (const schedule& s : schedules) validate(s, config.layers);
    print_table(config, o, schedules);
    if (o.csv) write_csv(config, o, schedules);
  } catch (const std::exception& e) {
    fmt::print(stderr, "dynllava_cost: {}\n", e.what());
    return 1;
  }
  return 0;
}
