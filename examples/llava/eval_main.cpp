// SPDX-License-Identifier: Apache-2.0
/// @file eval_main.cpp
/// @brief `dynllava-llava-eval`: answers a trained tiny model's held-out questions
/// (`<model>/eval/heldout.jsonl`) in the dense, Dynamic-LLaVA and random-115 modes through the
/// library and reports the exact-answer rates, the image rows kept, how many of them touch an
/// object against the objects' share of all patches, and issue #16's targets. Every error is one
/// line on stderr and a non-zero exit code (2: the command line or the file, 1: anything else).
#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/nn/blas_core.hpp>
#include <dynllava/nn/parallel.hpp>

#include "eval_modes.hpp"
#include "eval_report.hpp"
#include "heldout_set.hpp"
#include "program_errors.hpp"
#include "request_runner.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ll = dynllava::llava;

namespace {

constexpr std::string_view program = "dynllava-llava-eval";

struct eval_options {
  std::filesystem::path model;
  std::optional<std::filesystem::path> eval;
  std::string modes = "dense,dynamic,random";
  ll::eval_settings settings;
  int threads = 0;
  std::size_t limit = 0;
  bool json = false;
};

std::vector<ll::eval_mode> parse_modes(const std::string& text) {
  std::vector<ll::eval_mode> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const auto m = ll::parse_eval_mode(std::string_view(text).substr(
        start, comma == std::string::npos ? std::string::npos : comma - start));
    DYNLLAVA_EXPECTS(std::find(out.begin(), out.end(), m) == out.end(),
                     "--modes: {} is named twice", ll::to_string(m));
    out.push_back(m);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

int run(int argc, char** argv) {
  CLI::App app{
      "Answers a trained tiny Dynamic-LLaVA's held-out questions in the dense, "
      "Dynamic-LLaVA and random-115 modes and reports issue #16's figures.",
      std::string(program)};
  app.set_version_flag("--version", fmt::format("{} {}", program, DYNLLAVA_VERSION));
  app.footer(
      "Errors are one line on stderr. Exit status: 0 done; 2 a bad command line (an option, a "
      "missing model folder, a malformed question file); 1 a model or run that failed.");
  eval_options o;
  app.add_option("--model", o.model, "the model folder (config.json, weights, tokenizer.model)")
      ->required();
  app.add_option("--eval", o.eval, "the held-out questions (default: <model>/eval/heldout.jsonl)");
  app.add_option("--modes", o.modes, "comma-separated: dense, dynamic, random")
      ->capture_default_str();
  app.add_option("--batch", o.settings.batch, "questions per ragged batch")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "compute threads (0: the number of cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--limit", o.limit, "answer only the first N questions (0: all)");
  app.add_option("--seed", o.settings.seed, "the random mode's seed")->capture_default_str();
  app.add_option("--margin", o.settings.margin, "tokens generated past each answer's length")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_flag("--json", o.json, "one JSON object on stdout instead of the table");
  if (const auto code = ll::parse_command_line(app, argc, argv, program)) return *code;
  std::vector<ll::eval_mode> modes;
  if (const auto code = ll::check_usage(program, [&] {
        modes = parse_modes(o.modes);
        ll::check_model_folder(o.model, std::nullopt);
      })) {
    return *code;
  }
  if (o.threads > 0) dynllava::nn::set_thread_count(o.threads);
  const ll::loaded_model m = ll::load_model(o.model, std::nullopt);
  const std::filesystem::path file = o.eval.value_or(o.model / "eval" / "heldout.jsonl");
  const auto rows = m.folder.model.image_rows();
  const auto grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(rows))));
  DYNLLAVA_EXPECTS(static_cast<dynllava::index_t>(grid) * grid == rows,
                   "--model: {} image rows do not form a square patch grid", rows);
  std::vector<ll::heldout_item> items;
  if (const auto code = ll::check_usage(program, [&] {
        items = ll::read_heldout(file, o.limit, grid, m.folder.config.image_token_id,
                                 m.folder.model.vocab());
        ll::check_prompts(m, items, file.string());
      })) {
    return *code;
  }
  std::vector<ll::mode_report> reports;
  for (const auto mode : modes) {
    reports.push_back(ll::evaluate_mode(m, items, mode, o.settings));
    if (!o.json) {
      std::cerr << fmt::format("{}: {} done in {:.1f} s\n", program, ll::to_string(mode),
                               reports.back().seconds);
    }
  }
  if (o.json) {
    std::cout << ll::report_json(file.string(), reports)
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << '\n';
  } else {
    ll::print_report(std::cout, file.string(), reports);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's OpenBLAS may pick generic kernels on CPUs newer than itself: rerun with fitting ones.
  dynllava::nn::rerun_with_blas_core(argv);
  return ll::run_reporting_errors(program, [&] { return run(argc, argv); });
}
