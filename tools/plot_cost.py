#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""@file plot_cost.py
Plots the CSV of `dynllava_cost --csv` like the paper's Figure 1: (a) compute of decoding
without KV cache (prefill + every step up to output length T) and (b) KV-cache memory with KV
cache, against T, for dense LLaVA-1.5, FastV and Dynamic-LLaVA.

    build/cpu/tools/dynllava_cost --model 13b --batch 8 --csv docs/plots/cost_vs_output_length.csv
    /usr/bin/python3 tools/plot_cost.py docs/plots/cost_vs_output_length.csv \
        docs/plots/cost_vs_output_length.png

Needs matplotlib (Debian: python3-matplotlib).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SCHEDULES = [("dense", "LLaVA-1.5 (dense)", "tab:gray"),
             ("fastv", "FastV (K=3, 25% image)", "tab:blue"),
             ("dynamic-llava", "Dynamic-LLaVA (l=2, 20% image, 50% output)", "tab:red")]


def read(path):
    rows = defaultdict(list)
    meta = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            meta = {"model": r["model"], "batch": r["batch"], "prompt": r["prompt_tokens"]}
            rows[r["schedule"]].append(r)
    return rows, meta


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: plot_cost.py COST.csv OUT.png")
    rows, meta = read(argv[1])
    missing = [name for name, _, _ in SCHEDULES if name not in rows]
    if missing:
        sys.exit(f"plot_cost.py: {argv[1]} has no rows for {', '.join(missing)}")

    fig, (ax_flops, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, label, color in SCHEDULES:
        r = rows[name]
        t = [int(x["output_tokens"]) for x in r]
        flops = [float(x["total_flops_no_cache"]) / 1e15 for x in r]
        mem = [int(x["kv_cache_bytes"]) / 2**30 for x in r]
        ax_flops.plot(t, flops, label=label, color=color)
        ax_mem.plot(t, mem, label=label, color=color)
    dense_last = rows["dense"][-1]
    dyn_last = rows["dynamic-llava"][-1]
    ratio_flops = float(dyn_last["total_flops_no_cache"]) / float(dense_last["total_flops_no_cache"])
    ratio_mem = int(dyn_last["kv_cache_bytes"]) / int(dense_last["kv_cache_bytes"])

    title = f'{meta["model"]}, batch {meta["batch"]}, prompt {meta["prompt"]} tokens'
    ax_flops.set_title(f"(a) decoding without KV cache\n"
                       f"Dynamic-LLaVA / dense at T = {dense_last['output_tokens']}: "
                       f"{ratio_flops:.2f}")
    ax_flops.set_xlabel("output length T (tokens)")
    ax_flops.set_ylabel("prefill + decode PFLOPs (exact count)")
    ax_mem.set_title(f"(b) decoding with KV cache\n"
                     f"Dynamic-LLaVA / dense at T = {dense_last['output_tokens']}: {ratio_mem:.2f}")
    ax_mem.set_xlabel("output length T (tokens)")
    ax_mem.set_ylabel("KV-cache memory (GiB, fp16)")
    for ax in (ax_flops, ax_mem):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=120)
    print(f"wrote {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
