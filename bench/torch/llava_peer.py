#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""transformers peer of bench/cpu/bench_llava.cpp: LlavaForConditionalGeneration on the same two
models and the same shapes, fp32, CPU, `attn_implementation` sdpa (the default) unless --attn.

  tiny  tests/fixtures/llava/hf loaded with from_pretrained (dtype float32); peak RSS reported
        before and after the load (ru_maxrss, the process's peak resident set)
  mid   random weights: LLaMA hidden 2048, 16 layers, 16 heads, MLP 5632, vocab 32000; the CLIP
        ViT-L/14-336 tower built with the 23 layers LLaVA-1.5 runs (vision_feature_layer -1 of
        23 == -2 of 24, as bench/torch/clip_peer.py); mlp2x_gelu projector

Cases per model and thread count (torch.set_num_threads), as the C++ benchmark:
  encode   get_image_features of one random 336x336 image (tower + projector, 576 rows)
  prefill  one forward over 631 embedded rows (35 + 576 + 20) with use_cache, logits of the last
           row only (logits_to_keep=1)
  decode   16 one-token forwards with that KV cache (the prefill untimed); tokens/s
Median wall and process CPU time (all threads) of --reps timed calls after one warm-up.

  python3 bench/torch/llava_peer.py [--model tiny|mid|both] [--threads 1,2] [--reps 3]
                                    [--cases encode,prefill,decode]
"""
import argparse
import os
import resource
import statistics
import time

import torch
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration)

SYSTEM, INSTRUCTION, IMAGE_ROWS, DECODE_STEPS = 35, 20, 576, 16
HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "..", "tests", "fixtures", "llava", "hf")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def timed(fn, reps, setup=None):
    """Median (wall ms, cpu ms) of reps calls after a warm-up; setup() runs untimed first."""
    def once():
        arg = setup() if setup else None
        t0, c0 = time.perf_counter(), time.process_time()
        fn(arg)
        return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
    once()
    runs = [once() for _ in range(reps)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def mid_model(attn):
    text = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
                       num_key_value_heads=16, intermediate_size=5632, vocab_size=32000,
                       rms_norm_eps=1e-5, max_position_embeddings=4096)
    vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024,
                              num_hidden_layers=23, num_attention_heads=16,
                              intermediate_size=4096, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5)
    cfg = LlavaConfig(text_config=text, vision_config=vision, vision_feature_layer=-1,
                      vision_feature_select_strategy="default", projector_hidden_act="gelu",
                      image_token_index=31999, attn_implementation=attn)
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(cfg).eval().float()


def run(name, model, reps, threads, cases=("encode", "prefill", "decode")):
    torch.set_num_threads(threads)
    cfg = model.config
    vocab = cfg.text_config.vocab_size
    hidden = cfg.text_config.hidden_size
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(1, 3, 336, 336, generator=g)
    rows = SYSTEM + IMAGE_ROWS + INSTRUCTION
    embeds = torch.randn(1, rows, hidden, generator=g)
    results = {}

    with torch.inference_mode():
        if "encode" in cases:
            results["encode"] = timed(
                lambda _: model.model.get_image_features(pixel_values=pixels), reps)

        def prefill(_=None):
            return model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)

        if "prefill" in cases:
            results["prefill"] = timed(prefill, reps)

        def decode(out):
            past = out.past_key_values
            for i in range(DECODE_STEPS):
                tok = torch.tensor([[3 + (i * 29) % (vocab - 3)]])
                out = model(input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values

        if "decode" in cases:
            results["decode"] = timed(decode, reps, setup=prefill)

    for case, (wall, cpu) in results.items():
        unit = ""
        if case == "prefill":
            unit = f"  {rows / wall * 1e3:10.1f} rows/s"
        elif case == "decode":
            unit = f"  {DECODE_STEPS / wall * 1e3:10.1f} tokens/s"
        print(f"torch_llava_{name}_{case}/threads:{threads}  median wall {wall:10.2f} ms  "
              f"cpu {cpu:10.2f} ms{unit}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny", "mid", "both"], default="both")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--cases", default="encode,prefill,decode",
                    help="comma-separated subset of encode, prefill, decode")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    cases = tuple(args.cases.split(","))
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"attention {args.attn}, fp32")
    if args.model in ("tiny", "both"):
        before = peak_rss_mb()
        model = LlavaForConditionalGeneration.from_pretrained(
            TINY, dtype=torch.float32, attn_implementation=args.attn).eval()
        print(f"torch_llava_tiny_load  peak_rss_before {before:.1f} MB  "
              f"peak_rss_after {peak_rss_mb():.1f} MB", flush=True)
        for t in threads:
            run("tiny", model, max(args.reps, 10), t, cases)
        del model
    if args.model in ("mid", "both"):
        t0 = time.perf_counter()
        model = mid_model(args.attn)
        print(f"torch_llava_mid_build  {time.perf_counter() - t0:.1f} s  "
              f"peak_rss {peak_rss_mb():.1f} MB", flush=True)
        for t in threads:
            run("mid", model, args.reps, t, cases)


if __name__ == "__main__":
    main()
