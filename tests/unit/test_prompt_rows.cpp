// SPDX-License-Identifier: Apache-2.0
// build_prompt_rows: placeholders become image rows and segments; text becomes embeddings.
#include <dynllava/model/prompt_rows.hpp>

#include "support/errors.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

using namespace dynllava;
using dynllava::test::error_of;

namespace {

/// Embeds id t as the row (t, t + 0.5).
struct id_embedder {
  index_t hidden() const { return 2; }
  void embed(host_t, host_span<const std::int32_t> tokens, host_span<float> out) const {
    REQUIRE(out.size() == tokens.size() * 2);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      out[2 * i] = static_cast<float>(tokens[i]);
      out[2 * i + 1] = static_cast<float>(tokens[i]) + 0.5f;
    }
  }
};
static_assert(token_embedder<id_embedder>);

/// Image k's rows are (-100 k - r, r) for row r.
std::vector<float> features(int images, int rows) {
  std::vector<float> f;
  for (int k = 0; k < images; ++k) {
    for (int r = 0; r < rows; ++r) {
      f.push_back(static_cast<float>(-100 * (k + 1) - r));
      f.push_back(static_cast<float>(r));
    }
  }
  return f;
}

prompt_rows build(const std::vector<index_t>& indptr, const std::vector<std::int64_t>& ids,
                  const std::vector<float>& f, prompt_rows_options o) {
  return build_prompt_rows(
      id_embedder{}, host_ragged<const std::int64_t>{make_host_span(indptr), make_host_span(ids)},
      make_host_span(f), o);
}

}  // namespace

TEST_CASE("build_prompt_rows: single and expanded placeholders, two sequences, segments") {
  // Sequence 0: 1 2 <img> 3 (single placeholder); sequence 1: 5 <img><img><img> 6 7 <img> 8.
  const std::vector<index_t> indptr = {0, 4, 12};
  const std::vector<std::int64_t> ids = {1, 2, -200, 3, 5, -200, -200, -200, 6, 7, -200, 8};
  const auto f = features(3, 3);
  const prompt_rows p = build(indptr, ids, f, {.image_token_id = -200, .image_rows = 3});
  CHECK(p.hidden == 2);
  CHECK(p.row_indptr == std::vector<index_t>{0, 6, 6 + 1 + 3 + 2 + 3 + 1});
  CHECK(p.image_begin == std::vector<index_t>{2, 1, 6});
  // Sequence 0's rows: embed(1), embed(2), image 0 (3 rows), embed(3).
  const std::vector<float> seq0 = {1, 1.5f, 2, 2.5f, -100, 0, -101, 1, -102, 2, 3, 3.5f};
  CHECK(std::vector<float>(p.rows.begin(), p.rows.begin() + 12) == seq0);
  // Sequence 1's second image is the third image of the batch.
  CHECK(p.rows[2 * (6 + 6)] == -300.0f);
  const auto seg = p.segments;
  REQUIRE(p.segment_indptr == std::vector<index_t>{0, 3, 8});
  CHECK(seg[0].kind == segment_kind::system);
  CHECK(seg[1].kind == segment_kind::image);
  CHECK((seg[1].begin == 2 && seg[1].length == 3 && seg[1].turn == 0));
  CHECK(seg[2].kind == segment_kind::instruction);
  CHECK((seg[5].kind == segment_kind::instruction && seg[5].turn == 0));
  CHECK((seg[6].kind == segment_kind::image && seg[6].turn == 1 && seg[6].begin == 6));
  CHECK((seg[7].kind == segment_kind::instruction && seg[7].turn == 1));
  CHECK(validate(p.segment_view(), "segments") == 16);
  validate(p.view(), "rows");
}

TEST_CASE("build_prompt_rows: a later prompt has no system segment; text only") {
  const std::vector<index_t> indptr = {0, 3};
  const std::vector<std::int64_t> ids = {4, 500, 9};
  const auto f = features(1, 2);
  const prompt_rows p =
      build(indptr, ids, f, {.image_token_id = 500, .image_rows = 2, .first_prompt = false});
  REQUIRE(p.segments.size() == 3);
  CHECK(p.segments[0].kind == segment_kind::instruction);
  const prompt_rows t = build(indptr, {4, 5, 9}, {}, {.image_token_id = 500, .image_rows = 2});
  REQUIRE(t.segments.size() == 1);
  CHECK(t.segments[0].kind == segment_kind::system);
  CHECK(t.rows == std::vector<float>{4, 4.5f, 5, 5.5f, 9, 9.5f});
}

TEST_CASE("build_prompt_rows: errors name the problem") {
  const std::vector<index_t> indptr = {0, 4};
  const auto f = features(1, 3);
  CHECK(error_of([&] {
          build({0, 6}, {1, -200, -200, -200, -200, 2}, f, {.image_rows = 3});
        }).find("4 consecutive image placeholders at token 1") != std::string::npos);
  // Back to back: two single placeholders are two images, six expanded ones two images too.
  const auto two = features(2, 3);
  CHECK(build(indptr, {1, -200, -200, 2}, two, {.image_rows = 3}).image_begin ==
        std::vector<index_t>{1, 4});
  CHECK(build({0, 8}, {1, -200, -200, -200, -200, -200, -200, 2}, two, {.image_rows = 3})
            .image_begin == std::vector<index_t>{1, 4});
  CHECK(error_of([&] {
          build(indptr, {1, -200, 2, -200}, f, {.image_rows = 3});
        }).find("more images than the 1 given") != std::string::npos);
  CHECK(error_of([&] {
          build(indptr, {1, 2, 3, 4}, f, {.image_rows = 3});
        }).find("1 images' features were given but the tokens hold 0") != std::string::npos);
  CHECK(error_of([&] {
          build(indptr, {1, 2, 3, 4}, {1.0f}, {.image_rows = 3});
        }).find("whole images of 3 x 2") != std::string::npos);
  CHECK(error_of([&] {
          build({0, 0}, {}, {}, {});
        }).find("sequence 0 is empty") != std::string::npos);
  CHECK(error_of([&] {
          build(indptr, {1, 2, 3, std::int64_t{1} << 40}, {}, {});
        }).find("token 3 = 1099511627776 is not a valid id") != std::string::npos);
}
