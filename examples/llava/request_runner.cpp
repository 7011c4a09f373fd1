// SPDX-License-Identifier: Apache-2.0
#include "request_runner.hpp"

#include <dynllava/core/untrusted_text.hpp>
#include <dynllava/cost/exact_flops.hpp>
#include <dynllava/cost/kv_bytes.hpp>
#include <dynllava/cost/llava_sizes.hpp>
#include <dynllava/cost/schedule_trace.hpp>
#include <dynllava/dynllava.hpp>

#include "clip_preprocess.hpp"
#include "conversation.hpp"
#include "program_errors.hpp"
#include "prompt_tokens.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

namespace dynllava::llava {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

/// The cost model's view of the loaded model: its LLaMA sizes, its predictors, and the fp32
/// KV cache the drivers run with.
cost::llava_sizes cost_config(const llava_config& c) {
  cost::llava_sizes cc;
  static_cast<llama_config&>(cc) = c.text;
  cc.predictor = c.predictors.value_or(predictor_config{});
  cc.predictor.hidden = c.text.hidden;
  cc.kv_bytes_per_element = static_cast<index_t>(sizeof(float));
  return cc;
}

/// The driver options of `mode` on this model.
sparsifier_options options_for(run_mode mode, const io::llava_folder& f) {
  sparsifier_options o;
  o.prune_images = false;
  o.gate_outputs = false;
  switch (mode) {
    case run_mode::dense:
    case run_mode::h2o:
    case run_mode::streaming:
      break;
    case run_mode::fastv:
      // The paper's setting (K = 3, keep 25%), K kept below the model's last layer.
      o.prune_images = true;
      o.vision = vision_rule::fastv;
      o.sparse_layer = std::clamp<index_t>(3, 1, std::max<index_t>(1, f.model.layers() - 1));
      o.vision_keep_ratio = 0.25;
      break;
    case run_mode::dynamic_image:
    case run_mode::dynamic:
      o.prune_images = true;
      o.sparse_layer = f.config.sparse.sparse_layer;
      o.vision_keep_ratio = f.config.sparse.vision_keep_rate;
      o.gate_outputs = mode == run_mode::dynamic;
      break;
  }
  return o;
}

/// What a finished session decided, per sequence.
template <class Session>
void collect_decisions(const Session& s, const generation& g, std::vector<sequence_result>& out,
                       bool gated) {
  const std::size_t batch = out.size();
  const token_decisions& img = s.image_decisions();
  for (std::size_t b = 0; b < batch; ++b) {
    auto& r = out[b];
    if (img.batch() == batch) {
      r.image_keep.assign(img.keep.begin() + img.indptr[b], img.keep.begin() + img.indptr[b + 1]);
    }
    const std::size_t generated = g.tokens[b].size();
    const std::size_t fed_back = generated == 0 ? 0 : generated - 1;
    if constexpr (requires { s.gate_logits(); }) {
      // KV mode: decode step t fed back token t of every sequence and gated it.
      const auto& keep = s.decisions();
      const auto& logits = s.gate_logits();
      const std::size_t steps = keep.size() / batch;
      for (std::size_t t = 0; t < std::min(fed_back, steps); ++t) {
        const std::size_t i = t * batch + b;
        r.output_keep.push_back(keep[i]);
        r.output_margin.push_back(keep_margin(logits[2 * i], logits[2 * i + 1]));
      }
    } else if (!gated) {
      r.output_keep.assign(fed_back, 1);
      r.output_margin.assign(fed_back, std::numeric_limits<float>::quiet_NaN());
    } else {
      // Without a cache: the last step's output candidates (every generated token before the
      // newest fed back).
      const token_decisions& od = s.output_decisions();
      if (od.batch() != batch) continue;
      const auto first = static_cast<std::size_t>(od.indptr[b]);
      const std::size_t n = std::min(fed_back, static_cast<std::size_t>(od.indptr[b + 1]) - first);
      const bool margins = od.scores.size() == od.candidates();
      for (std::size_t i = first; i < first + n; ++i) {
        r.output_keep.push_back(od.keep[i]);
        r.output_margin.push_back(margins ? od.scores[i] : std::numeric_limits<float>::quiet_NaN());
      }
      // The newest token fed back is no candidate: it is the row the step decodes from, always
      // in the context and never gated (`context_options::pin_last_output`).
      r.output_keep.resize(fed_back, 1);
      r.output_margin.resize(fed_back, std::numeric_limits<float>::quiet_NaN());
    }
  }
}

/// Generates with `s`, timing the prefill (up to the first token) and the decode, and records
/// the cost of every call.
template <class Session>
batch_result drive(Session& s, const io::llava_folder& f, const prompt_rows& p,
                   const generation_settings& settings, bool gated, const token_callback& on_token,
                   run_cost cost) {
  trace_recorder recorder;
  s.observe(&recorder);
  const generate_options g{
      .max_new_tokens = settings.max_new_tokens,
      .eos = static_cast<std::int32_t>(f.config.eos_token_id),
      .sampling = {
          .temperature = settings.temperature, .top_p = settings.top_p, .seed = settings.seed}};
  const auto start = clock_type::now();
  std::optional<clock_type::time_point> first;
  const generation out =
      generate(s, p.view(), p.segment_view(), g, [&](std::size_t b, std::int32_t id) {
        if (!first) first = clock_type::now();
        if (on_token) on_token(b, id);
      });
  const auto end = clock_type::now();
  const auto stop_prefill = first.value_or(end);
  cost.prefill_s = std::chrono::duration<double>(stop_prefill - start).count();
  cost.decode_s = std::chrono::duration<double>(end - stop_prefill).count();

  const std::size_t batch = s.batch();
  batch_result r;
  r.sequences.resize(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    r.sequences[b].tokens = out.tokens[b];
    r.sequences[b].stopped_at_eos = out.stopped_at_eos[b] != 0;
    r.sequences[b].prompt_rows = p.row_indptr[b + 1] - p.row_indptr[b];
  }
  collect_decisions(s, out, r.sequences, gated);

  // The cost model: what ran, and the dense model on the same prompts for the same calls.
  const cost::llava_sizes cc = cost_config(f.config);
  const auto& traces = recorder.traces();
  for (const auto& t : traces) cost.flops += cost::exact_flops(cc, t).total();
  const bool kv = requires { s.gate_logits(); };
  if (kv && !traces.empty()) cost.kv_bytes = cost::kv_cache_bytes(cc, traces.back());
  cost.decode_steps = traces.empty() ? 0 : traces.size() - 1;
  const auto pass = kv ? cost::pass_kind::decode_kv_cache : cost::pass_kind::decode_no_cache;
  for (std::size_t b = 0; b < batch; ++b) {
    const cost::request req{.system_tokens = r.sequences[b].prompt_rows,
                            .image_tokens = 0,
                            .instruction_tokens = 0,
                            .batch = 1};
    cost::trace last =
        cost::schedule_trace(cc, cost::dense_schedule{}, req, cost::pass_kind::prefill);
    cost.dense_flops += cost::exact_flops(cc, last).total();
    for (std::size_t t = 0; t < cost.decode_steps; ++t) {
      last =
          cost::schedule_trace(cc, cost::dense_schedule{}, req, pass, static_cast<std::int64_t>(t));
      cost.dense_flops += cost::exact_flops(cc, last).total();
    }
    if (kv) cost.dense_kv_bytes += cost::kv_cache_bytes(cc, last);
  }
  r.cost = cost;
  return r;
}

}  // namespace

paged_kv_cache kv_cache_for(const llava_model& m, const prompt_rows& p, std::size_t batch,
                            index_t new_tokens) {
  const index_t width = m.config().text.heads * m.config().text.head_dim;
  const index_t page = 16;
  const index_t pages_per_layer =
      (p.row_indptr.back() + new_tokens * static_cast<index_t>(batch)) / page +
      2 * static_cast<index_t>(batch);
  return paged_kv_cache({m.layers(), batch, width, page, m.layers() * pages_per_layer});
}

void check_model_folder(const std::filesystem::path& model_dir,
                        const std::optional<std::filesystem::path>& vision_tower) {
  DYNLLAVA_EXPECTS(std::filesystem::is_directory(model_dir),
                   "--model: {} is not a folder (expected a LLaVA checkpoint folder)",
                   quote_untrusted(model_dir.string()));
  DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(model_dir / "config.json"),
                   "--model: {} has no config.json (expected a LLaVA checkpoint folder)",
                   quote_untrusted(model_dir.string()));
  const auto tok_file = model_dir / "tokenizer.model";
  DYNLLAVA_EXPECTS(std::filesystem::is_regular_file(tok_file),
                   "--model: {} has no tokenizer.model (the SentencePiece model)",
                   quote_untrusted(model_dir.string()));
  if (vision_tower) {
    DYNLLAVA_EXPECTS(std::filesystem::is_directory(*vision_tower),
                     "--vision-tower: {} is not a folder", quote_untrusted(vision_tower->string()));
  }
}

loaded_model load_model(const std::filesystem::path& model_dir,
                        const std::optional<std::filesystem::path>& vision_tower) {
  check_model_folder(model_dir, vision_tower);
  const auto tok_file = model_dir / "tokenizer.model";
  io::load_llava_options o;
  o.vision_tower = vision_tower;
  io::llava_folder folder = [&] {
    try {
      return io::load_llava(model_dir, o);
    } catch (const dynllava::error& e) {
      // The library names its own option; the program's is --vision-tower.
      std::string what = e.what();
      for (const std::string_view api :
           {"llava_config_options::clip_config", "load_llava_options::vision_tower"}) {
        for (auto at = what.find(api); at != std::string::npos; at = what.find(api)) {
          what.replace(at, api.size(), "--vision-tower DIR");
        }
      }
      if (vision_tower && what.find(vision_tower->string()) != std::string::npos &&
          !what.starts_with("dynllava: --vision-tower")) {
        what = "--vision-tower " + quote_untrusted(vision_tower->string()) + ": " +
               (what.starts_with("dynllava: ") ? what.substr(10) : what);
      }
      throw dynllava::error(what);
    }
  }();
  tokenizer tok = tokenizer::load(tok_file, read_tokenizer_options(model_dir));
  DYNLLAVA_EXPECTS(tok.vocab_size() <= folder.model.vocab(),
                   "--model: {} has {} pieces, more than the model's vocabulary ({})",
                   quote_untrusted(tok_file.string()), tok.vocab_size(), folder.model.vocab());
  return {std::move(folder), std::move(tok)};
}

prepared_request prepare_request(const loaded_model& m, const request& r) {
  const llava_config& c = m.folder.config;
  conversation conv(vicuna_v1());
  conv.add_user(r.prompt, static_cast<int>(r.images.size()));
  const auto ids =
      tokenize_prompt(m.tok, conv.prompt(), static_cast<std::int32_t>(c.image_token_id));
  prepared_request out;
  out.ids.assign(ids.begin(), ids.end());
  // The folder's preprocessing (preprocessor_config.json, image_aspect_ratio; io::load_llava
  // checked that its crop is the tower's input size).
  const clip_preprocess_options o = preprocess_options(m.folder.preprocess);
  const std::size_t per =
      3 * static_cast<std::size_t>(o.crop_height) * static_cast<std::size_t>(o.crop_width);
  for (const auto& file : r.images) {
    out.views.push_back(clip_resize_crop(load_image(file), o));
    out.pixels.resize(out.pixels.size() + per);
    clip_normalize(out.views.back(), o,
                   std::span<float>(out.pixels.data() + out.pixels.size() - per, per));
  }
  out.images = r.images.size();
  return out;
}

void check_fits(const loaded_model& m, const prepared_request& r,
                const generation_settings& settings, std::string_view where) {
  const llava_model& model = m.folder.model;
  const std::int64_t positions = m.folder.config.text.max_positions;
  const auto prompt = static_cast<std::int64_t>(r.ids.size()) +
                      static_cast<std::int64_t>(r.images) * (model.image_rows() - 1);
  const std::string images =
      r.images == 0 ? std::string()
                    : fmt::format(", {} of them for {} image{} of {} rows each",
                                  r.images * static_cast<std::size_t>(model.image_rows()), r.images,
                                  r.images == 1 ? "" : "s", model.image_rows());
  if (prompt >= positions) {
    throw usage_error(
        fmt::format("{}: the prompt needs {} rows{}, and the model has {} positions "
                    "(max_position_embeddings){}",
                    where.empty() ? "--prompt/--image" : where, prompt, images, positions,
                    r.images > 1 ? "; ask about one image at a time" : ""));
  }
  if (prompt + settings.max_new_tokens > positions) {
    throw usage_error(
        fmt::format("{}: the prompt ({} rows{}) plus {} new tokens exceed the model's {} positions "
                    "(max_position_embeddings)",
                    where.empty() ? std::string("--max-new-tokens")
                                  : fmt::format("{}: \"max_new_tokens\"", where),
                    prompt, images, settings.max_new_tokens, positions));
  }
}

batch_result run_batch(const loaded_model& m, const std::vector<prepared_request>& batch,
                       const generation_settings& settings, const token_callback& on_token,
                       const progress_callback& progress) {
  settings.validate("");
  DYNLLAVA_EXPECTS(!batch.empty(), "run_batch: the batch is empty");
  const io::llava_folder& f = m.folder;
  const llava_model& model = f.model;
  const bool needs_image =
      settings.mode == run_mode::dynamic_image || settings.mode == run_mode::dynamic;
  DYNLLAVA_EXPECTS(!needs_image || f.image.has_value(),
                   "--mode {}: the checkpoint has no Dynamic-LLaVA image predictor (config.json "
                   "has no sparse_config); use dense, fastv, h2o or streaming",
                   to_string(settings.mode));
  DYNLLAVA_EXPECTS(settings.mode != run_mode::dynamic || f.output.has_value(),
                   "--mode dynamic: the checkpoint has no output-text predictor; use "
                   "dynamic-image");

  std::vector<index_t> indptr{0};
  std::vector<std::int64_t> ids;
  std::vector<float> pixels;
  std::size_t images = 0;
  for (const auto& r : batch) {
    ids.insert(ids.end(), r.ids.begin(), r.ids.end());
    indptr.push_back(static_cast<index_t>(ids.size()));
    pixels.insert(pixels.end(), r.pixels.begin(), r.pixels.end());
    images += r.images;
  }
  if (progress && images > 0) {
    progress(fmt::format("encoding {} image{}", images, images == 1 ? "" : "s"));
  }
  // The context never outgrows what the model was trained for (and the cache stays bounded).
  for (std::size_t b = 0; b < batch.size(); ++b) {
    check_fits(m, batch[b], settings, fmt::format("request {} of the batch", b + 1));
  }
  run_cost cost;
  const auto t0 = clock_type::now();
  const prompt_rows p = model.prompt({make_host_span(indptr), make_host_span(std::as_const(ids))},
                                     make_host_span(std::as_const(pixels)));
  cost.encode_s = seconds_since(t0);

  const sparsifier_options o = options_for(settings.mode, f);
  const image_predictor* image = needs_image ? &*f.image : nullptr;
  const output_predictor* output = o.gate_outputs ? &*f.output : nullptr;
  const std::size_t n = batch.size();
  if (!settings.kv_cache) {
    no_cache_session s(model, n, image, output, o);
    return drive(s, f, p, settings, o.gate_outputs, on_token, cost);
  }
  auto cache = kv_cache_for(model, p, n, settings.max_new_tokens);
  auto with_policy = [&](auto policy) {
    kv_session s(model, cache, policy, image, output, o);
    return drive(s, f, p, settings, o.gate_outputs, on_token, cost);
  };
  switch (settings.mode) {
    case run_mode::h2o:
      return with_policy(h2o_policy{.ratio = 0.5, .recent = 32, .uncompressed_layers = 0});
    case run_mode::streaming:
      return with_policy(streaming_policy{.sinks = 4, .window = 252});
    case run_mode::dynamic:
      return with_policy(online_gate_policy{o.sparse_layer});
    default:
      return with_policy(full_cache_policy{});
  }
}

}  // namespace dynllava::llava
