// SPDX-License-Identifier: Apache-2.0
#include <dynllava/context/build_context.hpp>
#include <dynllava/context/gather.hpp>

#include <support/random.hpp>

#include <doctest/doctest.h>

#include <vector>

using namespace dynllava;

TEST_SUITE("cpu") {
  TEST_CASE("gather_rows / scatter_rows: round trip through a sparse context") {
    const index_t width = 5;
    std::vector<float> hidden(8 * width);
    for (std::size_t i = 0; i < hidden.size(); ++i) hidden[i] = static_cast<float>(i);
    const std::vector<index_t> rows{0, 2, 3, 7};
    std::vector<float> packed(rows.size() * width);
    gather_rows(host, make_host_span(std::as_const(hidden)), width, make_host_span(rows),
                make_host_span(packed));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      for (index_t c = 0; c < width; ++c) {
        CHECK(packed[i * width + static_cast<std::size_t>(c)] ==
              hidden[static_cast<std::size_t>(rows[i] * width + c)]);
      }
    }
    for (auto& v : packed) v += 1000.0f;
    std::vector<float> back = hidden;
    scatter_rows(host, make_host_span(std::as_const(packed)), width, make_host_span(rows),
                 make_host_span(back));
    for (index_t r = 0; r < 8; ++r) {
      const bool listed = r == 0 || r == 2 || r == 3 || r == 7;
      CHECK(back[static_cast<std::size_t>(r * width)] ==
            hidden[static_cast<std::size_t>(r * width)] + (listed ? 1000.0f : 0.0f));
    }
  }

  TEST_CASE("gather_rows: repeats allowed, empty index list, integer rows") {
    std::vector<int> src{1, 2, 3, 4};
    std::vector<index_t> rows{1, 1, 0};
    std::vector<int> dst(6);
    cpu::gather_rows(make_host_span(std::as_const(src)), 2, make_host_span(rows),
                     make_host_span(dst));
    CHECK(dst == std::vector<int>{3, 4, 3, 4, 1, 2});
    std::vector<int> none;
    cpu::gather_rows(make_host_span(std::as_const(src)), 2, host_span<const index_t>{},
                     make_host_span(none));
  }

  TEST_CASE("gather_rows / scatter_rows: bad input is a clear error") {
    std::vector<float> src(6);
    std::vector<float> dst(4);
    std::vector<index_t> rows{0, 3};
    CHECK_THROWS_WITH_AS(cpu::gather_rows(make_host_span(std::as_const(src)), 2,
                                          make_host_span(rows), make_host_span(dst)),
                         doctest::Contains("rows[1] = 3 is out of range [0, 3)"), error);
    CHECK_THROWS_WITH_AS(cpu::gather_rows(make_host_span(std::as_const(src)), 4,
                                          make_host_span(rows), make_host_span(dst)),
                         doctest::Contains("multiple of width"), error);
    CHECK_THROWS_WITH_AS(cpu::gather_rows(make_host_span(std::as_const(src)), 0,
                                          make_host_span(rows), make_host_span(dst)),
                         doctest::Contains("width must be > 0"), error);
    std::vector<float> small(3);
    CHECK_THROWS_WITH_AS(cpu::gather_rows(make_host_span(std::as_const(src)), 2,
                                          make_host_span(rows), make_host_span(small)),
                         doctest::Contains("rows.size() * width = 4 elements, got 3"), error);
    std::vector<index_t> dup{1, 1};
    std::vector<float> packed(4);
    CHECK_THROWS_WITH_AS(cpu::scatter_rows(make_host_span(std::as_const(packed)), 2,
                                           make_host_span(dup), make_host_span(src)),
                         doctest::Contains("row 1 is listed twice"), error);
    std::vector<index_t> neg{-1, 0};
    CHECK_THROWS_WITH_AS(cpu::scatter_rows(make_host_span(std::as_const(packed)), 2,
                                           make_host_span(neg), make_host_span(src)),
                         doctest::Contains("rows[0] = -1 is out of range"), error);
  }
}
