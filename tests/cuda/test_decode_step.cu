// SPDX-License-Identifier: Apache-2.0
/// @file test_decode_step.cu
/// @brief The KV mode's decode step written once for every execution tag
/// (pipeline/decode_step.hpp), instantiated with CUDA models: a CUDA decoder defined here (the
/// tests' toy decoder, whose arithmetic is shared with its host model), the device contiguous
/// cache, the device policies and the CUDA output predictor, against the same function
/// instantiated with the host models, step after step; once eagerly and once replayed from a
/// CUDA graph that holds a whole step (and the positions' advance).
#include <dynllava/core/cuda/device_buffer.cuh>
#include <dynllava/kvcache/cuda/device_kv_caches.cuh>
#include <dynllava/kvcache/cuda/device_policies.cuh>
#include <dynllava/pipeline/cuda/device_positions.cuh>
#include <dynllava/pipeline/decode_step.hpp>
#include <dynllava/pipeline/no_predictor.hpp>
#include <dynllava/score/cuda/device_output_predictor.cuh>
#include <dynllava/score/output_predictor.hpp>
#include <dynllava/score/random_weights.hpp>
#include <dynllava/select/cuda/device_gate.cuh>

#include <support/compare.hpp>
#include <support/cuda_predictors.cuh>
#include <support/cuda_readback.cuh>
#include <support/toy_decoder.hpp>

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

using namespace dynllava;
namespace dc = dynllava::cuda;  // `cuda` alone is ambiguous with CCCL's ::cuda
using dc::device_buffer;
using test::check_close;
using test::toy_hidden;
using test::toy_layers;
using test::toy_vocab;

namespace {

template <int = 0>
__global__ void toy_embed_kernel(const std::int32_t* tokens, std::size_t n, float* out) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n * toy_hidden)
    out[i] = test::toy_embedding(tokens[i / toy_hidden], static_cast<index_t>(i % toy_hidden));
}

/// Keys and values in `T` (the cache's element type), computed in fp32.
template <class T>
__global__ void toy_key_value_kernel(index_t l, const float* rows, const index_t* pos,
                                     std::size_t n, T* k, T* v) {
  const std::size_t r = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  float kf[toy_hidden], vf[toy_hidden];
  test::toy_key_value(l, rows + r * toy_hidden, pos[r], kf, vf);
  for (index_t j = 0; j < toy_hidden; ++j) {
    k[r * toy_hidden + static_cast<std::size_t>(j)] = static_cast<T>(kf[j]);
    v[r * toy_hidden + static_cast<std::size_t>(j)] = static_cast<T>(vf[j]);
  }
}

template <class T>
__global__ void toy_attend_kernel(contiguous_kv_view<T, device_space> cache, bool cached_rows,
                                  const index_t* indptr, std::size_t batch, const T* k, const T* v,
                                  std::size_t n, float* rows) {
  const std::size_t r = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  std::size_t b = 0;
  while (b + 1 < batch && static_cast<std::size_t>(indptr[b + 1]) <= r) ++b;
  const index_t cached = cached_rows ? cache.length(b) : 0;
  const T* ck = cached == 0 ? nullptr : cache.key(b, 0);
  const T* cv = cached == 0 ? nullptr : cache.value(b, 0);
  test::toy_attend(ck, cv, cached, k, v, indptr[b], static_cast<index_t>(r), rows + r * toy_hidden);
}

template <int = 0>
__global__ void toy_logits_kernel(const float* rows, std::size_t n, float* out) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n * toy_vocab)
    out[i] =
        test::toy_logit(rows + (i / toy_vocab) * toy_hidden, static_cast<index_t>(i % toy_vocab));
}

unsigned blocks(std::size_t n) { return static_cast<unsigned>((n + 127) / 128); }

/// The CUDA model of the toy decoder over a `device_contiguous_kv_cache<T>` (keys and values in
/// `T`, fp32 or fp16; the rows stay fp32): a launch per stage on the tag's stream, nothing
/// allocated, nothing synchronised.
template <class T = float>
struct toy_device_decoder {
  index_t layers() const { return toy_layers; }
  index_t hidden() const { return toy_hidden; }
  index_t vocab() const { return toy_vocab; }

  void embed(dc::on_stream exec, device_span<const std::int32_t> tokens,
             device_span<float> out) const {
    if (tokens.empty()) return;
    toy_embed_kernel<<<blocks(out.size()), 128, 0, exec.stream>>>(tokens.data(), tokens.size(),
                                                                  out.data());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }

  void layer(dc::on_stream exec, index_t l, ragged_rows<float, device_space> rows,
             device_span<const index_t> pos, const dc::device_contiguous_kv_cache<T>* cache,
             device_span<T> k, device_span<T> v) const {
    const std::size_t n = rows.rows();
    if (n == 0) return;
    toy_key_value_kernel<<<blocks(n), 128, 0, exec.stream>>>(l, rows.values.data(), pos.data(), n,
                                                             k.data(), v.data());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
    const auto view =
        cache == nullptr ? contiguous_kv_view<T, device_space>{} : cache->layer(l).view();
    toy_attend_kernel<<<blocks(n), 128, 0, exec.stream>>>(
        view, cache != nullptr, rows.indptr.data(), rows.batch(), k.data(), v.data(), n,
        rows.values.data());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }

  void logits(dc::on_stream exec, device_span<const float> rows, device_span<float> out) const {
    if (out.empty()) return;
    toy_logits_kernel<<<blocks(out.size()), 128, 0, exec.stream>>>(
        rows.data(), rows.size() / toy_hidden, out.data());
    DYNLLAVA_CUDA_TRY(cudaPeekAtLastError());
  }
};

static_assert(
    decoder<toy_device_decoder<float>, dc::on_stream, dc::device_contiguous_kv_cache<float>>);
static_assert(
    decoder<toy_device_decoder<__half>, dc::on_stream, dc::device_contiguous_kv_cache<__half>>);
static_assert(
    !decoder<toy_device_decoder<__half>, dc::on_stream, dc::device_contiguous_kv_cache<float>>);
static_assert(decoder<test::toy_host_decoder, host_t, contiguous_kv_cache>);
static_assert(two_way_predictor<no_predictor, dc::on_stream>);
static_assert(layer_hooks<no_layer_hooks<dc::on_stream>, dc::on_stream>);

constexpr std::size_t batch = 5;
constexpr index_t capacity = 48;

/// Owning device buffers of a decode step over the test's batch (keys and values in `T`), and
/// its tokens, positions and logits.
template <class T = float>
struct device_step_buffers {
  device_buffer<index_t> indptr{std::vector<index_t>{0, 1, 2, 3, 4, 5}}, kept_indptr{batch + 1},
      kept{batch}, retained_indptr{batch + 1}, retained{batch * static_cast<std::size_t>(capacity)},
      positions{std::vector<index_t>(batch, 0)};
  device_buffer<float> hidden{batch * toy_hidden}, gate_logits{2 * batch},
      logits{batch * toy_vocab};
  device_buffer<T> k{batch * toy_hidden}, v{batch * toy_hidden};
  device_buffer<std::uint8_t> keep{batch};
  device_buffer<std::int32_t> tokens{batch};

  decode_buffers<dc::on_stream, T> buffers() {
    return {std::as_const(indptr).view(),
            hidden.view(),
            k.view(),
            v.view(),
            {gate_logits.view(), keep.view(), kept_indptr.view(), kept.view()},
            retained_indptr.view(),
            retained.view()};
  }
};

/// Tokens of step `s`.
std::vector<std::int32_t> tokens_at(int s) {
  std::vector<std::int32_t> t(batch);
  for (std::size_t b = 0; b < batch; ++b)
    t[b] = static_cast<std::int32_t>((7 * s + 3 * static_cast<int>(b) + 2) % toy_vocab);
  return t;
}

/// `T` values widened to fp32 on the host.
template <class T>
std::vector<float> widened(const std::vector<T>& x) {
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i]);
  return out;
}

/// The device cache holds what the host cache holds, in every layer: lengths, appended counts and
/// positions exactly, keys and values to `tol` (the decoders' arithmetic is shared, but `expf`
/// and friends round differently on the device, and an fp16 cache rounds what it stores).
template <class T>
void check_same_tokens(const dc::device_contiguous_kv_cache<T>& got,
                       const contiguous_kv_cache& expected, float tol) {
  for (index_t l = 0; l < toy_layers; ++l) {
    CAPTURE(l);
    const auto layer = got.layer(l);
    const auto rows = batch * static_cast<std::size_t>(capacity);
    const test::layer_readback back{test::copy_to_host(layer.lengths, batch),
                                    test::copy_to_host(layer.appended, batch),
                                    widened(test::copy_to_host(layer.k, rows * toy_hidden)),
                                    widened(test::copy_to_host(layer.v, rows * toy_hidden)),
                                    test::copy_to_host(layer.positions, rows)};
    std::vector<float> k, v, expected_k, expected_v;
    for (std::size_t b = 0; b < batch; ++b) {
      CAPTURE(b);
      REQUIRE(back.lengths[b] == expected.length(l, b));
      CHECK(back.appended[b] == expected.appended(l, b));
      for (index_t i = 0; i < expected.length(l, b); ++i) {
        const std::size_t r = b * static_cast<std::size_t>(capacity) + static_cast<std::size_t>(i);
        CHECK(back.positions[r] == expected.position(l, b, i));
        k.insert(k.end(), back.k.begin() + r * toy_hidden, back.k.begin() + (r + 1) * toy_hidden);
        v.insert(v.end(), back.v.begin() + r * toy_hidden, back.v.begin() + (r + 1) * toy_hidden);
        expected_k.insert(expected_k.end(), expected.key(l, b, i),
                          expected.key(l, b, i) + toy_hidden);
        expected_v.insert(expected_v.end(), expected.value(l, b, i),
                          expected.value(l, b, i) + toy_hidden);
      }
    }
    check_close(k, expected_k, tol);
    check_close(v, expected_v, tol);
  }
}

/// Tokens held by every (layer, sequence) of the device cache, layer-major.
template <class T>
std::vector<index_t> lengths_of(const dc::device_contiguous_kv_cache<T>& c) {
  std::vector<index_t> out;
  for (index_t l = 0; l < toy_layers; ++l) {
    const auto held = test::copy_to_host(c.layer(l).lengths, batch);
    out.insert(out.end(), held.begin(), held.end());
  }
  return out;
}

/// Runs `steps` steps of the host instantiation and of two CUDA ones with keys and values in `T`
/// (eager, and a captured step replayed from a graph), comparing after each: logits, keys and
/// values to `tol`, the gate's decisions bit for bit (the host rule on the device's own logits,
/// and the host's where its margin is clear), the per-layer cache lengths exactly.
template <class T, class HostPolicy, class DevicePolicy, class HostOutput, class DeviceOutput>
void run_against_host(const HostPolicy& host_policy, const DevicePolicy& device_policy,
                      const HostOutput* host_output, const DeviceOutput* device_output,
                      index_t sparse, int steps, cublasHandle_t handle, float tol = 1e-4f) {
  const test::toy_host_decoder host_model;
  const toy_device_decoder<T> device_model;
  const bool gate = host_output != nullptr && sparse < toy_layers;
  contiguous_kv_cache host_cache({toy_layers, batch, toy_hidden, capacity});
  const dc::device_contiguous_kv_config dcfg{toy_layers, batch, toy_hidden, capacity};
  dc::device_contiguous_kv_cache<T> eager_cache(dcfg), graph_cache(dcfg);
  host_decode_buffers h;
  h.resize(batch, toy_hidden, batch * static_cast<std::size_t>(capacity));
  std::vector<std::int32_t> tokens(batch);
  std::vector<index_t> positions(batch, 0);
  std::vector<float> logits(batch * toy_vocab);
  device_step_buffers<T> eager, replayed;

  cudaStream_t stream{};
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cublasSetStream(handle, stream) == CUBLAS_STATUS_SUCCESS);
  const auto device_step = [&](dc::device_contiguous_kv_cache<T>& cache,
                               device_step_buffers<T>& d) {
    const auto& model = device_model;
    const auto& policy = device_policy;
    const auto* output = device_output;
    const index_t l = sparse;
    const cudaStream_t s = stream;
    // example-begin
    // one decode step on stream s: embed, layers < l, the gate, layers >= l, retention, logits
    dynllava::decode_step(dc::on_stream{s}, model, cache, policy, output, l, d.tokens.view(),
                          d.positions.view(), d.buffers(), d.logits.view());
    dynllava::advance_positions(dc::on_stream{s}, d.positions.view());
    // example-end
  };
  cudaGraph_t graph{};
  cudaGraphExec_t instance{};
  int kept = 0, dropped = 0;
  for (int s = 0; s < steps; ++s) {
    CAPTURE(s);
    tokens = tokens_at(s);
    eager.tokens.copy_from(make_host_span(std::as_const(tokens)));
    replayed.tokens.copy_from(make_host_span(std::as_const(tokens)));
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);  // copy_from runs on the legacy stream
    device_step(eager_cache, eager);
    if (s == 0) {
      device_step(graph_cache, replayed);  // eager once: nothing loads lazily inside the graph
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
      REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
      device_step(graph_cache, replayed);
      REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
      REQUIRE(cudaGraphInstantiate(&instance, graph, 0) == cudaSuccess);
    } else {
      REQUIRE(cudaGraphLaunch(instance, stream) == cudaSuccess);
    }
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);

    decode_step(host, host_model, host_cache, host_policy, host_output, sparse,
                make_host_span(std::as_const(tokens)), make_host_span(std::as_const(positions)),
                h.view(), make_host_span(logits));
    advance_positions(host, make_host_span(positions));

    for (auto* d : {&eager, &replayed}) {
      check_close(d->logits.to_host(), logits, tol);
      CHECK(d->positions.to_host() == positions);
      if (!gate) continue;
      const auto device_logits = d->gate_logits.to_host();
      check_close(device_logits, h.gate_logits, tol);
      const auto device_keep = d->keep.to_host();
      for (std::size_t b = 0; b < batch; ++b) {
        CHECK(device_keep[b] == (device_logits[2 * b] > device_logits[2 * b + 1] ? 1 : 0));
        // the inputs keep every margin clear of rounding, so the decisions agree with the host's
        REQUIRE(std::fabs(h.gate_logits[2 * b] - h.gate_logits[2 * b + 1]) > 1e-3f);
        CHECK(device_keep[b] == h.keep[b]);
      }
    }
    check_same_tokens(eager_cache, host_cache, tol);
    check_same_tokens(graph_cache, host_cache, tol);
    if (gate) {
      for (auto k : h.keep) (k != 0 ? kept : dropped) += 1;
    }
  }
  if (gate) {
    CHECK(kept > 0);
    CHECK(dropped > 0);
  }
  REQUIRE(cudaGraphExecDestroy(instance) == cudaSuccess);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);
  REQUIRE(cublasSetStream(handle, nullptr) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
}

predictor_config toy_predictor_config() {
  predictor_config c;
  c.hidden = toy_hidden;
  c.output_head = {16, 8, 8};
  return c;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("decode step: the CUDA instantiation (online gate) equals the host one, and replays") {
    const auto c = toy_predictor_config();
    // seed 9 gives this toy model both decisions (tests/unit/test_decode_step.cpp)
    const auto weights = random_output_predictor_weights(c, 9);
    const output_predictor host_output(c, weights);
    const test::host_weights wide = test::widen(weights);
    const dc::device_output_predictor<float> predictor(wide.view(c));
    test::cublas_handle handle;
    dc::output_predictor_scorer scorer{predictor.view(), handle.h, nullptr, 0};
    device_buffer<unsigned char> temp(scorer.workspace_bytes(batch));
    scorer.temp = temp.data();
    scorer.temp_bytes = temp.size();
    for (const index_t sparse : {0, 1, 2}) {
      CAPTURE(sparse);
      run_against_host<float>(online_gate_policy{sparse},
                              dc::device_online_gate_policy{online_gate_policy{sparse}},
                              &host_output, &scorer, sparse, 12, handle.h);
    }
  }

  TEST_CASE("decode step: StreamingLLM evictions on CUDA equal the host, and replay") {
    test::cublas_handle handle;
    const streaming_policy policy{1, 3};
    run_against_host<float>(policy, dc::device_streaming_policy{policy},
                            static_cast<const no_predictor*>(nullptr),
                            static_cast<const no_predictor*>(nullptr), 1, 10, handle.h);
  }

  TEST_CASE("decode step: an fp16 device cache follows the fp32 host step to fp16 rounding") {
    test::cublas_handle handle;
    const streaming_policy policy{1, 3};
    // no gate: a decision near its margin could flip under fp16 rounding; the evictions and the
    // cache lengths are exact, the keys, values and logits within fp16 rounding
    run_against_host<__half>(policy, dc::device_streaming_policy{policy},
                             static_cast<const no_predictor*>(nullptr),
                             static_cast<const no_predictor*>(nullptr), 1, 10, handle.h, 2e-2f);
  }

  TEST_CASE("decode step: host-visible extents are refused before anything is enqueued") {
    const toy_device_decoder<float> m;
    dc::device_contiguous_kv_cache<float> cache({toy_layers, batch, toy_hidden, capacity});
    device_step_buffers<float> d;
    const dc::device_online_gate_policy policy{online_gate_policy{1}};
    const auto* none = static_cast<const no_predictor*>(nullptr);
    const dc::on_stream exec{};
    const auto tokens = std::as_const(d.tokens).view();
    const auto positions = std::as_const(d.positions).view();
    CHECK_THROWS_WITH_AS(decode_step(exec, m, cache, policy, none, 1,
                                     device_span<const std::int32_t>(d.tokens.data(), batch - 1),
                                     positions, d.buffers(), d.logits.view()),
                         doctest::Contains("one token per sequence"), error);
    auto bad = d.buffers();
    bad.hidden = bad.hidden.subspan(0, toy_hidden);
    CHECK_THROWS_WITH_AS(
        decode_step(exec, m, cache, policy, none, 1, tokens, positions, bad, d.logits.view()),
        doctest::Contains("buf.hidden"), error);
    bad = d.buffers();
    bad.values = bad.values.subspan(0, toy_hidden);
    CHECK_THROWS_WITH_AS(
        decode_step(exec, m, cache, policy, none, 1, tokens, positions, bad, d.logits.view()),
        doctest::Contains("buf.keys and buf.values"), error);
    // an evicting policy needs room for batch * max_length kept tokens (lengths are on the device)
    CHECK(cache.max_length() == capacity);
    bad = d.buffers();
    bad.retained = bad.retained.subspan(0, bad.retained.size() - 1);
    const dc::device_streaming_policy streaming{streaming_policy{1, 3}};
    CHECK_THROWS_WITH_AS(
        decode_step(exec, m, cache, streaming, none, 1, tokens, positions, bad, d.logits.view()),
        doctest::Contains("batch * max_length = 240"), error);
    // the policy and the gate layer disagree (answered on the host)
    CHECK_THROWS_WITH_AS(decode_step(exec, m, cache, policy, none, 2, tokens, positions,
                                     d.buffers(), d.logits.view()),
                         doctest::Contains("layer 1 is below sparse_layer 2"), error);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(lengths_of(cache) ==
          std::vector<index_t>(static_cast<std::size_t>(toy_layers) * batch, 0));
  }
}
