// SPDX-License-Identifier: Apache-2.0
// dynllava-llava, run as a user runs it, on the tiny Dynamic-LLaVA of
// tests/fixtures/llava/original: every mode answers; greedy and seeded answers equal the
// library's drivers; the --json summary is consistent; a --batch file answers each request as
// it is answered alone; bad options and files give one line on stderr and a non-zero exit.
#ifdef DYNLLAVA_LLAVA_PROGRAM

#include <dynllava/dynllava.hpp>
#include <dynllava/io/load_llava.hpp>

#include "clip_preprocess.hpp"
#include "conversation.hpp"
#include "image.hpp"
#include "program_process.hpp"
#include "prompt_tokens.hpp"
#include "tokenizer.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace dynllava;
namespace ll = dynllava::llava;
namespace fs = std::filesystem;
using ll::test::outcome;
using ll::test::read_text;

namespace {

fs::path fixtures() { return DYNLLAVA_FIXTURE_DIR; }
std::string tiny_dir() { return (fixtures() / "llava" / "original").string(); }
std::string image_png() { return (fixtures() / "llava" / "image.png").string(); }
std::string wide_png() { return (fixtures() / "images" / "wide_500x375.png").string(); }
const std::string question = "What is shown in this image?";

/// A scratch folder for this process, removed at exit.
const fs::path& scratch() {
  static const ll::test::scratch_folder f("dynllava_program_test");
  return f.path();
}

/// Runs the program with `args`; stdout and stderr are captured apart.
outcome run_program(const std::vector<std::string>& args) {
  return ll::test::run_process(DYNLLAVA_LLAVA_PROGRAM, args, scratch());
}

std::vector<std::string> ask(const std::string& mode, const std::string& kv, int tokens = 12) {
  return {"--model",    tiny_dir(), "--image",          image_png(),
          "--prompt",   question,   "--mode",           mode,
          "--kv-cache", kv,         "--max-new-tokens", std::to_string(tokens),
          "--json"};
}

nlohmann::json run_json(const std::vector<std::string>& args) {
  const outcome o = run_program(args);
  INFO("stderr: " << o.err);
  REQUIRE(o.status == 0);
  return nlohmann::json::parse(o.out);
}

/// An error run: non-zero exit, nothing on stdout, exactly one line on stderr that contains
/// `needle`, and no trace of an uncaught exception.
void expect_one_line_error(const std::vector<std::string>& args, const std::string& needle) {
  const outcome o = run_program(args);
  INFO("stderr: " << o.err);
  CHECK(o.status != 0);
  CHECK(o.status < 128);  // exited, not killed by a signal (abort, segfault)
  CHECK(o.out.empty());
  CHECK(std::count(o.err.begin(), o.err.end(), '\n') == 1);
  CHECK(o.err.starts_with("dynllava-llava: error: "));
  CHECK(o.err.find(needle) != std::string::npos);
  CHECK(o.err.find("terminate called") == std::string::npos);
  CHECK(o.err.find(".cpp:") == std::string::npos);  // no source location of the failed check
  CHECK(o.err.find(".hpp:") == std::string::npos);
}

// --- The library's answer to the same request, through the drivers -------------------------

const io::llava_folder& tiny() {
  static const io::llava_folder f = io::load_llava(tiny_dir());
  return f;
}

prompt_rows library_prompt(const std::string& text, const std::vector<std::string>& images) {
  const auto& f = tiny();
  static const ll::tokenizer tok = ll::tokenizer::load(fs::path(tiny_dir()) / "tokenizer.model");
  ll::conversation conv(ll::vicuna_v1());
  conv.add_user(text, static_cast<int>(images.size()));
  const auto ids32 =
      ll::tokenize_prompt(tok, conv.prompt(), static_cast<std::int32_t>(f.config.image_token_id));
  const std::vector<std::int64_t> ids(ids32.begin(), ids32.end());
  std::vector<float> px;
  ll::clip_preprocess_options o;
  o.aspect = f.config.aspect;
  for (const auto& file : images) {
    const auto v = ll::clip_pixel_values(ll::load_image(file), o);
    px.insert(px.end(), v.begin(), v.end());
  }
  const std::vector<index_t> indptr{0, static_cast<index_t>(ids.size())};
  return f.model.prompt({make_host_span(indptr), make_host_span(ids)},
                        make_host_span(std::as_const(px)));
}

/// Tokens of a KV-cache run of the tiny model: dense, or Dynamic-LLaVA with the output gate.
std::vector<std::int32_t> library_tokens(bool dynamic, index_t n, sampling_options sampling = {}) {
  const auto& f = tiny();
  const prompt_rows p = library_prompt(question, {image_png()});
  const index_t width = f.model.config().text.heads * f.model.config().text.head_dim;
  paged_kv_cache cache({f.model.layers(), 1, width, 8, f.model.layers() * 128});
  sparsifier_options o;
  o.prune_images = dynamic;
  o.gate_outputs = dynamic;
  o.sparse_layer = f.config.sparse.sparse_layer;
  o.vision_keep_ratio = f.config.sparse.vision_keep_rate;
  const generate_options g{.max_new_tokens = n,
                           .eos = static_cast<std::int32_t>(f.config.eos_token_id),
                           .sampling = sampling};
  const image_predictor* image = dynamic ? &*f.image : nullptr;
  const output_predictor* output = dynamic ? &*f.output : nullptr;
  if (!dynamic) {
    kv_session s(f.model, cache, full_cache_policy{}, image, output, o);
    return generate(s, p.view(), p.segment_view(), g).tokens.front();
  }
  kv_session s(f.model, cache, online_gate_policy{o.sparse_layer}, image, output, o);
  return generate(s, p.view(), p.segment_view(), g).tokens.front();
}

void check_consistent(const nlohmann::json& j, int max_tokens) {
  const auto& img = j["image_tokens"];
  const auto& out = j["output_tokens"];
  CHECK(img["total"].get<int>() == 576);
  CHECK(img["kept"].get<int>() <= img["total"].get<int>());
  CHECK(img["kept"].get<int>() > 0);
  CHECK(out["generated"].get<int>() == static_cast<int>(j["tokens"].size()));
  CHECK(out["generated"].get<int>() <= max_tokens);
  CHECK(out["kept"].get<int>() <= out["decided"].get<int>());
  CHECK(out["decided"].get<int>() < std::max(1, out["generated"].get<int>()));
  CHECK(j["kv_bytes"]["held"].get<std::int64_t>() <= j["kv_bytes"]["dense"].get<std::int64_t>());
  CHECK(j["tflops"]["run"].get<double>() > 0.0);
  CHECK(j["tflops"]["run"].get<double>() <= j["tflops"]["dense"].get<double>() * (1 + 1e-12));
  CHECK(j["seconds"]["prefill"].get<double>() >= 0.0);
  CHECK(j["seconds"]["decode"].get<double>() >= 0.0);
  CHECK(j["tokens_per_s"].get<double>() >= 0.0);
}

}  // namespace

TEST_SUITE("llava") {
  TEST_CASE("dynllava-llava: every mode answers, and its --json summary is consistent") {
    struct mode_case {
      std::string mode;
      std::vector<std::string> kv;
      int image_kept;  // -1: not checked exactly
    };
    const std::vector<mode_case> cases = {{"dense", {"on", "off"}, 576},
                                          {"fastv", {"on", "off"}, 144},  // floor(576 * 0.25)
                                          {"h2o", {"on"}, 576},
                                          {"streaming", {"on"}, 576},
                                          {"dynamic-image", {"on", "off"}, 115},  // 576 * 0.2
                                          {"dynamic", {"on", "off"}, 115}};
    for (const auto& c : cases) {
      for (const auto& kv : c.kv) {
        CAPTURE(c.mode);
        CAPTURE(kv);
        const auto j = run_json(ask(c.mode, kv));
        CHECK(j["mode"] == c.mode);
        CHECK(j["kv_cache"] == (kv == "on"));
        CHECK(j["image_tokens"]["kept"].get<int>() == c.image_kept);
        check_consistent(j, 12);
        if (kv == "off") CHECK(j["kv_bytes"]["held"].get<std::int64_t>() == 0);
        if (c.mode == "dense") {
          // The dense run is the cost model's dense schedule, call for call.
          CHECK(j["tflops"]["run"].get<double>() ==
                doctest::Approx(j["tflops"]["dense"].get<double>()).epsilon(1e-12));
          CHECK(j["kv_bytes"]["held"] == j["kv_bytes"]["dense"]);
          CHECK(j["output_tokens"]["kept"] == j["output_tokens"]["decided"]);
        } else if (kv == "on" && c.mode != "dynamic-image") {
          CHECK(j["kv_bytes"]["held"].get<std::int64_t>() <
                j["kv_bytes"]["dense"].get<std::int64_t>());
        }
      }
    }
  }

  TEST_CASE("dynllava-llava: greedy and seeded answers are the library's") {
    for (bool dynamic : {false, true}) {
      CAPTURE(dynamic);
      const auto j = run_json(ask(dynamic ? "dynamic" : "dense", "on", 12));
      CHECK(j["tokens"].get<std::vector<std::int32_t>>() == library_tokens(dynamic, 12));
      // Without a KV cache the same tokens (the argmax rule).
      CHECK(run_json(ask(dynamic ? "dynamic" : "dense", "off", 12))["tokens"] == j["tokens"]);
    }
    auto sampled = ask("dynamic", "on", 12);
    sampled.insert(sampled.end(), {"--temperature", "0.8", "--top-p", "0.9", "--seed", "7"});
    const auto s = run_json(sampled);
    CHECK(s["tokens"].get<std::vector<std::int32_t>>() ==
          library_tokens(true, 12, {.temperature = 0.8f, .top_p = 0.9f, .seed = 7}));
    CHECK(run_json(sampled)["tokens"] == s["tokens"]);
  }

  TEST_CASE("dynllava-llava: several images, no image, and a tower in its own folder") {
    // Several images in one prompt (a batch line's "images"): each ranked on its own,
    // floor(576 * 0.2) of each.
    const fs::path two_file = scratch() / "two-images.jsonl";
    std::ofstream(two_file) << nlohmann::json{{"images", {image_png(), wide_png()}},
                                              {"prompt", "Compare the pictures."},
                                              {"max_new_tokens", 4}}
                                   .dump()
                            << "\n";
    const outcome batch_two = run_program({"--model", tiny_dir(), "--batch", two_file.string()});
    REQUIRE(batch_two.status == 0);
    const auto two = nlohmann::json::parse(batch_two.out);
    CHECK(two["image_tokens"]["total"] == 2 * 576);
    CHECK(two["image_tokens"]["kept"] == 2 * 115);
    // --image repeated: the question about each image in turn, one JSON line each, as if asked
    // alone.
    const outcome each =
        run_program({"--model", tiny_dir(), "--image", image_png(), "--image", wide_png(),
                     "--prompt", "Describe the picture.", "--max-new-tokens", "6", "--json"});
    REQUIRE(each.status == 0);
    std::istringstream lines(each.out);
    std::vector<nlohmann::json> answers;
    for (std::string line; std::getline(lines, line);)
      answers.push_back(nlohmann::json::parse(line));
    REQUIRE(answers.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
      CAPTURE(i);
      const std::string image = i == 0 ? image_png() : wide_png();
      CHECK(answers[i]["image"] == image);
      const auto alone = run_json({"--model", tiny_dir(), "--image", image, "--prompt",
                                   "Describe the picture.", "--max-new-tokens", "6", "--json"});
      CHECK(answers[i]["tokens"] == alone["tokens"]);
      CHECK(answers[i]["image_tokens"] == alone["image_tokens"]);
    }
    // In text: each answer under its image's name.
    const outcome text =
        run_program({"--model", tiny_dir(), "--image", image_png(), "--image", wide_png(),
                     "--prompt", "Describe the picture.", "--max-new-tokens", "3"});
    REQUIRE(text.status == 0);
    CHECK(text.out.starts_with("[image 1 of 2: " + image_png() + "]\n"));
    CHECK(text.out.find("[image 2 of 2: " + wide_png() + "]\n") != std::string::npos);
    expect_one_line_error({"--model", tiny_dir(), "--image", image_png(), "--image", wide_png(),
                           "--prompt", "hi", "--visualize", (scratch() / "v.html").string()},
                          "--visualize");
    const auto none = run_json(
        {"--model", tiny_dir(), "--prompt", "Is there a dog?", "--max-new-tokens", "4", "--json"});
    CHECK(none["image_tokens"]["total"] == 0);
    // The same weights in fp16 with the CLIP tower in its own folder answer alike.
    const std::string separate = (fixtures() / "llava" / "original-separate-clip").string();
    auto args = ask("dense", "on", 12);
    const auto j = run_json(args);
    args[1] = separate;
    args.insert(args.end(), {"--vision-tower", separate + "/clip-vit-large-patch14-336"});
    CHECK(run_json(args)["tokens"] == j["tokens"]);
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--vision-tower", "/no/tower"},
                          "--vision-tower");
  }

  TEST_CASE("dynllava-llava: the streamed answer is the answer, followed by the summary") {
    auto args = ask("dynamic", "on", 12);
    const auto j = run_json(args);
    args.pop_back();  // no --json
    const outcome o = run_program(args);
    REQUIRE(o.status == 0);
    // The terminal gets control bytes as \xNN (this random model emits some), the rest as is.
    std::string answer;
    for (const char c : j["answer"].get<std::string>()) {
      const auto u = static_cast<unsigned char>(c);
      answer += (u < 0x20 && c != '\n' && c != '\t') || u == 0x7f
                    ? fmt::format("\\x{:02x}", static_cast<unsigned>(u))
                    : std::string(1, c);
    }
    CHECK(o.out.starts_with(answer + "\n\n"));
    for (const char* row : {"image tokens kept:", "output tokens kept:", "KV cache held:",
                            "TFLOPs (cost model):", "prefill:", "decode:", "speed:"}) {
      CHECK(o.out.find(row) != std::string::npos);
    }
    CHECK(o.out.find("115 / 576") != std::string::npos);
    CHECK(o.err.empty());  // no progress when stderr is not a terminal
  }

  TEST_CASE("dynllava-llava: a --batch file answers each request as it is answered alone") {
    const fs::path batch = scratch() / "requests.jsonl";
    {
      std::ofstream out(batch);
      out << nlohmann::json{{"image", image_png()}, {"prompt", question}}.dump() << "\n\n"
          << nlohmann::json{{"images", {wide_png()}}, {"prompt", "Describe the picture."}}.dump()
          << "\n"
          << nlohmann::json{{"image", image_png()},
                            {"prompt", question},
                            {"mode", "dense"},
                            {"kv_cache", "off"}}
                 .dump()
          << "\n";
    }
    const outcome o =
        run_program({"--model", tiny_dir(), "--batch", batch.string(), "--max-new-tokens", "10"});
    INFO("stderr: " << o.err);
    REQUIRE(o.status == 0);
    std::istringstream lines(o.out);
    std::vector<nlohmann::json> answers;
    for (std::string line; std::getline(lines, line);)
      answers.push_back(nlohmann::json::parse(line));
    REQUIRE(answers.size() == 3);
    CHECK(answers[0]["line"] == 1);
    CHECK(answers[1]["line"] == 3);
    CHECK(answers[0]["batch_size"] == 2);  // same settings: one ragged batch
    CHECK(answers[2]["batch_size"] == 1);  // other settings: a batch of its own
    CHECK(answers[2]["mode"] == "dense");
    CHECK(answers[2]["kv_cache"] == false);
    CHECK(answers[2]["tokens"] == run_json(ask("dense", "off", 10))["tokens"]);
    const std::vector<std::vector<std::string>> alone = {
        {"--image", image_png(), "--prompt", question},
        {"--image", wide_png(), "--prompt", "Describe the picture."}};
    for (std::size_t i = 0; i < 2; ++i) {
      CAPTURE(i);
      std::vector<std::string> args = {"--model", tiny_dir(), "--max-new-tokens", "10", "--json"};
      args.insert(args.end(), alone[i].begin(), alone[i].end());
      const auto j = run_json(args);
      CHECK(answers[i]["tokens"] == j["tokens"]);
      CHECK(answers[i]["answer"] == j["answer"]);
      CHECK(answers[i]["image_tokens"] == j["image_tokens"]);
      CHECK(answers[i]["output_tokens"] == j["output_tokens"]);
    }
  }

  TEST_CASE("dynllava-llava: --visualize writes the Figure-6 page of the run") {
    const fs::path page = scratch() / "view.html";
    auto args = ask("dynamic", "on", 16);
    args.insert(args.end(), {"--visualize", page.string()});
    const auto j = run_json(args);
    REQUIRE(fs::is_regular_file(page));
    const std::string html = read_text(page);
    auto count = [&](const std::string& needle) {
      std::size_t n = 0;
      for (auto at = html.find(needle); at != std::string::npos; at = html.find(needle, at + 1))
        ++n;
      return n;
    };
    CHECK(html.find(question) != std::string::npos);
    CHECK(count("data:image/png;base64,") == 1);
    // One span per generated token; greyed: those the gate kept out of the cache.
    const auto& out = j["output_tokens"];
    CHECK(count("<span class=\"tok") == out["generated"].get<std::size_t>());
    CHECK(count("<span class=\"tok evicted") ==
          out["decided"].get<std::size_t>() - out["kept"].get<std::size_t>());
    CHECK(html.find("115 / 576") != std::string::npos);  // the summary table
    expect_one_line_error(
        {"--model", tiny_dir(), "--prompt", "hi", "--visualize", "/no/such/folder/view.html"},
        "/no/such/folder/view.html");
  }

  TEST_CASE("dynllava-llava: bad options and files give one line and a non-zero exit") {
    expect_one_line_error({"--prompt", "hi"}, "--model");
    expect_one_line_error({"--model", tiny_dir()}, "--prompt");
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--image", "/no/such.png"},
                          "/no/such.png");
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--mode", "sparse"}, "--mode");
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--max-new-tokens", "-3"},
                          "--max-new-tokens");
    expect_one_line_error(
        {"--model", tiny_dir(), "--prompt", "hi", "--mode", "h2o", "--kv-cache", "off"},
        "--kv-cache on");
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--top-p", "1.5"}, "--top-p");
    // More tokens than the model's 2048 positions hold.
    expect_one_line_error(
        {"--model", tiny_dir(), "--prompt", "hi", "--max-new-tokens", "2147483647"},
        "max_position_embeddings");
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--unknown"}, "--unknown");
    // A prompt longer than the model's positions names the prompt, not --max-new-tokens.
    std::string long_prompt;
    for (int i = 0; i < 5000; ++i) long_prompt += "a ";
    expect_one_line_error({"--model", tiny_dir(), "--prompt", long_prompt},
                          "--prompt/--image: the prompt needs");
    CHECK(run_program({"--model", tiny_dir(), "--prompt", long_prompt}).status == 2);
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "<image>\nWhat is it?"},
                          "--prompt: the text contains \"<image>\"");
    // Seeds and thread counts out of range are refused, not wrapped or clamped.
    for (const char* seed : {"-1", "18446744073709551616", "1e23", "7x"}) {
      expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--seed", seed}, "--seed");
    }
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--threads", "100000"},
                          "--threads");
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--visualize", "/tmp"},
                          "--visualize: expected the path of an HTML file");
    const fs::path read_only = scratch() / "read-only.html";
    std::ofstream(read_only) << "x";
    fs::permissions(read_only,
                    fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    if (::access(read_only.c_str(), W_OK) != 0) {  // root may write anyway
      expect_one_line_error(
          {"--model", tiny_dir(), "--prompt", "hi", "--visualize", read_only.string()},
          "exists and is not a writable file");
    }
    // Bad files and folders named on the command line are usage errors (exit 2) found before
    // anything loads.
    CHECK(run_program({"--model", "/no/such/model", "--prompt", "hi"}).status == 2);
    CHECK(
        run_program({"--model", tiny_dir(), "--prompt", "hi", "--image", "/no/such.png"}).status ==
        2);
    // A folder without config.json.
    expect_one_line_error({"--model", (fixtures() / "llava").string(), "--prompt", "hi"},
                          "config.json");
    // An image that is not an image.
    expect_one_line_error({"--model", tiny_dir(), "--prompt", "hi", "--image",
                           (fixtures() / "llava" / "reference.json").string()},
                          "reference.json");
    // Batch files: a malformed line, an unknown key, a bad value; the line is named.
    const fs::path batch = scratch() / "bad.jsonl";
    auto with_lines = [&](const std::string& second) {
      std::ofstream(batch) << nlohmann::json{{"prompt", "hi"}}.dump() << "\n" << second << "\n";
      return std::vector<std::string>{"--model", tiny_dir(), "--batch", batch.string()};
    };
    expect_one_line_error(with_lines("{\"prompt\": \"hi\""), "bad.jsonl\":2: not valid JSON");
    expect_one_line_error(with_lines("{\"prompt\": \"hi\", \"colour\": 1}"), "\"colour\"");
    expect_one_line_error(with_lines("{\"prompt\": \"hi\", \"max_new_tokens\": -1}"),
                          "bad.jsonl\":2: \"max_new_tokens\"");
    expect_one_line_error(with_lines("[1, 2]"), "expected a JSON object");
    expect_one_line_error(with_lines("{\"image\": \"x.png\"}"), "\"prompt\" is missing");
    expect_one_line_error(with_lines("{\"prompt\": \"hi\", \"image\": \"/no/such.png\"}"),
                          "bad.jsonl\":2: image \"/no/such.png\" is not a file");
    // A request longer than the model's positions names its line, not the command line's options.
    expect_one_line_error(
        with_lines(nlohmann::json{{"prompt", "hi"}, {"max_new_tokens", 5000}}.dump()),
        "bad.jsonl\":2: \"max_new_tokens\": the prompt");
    expect_one_line_error(with_lines(nlohmann::json{{"prompt", "<image> hi"}}.dump()),
                          "bad.jsonl\":2: \"prompt\": the text contains");
    expect_one_line_error(with_lines("{\"prompt\": \"hi\", \"kv_cache\": 0}"),
                          "\"kv_cache\" must be true, false, \"on\" or \"off\", got number");
    expect_one_line_error(
        with_lines("{\"prompt\": \"hi\", \"mode\": \"h2o\", \"kv_cache\": false}"),
        "bad.jsonl\":2: \"mode\": h2o evicts tokens from the KV cache and needs \"kv_cache\": "
        "true");
    // An image that exists but does not decode: the line is named too.
    expect_one_line_error(
        with_lines(nlohmann::json{{"prompt", "hi"},
                                  {"image", (fixtures() / "llava" / "reference.json").string()}}
                       .dump()),
        "bad.jsonl\":2: ");
    expect_one_line_error({"--model", tiny_dir(), "--batch", batch.string(), "--prompt", "hi"},
                          "--batch");
  }

  TEST_CASE("dynllava-llava: --help and --version") {
    const outcome help = run_program({"--help"});
    CHECK(help.status == 0);
    for (const char* option : {"--model", "--image", "--mode", "--kv-cache", "--batch", "--json"})
      CHECK(help.out.find(option) != std::string::npos);
    const outcome version = run_program({"--version"});
    CHECK(version.status == 0);
    CHECK(version.out.starts_with("dynllava-llava "));
  }
}

#endif  // DYNLLAVA_LLAVA_PROGRAM
