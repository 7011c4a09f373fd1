// SPDX-License-Identifier: Apache-2.0
/// @file llava_main.cpp
/// @brief `dynllava-llava`: asks a LLaVA-1.5 / Dynamic-LLaVA checkpoint a question about images
/// in one of the library's modes, streams the answer and prints what was pruned and what it cost;
/// or answers a file of requests as JSON lines. Every error is one line on stderr and a non-zero
/// exit code (2: the command line, 1: anything else).
#include <dynllava/core/error.hpp>
#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/nn/blas_core.hpp>
#include <dynllava/nn/parallel.hpp>

#include "answer_stream.hpp"
#include "batch_requests.hpp"
#include "cli_options.hpp"
#include "figure6_view.hpp"
#include "program_errors.hpp"
#include "request_runner.hpp"
#include "run_summary.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace ll = dynllava::llava;

namespace {

constexpr std::string_view program = "dynllava-llava";

/// Progress lines on stderr, only when it is a terminal.
class progress {
 public:
  progress() : on_(isatty(STDERR_FILENO) != 0) {}
  void operator()(const std::string& what) const {
    if (on_) std::cerr << program << ": " << what << '\n';
  }

 private:
  bool on_;
};

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// The answer's fields of a JSON answer.
void add_answer(nlohmann::json& j, const ll::answer_stream& answer, const ll::sequence_result& r) {
  j["answer"] = answer.text();
  j["tokens"] = r.tokens;
  j["stopped_at_eos"] = r.stopped_at_eos;
}

/// Asks `o.prompt` about `images` (all in one prompt) and streams the answer.
int run_one(const ll::loaded_model& m, const ll::program_options& o,
            const std::vector<std::filesystem::path>& images, const progress& report) {
  const ll::request req{*o.prompt, images};
  const ll::prepared_request prepared = ll::prepare_request(m, req);
  ll::check_fits(m, prepared, o.settings, "");
  ll::answer_stream answer(m.tok, o.json ? nullptr : &std::cout);
  const ll::batch_result res = ll::run_batch(
      m, {prepared}, o.settings, [&](std::size_t, std::int32_t id) { answer.push(id); },
      [&](const std::string& what) { report(what + "..."); });
  answer.finish();
  const ll::sequence_result& r = res.sequences.front();
  const ll::run_summary summary = ll::summarize(o.settings, 1, r, res.cost);
  if (!o.json) {
    std::cout << "\n\n";
    ll::print_summary(std::cout, summary);
    std::cout.flush();
  }
  if (o.visualize) {
    try {
      ll::write_figure6_html(*o.visualize,
                             ll::make_figure6_page(m, req, prepared, r, answer.pieces(), summary));
    } catch (const dynllava::error& e) {
      std::string_view what = ll::message_of(e);
      if (what.starts_with("write_figure6_html: ")) what.remove_prefix(20);
      throw dynllava::error(fmt::format("--visualize: {}", what));
    }
  }
  if (o.json) {
    nlohmann::json j = ll::summary_json(summary);
    add_answer(j, answer, r);
    if (images.size() == 1 && o.images.size() > 1) j["image"] = images.front().string();
    std::cout << dump(j) << '\n';
  } else if (o.visualize) {
    std::cout << "Figure-6 view: " << o.visualize->string() << '\n';
  }
  return 0;
}

/// One image or none: one run. Several `--image`s: the question about each image in turn, each
/// answer streamed and summarised on its own (JSON: one line per image).
int run_images(const ll::loaded_model& m, const ll::program_options& o, const progress& report) {
  if (o.images.size() <= 1) return run_one(m, o, o.images, report);
  for (std::size_t i = 0; i < o.images.size(); ++i) {
    if (!o.json) {
      std::cout << (i == 0 ? "" : "\n") << "[image " << i + 1 << " of " << o.images.size() << ": "
                << o.images[i].string() << "]\n";
      std::cout.flush();
    }
    run_one(m, o, {o.images[i]}, report);
  }
  return 0;
}

int run_batch_file(const ll::loaded_model& m, const std::filesystem::path& batch_file,
                   const std::vector<ll::batch_entry>& entries, const progress& report) {
  std::vector<std::string> lines(entries.size());
  for (const auto& group : ll::group_batches(entries)) {
    std::vector<ll::prepared_request> prepared;
    std::vector<ll::answer_stream> answers;
    for (std::size_t i : group) {
      try {
        prepared.push_back(ll::prepare_request(m, entries[i].req));
      } catch (const dynllava::error& e) {  // name the request's line
        throw dynllava::error(fmt::format("--batch {}:{}: {}",
                                          dynllava::quote_untrusted(batch_file.string()),
                                          entries[i].line, ll::message_of(e)));
      }
      ll::check_fits(m, prepared.back(), entries[i].settings,
                     fmt::format("--batch {}:{}", dynllava::quote_untrusted(batch_file.string()),
                                 entries[i].line));
      answers.emplace_back(m.tok, nullptr);
    }
    const auto& settings = entries[group.front()].settings;
    const ll::batch_result res = ll::run_batch(
        m, prepared, settings, [&](std::size_t b, std::int32_t id) { answers[b].push(id); },
        [&](const std::string& what) { report(what + "..."); });
    for (std::size_t b = 0; b < group.size(); ++b) {
      answers[b].finish();
      nlohmann::json j;
      j["line"] = entries[group[b]].line;
      add_answer(j, answers[b], res.sequences[b]);
      j.update(ll::summary_json(ll::summarize(settings, group.size(), res.sequences[b], res.cost)));
      lines[group[b]] = dump(j);
    }
  }
  for (const auto& line : lines) std::cout << line << '\n';
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"Asks LLaVA-1.5 / Dynamic-LLaVA about images, with the library's token pruning.",
               std::string(program)};
  app.set_version_flag("--version", fmt::format("{} {}", program, DYNLLAVA_VERSION));
  app.footer(
      "Errors are one line on stderr. Exit status: 0 done; 2 a bad command line (an option, a "
      "missing file or folder, a malformed --batch line); 1 a model, image or run that failed.");
  ll::program_options o;
  std::string mode, kv_cache, seed;
  ll::add_options(app, o, mode, kv_cache, seed);
  if (const auto code = ll::parse_command_line(app, argc, argv, program)) return *code;
  std::vector<ll::batch_entry> entries;
  if (const auto code = ll::check_usage(program, [&] {
        ll::finish_options(o, mode, kv_cache, seed);
        ll::check_model_folder(o.model, o.vision_tower);
        for (const auto& image : o.images) {
          DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(image), "--image: {} is not a file",
                           dynllava::quote_untrusted(image.string()));
        }
        if (o.batch) entries = ll::read_batch_file(*o.batch, o.settings);
      })) {
    return *code;
  }
  if (o.threads > 0) dynllava::nn::set_thread_count(o.threads);
  const progress report;
  report(fmt::format("loading {}...", o.model.string()));
  const auto t0 = std::chrono::steady_clock::now();
  const ll::loaded_model m = ll::load_model(o.model, o.vision_tower);
  report(fmt::format("loaded in {:.2f} s",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()));
  return o.batch ? run_batch_file(m, *o.batch, entries, report) : run_images(m, o, report);
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's OpenBLAS may pick generic kernels on CPUs newer than itself: rerun with fitting ones.
  dynllava::nn::rerun_with_blas_core(argv);
  return ll::run_reporting_errors(program, [&] { return run(argc, argv); });
}
