#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""GPU kit, step 3 (back on the CPU machine): benchmark JSON -> Markdown tables + PNG plots.

  /usr/bin/python3 scripts/gpu_kit/report.py RESULTS/bench_cuda.json RESULTS/bench_torch.json \
      --device "NVIDIA H100 80GB HBM3" --commit abc1234 --command "bash scripts/gpu_kit/run.sh \$OUT" \
      --plot-dir docs/plots --append docs/benchmarks.md

Reads Google Benchmark JSON (and the PyTorch peers' JSON, which uses the same layout). Each
dynllava benchmark is paired with the baselines of its group that have the same arguments;
"ratio" = baseline time / dynllava time (above 1: dynllava is faster); a baseline without
arguments (an empty launch) pairs with every row. Aggregates use the median when present. One PNG per group (time against arguments, log scale).
"""
import argparse
import json
import os
import re
import sys
from collections import OrderedDict

# subject benchmark -> (title, argument names, baselines in the same run)
GROUPS = OrderedDict([
    ("bm_dynllava_cuda_gather", ("CUDA gather of the kept rows (fp16)", ["batch", "hidden"],
                                 ["bm_baseline_memcpy", "torch_index_select"])),
    ("bm_dynllava_cuda_topk", ("CUDA budgeted top-k (k115: 0 = k of 20% n, 1 = k 115)",
                               ["batch", "n", "k115", "fp16"],
                               ["bm_baseline_empty_launch", "bm_baseline_copy_scores",
                                "bm_cub_segmented_sort_topk", "bm_thrust_sort",
                                "torch_topk_sort"])),
    ("bm_dynllava_cuda_gated_append", ("CUDA gated append of one decode step (fp16, width 4096, "
                                       "half the tokens admitted)", ["batch", "paged"],
                                       ["bm_dense_append", "bm_baseline_copy_rows"])),
    ("bm_dynllava_cuda_image_predictor", ("CUDA image predictor vs one dense LLaMA-7B layer's "
                                          "GEMMs over the same 576 x batch tokens (fp16)",
                                          ["batch"], ["bm_dense_layer_prefill"])),
    ("bm_dynllava_cuda_output_predictor", ("CUDA output predictor vs one dense LLaMA-7B layer's "
                                           "GEMMs over the same decode rows (fp16)", ["batch"],
                                           ["bm_dense_layer_decode"])),
    ("bm_dynllava_cpu_topk", ("CPU budgeted top-k (ratio 0.2)", ["batch", "n"],
                              ["bm_baseline_partial_sort"])),
])
UNIT = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def load(paths):
    """-> {family: {args_tuple: time_us}}, contexts"""
    times, contexts = {}, []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        contexts.append(doc.get("context", {}))
        per = {}
        for b in doc.get("benchmarks", []):
            if b.get("error_occurred"):
                continue
            name = b.get("run_name") or b["name"]
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") != "median":
                    continue
            parts = name.split("/")
            family = parts[0]
            args = tuple(int(float(p)) for p in parts[1:] if re.fullmatch(r"[0-9.]+", p))
            t = b["real_time"] * UNIT[b.get("time_unit", "ns")]
            per.setdefault((family, args), []).append((b.get("run_type") == "aggregate", t))
        for (family, args), vals in per.items():
            agg = [t for is_agg, t in vals if is_agg]
            ts = agg or [t for _, t in vals]
            times.setdefault(family, {})[args] = sum(ts) / len(ts)
    return times, contexts


def fmt_time(us):
    if us >= 1e3:
        return f"{us / 1e3:.3g} ms"
    return f"{us:.3g} us"


def tables(times):
    out, groups = [], []
    for subject, (title, argnames, baselines) in GROUPS.items():
        if subject not in times:
            continue
        present = [b for b in baselines if b in times]
        header = " x ".join(argnames)
        out.append(f"### {title}\n")
        cols = [f"`{subject}`"] + [f"`{b}`" for b in present] + [f"ratio vs `{b}`" for b in present]
        out.append(f"| {header} | " + " | ".join(cols) + " |")
        out.append("|" + "---|" * (1 + len(cols)))
        for args in sorted(times[subject]):
            t = times[subject][args]
            row = [" x ".join(map(str, args)), fmt_time(t)]
            base = [times[b].get(args, times[b].get(())) for b in present]
            row += [fmt_time(v) if v is not None else "-" for v in base]
            row += [f"{v / t:.2f}x" if v is not None else "-" for v in base]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        groups.append((subject, title, argnames, present))
    return "\n".join(out), groups


def plot(times, groups, plot_dir, title_tag, file_tag):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    os.makedirs(plot_dir, exist_ok=True)
    for subject, title, argnames, present in groups:
        keys = sorted(times[subject])
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) + 3), 4))
        names = [subject] + present
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ys = [times[name].get(k, times[name].get((), float("nan"))) for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], ys, width, label=name)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))])
        ax.set_xticklabels([" x ".join(map(str, k)) for k in keys], rotation=30, ha="right")
        ax.set_xlabel(" x ".join(argnames))
        ax.set_yscale("log")
        ax.set_ylabel("time per call (us, log)")
        ax.set_title(f"{title} [{title_tag}]")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(plot_dir, f"{subject}-{file_tag}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+")
    ap.add_argument("--summary", default=None,
                    help="the run's summary.log: device and kit commit are read from it")
    ap.add_argument("--device", default=None)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--command", required=True)
    ap.add_argument("--date", default=None)
    ap.add_argument("--plot-dir", default=None)
    ap.add_argument("--out", default=None, help="write the Markdown section to this file")
    ap.add_argument("--append", default=None, help="append the Markdown section to this file")
    a = ap.parse_args()
    if a.summary:
        with open(a.summary) as f:
            for line in f:
                if line.startswith("device: ") and not a.device:
                    a.device = line[len("device: "):].strip()
                if line.startswith("kit: commit: ") and not a.commit:
                    a.commit = line[len("kit: commit: "):].strip()
    if not a.device or not a.commit:
        ap.error("--device and --commit are required (or --summary with those lines)")
    times, contexts = load(a.json)
    body, groups = tables(times)
    if not groups:
        print("report: no dynllava benchmark results in " + ", ".join(a.json), file=sys.stderr)
        return 1
    date = a.date or next((c.get("date") for c in contexts if c.get("date")), "unknown date")
    lines = [f"## {a.device}, {date[:10]}, commit `{a.commit}`\n",
             f"- Command: `{a.command}`",
             f"- Inputs: {', '.join(os.path.basename(p) for p in a.json)}; ratio = baseline time / dynllava time, same run.",
             "- Google Benchmark 1.7.1 from Debian labels itself a DEBUG build; the measured code is a release build.",
             ""]
    if a.plot_dir:
        tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{a.device}-{date[:10]}").strip("-").lower()
        for p in plot(times, groups, a.plot_dir, a.device, tag):
            rel = os.path.relpath(p, os.path.dirname(a.append or a.out or "."))
            lines.append(f"![{os.path.basename(p)}]({rel})")
        lines.append("")
    text = "\n".join(lines) + "\n" + body
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
