// SPDX-License-Identifier: Apache-2.0
// Reading a LLaVA checkpoint's config.json (io/read_llava_config.hpp): both styles, the CLIP
// config lookup, transformers' defaults, and an error naming the file and field for every
// malformed or unsupported case.
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/io/read_llava_config.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>

namespace {

namespace fs = std::filesystem;
using dynllava::clip_activation;
using dynllava::clip_config;
using dynllava::image_aspect;
using dynllava::llava_config;
using dynllava::projector_type;
using dynllava::vision_select_feature;
using dynllava::io::parse_llava_config;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const fs::path fixtures = fs::path(DYNLLAVA_FIXTURE_DIR) / "configs";

/// The error of `f()`, which must throw dynllava::error.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dynllava::error& e) {
    return e.what();
  }
  FAIL("no dynllava::error was thrown");
  return {};
}

/// Parses `text` expecting an error containing every one of `parts`.
void expect_error(const std::string& text, std::initializer_list<std::string_view> parts,
                  const dynllava::io::json_limits& limits = {}) {
  const std::string msg =
      error_of([&] { (void)parse_llava_config(text, "config.json", std::nullopt, limits); });
  INFO("text: ", text.substr(0, 300));
  INFO("message: ", msg);
  for (const auto p : parts) CHECK(msg.find(p) != std::string::npos);
}

/// A small valid original-style (Dynamic-LLaVA) config as JSON, to be changed per test.
nlohmann::json small_original() {
  return nlohmann::json::parse(R"({
    "architectures": ["DynamicLlavaLlamaForCausalLM"], "model_type": "dynamic_llava_llama",
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 500,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_scaling": null, "hidden_act": "silu", "tie_word_embeddings": false,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
    "mm_use_im_start_end": false, "mm_patch_merge_type": "flat",
    "sparse_config": {"use_vision_predictor": true, "use_text_predictor": true,
                      "use_output_text_predictor": true, "use_instruct_predictor": false,
                      "d_model": 32, "nhead": 4, "dim_feedforward": 64, "num_layers": 2,
                      "sparse_layer": 2, "vision_keep_rate": 0.2,
                      "output_text_keep_rate": 0.5}})");
}

/// A small valid Hugging Face-style config as JSON.
nlohmann::json small_hf() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
    "image_token_index": 499, "projector_hidden_act": "gelu",
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
    "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                    "num_hidden_layers": 4, "num_attention_heads": 4,
                    "num_key_value_heads": 4, "vocab_size": 500, "rms_norm_eps": 1e-5,
                    "max_position_embeddings": 512,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32,
                      "intermediate_size": 64, "num_hidden_layers": 3,
                      "num_attention_heads": 4, "image_size": 28, "patch_size": 14}})");
}

llava_config parse(const nlohmann::json& j) { return parse_llava_config(j.dump(), "config.json"); }

void check_vit_l14_336(const clip_config& v) {
  CHECK(v.image_size == 336);
  CHECK(v.patch_size == 14);
  CHECK(v.channels == 3);
  CHECK(v.hidden == 1024);
  CHECK(v.layers == 24);
  CHECK(v.heads == 16);
  CHECK(v.intermediate == 4096);
  CHECK(v.layer_norm_eps == 1e-5f);
  CHECK(v.activation == clip_activation::quick_gelu);
}

/// A fresh empty folder under the system's temporary folder.
fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("dynllava_cfg_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("llava-1.5-7b-hf config.json: transformers' defaults fill what it leaves out") {
    const llava_config c =
        parse_llava_config(read_text(fixtures / "llava-1.5-7b-hf.json"), "llava-1.5-7b-hf.json");
    // text_config gives only vocab, positions and eps; the rest is LlamaConfig's default.
    CHECK(c.text.hidden == 4096);
    CHECK(c.text.layers == 32);
    CHECK(c.text.heads == 32);
    CHECK(c.text.head_dim == 128);
    CHECK(c.text.intermediate == 11008);
    CHECK(c.text.vocab == 32064);
    CHECK(c.text.max_positions == 4096);
    CHECK(c.text.rms_eps == 1e-5f);
    CHECK(c.text.rope_theta == 10000.0);
    check_vit_l14_336(c.vision);
    CHECK(c.projector == projector_type::mlp2x_gelu);
    CHECK(c.vision_select_layer == -2);
    CHECK(c.vision_layer() == 23);
    CHECK(c.select_feature == vision_select_feature::patch);
    CHECK(c.image_tokens() == 576);
    CHECK(c.aspect == image_aspect::square);
    CHECK(c.image_token_id == 32000);
    CHECK(c.bos_token_id == 1);
    CHECK(c.eos_token_id == 2);
    CHECK_FALSE(c.predictors.has_value());
  }

  TEST_CASE("Dynamic-LLaVA 13B config.json: LLaMA at the top level, mm_* fields, sparse_config") {
    const std::string text = read_text(fixtures / "dynamic-llava-13b.json");
    const llava_config c = parse_llava_config(text, "dynamic-llava-13b.json");
    const auto preset = dynllava::cost::llava_1_5_13b();
    CHECK(c.text.hidden == preset.hidden);
    CHECK(c.text.layers == preset.layers);
    CHECK(c.text.heads == preset.heads);
    CHECK(c.text.head_dim == preset.head_dim);
    CHECK(c.text.intermediate == preset.intermediate);
    CHECK(c.text.vocab == preset.vocab);
    CHECK(c.text.max_positions == preset.max_positions);
    CHECK(c.text.rms_eps == preset.rms_eps);
    check_vit_l14_336(c.vision);  // the known tower's built-in sizes
    CHECK(c.projector == projector_type::mlp2x_gelu);
    CHECK(c.vision_layer() == 23);
    CHECK(c.aspect == image_aspect::pad);
    CHECK(c.image_token_id == -200);
    REQUIRE(c.predictors.has_value());
    const auto& p = *c.predictors;
    const dynllava::predictor_config released{};  // predictor_config's defaults: the release's
    CHECK(p.hidden == 5120);
    CHECK(p.d_model == released.d_model);
    CHECK(p.heads == released.heads);
    CHECK(p.ffn == released.ffn);
    CHECK(p.blocks == released.blocks);
    CHECK(p.local_dim == released.local_dim);
    CHECK(p.image_head == released.image_head);
    CHECK(p.output_head == released.output_head);
    CHECK(p.layer_norm_eps == released.layer_norm_eps);
    CHECK(c.sparse.sparse_layer == 2);
    CHECK(c.sparse.vision_keep_rate == 0.2);
    CHECK(c.sparse.output_text_keep_rate == 0.5);
    CHECK(c.sparse.output_predictor);

    // The CLIP folder's own config.json (a CLIPConfig) gives the same tower.
    const std::string clip = read_text(fixtures / "clip-vit-large-patch14-336.json");
    const llava_config with_clip = parse_llava_config(
        text, "dynamic-llava-13b.json", dynllava::io::json_text{clip, "clip/config.json"});
    check_vit_l14_336(with_clip.vision);
  }

  TEST_CASE("the config.json transformers 5.24 writes for a tiny LlavaForConditionalGeneration") {
    const llava_config c =
        parse_llava_config(read_text(fixtures / "hf_tiny_config.json"), "hf_tiny_config.json");
    CHECK(c.text.hidden == 48);
    CHECK(c.text.layers == 2);
    CHECK(c.text.heads == 4);
    CHECK(c.text.head_dim == 12);
    CHECK(c.text.intermediate == 96);
    CHECK(c.text.vocab == 600);
    CHECK(c.text.max_positions == 256);
    CHECK(c.text.rms_eps == 1e-6f);
    CHECK(c.vision.hidden == 32);
    CHECK(c.vision.layers == 2);
    CHECK(c.vision.heads == 4);
    CHECK(c.vision.intermediate == 64);
    CHECK(c.vision.image_size == 28);
    CHECK(c.vision.patch_size == 14);
    CHECK(c.image_tokens() == 4);
    CHECK(c.image_token_id == 599);
  }

  TEST_CASE("sparse_config maps to the predictor sizes the released code builds") {
    // The predictor fixture's sizes (tests/fixtures/predictors) from their sparse_config.
    std::ifstream in(fs::path(DYNLLAVA_FIXTURE_DIR) / "predictors" / "expected.json");
    const auto expected = nlohmann::json::parse(in)["config"];
    nlohmann::json j = small_original();
    j["hidden_size"] = expected["hidden"];
    j["num_attention_heads"] = 4;
    j["sparse_config"]["d_model"] = expected["d_model"];
    j["sparse_config"]["nhead"] = expected["heads"];
    j["sparse_config"]["dim_feedforward"] = expected["ffn"];
    j["sparse_config"]["num_layers"] = expected["blocks"];
    const auto p = *parse(j).predictors;
    CHECK(p.hidden == expected["hidden"].get<int>());
    CHECK(p.d_model == expected["d_model"].get<int>());
    CHECK(p.heads == expected["heads"].get<int>());
    CHECK(p.ffn == expected["ffn"].get<int>());
    CHECK(p.blocks == expected["blocks"].get<int>());
    CHECK(p.local_dim == expected["local_dim"].get<int>());
    CHECK(p.image_head[0] == expected["image_head"][0].get<int>());
    CHECK(p.image_head[1] == expected["image_head"][1].get<int>());
    for (int i = 0; i < 3; ++i) CHECK(p.output_head[i] == expected["output_head"][i].get<int>());

    // int(d_model * (dim_feedforward / d_model)) as Python computes it, and no output predictor.
    j["sparse_config"]["d_model"] = 40;
    j["sparse_config"]["nhead"] = 4;
    j["sparse_config"]["dim_feedforward"] = 100;
    j["sparse_config"]["use_output_text_predictor"] = false;
    const llava_config c = parse(j);
    CHECK(c.predictors->ffn == 100);
    CHECK(c.predictors->local_dim == 20);
    CHECK(c.predictors->image_head == std::array<dynllava::index_t, 2>{20, 10});
    CHECK_FALSE(c.sparse.output_predictor);
    j["sparse_config"]["use_text_predictor"] = false;  // the other two are then not read
    j["sparse_config"].erase("use_output_text_predictor");
    j["sparse_config"].erase("use_instruct_predictor");
    CHECK_FALSE(parse(j).sparse.output_predictor);
    j.erase("sparse_config");
    CHECK_FALSE(parse(j).predictors.has_value());
  }

  TEST_CASE("Hugging Face style: defaults of LlamaConfig, CLIPVisionConfig and LlavaConfig") {
    // Nothing but the architecture: LlamaConfig() and LlavaConfig's own ViT-L/14-336 tower.
    // (LlamaConfig's vocabulary of 32000 does not hold LlavaConfig's image token 32000, which
    // transformers would look up in the embedding: the defaults alone are refused.)
    expect_error(R"({"architectures": ["LlavaForConditionalGeneration"]})",
                 {"image_token_index (32000, the default) is outside the vocabulary of 32000"});
    llava_config c = parse_llava_config(
        R"({"architectures": ["LlavaForConditionalGeneration"], "image_token_index": 31999})",
        "config.json");
    CHECK(c.text.hidden == 4096);
    CHECK(c.text.max_positions == 2048);
    CHECK(c.text.rms_eps == 1e-6f);
    CHECK(c.text.vocab == 32000);
    check_vit_l14_336(c.vision);
    CHECK(c.image_token_id == 31999);
    // A vision_config object falls back to CLIPVisionConfig() field by field (ViT-B/32, 224).
    nlohmann::json j = small_hf();
    j["vision_config"] = nlohmann::json::object();
    c = parse(j);
    CHECK(c.vision.image_size == 224);
    CHECK(c.vision.patch_size == 32);
    CHECK(c.vision.hidden == 768);
    CHECK(c.vision.layers == 12);
    CHECK(c.vision.intermediate == 3072);
    // Styles without `architectures`: text_config says Hugging Face.
    j = small_hf();
    j.erase("architectures");
    CHECK(parse(j).image_token_id == 499);
    // image_token_id (newer files) is image_token_index.
    j.erase("image_token_index");
    j["image_token_id"] = 7;
    CHECK(parse(j).image_token_id == 7);
    j["vision_feature_select_strategy"] = "full";
    CHECK(parse(j).image_tokens() == 5);
    j["vision_config"]["image_size"] = nlohmann::json::array({28, 28});
    CHECK(parse(j).vision.image_size == 28);
    j["vision_config"]["hidden_act"] = "gelu";
    CHECK(parse(j).vision.activation == clip_activation::gelu);
    j["text_config"]["eos_token_id"] = nlohmann::json::array({2});
    CHECK(parse(j).eos_token_id == 2);
  }

  TEST_CASE("RoPE: rope_parameters, rope_scaling and rope_theta as transformers reads them") {
    nlohmann::json j = small_hf();
    j["text_config"]["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
    CHECK(parse(j).text.rope_theta == 5e5);
    j["text_config"].erase("rope_parameters");
    j["text_config"]["rope_theta"] = 2e4;
    CHECK(parse(j).text.rope_theta == 2e4);
    j["text_config"]["rope_scaling"] = nullptr;
    CHECK(parse(j).text.rope_theta == 2e4);
    j["text_config"]["rope_scaling"] = {{"type", "default"}};
    CHECK(parse(j).text.rope_theta == 2e4);
    j["text_config"]["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    expect_error(j.dump(),
                 {"config.json: text_config.rope_scaling.type must be \"default\"", "\"linear\""});
    j["text_config"]["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
    expect_error(j.dump(), {"text_config.rope_scaling.rope_type", "\"llama3\""});
    j["text_config"].erase("rope_scaling");
    j["text_config"]["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
    expect_error(j.dump(), {"text_config.rope_parameters.rope_type", "\"dynamic\""});
    j["text_config"]["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", -1}};
    expect_error(j.dump(), {"text_config.rope_parameters.rope_theta must be a finite number"});
  }

  TEST_CASE("original style: small config, aspect, projector and tower choices") {
    nlohmann::json j = small_original();
    llava_config c = parse(j);
    CHECK(c.text.hidden == 64);
    CHECK(c.text.head_dim == 16);
    CHECK(c.projector == projector_type::mlp2x_gelu);
    CHECK(c.aspect == image_aspect::pad);
    REQUIRE(c.predictors.has_value());
    CHECK(c.predictors->hidden == 64);
    j["mm_projector_type"] = "linear";
    j["image_aspect_ratio"] = nullptr;
    j["mm_vision_select_feature"] = "cls_patch";
    j["mm_vision_tower"] = "openai/clip-vit-large-patch14";
    c = parse(j);
    CHECK(c.projector == projector_type::linear);
    CHECK(c.aspect == image_aspect::square);
    CHECK(c.select_feature == vision_select_feature::cls_patch);
    CHECK(c.vision.image_size == 224);
    CHECK(c.image_tokens() == 257);
    j.erase("mm_projector_type");  // LLaVA's default
    j.erase("image_aspect_ratio");
    c = parse(j);
    CHECK(c.projector == projector_type::linear);
    CHECK(c.aspect == image_aspect::square);
    j.erase("architectures");  // mm_vision_tower says original
    j.erase("model_type");
    CHECK(parse(j).image_token_id == -200);
    j["mm_vision_select_layer"] = 24;  // the last layer, counted from the embeddings
    CHECK(parse(j).vision_layer() == 24);
    j["mm_vision_select_layer"] = -25;  // the embeddings
    CHECK(parse(j).vision_layer() == 0);
  }

  TEST_CASE("read_llava_config_file finds the CLIP config inside the model folder only") {
    const fs::path dir = fresh_dir("model");
    const fs::path outside = fresh_dir("outside");
    nlohmann::json j = small_original();
    // A small tower in the folder named after mm_vision_tower's last component.
    write(dir / "clip-vit-large-patch14-336" / "config.json",
          R"({"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 64,
              "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 28,
              "patch_size": 14})");
    write(dir / "config.json", j.dump());
    auto f = dynllava::io::read_llava_config_file(dir);
    CHECK(f.style == dynllava::io::llava_config_style::original);
    CHECK(f.vision_tower == "openai/clip-vit-large-patch14-336");
    REQUIRE(f.clip_dir.has_value());
    CHECK(*f.clip_dir == dir / "clip-vit-large-patch14-336");
    CHECK(f.config.vision.layers == 3);
    CHECK(f.config.vision.image_size == 28);
    CHECK(f.config.vision_layer() == 2);

    // An absolute path in the config: only its last component is looked up, inside the folder.
    j["mm_vision_tower"] = "/elsewhere/clip-vit-large-patch14-336/";
    write(dir / "config.json", j.dump());
    CHECK(dynllava::io::read_llava_config(dir).vision.layers == 3);

    // A folder outside the model folder named by the config is never read.
    write(outside / "config.json",
          R"({"model_type": "clip_vision_model", "hidden_size": 1024, "num_hidden_layers": 5,
              "num_attention_heads": 4})");
    for (const std::string tower : {"../dynllava_cfg_outside", "..", "/tmp/dynllava_cfg_outside"}) {
      j["mm_vision_tower"] = tower;
      write(dir / "config.json", j.dump());
      const std::string msg = error_of([&] { (void)dynllava::io::read_llava_config(dir); });
      CHECK(msg.find("names no folder with a config.json inside") != std::string::npos);
      CHECK(msg.find("llava_config_options::clip_config") != std::string::npos);
    }
    // ... unless the caller passes it (a file or its folder).
    dynllava::io::llava_config_options opt;
    opt.clip_config = outside;
    auto g = dynllava::io::read_llava_config_file(dir, opt);
    CHECK(g.config.vision.layers == 5);
    CHECK(*g.clip_dir == outside);
    opt.clip_config = outside / "config.json";
    CHECK(dynllava::io::read_llava_config(dir, opt).vision.layers == 5);

    // The Hugging Face style needs no CLIP folder.
    write(dir / "config.json", small_hf().dump());
    f = dynllava::io::read_llava_config_file(dir);
    CHECK(f.style == dynllava::io::llava_config_style::hugging_face);
    CHECK_FALSE(f.clip_dir.has_value());
    CHECK(f.vision_tower.empty());

    // Missing, a directory, too large.
    fs::remove(dir / "config.json");
    CHECK(error_of([&] { (void)dynllava::io::read_llava_config(dir); }).find("no such file") !=
          std::string::npos);
    fs::create_directories(dir / "config.json");
    CHECK(error_of([&] {
            (void)dynllava::io::read_llava_config(dir);
          }).find("is a directory, not a file") != std::string::npos);
    fs::remove_all(dir / "config.json");
    write(dir / "config.json", std::string(2000, ' ') + small_hf().dump());
    opt.limits.max_bytes = 1000;
    CHECK(error_of([&] {
            (void)dynllava::io::read_llava_config(dir, opt);
          }).find("over the 1000-byte limit") != std::string::npos);
    fs::remove_all(dir);
    fs::remove_all(outside);
  }

  TEST_CASE("missing, mistyped and out-of-range fields name the file and the JSON path") {
    nlohmann::json j = small_original();
    j.erase("hidden_size");
    expect_error(j.dump(), {"config.json: hidden_size is missing (expected a positive integer)"});
    j = small_original();
    j["hidden_size"] = -64;
    expect_error(j.dump(), {"config.json: hidden_size must be a positive integer, got -64"});
    j["hidden_size"] = 0;
    expect_error(j.dump(), {"hidden_size must be a positive integer, got 0"});
    j["hidden_size"] = 64.0;
    expect_error(j.dump(), {"hidden_size must be a positive integer, got 64.0"});
    j["hidden_size"] = true;
    expect_error(j.dump(), {"hidden_size must be a positive integer, got true"});
    j["hidden_size"] = 4294967360LL;
    expect_error(j.dump(), {"hidden_size must be a positive integer, got 4294967360"});
    j["hidden_size"] = 66;  // not a multiple of 4 heads
    expect_error(j.dump(), {"config.json: hidden_size (66) is not a multiple of "
                            "num_attention_heads (4)"});
    j = small_hf();
    j["text_config"]["num_attention_heads"] = "8";
    expect_error(j.dump(), {"config.json: text_config.num_attention_heads must be a positive "
                            "integer, got \"8\""});
    j = small_hf();
    j["vision_config"]["num_hidden_layers"] = 0;
    expect_error(j.dump(),
                 {"vision_config.num_hidden_layers must be an integer in [1, 1024], got 0"});
    j = small_hf();
    j["vision_config"]["hidden_size"] = 30;
    expect_error(j.dump(), {"vision_config.hidden_size (30) is not a multiple of "
                            "num_attention_heads (4)"});
    j = small_hf();
    j["vision_config"]["patch_size"] = 5;
    expect_error(j.dump(), {"vision_config.patch_size (5) does not divide image_size (28)"});
    j = small_hf();
    j["vision_config"]["image_size"] = {28, 14};
    expect_error(j.dump(), {"vision_config.image_size is [28, 14]: only square"});
    j = small_hf();
    j["text_config"]["rms_norm_eps"] = "NaN";
    expect_error(j.dump(), {"text_config.rms_norm_eps must be a finite number in (0, 1], got "
                            "\"NaN\""});
    j["text_config"]["rms_norm_eps"] = -1e-5;
    expect_error(j.dump(), {"text_config.rms_norm_eps must be a finite number"});
    // A number beyond double's range is not accepted by the parser.
    std::string text = small_hf().dump();
    text.replace(text.find("1e-05"), 5, "1e999");
    expect_error(text, {"config.json: not valid JSON", "1e999"});
    j = small_hf();
    j["vision_config"]["layer_norm_eps"] = 0;
    expect_error(j.dump(), {"vision_config.layer_norm_eps must be a finite number in (0, 1]"});
    j = small_original();
    j["mm_projector_type"] = "mlp3x_gelu";
    expect_error(j.dump(), {"config.json: mm_projector_type must be \"linear\" or "
                            "\"mlp2x_gelu\", got \"mlp3x_gelu\""});
    j["mm_projector_type"] = 2;
    expect_error(j.dump(), {"mm_projector_type must be a string, got 2"});
    j = small_original();
    j["mm_vision_select_layer"] = -26;
    expect_error(j.dump(), {"mm_vision_select_layer must be an integer in [-25, 24], got -26"});
    j["mm_vision_select_layer"] = 25;
    expect_error(j.dump(), {"mm_vision_select_layer must be an integer in [-25, 24], got 25"});
    j.erase("mm_vision_select_layer");
    expect_error(j.dump(), {"mm_vision_select_layer is missing"});
    j = small_hf();
    j["vision_feature_layer"] = -5;  // a 3-layer tower
    expect_error(j.dump(), {"vision_feature_layer must be an integer in [-4, 3], got -5"});
    j["vision_feature_layer"] = {-2, -5};
    expect_error(j.dump(), {"vision_feature_layer must be a single layer", "[-2, -5]"});
    j = small_hf();
    j["vision_feature_select_strategy"] = "cls";
    expect_error(j.dump(), {"vision_feature_select_strategy must be \"default\" or \"full\""});
    j = small_hf();
    // transformers looks the image token up in the embedding: it must be a vocabulary id, and
    // one of its own (not BOS or EOS).
    j["image_token_index"] = 500;
    expect_error(j.dump(),
                 {"config.json: image_token_index (500) is outside the vocabulary of 500"});
    j.erase("image_token_index");
    j["image_token_id"] = 500;
    expect_error(j.dump(), {"config.json: image_token_id (500) is outside the vocabulary of 500"});
    j.erase("image_token_id");
    expect_error(j.dump(), {"image_token_index (32000, the default) is outside the vocabulary"});
    j["image_token_index"] = 1;
    expect_error(j.dump(), {"config.json: image_token_index (1) is the BOS token id"});
    j["image_token_index"] = 2;
    expect_error(j.dump(), {"config.json: image_token_index (2) is the EOS token id"});
    j["text_config"]["eos_token_id"] = 7;
    CHECK(parse(j).image_token_id == 2);
    j["image_token_index"] = 7;
    expect_error(j.dump(), {"config.json: image_token_index (7) is the EOS token id"});
    j = small_hf();
    j["image_token_index"] = -200;
    expect_error(j.dump(), {"image_token_index must be a non-negative integer, got -200"});
    j["image_token_index"] = 3;
    j["image_token_id"] = 4;
    expect_error(j.dump(), {"image_token_id (4) differs from image_token_index (3)"});
    j = small_hf();
    j["text_config"]["bos_token_id"] = 500;
    expect_error(j.dump(), {"text_config.bos_token_id must be an integer in [0, 499], got 500"});
    j = small_hf();
    j["text_config"]["eos_token_id"] = {2, 3};
    expect_error(j.dump(), {"text_config.eos_token_id must be a single integer token id"});
    j["text_config"]["eos_token_id"] = nullptr;
    expect_error(j.dump(), {"text_config.eos_token_id must be a single integer token id, got "
                            "null"});
    j = small_original();
    j["mm_hidden_size"] = 768;
    expect_error(j.dump(), {"mm_hidden_size (768) differs from the CLIP tower's hidden_size "
                            "(1024)"});
    j = small_original();
    j["mm_vision_tower"] = "";
    expect_error(j.dump(), {"mm_vision_tower is empty"});
    j["mm_vision_tower"] = "google/siglip-so400m-patch14-384";
    expect_error(j.dump(), {"mm_vision_tower \"google/siglip-so400m-patch14-384\" is not a "
                            "known tower"});
    j.erase("mm_vision_tower");
    expect_error(j.dump(), {"config.json: mm_vision_tower is missing (expected a string)"});
    j["vision_tower"] = "openai/clip-vit-large-patch14-336";  // LLaVA's fallback key
    CHECK(parse(j).vision.image_size == 336);
  }

  TEST_CASE("sparse_config fields are checked") {
    const auto with = [](const char* key, nlohmann::json v) {
      nlohmann::json j = small_original();
      if (v.is_discarded()) {
        j["sparse_config"].erase(key);
      } else {
        j["sparse_config"][key] = v;
      }
      return j.dump();
    };
    const nlohmann::json erase = nlohmann::json::value_t::discarded;
    expect_error(with("d_model", erase), {"sparse_config.d_model is missing"});
    expect_error(with("nhead", 5), {"sparse_config.nhead (5) does not divide d_model (32)"});
    expect_error(with("d_model", 31), {"sparse_config.d_model (31) must be even and at least 4"});
    expect_error(with("d_model", 2), {"sparse_config.d_model (2) must be even and at least 4"});
    expect_error(with("num_layers", -1), {"sparse_config.num_layers must be an integer in"});
    expect_error(with("dim_feedforward", 0), {"sparse_config.dim_feedforward must be a positive"});
    expect_error(with("sparse_layer", 4), {"sparse_config.sparse_layer must be an integer in "
                                           "[0, 3], got 4"});
    expect_error(with("vision_keep_rate", 1.5), {"sparse_config.vision_keep_rate must be a "
                                                 "finite number in [0, 1], got 1.5"});
    expect_error(with("use_vision_predictor", false),
                 {"sparse_config.use_vision_predictor is false"});
    expect_error(with("use_instruct_predictor", true),
                 {"sparse_config.use_instruct_predictor is true: the instruction-token "
                  "predictor is not supported"});
    expect_error(with("use_text_predictor", "yes"),
                 {"sparse_config.use_text_predictor must be true or false, got \"yes\""});
    nlohmann::json j = small_original();
    j["sparse_config"] = 3;
    expect_error(j.dump(), {"config.json: sparse_config must be a JSON object, got 3"});
  }

  TEST_CASE("what the library cannot run is refused with the reason") {
    nlohmann::json j = small_hf();
    j["text_config"]["num_key_value_heads"] = 2;
    expect_error(j.dump(), {"text_config.num_key_value_heads is 2 but num_attention_heads is 4: "
                            "grouped-query attention is not supported"});
    j = small_hf();
    j["text_config"]["head_dim"] = 32;
    expect_error(j.dump(), {"text_config.head_dim is 32 but hidden_size / num_attention_heads "
                            "is 16"});
    j = small_hf();
    j["text_config"]["model_type"] = "mistral";
    expect_error(j.dump(), {"text_config.model_type must be \"llama\"", "\"mistral\""});
    j = small_hf();
    j["vision_config"]["model_type"] = "siglip_vision_model";
    expect_error(j.dump(), {"vision_config.model_type must be \"clip_vision_model\"",
                            "\"siglip_vision_model\""});
    j = small_hf();
    j["vision_config"]["hidden_act"] = "gelu_pytorch_tanh";
    expect_error(j.dump(), {"vision_config.hidden_act must be \"quick_gelu\" or \"gelu\""});
    j = small_hf();
    j["text_config"]["hidden_act"] = "gelu";
    expect_error(j.dump(), {"text_config.hidden_act must be \"silu\""});
    j = small_hf();
    j["text_config"]["attention_bias"] = true;
    expect_error(j.dump(), {"text_config.attention_bias must be false"});
    j = small_hf();
    j["tie_word_embeddings"] = true;
    expect_error(j.dump(), {"config.json: tie_word_embeddings must be false"});
    j = small_hf();
    j["projector_hidden_act"] = "relu";
    expect_error(j.dump(), {"projector_hidden_act must be \"gelu\"", "\"relu\""});
    j = small_hf();
    j["multimodal_projector_bias"] = false;
    expect_error(j.dump(), {"multimodal_projector_bias must be true"});
    j = small_hf();
    j["architectures"] = {"LlavaNextForConditionalGeneration"};
    expect_error(j.dump(),
                 {"config.json: architectures must be", "\"LlavaNextForConditionalGeneration\""});
    j = small_hf();
    j["model_type"] = "llava_next";
    expect_error(j.dump(), {"model_type must be \"llava\""});
    j = small_original();
    j["image_aspect_ratio"] = "anyres";
    expect_error(j.dump(), {"image_aspect_ratio is \"anyres\": tiled images"});
    j["image_aspect_ratio"] = "stretch";
    expect_error(j.dump(), {"image_aspect_ratio must be \"pad\", \"square\" or null"});
    j = small_original();
    j["mm_use_im_start_end"] = true;
    expect_error(j.dump(), {"mm_use_im_start_end must be false"});
    j = small_original();
    j["mm_patch_merge_type"] = "spatial_unpad";
    expect_error(j.dump(), {"mm_patch_merge_type must be \"flat\""});
    j = small_original();
    j["model_type"] = "llava_mistral";
    expect_error(j.dump(), {"model_type must be \"llava\", \"llava_llama\" or"});
    expect_error(R"({"model_type": "llava"})", {"architectures is missing, and neither"});
  }

  TEST_CASE("malformed JSON: not an object, garbage, duplicates, depth, size, bytes") {
    expect_error("", {"config.json: not valid JSON"});
    expect_error("[1, 2]", {"config.json: the top level must be a JSON object, got [1, 2]"});
    expect_error("\"llava\"", {"the top level must be a JSON object"});
    expect_error(small_hf().dump() + " x", {"config.json: not valid JSON: syntax error at byte"});
    expect_error(small_hf().dump() + small_hf().dump(), {"not valid JSON"});
    expect_error(R"({"architectures": ["LlavaForConditionalGeneration"], "a": NaN})",
                 {"not valid JSON"});
    expect_error(R"({"hidden_size": 64, "hidden_size": 64})",
                 {"config.json: duplicate key \"hidden_size\" in the top-level object"});
    expect_error(R"({"text_config": {"rope_parameters": {"rope_theta": 1, "rope_theta": 2}}})",
                 {"duplicate key \"rope_theta\" in text_config.rope_parameters"});
    expect_error(R"({"a": [{"k": 1, "k": 2}]})", {"duplicate key \"k\" in a[0]"});
    // Keys repeated in different objects are fine.
    CHECK_NOTHROW((void)parse_llava_config(
        R"({"architectures": ["LlavaForConditionalGeneration"], "text_config": {"model_type":
            "llama", "vocab_size": 32064}, "vision_config": {"model_type": "clip_vision_model"}})",
        "config.json"));
    expect_error(std::string(100, '[') + std::string(100, ']'),
                 {"config.json: JSON nested deeper than 32 levels"});
    std::string many = "{\"a\": [";
    for (int i = 0; i < 70000; ++i) many += "0,";
    many += "0]}";
    expect_error(many, {"config.json: more than 65536 JSON values"});
    dynllava::io::json_limits small;
    small.max_bytes = 100;
    expect_error(small_hf().dump(), {"config.json: ", "bytes is over the 100-byte limit"}, small);
    // Invalid UTF-8 and control bytes: rejected, and the message carries no raw byte.
    for (const std::string& bad :
         {std::string("{\"a\": \"\xff\xfe\"}"), std::string("{\"a\": \"\xc3\"}"),
          std::string("{\"a\xc0\": 1}"), std::string("{\"a\": \"x\x01y\"}"),
          std::string("{\"a\": 1}\0\0", 10), std::string("\xef\xbb\xbf")}) {
      const std::string msg = error_of([&] { (void)parse_llava_config(bad, "config.json"); });
      INFO(msg);
      CHECK(msg.find("config.json: not valid JSON") != std::string::npos);
      for (const char ch : msg) CHECK((static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f));
    }
  }

  TEST_CASE("untrusted strings are quoted and escaped in messages") {
    using dynllava::quote_untrusted;
    CHECK(quote_untrusted(std::string("a\0b\"\\\xff\n", 7)) == "\"a\\x00b\\\"\\\\\\xff\\x0a\"");
    CHECK(quote_untrusted("abcdef", 3) == "\"abc\"...(6 bytes)");
    // An embedded NUL in a value does not cut the message: the check's location still follows.
    nlohmann::json j = small_original();
    j["mm_projector_type"] = std::string("lin\0ear", 7);
    const std::string msg = error_of([&] { (void)parse(j); });
    CHECK(msg.find("got \"lin\\x00ear\"") != std::string::npos);
    CHECK(msg.back() == ']');  // the check's [file:line] is still there
    CHECK(msg.find('\0') == std::string::npos);
  }

  TEST_CASE("hostile nesting is rejected in linear time") {
    // 300 KB of nested empty objects and arrays: the depth cap stops the first pass early, and a
    // flat document of many values is one linear pass.
    std::string deep;
    for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
    const auto t0 = std::chrono::steady_clock::now();
    expect_error(deep, {"nested deeper than 32 levels"});
    std::string wide = "{\"a\": [";
    for (int i = 0; i < 60000; ++i) wide += "{},";
    wide += "{}]}";
    expect_error(wide, {"architectures is missing"});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(s < 2.0);
  }

  TEST_CASE("CLIP folder configs: CLIPConfig, vision_config_dict, CLIPVisionConfig") {
    using dynllava::io::parse_clip_config;
    check_vit_l14_336(
        parse_clip_config(read_text(fixtures / "clip-vit-large-patch14-336.json"), "clip.json"));
    // vision_config_dict replaces vision_config whole (missing fields: CLIPVisionConfig()).
    clip_config c = parse_clip_config(
        R"({"model_type": "clip", "vision_config": {"image_size": 336, "num_hidden_layers": 3},
            "vision_config_dict": {"num_hidden_layers": 2}})",
        "clip.json");
    CHECK(c.layers == 2);
    CHECK(c.image_size == 224);
    c = parse_clip_config(R"({"hidden_size": 64, "num_attention_heads": 4})", "clip.json");
    CHECK(c.hidden == 64);
    CHECK(c.patch_size == 32);
    CHECK(parse_clip_config(R"({"model_type": "clip"})", "clip.json").hidden == 768);
    CHECK(error_of([] {
            (void)parse_clip_config(R"({"model_type": "siglip"})", "clip.json");
          }).find("clip.json: model_type must be \"clip\" or \"clip_vision_model\"") !=
          std::string::npos);
    CHECK(error_of([] {
            (void)parse_clip_config(R"({"model_type": "clip", "vision_config": [1]})", "clip.json");
          }).find("clip.json: vision_config must be a JSON object, got [1]") != std::string::npos);
    CHECK(error_of([] {
            (void)parse_clip_config(R"({"model_type": "clip", "vision_config_dict": {"patch_size":
                                    -14}})",
                                    "clip.json");
          }).find("clip.json: vision_config_dict.patch_size must be a positive integer, got -14") !=
          std::string::npos);
    CHECK(dynllava::io::known_clip_tower("openai/clip-vit-large-patch14")->image_size == 224);
    CHECK_FALSE(dynllava::io::known_clip_tower("clip-vit-large-patch14-336").has_value());
  }
}
