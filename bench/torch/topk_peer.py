#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch CPU peer of bench/cpu/bench_topk.cpp: budgeted top-k per sequence, one thread.

  torch_topk_sort/{batch}/{n}   torch.topk(scores, k = floor(0.2 n), dim=1, sorted=False), then
                                torch.sort of the kept indices (ascending positions, as
                                cpu::topk returns them); fp32 normal scores, [batch, n]

torch.set_num_threads(1). Each repetition times `--iters` calls (after a warm-up call) and
reports the mean per call; the median of `--repetitions` repetitions is printed as a table and,
with --out, written in Google Benchmark's JSON layout (aggregate "median", real and CPU time).
Note: torch breaks ties by its own order, not by position; on continuous random scores there
are no ties, so the kept sets equal cpu::topk's.
"""
import argparse
import json
import platform
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="write Google Benchmark JSON here")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per repetition")
    ap.add_argument("--shapes", default="1x576,8x576,64x576,1x4096,8x4096,64x4096,64x65536",
                    help="comma-separated batch x n")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'benchmark':<28} {'median real':>12} {'median cpu':>12}")
    for shape in args.shapes.split(","):
        batch, n = (int(v) for v in shape.split("x"))
        k = int(n * 0.2)
        g = torch.Generator().manual_seed(42)
        scores = torch.randn(batch, n, generator=g, dtype=torch.float32)

        def call():
            idx = torch.topk(scores, k, dim=1, sorted=False).indices
            return torch.sort(idx, dim=1).values

        call()  # warm-up
        t0 = time.perf_counter()
        call()
        once = max(time.perf_counter() - t0, 1e-7)
        iters = max(1, int(args.min_time / once))
        real, cpu = [], []
        for _ in range(args.repetitions):
            r0, c0 = time.perf_counter(), time.process_time()
            for _ in range(iters):
                call()
            r1, c1 = time.perf_counter(), time.process_time()
            real.append((r1 - r0) / iters * 1e9)
            cpu.append((c1 - c0) / iters * 1e9)
        name = f"torch_topk_sort/{batch}/{n}"
        rt, ct = statistics.median(real), statistics.median(cpu)
        print(f"{name:<28} {rt / 1e3:>9.1f} us {ct / 1e3:>9.1f} us")
        results.append(dict(name=name + "_median", run_name=name, run_type="aggregate",
                            aggregate_name="median", repetitions=args.repetitions,
                            iterations=iters, real_time=rt, cpu_time=ct, time_unit="ns",
                            items_per_second=batch * n / (rt * 1e-9), batch=batch, n=n, k=k))
    if args.out:
        doc = dict(context=dict(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                host_name=platform.node(), executable="bench/torch/topk_peer.py",
                                torch=torch.__version__, num_threads=torch.get_num_threads()),
                   benchmarks=results)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
