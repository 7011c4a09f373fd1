// SPDX-License-Identifier: Apache-2.0
#include "run_summary.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>

namespace dynllava::llava {

namespace {

std::string percent(double part, double whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * part / whole) : std::string("-");
}

std::string mib(std::int64_t bytes) {
  return fmt::format("{:.2f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

/// What a baseline keeps, as the program runs it (request_runner.cpp).
std::string_view mode_rule(run_mode mode) {
  switch (mode) {
    case run_mode::fastv:
      return " (25% of the image tokens by attention at layer 3)";
    case run_mode::h2o:
      return " (evicts: each layer keeps half of its tokens by attention, the newest 32 always)";
    case run_mode::streaming:
      return " (evicts: each layer keeps 4 sink tokens and the newest 252)";
    default:
      return "";
  }
}

}  // namespace

double run_summary::tokens_per_s() const noexcept {
  const double s = cost.prefill_s + cost.decode_s;
  return s > 0 ? static_cast<double>(generated) / s : 0.0;
}

run_summary summarize(const generation_settings& settings, std::size_t batch_size,
                      const sequence_result& r, const run_cost& cost) {
  run_summary s;
  s.settings = settings;
  s.batch_size = batch_size;
  s.image_total = r.image_keep.size();
  s.image_kept = static_cast<std::size_t>(std::count(r.image_keep.begin(), r.image_keep.end(), 1));
  s.generated = r.tokens.size();
  s.decided = r.output_keep.size();
  s.kept = static_cast<std::size_t>(std::count(r.output_keep.begin(), r.output_keep.end(), 1));
  s.stopped_at_eos = r.stopped_at_eos;
  s.cost = cost;
  return s;
}

std::vector<std::pair<std::string, std::string>> summary_rows(const run_summary& s) {
  const run_cost& c = s.cost;
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("mode",
                    fmt::format("{}{}, {}", to_string(s.settings.mode), mode_rule(s.settings.mode),
                                s.settings.kv_cache ? "KV cache" : "no KV cache"));
  if (s.batch_size > 1) rows.emplace_back("batch", fmt::format("{} requests", s.batch_size));
  rows.emplace_back("image tokens kept", fmt::format("{} / {} ({})", s.image_kept, s.image_total,
                                                     percent(static_cast<double>(s.image_kept),
                                                             static_cast<double>(s.image_total))));
  rows.emplace_back(
      "output tokens kept",
      fmt::format("{} / {} {} ({} generated)", s.kept, s.decided,
                  s.settings.kv_cache ? "entered the KV cache" : "stay in the context",
                  s.generated));
  rows.emplace_back("stopped", s.stopped_at_eos
                                   ? std::string("at the end-of-sequence token")
                                   : fmt::format("at --max-new-tokens ({}): the answer may be cut",
                                                 s.settings.max_new_tokens));
  if (s.settings.kv_cache) {
    rows.emplace_back("KV cache held",
                      fmt::format("{} vs dense {} ({})", mib(c.kv_bytes), mib(c.dense_kv_bytes),
                                  percent(static_cast<double>(c.kv_bytes),
                                          static_cast<double>(c.dense_kv_bytes))));
  } else {
    rows.emplace_back("KV cache held", "none (decoding without KV cache)");
  }
  rows.emplace_back("TFLOPs (cost model)",
                    fmt::format("{:.6g} vs dense {:.6g} ({})", c.flops * 1e-12,
                                c.dense_flops * 1e-12, percent(c.flops, c.dense_flops)));
  rows.emplace_back("prefill", fmt::format("{:.3f} s (+ {:.3f} s embedding and vision tower)",
                                           c.prefill_s, c.encode_s));
  rows.emplace_back("decode", fmt::format("{:.3f} s, {} step{}", c.decode_s, c.decode_steps,
                                          c.decode_steps == 1 ? "" : "s"));
  rows.emplace_back("speed", fmt::format("{:.1f} tokens/s (generated tokens over prefill and "
                                         "decode time)",
                                         s.tokens_per_s()));
  return rows;
}

void print_summary(std::ostream& out, const run_summary& s) {
  const auto rows = summary_rows(s);
  std::size_t width = 0;
  for (const auto& [name, value] : rows) width = std::max(width, name.size());
  for (const auto& [name, value] : rows)
    out << fmt::format("{:<{}}  {}\n", name + ":", width + 1, value);
}

nlohmann::json summary_json(const run_summary& s) {
  const run_cost& c = s.cost;
  nlohmann::json j;
  j["mode"] = std::string(to_string(s.settings.mode));
  j["kv_cache"] = s.settings.kv_cache;
  j["batch_size"] = s.batch_size;
  // kv_bytes, tflops, seconds and decode_steps are the run's: the whole batch's when it holds
  // several requests.
  j["cost_scope"] = s.batch_size > 1 ? "batch" : "request";
  j["image_tokens"] = {{"kept", s.image_kept}, {"total", s.image_total}};
  j["output_tokens"] = {{"generated", s.generated}, {"decided", s.decided}, {"kept", s.kept}};
  j["kv_bytes"] = {{"held", c.kv_bytes}, {"dense", c.dense_kv_bytes}};
  j["tflops"] = {{"run", c.flops * 1e-12}, {"dense", c.dense_flops * 1e-12}};
  j["seconds"] = {{"encode", c.encode_s}, {"prefill", c.prefill_s}, {"decode", c.decode_s}};
  j["decode_steps"] = c.decode_steps;
  j["tokens_per_s"] = s.tokens_per_s();
  return j;
}

}  // namespace dynllava::llava
