// SPDX-License-Identifier: Apache-2.0
#include <dynllava/io/safetensors.hpp>

#include <support/fixtures.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
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

/// The error of validating `bytes` from memory, or "<no error>".
std::string memory_error(const std::string& bytes) {
  try {
    safetensors_file f(std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
                       "mem.safetensors");
  } catch (const error& e) {
    return e.what();
  }
  return "<no error>";
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "<no error>";
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// `n` empty F32 tensors "t0".."t<n-1>".
std::string empty_tensors_header(int n) {
  std::string h = "{";
  for (int i = 0; i < n; ++i) {
    h += (i ? ",\"t" : "\"t") + std::to_string(i) +
         R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  }
  return h + "}";
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("safetensors: reads F32, F16 and BF16 exactly, in place") {
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
    CHECK_THROWS_WITH_AS(f.read_f32("zzz"), doctest::Contains("has no tensor named \"zzz\""),
                         error);
    // The view is the stored bytes (fp16 stays 2 bytes an element) inside the mapping.
    const tensor_view b = f.view("b");
    CHECK(b.name == "b");
    CHECK(b.type == dtype::f16);
    CHECK(b.elements() == 3);
    CHECK(b.bytes.size() == 6);
    CHECK(std::vector<std::int64_t>(b.shape.begin(), b.shape.end()) ==
          std::vector<std::int64_t>{3, 1});
    CHECK(std::string(reinterpret_cast<const char*>(b.bytes.data()), 6) == f16);
    // Widening a range; ranges past the end and non-float dtypes are refused.
    float out[2] = {0, 0};
    widen_to_f32(b, 1, 2, out);
    CHECK(out[0] == -2.0f);
    CHECK(out[1] == 65504.0f);
    widen_to_f32(f.view("a"), 2, 1, out);
    CHECK(out[0] == 1e-30f);
    widen_to_f32(b, 3, 0, out);  // an empty range at the end is fine
    CHECK_THROWS_WITH_AS(widen_to_f32(b, 2, 2, out),
                         doctest::Contains("elements [2, 2 + 2) are outside its 3 elements"),
                         error);
    CHECK_THROWS_WITH_AS(widen_to_f32(b, 4, 0, out), doctest::Contains("outside"), error);
    CHECK_THROWS_WITH_AS(widen_to_f32(b, 1, ~std::size_t{0}, out), doctest::Contains("outside"),
                         error);
  }

  TEST_CASE("safetensors: unaligned tensors are read with byte-safe loads; files in memory") {
    // A BF16 scalar first puts the F32 tensor at an odd-by-two offset (not 4-byte aligned);
    // the header length 61 also misaligns the whole buffer.
    const std::string data = std::string("\x80\x3f", 2) + f32_bytes({3.25f, -7.5f});
    std::string header = R"({"h":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},)"
                         R"("f":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
    const std::string bytes = make_file(header, data);
    const safetensors_file f(
        std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), "memory");
    CHECK(f.read_f32("f") == std::vector<float>{3.25f, -7.5f});
    CHECK(f.read_f32("h") == std::vector<float>{1.0f});  // rank 0: one element
    CHECK(reinterpret_cast<std::uintptr_t>(f.view("f").bytes.data()) % 4 != 0);
    CHECK(f.path() == "memory");
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
    CHECK(open_error(dir, make_file("", "")).find("not valid JSON") != std::string::npos);
    CHECK(open_error(dir, make_file(ok_header + "x", data)).find("not valid JSON") !=
          std::string::npos);
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
              .find("tensors \"a\" and \"b\" overlap") != std::string::npos);
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
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", data))
              .find("not a non-negative integer (string") != std::string::npos);
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
              .find("tensor \"a\" is listed twice") != std::string::npos);
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
    CHECK(open_error(dir,
                     make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", data))
              .find("got more than two") != std::string::npos);
    CHECK(
        open_error(dir, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data))
            .find("needs data_offsets [begin, end]") != std::string::npos);
    CHECK(
        open_error(dir, make_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data))
            .find("unknown dtype \"Q4\"") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data))
              .find("no string dtype") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data))
              .find("no shape array") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],)"
                                    R"("extra":1}})",
                                    data))
              .find("tensor \"a\" has an unknown field \"extra\"") != std::string::npos);
    CHECK(open_error(
              dir,
              make_file(
                  R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                  data))
              .find("impossibly large shape") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"a":7})", data)).find("entry \"a\" must be an object") !=
          std::string::npos);
    CHECK(open_error(dir, make_file(R"({"__metadata__":{"k":1}})", ""))
              .find("__metadata__[\"k\"] must be a string, got number") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"__metadata__":{"k":"1","k":"2"}})", ""))
              .find("lists key \"k\" twice") != std::string::npos);
    CHECK(open_error(dir, make_file(R"({"__metadata__":[]})", ""))
              .find("__metadata__ must be an object") != std::string::npos);
    // a zero-size tensor reads as an empty vector
    test::write_file(dir.path / "z.safetensors",
                     make_file(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})", ""));
    CHECK(safetensors_file(dir.path / "z.safetensors").read_f32("z").empty());
    // a non-float dtype is readable as bytes but not as fp32
    test::write_file(dir.path / "i.safetensors",
                     make_file(R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", data));
    safetensors_file ints(dir.path / "i.safetensors");
    CHECK(ints.read_bytes(*ints.find("i")).size() == 8);
    CHECK_THROWS_WITH_AS(ints.read_f32("i"),
                         doctest::Contains("tensor \"i\" has dtype I32; expected F32, F16 or BF16"),
                         error);
    CHECK_THROWS_WITH_AS(safetensors_file(dir.path / "missing.safetensors"),
                         doctest::Contains("does not exist"), error);
    std::filesystem::create_directory(dir.path / "d.safetensors");
    CHECK_THROWS_WITH_AS(safetensors_file(dir.path / "d.safetensors"),
                         doctest::Contains("d.safetensors\" is a directory"), error);
  }

  TEST_CASE("safetensors: untrusted names are quoted, escaped and cut in messages") {
    CHECK(quote_untrusted("a.b") == "\"a.b\"");
    CHECK(quote_untrusted(std::string("a\0b\n\"\\\x7f", 7)) == R"("a\x00b\x0a\"\\\x7f")");
    CHECK(quote_untrusted("caf\xc3\xa9") == "\"caf\xc3\xa9\"");                       // UTF-8 kept
    CHECK(quote_untrusted("\xc3(\xff\xe0\x80\x80") == R"("\xc3(\xff\xe0\x80\x80")");  // not UTF-8
    CHECK(quote_untrusted("\xed\xa0\x80") == R"("\xed\xa0\x80")");                    // a surrogate
    CHECK(quote_untrusted("\xc2\x9b[2J\xc2\xa0") == "\"\\xc2\\x9b[2J\xc2\xa0\"");     // C1 CSI
    const std::string long_name(5000, 'n');
    CHECK(quote_untrusted(long_name) == "\"" + std::string(200, 'n') + "\"...(5000 bytes)");
    // A NUL inside a JSON-escaped name no longer cuts the message.
    const std::string data = f32_bytes({1});
    const std::string msg = memory_error(make_file(
        R"({"x\u0000y\u001b[31m":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", data));
    CHECK(msg.find(R"(tensor "x\x00y\x1b[31m" has unknown dtype "Q4")") != std::string::npos);
    const std::string long_msg = memory_error(make_file(
        "{\"" + long_name + R"(":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", data));
    CHECK(long_msg.find("...(5000 bytes) (F32 [2]) needs 8 bytes") != std::string::npos);
    CHECK(long_msg.size() < 400);
  }

  TEST_CASE("safetensors: hostile headers are refused or read in linear time and memory") {
    const auto t0 = std::chrono::steady_clock::now();
    // 100,000 nested empty objects (400 KB): refused at the third level.
    std::string nested;
    for (int i = 0; i < 100000; ++i) nested += "{\"\":";
    nested += "{}" + std::string(100000, '}');
    CHECK(memory_error(make_file(nested, "")).find("tensor \"\" has an unknown field \"\"") !=
          std::string::npos);
    // Five million dimensions (10 MB of header): refused at the seventeenth.
    std::string dims = R"({"a":{"dtype":"F32","shape":[)";
    for (int i = 0; i < 5000000; ++i) dims += i ? ",1" : "1";
    dims += R"(],"data_offsets":[0,4]}})";
    CHECK(memory_error(make_file(dims, f32_bytes({1}))).find("has more than 16 dimensions") !=
          std::string::npos);
    // Sixteen is allowed.
    std::string rank16 = R"({"a":{"dtype":"F32","shape":[1)";
    for (int i = 1; i < 16; ++i) rank16 += ",1";
    rank16 += R"(],"data_offsets":[0,4]}})";
    CHECK(memory_error(make_file(rank16, f32_bytes({1}))) == "<no error>");
    // 30,000 empty tensors: a valid file.
    const std::string many = make_file(empty_tensors_header(30000), "");
    const safetensors_file f(
        std::span(reinterpret_cast<const std::byte*>(many.data()), many.size()), "many");
    CHECK(f.tensors().size() == 30000);
    CHECK(f.find("t29999") != nullptr);
    // Generous: the quadratic parser took over 20 s for the first and 16 s for the last case.
    CHECK(seconds_since(t0) < 10.0);
  }

  TEST_CASE("safetensors: running out of memory while parsing a header is a catchable error") {
#if defined(__SANITIZE_ADDRESS__)
    MESSAGE("skipped: an address-space limit and AddressSanitizer do not mix");
#else
    // 40 MB of header (the cap is 100 MB) whose entries need about twice that once parsed; a
    // child process limits its address space to what it uses now plus 16 MB and parses it.
    const std::string bytes = make_file(empty_tensors_header(700000), "");
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      long pages = 0;
      std::ifstream("/proc/self/statm") >> pages;
      const auto used = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE));
      const rlimit lim{used + (16u << 20), used + (16u << 20)};
      if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(3);
      const std::string msg = memory_error(bytes);
      _exit(msg.find("out of memory while parsing the") != std::string::npos ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));  // not killed by std::terminate's abort
    CHECK(WEXITSTATUS(status) == 0);
#endif
  }

  TEST_CASE("checkpoint: sharded index, directory, single file, malformed index") {
    const auto dir = test::fixture_dir() / "predictors";
    for (const auto& where : {dir, dir / "model.safetensors.index.json"}) {
      checkpoint ck(where);
      CHECK(ck.find("model.image_score_predictor.down_mlp.1.weight")->type == dtype::f16);
      CHECK(ck.find("model.output_text_score_predictor.output_mlp.7.weight")->type == dtype::bf16);
      CHECK(ck.find("lm_head.weight") != nullptr);
      CHECK(ck.read_f32("lm_head.weight").size() == 16 * 8);
      // A wrong shape names the shard, the tensor, the actual and the expected shape.
      CHECK_THROWS_WITH_AS(ck.read_f32("lm_head.weight", {8, 16}),
                           doctest::Contains("model-00002-of-00002.safetensors\": tensor "
                                             "\"lm_head.weight\" has shape [16, 8], expected "
                                             "[8, 16]"),
                           error);
      CHECK_THROWS_WITH_AS(ck.read_f32("nope", {1}), doctest::Contains("missing tensor \"nope\""),
                           error);
      // A view keeps the stored width; widening it equals read_f32.
      const std::vector<std::int64_t> shape(
          ck.find("model.image_score_predictor.down_mlp.1.weight")->shape);
      const tensor_view v = ck.view("model.image_score_predictor.down_mlp.1.weight", shape);
      CHECK(v.bytes.size() == 2 * v.elements());
      CHECK(widen_to_f32(v) == ck.read_f32("model.image_score_predictor.down_mlp.1.weight"));
      CHECK_THROWS_WITH_AS(ck.view("nope"), doctest::Contains("no tensor named \"nope\""), error);
    }
    checkpoint single(dir / "model-00002-of-00002.safetensors");
    CHECK(single.find("model.image_score_predictor.down_mlp.1.weight") == nullptr);

    test::temp_dir tmp("ckpt");
    const auto index = tmp.path / "model.safetensors.index.json";
    test::write_file(index, "{\"weight_map\": 3}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("no weight_map object"), error);
    test::write_file(index, "{\"metadata\": {}}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("no weight_map object"), error);
    test::write_file(index, "[]");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("must be a JSON object, got array"),
                         error);
    test::write_file(index, "{\"weight_map\": {\"a\": 1}}");
    CHECK_THROWS_WITH_AS(checkpoint{index},
                         doctest::Contains("weight_map[\"a\"] must be a file name, got number"),
                         error);
    for (const char* bad : {"../x.safetensors", "/etc/hostname", "sub/x.safetensors", "..", ".", "",
                            "escape/etc/hostname"}) {
      test::write_file(index, std::string("{\"weight_map\": {\"a\": \"") + bad + "\"}}");
      CHECK_THROWS_WITH_AS(checkpoint{index},
                           doctest::Contains("must be a file name in the checkpoint folder"),
                           error);
    }
    test::write_file(index, "{\"weight_map\": {\"a\": \"missing.safetensors\"}}");
    CHECK_THROWS_WITH_AS(
        checkpoint{index},
        doctest::Contains("maps 1 tensors (e.g. \"a\") to \"missing.safetensors\", "
                          "which is missing"),
        error);
    std::filesystem::create_directory(tmp.path / "folder.safetensors");
    test::write_file(index, "{\"weight_map\": {\"a\": \"folder.safetensors\"}}");
    CHECK_THROWS_WITH_AS(checkpoint{index},
                         doctest::Contains("to \"folder.safetensors\", which is a directory"),
                         error);
    std::filesystem::remove(tmp.path / "folder.safetensors");
    test::write_file(index, "{oops");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("is not valid JSON"), error);
    test::write_file(index, "{\"metadata\":" + std::string(100, '[') + std::string(100, ']') +
                                ",\"weight_map\":{}}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("nests deeper than 16 levels"),
                         error);
    test::write_file(index, "{\"weight_map\": {\"a\\u0000b\": \"m\\u0000.safetensors\"}}");
    CHECK_THROWS_WITH_AS(checkpoint{index},
                         doctest::Contains(R"(weight_map["a\x00b"] = "m\x00.safetensors" must be)"),
                         error);
    std::filesystem::copy_file(dir / "model-00002-of-00002.safetensors",
                               tmp.path / "s.safetensors");
    test::write_file(index, "{\"weight_map\": {\"ghost\": \"s.safetensors\"}}");
    CHECK_THROWS_WITH_AS(checkpoint{index}, doctest::Contains("maps \"ghost\" to"), error);
    test::write_file(index, R"({"weight_map": {"lm_head.weight": "s.safetensors",)"
                            R"( "lm_head.weight": "s.safetensors"}})");
    CHECK_THROWS_WITH_AS(checkpoint{index},
                         doctest::Contains("weight_map lists tensor \"lm_head.weight\" twice"),
                         error);
    // A non-float tensor read as fp32 names the shard, the tensor, its dtype and the expected.
    {
      test::temp_dir ints("ckpt-ints");
      test::write_file(ints.path / "i.safetensors",
                       make_file(R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                                 std::string(8, 'x')));
      const checkpoint ck(ints.path);
      CHECK_THROWS_WITH_AS(ck.read_f32("i", {2}),
                           doctest::Contains("i.safetensors\": tensor \"i\" has dtype I32, "
                                             "expected F32, F16 or BF16"),
                           error);
      CHECK_THROWS_WITH_AS(ck.read_f32("i"), doctest::Contains("i.safetensors\": tensor \"i\""),
                           error);
    }
    std::filesystem::remove(index);
    std::filesystem::copy_file(dir / "model-00002-of-00002.safetensors",
                               tmp.path / "t.safetensors");
    CHECK_THROWS_WITH_AS(checkpoint{tmp.path}, doctest::Contains("is stored in both"), error);
    CHECK_THROWS_WITH_AS(checkpoint{tmp.path / "nothing"}, doctest::Contains("does not exist"),
                         error);
  }

  TEST_CASE("checkpoint: the index must describe its shards exactly") {
    const auto fixture = test::fixture_dir() / "predictors";
    const std::string shard1 = "model-00001-of-00002.safetensors";
    const std::string shard2 = "model-00002-of-00002.safetensors";
    test::temp_dir tmp("ckpt-exact");
    const auto index = tmp.path / "model.safetensors.index.json";
    for (const auto& s : {shard1, shard2}) std::filesystem::copy_file(fixture / s, tmp.path / s);
    const std::string text = test::read_file(fixture / "model.safetensors.index.json");
    // The fixture's index loads.
    test::write_file(index, text);
    CHECK(checkpoint(tmp.path).names().size() == checkpoint(fixture).names().size());
    // A tensor the index does not list at all.
    std::string unlisted = text;
    const std::string entry = "\"lm_head.weight\": \"" + shard2 + "\",";
    REQUIRE(unlisted.find(entry) != std::string::npos);
    unlisted.erase(unlisted.find(entry), entry.size());
    test::write_file(index, unlisted);
    const std::string unlisted_msg = error_of([&] { checkpoint{tmp.path}; });
    CHECK(
        unlisted_msg.find("\"" + shard2 + "\" holds tensor \"lm_head.weight\", which the index") !=
        std::string::npos);
    CHECK(unlisted_msg.find("does not list") != std::string::npos);
    // A shard the index names that is not there is reported as missing, also when a shard
    // opened before it holds tensors that the index maps to the missing one.
    std::string gone = text;
    gone.replace(gone.find(entry), entry.size(),
                 "\"lm_head.weight\": \"model-00003-of-00003.safetensors\",");
    test::write_file(index, gone);
    const std::string gone_msg = error_of([&] { checkpoint{tmp.path}; });
    CHECK(gone_msg.find("to \"model-00003-of-00003.safetensors\", which is missing") !=
          std::string::npos);
    CHECK(gone_msg.find("one shard only") == std::string::npos);
    // A tensor stored in two shards: a copy of the second shard, to which the index maps one
    // tensor; the copy holds the others too, which the index maps to the second shard.
    std::filesystem::copy_file(fixture / shard2, tmp.path / "copy.safetensors");
    std::string twice = text;
    twice.replace(twice.find(entry), entry.size(), "\"lm_head.weight\": \"copy.safetensors\",");
    test::write_file(index, twice);
    const std::string msg = error_of([&] { checkpoint{tmp.path}; });
    CHECK(msg.find("must be stored in one shard only") != std::string::npos);
    CHECK(msg.find("copy.safetensors") != std::string::npos);
    CHECK(msg.find(shard2) != std::string::npos);
  }

  TEST_CASE("checkpoint: a Hugging Face hub cache folder (every file a link to a blob) loads") {
    const auto fixture = test::fixture_dir() / "predictors";
    test::temp_dir hub("ckpt-hub");
    const auto blobs = hub.path / "blobs";
    const auto snap = hub.path / "snapshots" / "0123abcd";
    std::filesystem::create_directories(blobs);
    std::filesystem::create_directories(snap);
    int i = 0;
    for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                          "model.safetensors.index.json"}) {
      const std::string sha = "b10b" + std::to_string(i++);
      std::filesystem::copy_file(fixture / f, blobs / sha);
      std::filesystem::create_symlink("../../blobs/" + sha, snap / f);
    }
    const checkpoint expected(fixture);
    for (const auto& where : {snap, snap / "model.safetensors.index.json"}) {
      const checkpoint ck(where);
      REQUIRE(ck.names() == expected.names());
      for (const auto& n : ck.names()) CHECK(ck.read_f32(n) == expected.read_f32(n));
    }
    // A single linked file, without an index, also loads.
    std::filesystem::remove(snap / "model.safetensors.index.json");
    std::filesystem::remove(snap / "model-00001-of-00002.safetensors");
    CHECK(checkpoint(snap).find("lm_head.weight") != nullptr);
    // A link to a folder is still refused as a directory; a broken link as missing.
    std::filesystem::create_directory_symlink("../../blobs", snap / "dir.safetensors");
    CHECK_THROWS_WITH_AS(safetensors_file{snap / "dir.safetensors"},
                         doctest::Contains("dir.safetensors\" is a directory"), error);
    std::filesystem::create_symlink("../../blobs/none", snap / "broken.safetensors");
    CHECK_THROWS_WITH_AS(safetensors_file{snap / "broken.safetensors"},
                         doctest::Contains("does not exist (or is a broken link)"), error);
  }

  TEST_CASE("checkpoint: 30,000 tensors in one shard and its index open in linear time") {
    test::temp_dir tmp("ckpt-many");
    test::write_file(tmp.path / "s.safetensors", make_file(empty_tensors_header(30000), ""));
    std::string index = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
    for (int i = 0; i < 30000; ++i) {
      index += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":\"s.safetensors\"";
    }
    test::write_file(tmp.path / "model.safetensors.index.json", index + "}}");
    const auto t0 = std::chrono::steady_clock::now();
    const checkpoint ck(tmp.path);
    CHECK(ck.names().size() == 30000);
    CHECK(ck.read_f32("t123").empty());
    CHECK(seconds_since(t0) < 10.0);  // generous; a quadratic bookkeeping takes minutes
  }
}
