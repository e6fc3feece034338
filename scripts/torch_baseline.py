#!/usr/bin/env python3
"""PyTorch baselines for GPU token sampling, on the shapes of lmsample_bench_gpu.

Times the usual PyTorch / vLLM-style samplers on logits [B, V] = randn * 4 (fp32 or bf16):

  greedy            torch.argmax
  temp_exp          softmax(logits / T) + exponential-race draw (argmax(probs / Exp(1)), vLLM's way)
  temp_multinomial  softmax(logits / T) + torch.multinomial
  topk50            torch.topk(50) + softmax + exponential-race draw
  topp0.9           vLLM's sort-based top-p: sort, softmax, cumsum, mask, scatter back, softmax, draw
  topk50_topp0.9    vLLM's sort-based top-k + top-p (apply_top_k_top_p), then softmax + draw
  minp0.05          softmax, mask p < 0.05 * p_max, softmax, draw

bf16 logits are converted to fp32 inside the timed region (as vLLM's sampler does). Each op is timed
with CUDA events, the L2 flushed before every run (a >= 2x L2 buffer rewritten, untimed), 20
warm-ups and the median of 100 runs. Prints a markdown table; --out writes CSV.

usage: python3 scripts/torch_baseline.py [--batch 1,8,32,128,512] [--vocab 151936] [--dtype fp32,bf16]
                                         [--ops ...] [--warmup 20] [--iters 100] [--out torch.csv]
                                         [--cuda-graph]
"""
import argparse
import csv
import sys

import torch

TEMPERATURE = 1.0
TOP_K = 50
TOP_P = 0.9
MIN_P = 0.05


def exp_race(probs, gen):
    # vLLM's random_sample: argmax(p / q) with q ~ Exp(1): a draw from p without a CPU sync.
    q = torch.empty_like(probs).exponential_(generator=gen)
    return probs.div_(q).argmax(dim=-1)


def op_greedy(logits, gen):
    return logits.argmax(dim=-1)


def op_temp_exp(logits, gen):
    x = logits.float() / TEMPERATURE
    return exp_race(torch.softmax(x, dim=-1), gen)


def op_temp_multinomial(logits, gen):
    x = logits.float() / TEMPERATURE
    return torch.multinomial(torch.softmax(x, dim=-1), 1, generator=gen).squeeze(-1)


def op_topk(logits, gen):
    vals, idx = torch.topk(logits.float(), TOP_K, dim=-1)
    probs = torch.softmax(vals / TEMPERATURE, dim=-1)
    choice = exp_race(probs, gen)
    return idx.gather(-1, choice.unsqueeze(-1)).squeeze(-1)


def apply_top_k_top_p(logits, k, p):
    # vLLM's sort-based apply_top_k_top_p (vllm/v1/sample/ops/topk_topp_sampler.py).
    logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
    if k is not None:
        top_k_mask = logits_sort.size(1) - k.to(torch.long)
        top_k_mask = logits_sort.gather(1, top_k_mask.unsqueeze(dim=1))
        top_k_mask = logits_sort < top_k_mask
        logits_sort.masked_fill_(top_k_mask, -float("inf"))
    if p is not None:
        probs_sort = logits_sort.softmax(dim=-1)
        probs_sum = torch.cumsum(probs_sort, dim=-1, out=probs_sort)
        top_p_mask = probs_sum <= 1 - p.unsqueeze(dim=1)
        top_p_mask[:, -1] = False
        logits_sort.masked_fill_(top_p_mask, -float("inf"))
    return logits_sort.scatter(dim=-1, index=logits_idx, src=logits_sort)


def make_topp(ps):
    def op(logits, gen):
        x = apply_top_k_top_p(logits.float() / TEMPERATURE, None, ps)
        return exp_race(x.softmax(dim=-1), gen)
    return op


def make_topk_topp(ks, ps):
    def op(logits, gen):
        x = apply_top_k_top_p(logits.float() / TEMPERATURE, ks, ps)
        return exp_race(x.softmax(dim=-1), gen)
    return op


def make_minp(mps):
    def op(logits, gen):
        x = logits.float() / TEMPERATURE
        probs = x.softmax(dim=-1)
        top = probs.amax(dim=-1, keepdim=True)
        x = x.masked_fill(probs < mps.unsqueeze(1) * top, -float("inf"))
        return exp_race(x.softmax(dim=-1), gen)
    return op


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1,8,32,128,512")
    ap.add_argument("--vocab", default="151936")
    ap.add_argument("--dtype", default="fp32,bf16")
    ap.add_argument("--ops", default="greedy,temp_exp,temp_multinomial,topk50,topp0.9,topk50_topp0.9,minp0.05")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="capture each op in a CUDA graph and time replays (no launch overhead)")
    a = ap.parse_args()

    if not torch.cuda.is_available():
        print("no CUDA device: torch.cuda.is_available() is False", file=sys.stderr)
        return 3
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 * 1024 * 1024)
    flush = torch.empty(max(2 * l2, 128 << 20), dtype=torch.uint8, device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(a.seed)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    device_name = f"{props.name} ({props.multi_processor_count} SMs, L2 {l2 / 1e6:.0f} MB)"
    print(f"# PyTorch {torch.__version__} sampling baselines on {device_name}")
    print(f"# CUDA events; L2 flushed before each run (untimed); {a.warmup} warm-ups, median of {a.iters} runs"
          f"{'; CUDA graph replays' if a.cuda_graph else ''}")
    print()
    print("| op | dtype | B | V | median µs | p10 µs | p90 µs | MB read | GB/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for dname in a.dtype.split(","):
        dt = dtypes[dname]
        for v in ints(a.vocab):
            for b in ints(a.batch):
                torch.manual_seed(a.seed + b * 7 + v)
                logits = (torch.randn(b, v, device=dev, dtype=torch.float32) * 4).to(dt)
                ks = torch.full((b,), TOP_K, device=dev, dtype=torch.int32)
                ps = torch.full((b,), TOP_P, device=dev, dtype=torch.float32)
                mps = torch.full((b,), MIN_P, device=dev, dtype=torch.float32)
                ops = {
                    "greedy": op_greedy,
                    "temp_exp": op_temp_exp,
                    "temp_multinomial": op_temp_multinomial,
                    "topk50": op_topk,
                    "topp0.9": make_topp(ps),
                    "topk50_topp0.9": make_topk_topp(ks, ps),
                    "minp0.05": make_minp(mps),
                }
                nbytes = logits.numel() * logits.element_size()
                for name in a.ops.split(","):
                    if name not in ops:
                        print(f"unknown op {name}", file=sys.stderr)
                        return 2
                    fn = ops[name]
                    # Graph capture uses the default generator (a custom one must be registered).
                    g_used = None if a.cuda_graph else gen
                    run = lambda: fn(logits, g_used)  # noqa: E731
                    if a.cuda_graph:
                        try:
                            s = torch.cuda.Stream()
                            s.wait_stream(torch.cuda.current_stream())
                            with torch.cuda.stream(s):
                                for _ in range(3):
                                    fn(logits, None)
                            torch.cuda.current_stream().wait_stream(s)
                            g = torch.cuda.CUDAGraph()
                            with torch.cuda.graph(g):
                                fn(logits, None)
                            run = g.replay
                        except Exception as e:  # noqa: BLE001
                            print(f"| {name} | {dname} | {b} | {v} | not capturable: {type(e).__name__} |"
                                  " | | | |", flush=True)
                            torch.cuda.synchronize()
                            continue
                    for i in range(a.warmup):
                        flush.fill_(i & 0xFF)
                        run()
                    starts = [torch.cuda.Event(enable_timing=True) for _ in range(a.iters)]
                    ends = [torch.cuda.Event(enable_timing=True) for _ in range(a.iters)]
                    for i in range(a.iters):
                        flush.fill_((i + 1) & 0xFF)
                        starts[i].record()
                        run()
                        ends[i].record()
                    torch.cuda.synchronize()
                    us = sorted(s.elapsed_time(e) * 1000.0 for s, e in zip(starts, ends))
                    n = len(us)
                    med = us[n // 2] if n % 2 else 0.5 * (us[n // 2 - 1] + us[n // 2])
                    p10 = us[min(n - 1, int(0.1 * (n - 1) + 0.5))]
                    p90 = us[min(n - 1, int(0.9 * (n - 1) + 0.5))]
                    gbps = nbytes / (med * 1e3)
                    print(f"| {name} | {dname} | {b} | {v} | {med:.1f} | {p10:.1f} | {p90:.1f} | "
                          f"{nbytes / 1e6:.1f} | {gbps:.0f} |", flush=True)
                    rows.append({"impl": "torch-graph" if a.cuda_graph else "torch", "op": name, "dtype": dname,
                                 "batch": b, "vocab": v, "median_us": f"{med:.3f}", "p10_us": f"{p10:.3f}",
                                 "p90_us": f"{p90:.3f}", "bytes": nbytes, "gbps": f"{gbps:.2f}",
                                 "device": device_name, "torch": torch.__version__})
                del logits
                torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["op"])
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
