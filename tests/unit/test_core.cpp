// SPDX-License-Identifier: Apache-2.0
#include <dynllava/core/error.hpp>
#include <dynllava/core/execution.hpp>
#include <dynllava/core/ragged.hpp>
#include <dynllava/core/span.hpp>
#include <dynllava/core/tie_break.hpp>
#include <dynllava/core/workspace.hpp>

#include <support/errors.hpp>

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace dynllava;

TEST_SUITE("cpu") {
  TEST_CASE("span: memory space is part of the type") {
    std::vector<float> v{1, 2, 3};
    host_span<float> s = make_host_span(v);
    host_span<const float> c = s;
    CHECK(c.size() == 3);
    CHECK(c[1] == 2.0f);
    CHECK(s.subspan(1, 2)[0] == 2.0f);
    static_assert(!std::is_constructible_v<device_span<float>, host_span<float>>);
    static_assert(!std::is_constructible_v<host_span<const float>, device_span<const float>>);
    static_assert(std::is_trivially_copyable_v<device_span<int>>);
  }

  TEST_CASE("ragged: rows, lengths and validation") {
    std::vector<index_t> indptr{0, 2, 2, 5};
    std::vector<int> vals{1, 2, 3, 4, 5};
    host_ragged<int> r{make_host_span(std::as_const(indptr)), make_host_span(vals)};
    CHECK(r.batch() == 3);
    CHECK(r.length(1) == 0);
    CHECK(r.row(2)[0] == 3);
    CHECK_NOTHROW(validate(r, "r"));

    host_ragged<int> empty{};
    CHECK(empty.batch() == 0);
    CHECK_NOTHROW(validate(empty, "empty"));

    std::vector<index_t> bad_first{1, 2};
    CHECK(test::error_of([&] {
            validate_indptr(make_host_span(std::as_const(bad_first)), 2, "x");
          }).find("indptr[0] must be 0, got 1") != std::string::npos);
    std::vector<index_t> decreasing{0, 3, 2};
    CHECK(test::error_of([&] {
            validate_indptr(make_host_span(std::as_const(decreasing)), 2, "x");
          }).find("non-decreasing") != std::string::npos);
    std::vector<index_t> short_last{0, 3};
    CHECK(
        test::error_of([&] {
          validate_indptr(make_host_span(std::as_const(short_last)), 4, "scores");
        }).find("scores: indptr[batch] must equal the number of elements it indexes (4), got 3") !=
        std::string::npos);
    CHECK_THROWS_AS(validate_indptr({}, 1, "x"), error);
  }

  TEST_CASE("lengths_to_indptr: scan, negative lengths, overflow") {
    std::vector<index_t> lengths{3, 0, 4};
    std::vector<index_t> indptr(4);
    CHECK(lengths_to_indptr(make_host_span(std::as_const(lengths)), make_host_span(indptr)) == 7);
    CHECK(indptr == std::vector<index_t>{0, 3, 3, 7});
    std::vector<index_t> neg{1, -1};
    std::vector<index_t> out(3);
    CHECK_THROWS_AS(lengths_to_indptr(make_host_span(std::as_const(neg)), make_host_span(out)),
                    error);
    std::vector<index_t> huge{std::numeric_limits<index_t>::max(), 1};
    CHECK(test::error_of([&] {
            lengths_to_indptr(make_host_span(std::as_const(huge)), make_host_span(out));
          }).find("exceeds the index_t maximum") != std::string::npos);
    std::vector<index_t> wrong(2);
    CHECK_THROWS_AS(
        lengths_to_indptr(make_host_span(std::as_const(lengths)), make_host_span(wrong)), error);
  }

  TEST_CASE("score_key: monotone, NaN lowest, zeros tie") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> ascending{-inf,
                                       -std::numeric_limits<float>::max(),
                                       -1.0f,
                                       -std::numeric_limits<float>::denorm_min(),
                                       0.0f,
                                       std::numeric_limits<float>::denorm_min(),
                                       1.0f,
                                       std::nextafter(1.0f, 2.0f),
                                       std::numeric_limits<float>::max(),
                                       inf};
    for (std::size_t i = 0; i + 1 < ascending.size(); ++i) {
      CHECK(score_key(ascending[i]) < score_key(ascending[i + 1]));
    }
    CHECK(score_key(nan) == 0u);
    CHECK(score_key(-nan) == 0u);
    CHECK(score_key(nan) < score_key(-inf));
    CHECK(score_key(-0.0f) == score_key(0.0f));
    static_assert(score_key(2.0f) > score_key(1.0f));
  }

  TEST_CASE("score_key: the bit form equals the rule written with float comparisons") {
    // The rule's text: NaN -> 0; -0 folded onto +0; then the sign-magnitude to unsigned map.
    const auto by_comparisons = [](float s) -> std::uint32_t {
      if (s != s) return 0u;
      if (s == 0.0f) s = 0.0f;
      const auto bits = std::bit_cast<std::uint32_t>(s);
      return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    };
    const std::uint32_t edges[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007fffffu,
                                   0x807fffffu, 0x00800000u, 0x80800000u, 0x3f800000u, 0xbf800000u,
                                   0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7f800001u,
                                   0xff800001u, 0x7fc00000u, 0xffc00000u, 0x7fffffffu, 0xffffffffu};
    for (const std::uint32_t bits : edges) {
      CAPTURE(bits);
      CHECK(score_key(std::bit_cast<float>(bits)) == by_comparisons(std::bit_cast<float>(bits)));
    }
    std::uint64_t mismatches = 0;
    for (std::uint64_t bits = 0; bits <= 0xffffffffu; bits += 4093) {  // ~1M patterns, all ranges
      const auto s = std::bit_cast<float>(static_cast<std::uint32_t>(bits));
      mismatches += score_key(s) != by_comparisons(s);
    }
    CHECK(mismatches == 0);
  }

  TEST_CASE("ranks_before: ties by position according to tie_break") {
    CHECK(ranks_before(5, 1, 5, 2));
    CHECK_FALSE(ranks_before(5, 2, 5, 1));
    CHECK(ranks_before(5, 2, 5, 1, tie_break::larger_position));
    CHECK(ranks_before(6, 9, 5, 0));
    CHECK(to_string(tie_break::smaller_position) == "smaller_position");
  }

  TEST_CASE("alias_temporaries: query, too small, aligned parts") {
    std::array<void*, 3> parts{};
    const std::array<std::size_t, 3> sizes{10, 0, 300};
    std::size_t bytes = 0;
    CHECK(alias_temporaries(nullptr, bytes, parts, sizes) == workspace_status::size_query);
    CHECK(bytes >= 256 + 512);
    std::vector<std::byte> buf(bytes);
    std::size_t small = bytes - 1;
    CHECK(alias_temporaries(buf.data(), small, parts, sizes) == workspace_status::too_small);
    CHECK(alias_temporaries(buf.data(), bytes, parts, sizes) == workspace_status::ready);
    for (void* p : {parts[0], parts[2]}) {
      CHECK(reinterpret_cast<std::uintptr_t>(p) % workspace_alignment == 0);
      CHECK(static_cast<std::byte*>(p) >= buf.data());
    }
    CHECK(parts[1] == nullptr);
    CHECK(static_cast<std::byte*>(parts[2]) + 300 <= buf.data() + buf.size());
    CHECK(static_cast<std::byte*>(parts[2]) >= static_cast<std::byte*>(parts[0]) + 10);

    // Sizes beyond size_t saturate instead of wrapping around.
    const std::array<std::size_t, 2> huge{static_cast<std::size_t>(-1) - 10, 512};
    std::array<void*, 2> hp{};
    std::size_t hb = 0;
    CHECK(alias_temporaries(nullptr, hb, hp, huge) == workspace_status::size_query);
    CHECK(hb == workspace_saturated);
    std::size_t have = bytes;
    CHECK(alias_temporaries(buf.data(), have, hp, huge) == workspace_status::too_small);

    std::array<void*, 0> none{};
    std::size_t b0 = 0;
    CHECK(alias_temporaries(nullptr, b0, none, std::array<std::size_t, 0>{}) ==
          workspace_status::size_query);
    CHECK(b0 == 1);  // never zero: a query result can always be allocated and passed back
  }

  TEST_CASE("error: message carries the formatted text and the failed check") {
    const auto msg =
        test::error_of([] { DYNLLAVA_EXPECTS(1 + 1 == 3, "arith: expected {} got {}", 3, 2); });
    CHECK(msg.find("arith: expected 3 got 2") != std::string::npos);
    CHECK(msg.find("[test_core.cpp:") != std::string::npos);
    CHECK(msg.find("/") == std::string::npos);  // no build-machine paths
    static_assert(execution_tag<host_t>);
    static_assert(!execution_tag<int>);
  }
}
