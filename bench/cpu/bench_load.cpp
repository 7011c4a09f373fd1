// SPDX-License-Identifier: Apache-2.0
/// @file bench_load.cpp
/// @brief Peak resident memory of loading a real-size bf16 decoder: the mid-size LLaMA of
/// `bench_llava.cpp` (hidden 2048, 16 layers, MLP 5632, vocab 32000: 0.95 G parameters,
/// 1.9 GB in bf16) written once as a single `model.safetensors` under the system's temporary
/// folder (streamed, never whole in memory; reused while its size matches), then loaded with
/// `io::checkpoint` + `load_llama_weights` + `llama_model` and run on a 16-token prompt.
///
/// Run it alone, in a fresh process, so that the peak is the load's:
///   ./build/cpu/bench/dynllava_bench_llava --benchmark_filter=bf16_load
/// Counters: `file_bytes`, `peak_rss_before` (after writing), `peak_rss_loaded` (weights are
/// views into the mapped file: only what was read is resident) and `peak_rss_forward` (after a
/// pass through every layer, which touches every weight page of the mapping once).
#include <dynllava/dynllava.hpp>
#include <dynllava/io/load_llama.hpp>
#include <dynllava/io/safetensors.hpp>
#include <dynllava/model/llama.hpp>

#include "peak_rss.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace dynllava;
using dynllava::bench::peak_rss_bytes;

namespace {

const llama_config bf16_config{2048, 16, 16, 5632, 32000};

/// Writes the table's tensors in bf16 (small pseudo-random values, 1 MiB at a time) unless a
/// file of the expected size is there; returns its path.
std::filesystem::path write_bf16_checkpoint() {
  std::vector<nn::tensor_spec> specs;
  llama_weights shape_only;
  visit_tensors(shape_only, bf16_config,
                [&](const nn::tensor_spec& s, auto&) { specs.push_back(s); });
  std::string header = "{";
  std::uint64_t offset = 0;
  for (const auto& s : specs) {
    header += (header.size() == 1 ? "\"" : ",\"") + s.name + "\":{\"dtype\":\"BF16\",\"shape\":[";
    for (std::size_t i = 0; i < s.shape.size(); ++i)
      header += (i ? "," : "") + std::to_string(s.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + 2 * s.elements()) + "]}";
    offset += 2 * s.elements();
  }
  header += "}";
  const auto dir = std::filesystem::temp_directory_path() / "dynllava-bench-bf16";
  const auto path = dir / "model.safetensors";
  const std::uint64_t size = 8 + header.size() + offset;
  std::error_code ec;
  if (std::filesystem::file_size(path, ec) == size && !ec) return path;
  std::filesystem::create_directories(dir);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  out << header;
  std::vector<std::uint16_t> chunk(std::size_t{1} << 19);
  std::uint32_t state = 12345;
  for (const auto& s : specs) {
    const bool norm = s.role == nn::tensor_role::norm_weight;
    for (std::size_t done = 0; done < s.elements();) {
      const std::size_t n = std::min(chunk.size(), s.elements() - done);
      for (std::size_t i = 0; i < n; ++i) {
        state = state * 1664525u + 1013904223u;
        // bf16 of +-[2^-7, 2^-6) (linear weights) or 1.0 (norms)
        chunk[i] =
            norm ? std::uint16_t{0x3F80}
                 : static_cast<std::uint16_t>(0x3C00u | (state >> 25) | ((state >> 16) & 0x8000u));
      }
      out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(2 * n));
      done += n;
    }
  }
  out.close();
  DYNLLAVA_EXPECTS(out.good(), "bench: could not write {}", path.string());
  return path;
}

void bm_llava_bf16_load(benchmark::State& state) {
  const auto path = write_bf16_checkpoint();
  const double before = peak_rss_bytes();
  double loaded = 0.0, forward = 0.0;
  for (auto _ : state) {
    const io::checkpoint ckpt(path);
    const llama_model m(bf16_config, load_llama_weights(ckpt, bf16_config));
    loaded = peak_rss_bytes();
    // A 16-token prompt through every layer (no cache) and the last row's logits.
    const std::size_t n = 16, H = static_cast<std::size_t>(m.hidden());
    std::vector<std::int32_t> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<std::int32_t>(3 + 97 * i);
    std::vector<float> h(n * H), k(n * H), v(n * H), logits(static_cast<std::size_t>(m.vocab()));
    m.embed(host, make_host_span(std::as_const(ids)), make_host_span(h));
    const std::vector<index_t> indptr{0, static_cast<index_t>(n)};
    std::vector<index_t> pos(n);
    for (std::size_t i = 0; i < n; ++i) pos[i] = static_cast<index_t>(i);
    for (index_t l = 0; l < m.layers(); ++l) {
      m.layer(host, l,
              host_ragged_rows<float>{make_host_span(indptr), make_host_span(h), m.hidden()},
              make_host_span(std::as_const(pos)), nullptr, make_host_span(k), make_host_span(v));
    }
    m.logits(host, make_host_span(std::as_const(h)).subspan((n - 1) * H, H),
             make_host_span(logits));
    benchmark::DoNotOptimize(logits.data());
    forward = peak_rss_bytes();
  }
  state.counters["file_bytes"] = static_cast<double>(std::filesystem::file_size(path));
  state.counters["peak_rss_before"] = before;
  state.counters["peak_rss_loaded"] = loaded;
  state.counters["peak_rss_forward"] = forward;
}

}  // namespace

BENCHMARK(bm_llava_bf16_load)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
