#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch peer of bench/cpu/bench_llama.cpp: the same fp32 LLaMA math in eager PyTorch on the
CPU, one thread.

  prefill       600 tokens through 4 layers (hidden 1024, 8 heads of 128, SwiGLU MLP 2816), then
                the last row's logits (vocab 1000)
  decode_step   one new token at position 600 through the 4 layers over 600 cached tokens per
                layer (preallocated cache, written in place: no concatenation), then its logits

RMSNorm, rotate-half RoPE from precomputed cos/sin tables, causal multi-head attention via
F.scaled_dot_product_attention, SwiGLU MLP, no biases; random weights. Reports the median wall
time and the median process CPU time of --reps timed calls after one warm-up (CPU time: the
machine may be shared).

  taskset -c 1 python3 bench/torch/llama_peer.py [--reps 15] [--decode-reps 200]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

HIDDEN, HEADS, INTER, LAYERS, VOCAB, TOKENS = 1024, 8, 2816, 4, 1000, 600
HD = HIDDEN // HEADS
EPS, THETA = 1e-5, 10000.0


def rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def rope(x, cos, sin):  # x [heads, n, hd]; cos, sin [n, hd]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Llama:
    def __init__(self, seed=7):
        g = torch.Generator().manual_seed(seed)

        def lin(out, inp):
            k = 1.0 / inp ** 0.5
            return (torch.rand(out, inp, generator=g) * 2 - 1) * k

        def norm():
            return 1.0 + 0.1 * torch.randn(HIDDEN, generator=g)

        self.embed = torch.randn(VOCAB, HIDDEN, generator=g)
        self.layers = []
        for _ in range(LAYERS):
            self.layers.append(dict(attn_norm=norm(), wq=lin(HIDDEN, HIDDEN), wk=lin(HIDDEN, HIDDEN),
                                    wv=lin(HIDDEN, HIDDEN), wo=lin(HIDDEN, HIDDEN), mlp_norm=norm(),
                                    gate=lin(INTER, HIDDEN), up=lin(INTER, HIDDEN),
                                    down=lin(HIDDEN, INTER)))
        self.final_norm = norm()
        self.lm_head = lin(VOCAB, HIDDEN)
        inv_freq = THETA ** (-torch.arange(0, HD, 2, dtype=torch.float64) / HD)
        angles = torch.arange(4096, dtype=torch.float64)[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        self.cos, self.sin = angles.cos().float(), angles.sin().float()

    def layer(self, lw, h, positions, cache_k=None, cache_v=None, cached=0):
        """h [n, H]; cache_k/v [heads, cap, hd] hold `cached` tokens; returns h and the new k, v."""
        n = h.shape[0]
        x = rms_norm(h, lw["attn_norm"])
        cos, sin = self.cos[positions], self.sin[positions]
        q = rope(F.linear(x, lw["wq"]).view(n, HEADS, HD).transpose(0, 1), cos, sin)
        k = rope(F.linear(x, lw["wk"]).view(n, HEADS, HD).transpose(0, 1), cos, sin)
        v = F.linear(x, lw["wv"]).view(n, HEADS, HD).transpose(0, 1)
        if cache_k is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # one new row: it sees every cached token and itself
            cache_k[:, cached:cached + n] = k
            cache_v[:, cached:cached + n] = v
            att = F.scaled_dot_product_attention(q, cache_k[:, :cached + n], cache_v[:, :cached + n])
        h = h + F.linear(att.transpose(0, 1).reshape(n, HIDDEN), lw["wo"])
        x = rms_norm(h, lw["mlp_norm"])
        h = h + F.linear(F.silu(F.linear(x, lw["gate"])) * F.linear(x, lw["up"]), lw["down"])
        return h, k, v

    def logits(self, h):
        return F.linear(rms_norm(h, self.final_norm), self.lm_head)

    def prefill(self, ids, caches=None):
        h = self.embed[ids]
        positions = torch.arange(ids.shape[0])
        for i, lw in enumerate(self.layers):
            h, k, v = self.layer(lw, h, positions)
            if caches is not None:
                caches[i][0][:, :ids.shape[0]] = k
                caches[i][1][:, :ids.shape[0]] = v
        return self.logits(h[-1:])

    def decode_step(self, token, caches):
        h = self.embed[token]
        positions = torch.tensor([TOKENS])
        for i, lw in enumerate(self.layers):
            h, _, _ = self.layer(lw, h, positions, caches[i][0], caches[i][1], TOKENS)
        return self.logits(h)


def median_ms(fn, reps):
    """Median wall and CPU (process) milliseconds of `reps` calls after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15, help="timed prefills")
    ap.add_argument("--decode-reps", type=int, default=200, help="timed decode steps")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with torch.inference_mode():
        m = Llama()
        ids = (torch.arange(TOKENS) * 37) % VOCAB
        caches = [(torch.zeros(HEADS, TOKENS + 1, HD), torch.zeros(HEADS, TOKENS + 1, HD))
                  for _ in range(LAYERS)]
        m.prefill(ids, caches)
        token = torch.tensor([42])
        prefill_ms = median_ms(lambda: m.prefill(ids), args.reps)
        decode_ms = median_ms(lambda: m.decode_step(token, caches), args.decode_reps)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print(f"torch_llama_prefill      median wall {prefill_ms[0]:9.3f} ms  cpu {prefill_ms[1]:9.3f} ms  "
          f"({args.reps} reps, {TOKENS} tokens)")
    print(f"torch_llama_decode_step  median wall {decode_ms[0]:9.3f} ms  cpu {decode_ms[1]:9.3f} ms  "
          f"({args.decode_reps} reps, {TOKENS} cached)")


if __name__ == "__main__":
    main()
