#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch peer of bench/cpu/bench_clip.cpp: transformers' CLIPVisionModel at the CLIP
ViT-L/14-336 shape (hidden 1024, 16 heads, MLP 4096, quick_gelu, 336 px, patch 14) built with 23
layers, i.e. what LLaVA-1.5 runs for `mm_vision_select_layer = -2`; one random image, the last
hidden state (before post_layernorm), class token dropped. Random weights, fp32, eager
attention, CPU, one thread by default. Reports the median wall time and the median process CPU
time of --reps timed calls after one warm-up (CPU time: the machine may be shared).

  taskset -c 1 python3 bench/torch/clip_peer.py [--reps 3] [--threads 1]
"""
import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel


def median_ms(fn, reps):
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, num_hidden_layers=23,
                           num_attention_heads=16, intermediate_size=4096,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5,
                           attn_implementation="eager")
    model = CLIPVisionModel(cfg).eval().float()
    pixels = torch.randn(1, 3, 336, 336)

    def encode():
        with torch.inference_mode():
            out = model(pixel_values=pixels, output_hidden_states=True)
            return out.hidden_states[-1][:, 1:]

    wall, cpu = median_ms(encode, args.reps)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, layers 23")
    print(f"torch_clip_vit_l14_336_encode  median wall {wall:9.1f} ms  cpu {cpu:9.1f} ms")


if __name__ == "__main__":
    main()
