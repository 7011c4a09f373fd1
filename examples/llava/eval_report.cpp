// SPDX-License-Identifier: Apache-2.0
#include "eval_report.hpp"

#include <fmt/format.h>
#include <fmt/ostream.h>

namespace dynllava::llava {

namespace {

const mode_report* find(const std::vector<mode_report>& modes, eval_mode m) {
  for (const auto& r : modes) {
    if (r.mode == m) return &r;
  }
  return nullptr;
}

double ratio(const mode_report& r) {
  return r.object_share() == 0.0 ? 0.0 : r.kept_on_object_rate() / r.object_share();
}

std::string verdict(const std::optional<bool>& v) {
  return !v ? "not run" : *v ? "met" : "NOT met";
}

nlohmann::json optional_json(const std::optional<bool>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

bool eval_targets::all_met() const noexcept {
  return dynamic_exact_90.value_or(false) && within_2_points.value_or(false) &&
         on_object_3x.value_or(false);
}

eval_targets check_targets(const std::vector<mode_report>& modes) {
  eval_targets t;
  const mode_report* dense = find(modes, eval_mode::dense);
  const mode_report* dyn = find(modes, eval_mode::dynamic);
  if (dyn != nullptr) {
    t.dynamic_exact_90 = dyn->exact_rate() >= 0.90;
    t.on_object_3x = ratio(*dyn) >= 3.0;
  }
  if (dense != nullptr && dyn != nullptr) {
    t.dense_minus_dynamic_points = 100.0 * (dense->exact_rate() - dyn->exact_rate());
    t.within_2_points = *t.dense_minus_dynamic_points <= 2.0;
  }
  return t;
}

nlohmann::json report_json(const std::string& file, const std::vector<mode_report>& modes) {
  nlohmann::json j;
  j["file"] = file;
  j["questions"] = modes.empty() ? 0 : modes.front().questions;
  j["modes"] = nlohmann::json::array();
  for (const auto& r : modes) {
    nlohmann::json m;
    m["mode"] = std::string(to_string(r.mode));
    m["questions"] = r.questions;
    m["exact"] = r.exact;
    m["exact_rate"] = r.exact_rate();
    nlohmann::json kinds = nlohmann::json::object();
    for (const auto& [k, v] : r.kinds) {
      kinds[k] = {{"questions", v.questions},
                  {"exact", v.exact},
                  {"exact_rate", v.questions == 0 ? 0.0
                                                  : static_cast<double>(v.exact) /
                                                        static_cast<double>(v.questions)}};
    }
    m["kinds"] = kinds;
    m["image_rows"] = r.image_rows;
    m["kept_rows"] = r.kept_rows;
    m["kept_rows_per_question"] =
        r.questions == 0 ? 0.0
                         : static_cast<double>(r.kept_rows) / static_cast<double>(r.questions);
    m["kept_on_object"] = r.kept_on_object;
    m["kept_on_object_rate"] = r.kept_on_object_rate();
    m["object_rows"] = r.object_rows;
    m["object_share"] = r.object_share();
    m["on_object_ratio"] = ratio(r);
    m["wrong_lines"] = r.wrong;
    m["seconds"] = r.seconds;
    j["modes"].push_back(std::move(m));
  }
  const eval_targets t = check_targets(modes);
  j["targets"] = {{"dense_minus_dynamic_points", t.dense_minus_dynamic_points
                                                     ? nlohmann::json(*t.dense_minus_dynamic_points)
                                                     : nlohmann::json(nullptr)},
                  {"dynamic_exact_at_least_90", optional_json(t.dynamic_exact_90)},
                  {"dynamic_within_2_points_of_dense", optional_json(t.within_2_points)},
                  {"kept_on_object_at_least_3x", optional_json(t.on_object_3x)},
                  {"all_met", t.all_met()}};
  return j;
}

void print_report(std::ostream& os, const std::string& file,
                  const std::vector<mode_report>& modes) {
  fmt::print(os, "{} questions from {}\n\n", modes.empty() ? 0 : modes.front().questions, file);
  fmt::print(os, "{:<8} {:>14} {:>10} {:>16} {:>13} {:>7} {:>8}\n", "mode", "exact answers",
             "rows kept", "kept on objects", "object share", "ratio", "seconds");
  for (const auto& r : modes) {
    const double kept = r.questions == 0
                            ? 0.0
                            : static_cast<double>(r.kept_rows) / static_cast<double>(r.questions);
    fmt::print(os, "{:<8} {:>8.2f}% {:>4} {:>10.1f} {:>15.1f}% {:>12.1f}% {:>6.2f}x {:>8.1f}\n",
               to_string(r.mode), 100.0 * r.exact_rate(), r.exact, kept,
               100.0 * r.kept_on_object_rate(), 100.0 * r.object_share(), ratio(r), r.seconds);
  }
  os << "\nexact answers per kind:\n";
  for (const auto& r : modes) {
    fmt::print(os, "  {:<8}", to_string(r.mode));
    for (const auto& [k, v] : r.kinds) {
      fmt::print(os, " {} {}/{} ({:.1f}%)", k, v.exact, v.questions,
                 v.questions == 0
                     ? 0.0
                     : 100.0 * static_cast<double>(v.exact) / static_cast<double>(v.questions));
    }
    os << '\n';
  }
  const eval_targets t = check_targets(modes);
  os << "\ntargets (issue #16):\n";
  fmt::print(os, "  Dynamic-LLaVA exact answers >= 90%:            {}\n",
             verdict(t.dynamic_exact_90));
  fmt::print(os, "  Dynamic-LLaVA within 2 points of dense:        {}{}\n",
             verdict(t.within_2_points),
             t.dense_minus_dynamic_points
                 ? fmt::format(" (dense - dynamic = {:+.2f} points)", *t.dense_minus_dynamic_points)
                 : std::string());
  fmt::print(os, "  kept rows on objects >= 3x the object share:   {}\n", verdict(t.on_object_3x));
}

}  // namespace dynllava::llava
