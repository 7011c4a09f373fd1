// SPDX-License-Identifier: Apache-2.0
// How a model folder preprocesses its images: preprocessor_config.json (Hugging Face layouts:
// CLIPImageProcessor never pads, LlavaImageProcessor pads when do_pad), image_aspect_ratio and
// the tower's processor (original layouts); malformed or unsupported fields are errors naming
// the file and the field.
#include <dynllava/io/load_llava.hpp>
#include <dynllava/io/read_image_preprocess.hpp>

#include "support/fixtures.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

using namespace dynllava;
using dynllava::test::fixture_dir;

namespace {

/// llava-hf/llava-1.5-7b-hf's preprocessor_config.json, sized for the tiny tower (336 px).
nlohmann::json llava_hf_processor() {
  return nlohmann::json::parse(R"({
    "crop_size": {"height": 336, "width": 336}, "do_center_crop": true, "do_convert_rgb": true,
    "do_normalize": true, "do_rescale": true, "do_resize": true,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "LlavaProcessor",
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}})");
}

image_preprocess parse(const nlohmann::json& j, index_t side = 336) {
  return io::parse_preprocessor_config(j.dump(), "preprocessor_config.json", side);
}

std::string error_of(const nlohmann::json& j, index_t side = 336) {
  try {
    (void)parse(j, side);
  } catch (const error& e) {
    return e.what();
  }
  return "<no error>";
}

/// A model folder holding `src`'s config.json (and `files`: name -> JSON) in a temp folder.
struct folder {
  test::temp_dir dir;
  folder(const char* name, const std::filesystem::path& src) : dir(name) {
    std::filesystem::copy_file(src / "config.json", dir.path / "config.json");
  }
  void write(const std::string& file, const nlohmann::json& j) const {
    std::ofstream(dir.path / file) << j.dump();
  }
  [[nodiscard]] image_preprocess read() const {
    return io::read_image_preprocess(dir.path, io::read_llava_config_file(dir.path));
  }
};

}  // namespace

TEST_SUITE("llava") {
  TEST_CASE("image preprocessing: CLIPImageProcessor never pads; LlavaImageProcessor when do_pad") {
    nlohmann::json j = llava_hf_processor();
    image_preprocess p = parse(j);
    CHECK(p.aspect == image_aspect::square);
    CHECK(p.shortest_edge == 336);
    CHECK(p.crop_height == 336);
    CHECK(p.crop_width == 336);
    CHECK(p.rescale_factor == doctest::Approx(1.0 / 255.0));
    CHECK(p.image_mean[1] == 0.4578275F);
    CHECK(p.image_std[2] == 0.27577711F);
    CHECK(p.pad_colour == std::array<std::uint8_t, 3>{122, 116, 104});
    j["do_pad"] = true;  // CLIPImageProcessor has no padding step: ignored
    CHECK(parse(j).aspect == image_aspect::square);
    j["image_processor_type"] = "LlavaImageProcessor";
    CHECK(parse(j).aspect == image_aspect::pad);
    j["image_processor_type"] = "LlavaImageProcessorFast";
    CHECK(parse(j).aspect == image_aspect::pad);
    j["do_pad"] = false;
    CHECK(parse(j).aspect == image_aspect::square);
    j.erase("do_pad");  // LlavaImageProcessor's default: no padding
    CHECK(parse(j).aspect == image_aspect::square);
    // The pad colour is int(255 * mean), also without normalisation; skipped steps are identity.
    j["do_pad"] = true;
    j["image_mean"] = {0.5, 0.25, 1.0};
    j["do_normalize"] = false;
    j["do_rescale"] = false;
    p = parse(j);
    CHECK(p.pad_colour == std::array<std::uint8_t, 3>{127, 63, 255});
    CHECK(p.image_mean == std::array<float, 3>{0.0F, 0.0F, 0.0F});
    CHECK(p.image_std == std::array<float, 3>{1.0F, 1.0F, 1.0F});
    CHECK(p.rescale_factor == 1.0);
    // Integer sizes (older files) and transformers' class defaults (224).
    j = llava_hf_processor();
    j["size"] = 336;
    j["crop_size"] = 336;
    CHECK(parse(j).shortest_edge == 336);
    j["size"] = 400;
    CHECK(parse(j).shortest_edge == 400);
    j.erase("size");
    j.erase("crop_size");
    CHECK(parse(j, 224).crop_width == 224);
    j = llava_hf_processor();
    j.erase("image_processor_type");
    j["feature_extractor_type"] = "CLIPFeatureExtractor";
    CHECK(parse(j).aspect == image_aspect::square);
  }

  TEST_CASE("image preprocessing: unsupported or malformed fields name the file and the field") {
    const auto expect = [](const nlohmann::json& j, const char* part) {
      const std::string msg = error_of(j);
      INFO("message: ", msg);
      CHECK(msg.find("dynllava: preprocessor_config.json: ") == 0);
      CHECK(msg.find(part) != std::string::npos);
    };
    nlohmann::json j = llava_hf_processor();
    j["image_processor_type"] = "SiglipImageProcessor";
    expect(j, "image_processor_type must be \"CLIPImageProcessor\" or \"LlavaImageProcessor\"");
    j.erase("image_processor_type");
    expect(j, "image_processor_type is missing");
    j = llava_hf_processor();
    j["do_resize"] = false;
    expect(j, "do_resize is false: only resizing the shortest edge is supported");
    j = llava_hf_processor();
    j["do_center_crop"] = false;
    expect(j, "do_center_crop is false");
    j = llava_hf_processor();
    j["do_convert_rgb"] = false;
    expect(j, "do_convert_rgb is false");
    j = llava_hf_processor();
    j["do_pad"] = "yes";
    expect(j, "do_pad must be true or false, got \"yes\"");
    j = llava_hf_processor();
    j["resample"] = 2;
    expect(j, "resample must be 3 (bicubic");
    j = llava_hf_processor();
    j["size"] = {{"height", 336}, {"width", 336}};
    expect(j, "size must be {\"shortest_edge\": n}");
    j["size"] = {{"shortest_edge", 0}};
    expect(j, "size.shortest_edge must be an integer in [1, 65536], got 0");
    j["size"] = "336";
    expect(j, "size must be an integer or {\"shortest_edge\": n}");
    j = llava_hf_processor();
    j["crop_size"] = {{"height", 336}, {"width", -1}};
    expect(j, "crop_size.width must be an integer in [1, 65536], got -1");
    j["crop_size"] = {{"height", 448}, {"width", 448}};
    j["size"] = {{"shortest_edge", 448}};
    expect(j, "crop_size (448 x 448) differs from the vision tower's image_size (336)");
    j["size"] = {{"shortest_edge", 300}};
    expect(j, "crop_size (448 x 448) is larger than size.shortest_edge (300)");
    j = llava_hf_processor();
    j["image_mean"] = {0.5, 0.5};
    expect(j, "image_mean must be three finite numbers in [0, 1], got [0.5, 0.5]");
    j["image_mean"] = {0.5, 0.5, 2.0};
    expect(j, "image_mean must be three finite numbers in [0, 1]");
    j = llava_hf_processor();
    j["image_std"] = {0.5, 0.0, 0.5};
    expect(j, "image_std must be three finite numbers in (0, 1000]");
    j = llava_hf_processor();
    j["rescale_factor"] = 0;
    expect(j, "rescale_factor must be a finite number in (0, 1]");
    j["rescale_factor"] = "1/255";
    expect(j, "rescale_factor must be a finite number in (0, 1], got \"1/255\"");
    j = llava_hf_processor();
    j["do_rescale"] = 1;
    expect(j, "do_rescale must be true or false, got 1");
    CHECK(error_of(nlohmann::json::array()).find("must be a JSON object") != std::string::npos);
  }

  TEST_CASE("image preprocessing: what a model folder says, per layout") {
    const auto llava = fixture_dir() / "llava";
    {
      // Hugging Face layout without a processor file: no padding, CLIP at the tower's size.
      folder f("pre-hf", llava / "hf");
      image_preprocess p = f.read();
      CHECK(p.aspect == image_aspect::square);
      CHECK(p.shortest_edge == 336);
      // Its preprocessor_config.json decides.
      nlohmann::json j = llava_hf_processor();
      j["image_processor_type"] = "LlavaImageProcessor";
      j["do_pad"] = true;
      f.write("preprocessor_config.json", j);
      CHECK(f.read().aspect == image_aspect::pad);
      j["do_pad"] = false;
      f.write("preprocessor_config.json", j);
      CHECK(f.read().aspect == image_aspect::square);
      // Errors name the file (its path).
      j["do_resize"] = 3;
      f.write("preprocessor_config.json", j);
      const std::string file = (f.dir.path / "preprocessor_config.json").string();
      const std::string want = "\"" + file + "\": do_resize must be true or false, got 3";
      CHECK_THROWS_WITH_AS((void)f.read(), doctest::Contains(want.c_str()), error);
      f.write("preprocessor_config.json", nlohmann::json::array());
      CHECK_THROWS_WITH_AS((void)f.read(), doctest::Contains("must be a JSON object"), error);
      // transformers 5's processor_config.json, with the image processor nested.
      std::filesystem::remove(f.dir.path / "preprocessor_config.json");
      j["do_resize"] = true;
      j["do_pad"] = true;
      f.write("processor_config.json", {{"image_processor", j}, {"processor_class", "Llava"}});
      CHECK(f.read().aspect == image_aspect::pad);
      j["crop_size"] = 7;
      f.write("processor_config.json", {{"image_processor", j}});
      CHECK_THROWS_WITH_AS((void)f.read(), doctest::Contains("image_processor.crop_size"), error);
    }
    {
      // Original layout: image_aspect_ratio pads; the tower folder's processor gives the rest.
      test::temp_dir d("pre-original");
      std::filesystem::copy_file(llava / "original" / "config.json", d.path / "config.json");
      std::filesystem::create_directory(d.path / "clip-vit-large-patch14-336");
      std::filesystem::copy_file(llava / "original" / "clip-vit-large-patch14-336" / "config.json",
                                 d.path / "clip-vit-large-patch14-336" / "config.json");
      const auto read = [&] {
        return io::read_image_preprocess(d.path, io::read_llava_config_file(d.path));
      };
      image_preprocess p = read();
      CHECK(p.aspect == image_aspect::pad);
      CHECK(p.pad_colour == std::array<std::uint8_t, 3>{122, 116, 104});
      CHECK(p.crop_height == 336);
      nlohmann::json j = llava_hf_processor();
      j["image_mean"] = {0.5, 0.5, 0.5};
      std::ofstream(d.path / "clip-vit-large-patch14-336" / "preprocessor_config.json") << j.dump();
      p = read();
      CHECK(p.aspect == image_aspect::pad);  // from config.json, not from the processor
      CHECK(p.pad_colour == std::array<std::uint8_t, 3>{127, 127, 127});
      j["image_processor_type"] = "LlavaImageProcessor";
      std::ofstream(d.path / "clip-vit-large-patch14-336" / "preprocessor_config.json") << j.dump();
      CHECK_THROWS_WITH_AS((void)read(), doctest::Contains("image_processor_type must be a CLIP"),
                           error);
      // image_aspect_ratio "square": no padding.
      std::ifstream in(d.path / "config.json");
      auto c = nlohmann::json::parse(in);
      in.close();
      c["image_aspect_ratio"] = "square";
      std::ofstream(d.path / "config.json") << c.dump();
      std::filesystem::remove(d.path / "clip-vit-large-patch14-336" / "preprocessor_config.json");
      CHECK(read().aspect == image_aspect::square);
    }
    // load_llava carries it: the fixture folders pad (original) and do not (Hugging Face).
    CHECK(io::load_llava(llava / "original-separate-clip").preprocess.aspect == image_aspect::pad);
    CHECK(io::load_llava(llava / "hf-legacy").preprocess.aspect == image_aspect::square);
  }
}
