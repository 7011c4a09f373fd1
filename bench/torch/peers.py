#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch peers of dynllava's CUDA benchmarks, on the same shapes, timed the same way.

  torch_index_select/{batch}/{hidden}   peer of bm_dynllava_cuda_gather: gather the kept rows of
                                        a pruned LLaVA batch (35 + 115 + 40 of 35 + 576 + 40 rows
                                        per sequence), fp16
  torch_topk_sort/{batch}/{n}/{k115}/{fp16}
                                        peer of bm_dynllava_cuda_topk: torch.topk (k = floor(0.2 n),
                                        or 115) then torch.sort of the kept positions; fp32 or fp16
                                        scores uniform in [-3, 3); batch * n <= 2^30

CUDA events around each call, L2 flushed before each call, median of repetitions (as many as
fit about half a second per shape, 3 to 50). Writes Google Benchmark's JSON layout so that
scripts/gpu_kit/report.py reads both, rewritten after every shape (a run cut short keeps what it
measured). `--grid kit` measures the GPU kit's shapes (those of its benchmark chunks, run.sh),
`--grid full` every shape above. Exit 77: no CUDA device.
"""
import argparse
import json
import os
import platform
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=50, help="most repetitions per shape")
    ap.add_argument("--grid", choices=("kit", "full"), default="full")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 77
    dev = torch.device("cuda")
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    flush = torch.empty(max(2 * l2, 1 << 21), dtype=torch.uint8, device=dev)

    def timed(fn):
        times = []
        fn()  # warm-up, then as many repetitions as fit about 0.5 s (3 at least)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        once = max(time.perf_counter() - t0, 1e-6)
        for i in range(max(3, min(args.iters, int(0.5 / once)))):
            flush.fill_(i & 0xFF)
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) * 1e3)  # us
        times.sort()
        return times[len(times) // 2]

    results = []
    context = dict(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host_name=platform.node(),
                   executable="bench/torch/peers.py", torch=torch.__version__,
                   cuda=torch.version.cuda, device=torch.cuda.get_device_name(0))

    def record(name, us, bytes_moved, **counters):
        results.append(dict(name=name + "_median", run_name=name, run_type="aggregate",
                            aggregate_name="median", real_time=us, cpu_time=us, time_unit="us",
                            bytes_per_second=bytes_moved / (us * 1e-6), **counters))
        with open(args.out + ".tmp", "w") as f:
            json.dump(dict(context=context, benchmarks=results), f, indent=1)
        os.replace(args.out + ".tmp", args.out)

    def in_kit(batch, n, k115, half):
        """The shapes of run.sh's benchmark chunks."""
        return ((n == 576 and k115 == 1) or (n == 1 << 24 and batch in (1, 64) and not k115
                                             and not half)
                or (batch in (8, 64) and n in (2048, 32768, 1 << 20) and not half))

    g = torch.Generator().manual_seed(1)
    for batch in (1, 8, 32):
        for hidden in (4096, 5120):
            rows_per_seq, kept = 35 + 576 + 40, []
            for b in range(batch):
                base = b * rows_per_seq
                image = torch.randperm(576, generator=g)[:115].sort().values + 35 + base
                kept += list(range(base, base + 35)) + image.tolist() + \
                    list(range(base + 611, base + rows_per_seq))
            idx = torch.tensor(kept, dtype=torch.int64, device=dev)
            src = torch.randn(batch * rows_per_seq, hidden, device=dev, dtype=torch.float16)
            out = torch.empty(len(kept), hidden, device=dev, dtype=torch.float16)
            us = timed(lambda: torch.index_select(src, 0, idx, out=out))
            record(f"torch_index_select/{batch}/{hidden}", us, 2 * out.numel() * 2,
                   batch=batch, hidden=hidden)

    for n in (576, 2048, 4096, 32768, 1 << 20, 1 << 24):
        for batch in (1, 8, 64, 256):
            if batch * n > 1 << 30:  # as bench_topk.cu: 256 x 2^24 exceeds the index type
                continue
            base = torch.rand(batch, n, device=dev) * 6 - 3  # as bench_topk.cu: uniform [-3, 3)
            for half in (0, 1):
                scores = base.half() if half else base
                for k115 in (0, 1):
                    if args.grid == "kit" and not in_kit(batch, n, k115, half):
                        continue
                    k = 115 if k115 else n // 5
                    us = timed(lambda: torch.sort(
                        torch.topk(scores, k, dim=1, sorted=False).indices, dim=1))
                    record(f"torch_topk_sort/{batch}/{n}/{k115}/{half}", us,
                           scores.numel() * scores.element_size(), batch=batch, n=n, k=k)

    print(f"{len(results)} results on {torch.cuda.get_device_name(0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
