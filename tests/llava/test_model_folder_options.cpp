// SPDX-License-Identifier: Apache-2.0
// What a model folder tells the LLaVA example beyond the weights: its image preprocessing
// (io::read_image_preprocess mapped onto clip_preprocess_options) and its tokenizer options
// (tokenizer_config.json's legacy).
#include <dynllava/core/error.hpp>
#include <dynllava/core/half.hpp>
#include <dynllava/io/read_image_preprocess.hpp>

#include "../support/fixtures.hpp"
#include "clip_preprocess.hpp"
#include "image.hpp"
#include "tokenizer.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace ll = dynllava::llava;
using dynllava::test::fixture_dir;
using dynllava::test::reference_pixels;

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return worst;
}

}  // namespace

TEST_CASE("preprocess_options carries every field of a folder's image preprocessing") {
  dynllava::image_preprocess p;
  p.aspect = dynllava::image_aspect::square;
  p.shortest_edge = 400;
  p.crop_height = 300;
  p.crop_width = 200;
  p.pad_colour = {1, 2, 3};
  p.rescale_factor = 0.5;
  p.image_mean = {0.1F, 0.2F, 0.3F};
  p.image_std = {0.4F, 0.5F, 0.6F};
  const ll::clip_preprocess_options o = ll::preprocess_options(p);
  CHECK(o.aspect == p.aspect);
  CHECK(o.shortest_edge == 400);
  CHECK(o.crop_height == 300);
  CHECK(o.crop_width == 200);
  CHECK(o.pad_colour == p.pad_colour);
  CHECK(o.rescale_factor == 0.5);
  CHECK(o.image_mean == p.image_mean);
  CHECK(o.image_std == p.image_std);
  CHECK(o.max_work_pixels == ll::clip_preprocess_options{}.max_work_pixels);
  p.crop_width = 500;  // larger than the resized image
  CHECK_THROWS_AS((void)ll::preprocess_options(p), dynllava::error);
}

TEST_CASE("a Hugging Face folder's LlavaImageProcessor with do_pad gives LLaVA's pixel values") {
  const auto src = fixture_dir() / "llava" / "hf";
  dynllava::test::temp_dir d("folder-preprocess");
  std::filesystem::copy_file(src / "config.json", d.path / "config.json");
  const auto pixels = [&] {
    const auto file = dynllava::io::read_llava_config_file(d.path);
    const auto o = ll::preprocess_options(dynllava::io::read_image_preprocess(d.path, file));
    return ll::clip_pixel_values(ll::load_image(fixture_dir() / "llava" / "image.png"), o);
  };
  // The reference was padded to a square (LLaVA's expand2square) and rounded to fp16.
  const std::vector<float> want = reference_pixels();
  nlohmann::json j = nlohmann::json::parse(R"({
    "image_processor_type": "LlavaImageProcessor", "do_pad": true,
    "crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336},
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711]})");
  std::ofstream(d.path / "preprocessor_config.json") << j.dump();
  CHECK(max_abs_diff(pixels(), want) <= 2e-3);  // fp16 rounding of values up to 2.2
  // CLIPImageProcessor does not pad: the 160x120 picture is cropped instead.
  j["image_processor_type"] = "CLIPImageProcessor";
  std::ofstream(d.path / "preprocessor_config.json") << j.dump();
  CHECK(max_abs_diff(pixels(), want) > 0.1);
  // So does the folder without a processor file (transformers' LLaVA default).
  std::filesystem::remove(d.path / "preprocessor_config.json");
  CHECK(max_abs_diff(pixels(), want) > 0.1);
}

TEST_CASE("read_tokenizer_options: tokenizer_config.json's legacy") {
  dynllava::test::temp_dir d("folder-tokenizer");
  CHECK_FALSE(ll::read_tokenizer_options(d.path).legacy);  // no file: the default
  const auto file = d.path / "tokenizer_config.json";
  dynllava::test::write_file(file, R"({"legacy": true, "add_bos_token": true})");
  CHECK(ll::read_tokenizer_options(d.path).legacy);
  dynllava::test::write_file(file, R"({"legacy": false})");
  CHECK_FALSE(ll::read_tokenizer_options(d.path).legacy);
  dynllava::test::write_file(file, R"({"legacy": null})");
  CHECK_FALSE(ll::read_tokenizer_options(d.path).legacy);
  dynllava::test::write_file(file, R"({"model_max_length": 4096})");
  CHECK_FALSE(ll::read_tokenizer_options(d.path).legacy);
  // Errors name the file and the field.
  dynllava::test::write_file(file, R"({"legacy": "no"})");
  const std::string field = "\"" + file.string() + "\": legacy must be true or false, got \"no\"";
  CHECK_THROWS_WITH_AS((void)ll::read_tokenizer_options(d.path), doctest::Contains(field.c_str()),
                       dynllava::error);
  dynllava::test::write_file(file, R"({"legacy": true)");
  const std::string json = "\"" + file.string() + "\": not valid JSON";
  CHECK_THROWS_WITH_AS((void)ll::read_tokenizer_options(d.path), doctest::Contains(json.c_str()),
                       dynllava::error);
  std::filesystem::remove(file);
  std::filesystem::create_directory(file);
  CHECK_THROWS_WITH_AS((void)ll::read_tokenizer_options(d.path),
                       doctest::Contains("is a directory"), dynllava::error);
}
