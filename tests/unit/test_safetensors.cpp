// SPDX-License-Identifier: Apache-2.0
#include <dynllava/io/safetensors.hpp>

#include <support/fixtures.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using namespace dynllava;
using namespace dynllava::io;

namespace {

/// A safetensors file from a header JSON text and a data buffer.
std::string make_file(const std::string& header, const std::string& data,
                      std::uint64_t header_len_override = 0) {
  std::string out(8, '\0');
  const std::uint64_t n = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string f32_bytes(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::string open_error(const test::temp_dir& dir, const std::string& bytes) {
  const auto p = dir.path / "x.safetensors";
  test::write_file(p, bytes);
  try {
    safetensors_file f(p);
  } catch (const error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("safetensors: reads F32, F16 and BF16 exactly") {
    test::temp_dir dir("st-read");
    // 1.0, -2.0, 65504 in F16; 1.0, -0.5 in BF16; 3 floats in F32.
    const std::string f16("\x00\x3c\x00\xc0\xff\x7b", 6);
    const std::string bf16("\x80\x3f\x00\xbf", 4);
    const std::string f32 = f32_bytes({1.5f, -0.25f, 1e-30f});
    const std::string header = R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                               R"("b":{"dtype":"F16","shape":[3,1],"data_offsets":[12,18]},)"
                               R"("c":{"dtype":"BF16","shape":[2],"data_offsets":[18,22]},)"
                               R"("__metadata__":{"format":"pt"}})";
    test::write_file(dir.path / "t.safetensors", make_file(header, f32 + f16 + bf16));
    safetensors_file f(dir.path / "t.safetensors");
    CHECK(f.tensors().size() == 3);
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.read_f32("a") == std::vector<float>{1.5f, -0.25f, 1e-30f});
    CHECK(f.read_f32("b") == std::vector<float>{1.0f, -2.0f, 65504.0f});
    CHECK(f.read_f32("c") == std::vector<float>{1.0f, -0.5f});
    CHECK(f.find("b")->shape == std::vector<std::int64_t>{3, 1});
    CHECK(f.find("zzz") == nullptr);
    CHECK_THROWS_WITH_AS(f.read_f32("zzz"), doctest::Contains("has no tensor named zzz"), error);
  }

  TEST_CASE("safetensors: fp16 conversion covers subnormals, infinities and NaN") {
    CHECK(half_bits_to_float(0x0000) == 0.0f);
    CHECK(std::signbit(half_bits_to_float(0x8000)));
    CHECK(half_bits_to_float(0x0200) == std::ldexp(1.0f, -15));
    CHECK(half_bits_to_float(0x03ff) == std::ldexp(1023.0f, -24));
    CHECK(std::isinf(half_bits_to_float(0x7c00)));
    CHECK(std::isnan(half_bits_to_float(0x7e00)));
    CHECK(half_bits_to_float(0x3555) == 0x1.554p-2f);
    // Every half against the textbook formula (sign, 5-bit exponent, 10-bit mantissa).
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
      const float f = half_bits_to_float(static_cast<std::uint16_t>(h));
      const int e = static_cast<int>((h >> 10) & 0x1f);
      const double m = static_cast<double>(h & 0x3ff);
      const double sign = (h & 0x8000) ? -1.0 : 1.0;
      if (e == 31) {
        REQUIRE((m == 0 ? std::isinf(f) : std::isnan(f)));
        continue;
      }
      const double expected =
          e == 0 ? sign * std::ldexp(m, -24) : sign * std::ldexp(1.0 + m / 1024.0, e - 15);
      REQUIRE(static_cast<double>(f) == expected);
    }
  }

  TEST_CASE("safetensors: malformed files are rejected with a clear error") {
    test::temp_dir dir("st-bad");
    const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    const std::string data = f32_bytes({1, 2});
    CHECK(open_error(dir, make_file(ok_header, data)) == "<no error>");
    CHECK(open_error(dir, "abc").find("truncated: 3 bytes, no header length") != std::string::npos);
    CHECK(open_error(dir, make_file(ok_header, data, 1u << 20)).find("truncated: header length") !=
          std::string::npos);
    CHECK(open_error(dir, make_file(ok_header, data, ~0ull)).find("exceeds the limit") !=
          std::string::npos);
    CHECK(open_error(dir, make_file("{not json", "")).find("not valid JSON") != std::string::npos);
    CHECK(open_error(dir, make_file("[1,2]", "")).find("must be a JSON object, got array") !=
          std::string::npos);
    // truncated data: the header promises 8 bytes, 4 follow
    CHECK(open_error(dir, make_file(ok_header, data.substr(0, 4))).find("truncated file?") !=
          std::string::npos);
    // offsets out of range
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data))
              .find("ends at byte 16 but the data buffer holds 8 bytes") != std::string::npos);
    // size disagrees with shape
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data))
              .find("needs 12 bytes, its offsets span 8") != std::string::npos);
    // overlapping tensors
    CHECK(open_error(dir, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    data))
              .find("overlap") != std::string::npos);
    // a hole in the buffer
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data))
              .find("bytes [0, 4) of the data buffer belong to no tensor") != std::string::npos);
    // trailing bytes nobody owns
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data))
              .find("holds 8 bytes but the tensors cover 4") != std::string::npos);
    // begin > end, negative or non-integer values, unknown dtype, missing fields
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data))
              .find("begin > end") != std::string::npos);
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data))
              .find("not a non-negative integer (number: -2)") != std::string::npos);
    CHECK(open_error(
              dir,
              make_file(
                  R"({"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                  data))
              .find("beyond int64") != std::string::npos);
    // duplicate tensor names, hostile nesting, NUL bytes
    CHECK(open_error(dir, make_file(R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})",
                                    data))
              .find("tensor a is listed twice") != std::string::npos);
    {
      std::string deep = R"({"a":{"dtype":"F32","shape":)" + std::string(200000, '[') +
                         std::string(200000, ']') + R"(,"data_offsets":[0,8]}})";
      CHECK(open_error(dir, make_file(deep, data)).find("nests deeper than the format allows") !=
            std::string::npos);
    }
    CHECK(open_error(dir, make_file(ok_header + std::string(3, '\0'), data)).find("NUL bytes") !=
          std::string::npos);
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})", data))
              .find("data_offsets") != std::string::npos);
    CHECK(
        open_error(dir, make_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data))
            .find("unknown dtype Q4") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data))
              .find("no string dtype") != std::string::npos);
    CHECK(open_error(
              dir,
              make_file(
                  R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                  data))
              .find("impossibly large shape") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"a":7})", data)).find("entry a must be an object") !=
          std::string::npos);
    CHECK(open_error(dir, make_file(R"({"__metadata__":{"k":1}})", ""))
              .find("__metadata__.k must be a string") != std::string::npos);
    // a zero-size tensor reads as an empty vector
    test::write_file(dir.path / "z.safetensors",
                     make_file(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})", ""));
    CHECK(safetensors_file(dir.path / "z.safetensors").read_f32("z").empty());
    // a non-float dtype is readable as bytes but not as fp32
    test::write_file(dir.path / "i.safetensors",
                     make_file(R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", data));
    safetensors_file ints(dir.path / "i.safetensors");
    CHECK_THROWS_WITH_AS(ints.read_f32("i"),
                         doctest::Contains("tensor i has dtype I32; expected F32, F16 or BF16"),
                         error);
    CHECK_THROWS_WITH_AS(safetensors_file(dir.path / "missing.safetensors"),
                         doctest::Contains("cannot open"), error);
  }

  TEST_CASE("checkpoint: sharded index, directory, single file, malformed index") {
    const auto dir = test::fixture_dir() / "predictors";
    for (const auto& where : {dir, dir / "model.safetensors.index.json"}) {
      checkpoint ck(where);
      CHECK(ck.find("model.image_score_predictor.down_mlp.1.weight")->type == dtype::f16);
      CHECK(ck.find("model.output_text_score_predictor.output_mlp.7.weight")->type == dtype::bf16);
      CHECK(ck.find("lm_head.weight") != nullptr);
      CHECK(ck.read_f32("lm_head.weight").size() == 16 * 8);
      CHECK_THROWS_WITH_AS(
          ck.read_f32("lm_head.weight", {8, 16}),
          doctest::Contains("tensor lm_head.weight has shape [16, 8], expected [8, 16]"), error);
      CHECK_THROWS_WITH_AS(ck.read_f32("nope", {1}), doctest::Contains("missing tensor nope"),
                           error);
    }
    checkpoint single(dir / "model-00002-of-00002.safetensors");
    CHECK(single.find("model.image_score_predictor.down_mlp.1.weight") == nullptr);

    test::temp_dir tmp("ckpt");
    const auto index = tmp.path / "model.safetensors.index.json";
    test::write_file(index, "{\"weight_map\": 3}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("no weight_map object"), error);
    test::write_file(index, "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("must be a file inside"), error);
    test::write_file(index, "{\"weight_map\": {\"a\": \"missing.safetensors\"}}");
    CHECK_THROWS_WITH_AS(
        checkpoint{index},
        doctest::Contains("maps 1 tensors (e.g. a) to missing.safetensors, which is missing"),
        error);
    std::filesystem::create_directory_symlink("/", tmp.path / "escape");
    test::write_file(index, "{\"weight_map\": {\"a\": \"escape/etc/hostname\"}}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("must be a file inside"), error);
    test::write_file(index, "{oops");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("is not valid JSON"), error);
    std::filesystem::copy_file(dir / "model-00002-of-00002.safetensors",
                               tmp.path / "s.safetensors");
    test::write_file(index, "{\"weight_map\": {\"ghost\": \"s.safetensors\"}}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("maps ghost to"), error);
    std::filesystem::remove(index);
    std::filesystem::copy_file(dir / "model-00002-of-00002.safetensors",
                               tmp.path / "t.safetensors");
    CHECK_THROWS_WITH_AS(checkpoint{tmp.path}, doctest::Contains("appears in"), error);
    CHECK_THROWS_WITH_AS(checkpoint{tmp.path / "nothing"}, doctest::Contains("does not exist"),
                         error);
  }
}
