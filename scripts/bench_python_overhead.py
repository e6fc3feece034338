#!/usr/bin/env python3
"""Host-side cost of one Python call of lmsample on a GPU (issue: at most 5 us of Python overhead
per call at B = 1), against calling the C++ API directly from the same process, and against one
plain torch op. Prints a Markdown table and writes it (and JSON) to --out.

Each figure is the median over 60 rounds of (host time of 100 back-to-back calls) / 100, taken
after warm-up, the variants interleaved round by round. Each round first queues a ~20 ms sleep
kernel, so the GPU never drains the queue during the round and no call waits for it: the figure
is the time the host spends issuing a call, not the kernel's time. flashinfer.sampling itself is
not timed: its wheel (101 MB, with tvm-ffi and cutlass-dsl dependencies) cannot be carried to the
GPU machine, which has no network.
"""

import argparse
import json
import statistics
import time

import torch

import lmsample
from lmsample import _lmsample as ext
from lmsample import flashinfer as lfi


CALLS = 100
ROUNDS = 60
SLEEP_CYCLES = 40_000_000  # ~20 ms of GPU time: longer than a round's host time


def one_round(fn):
    torch.cuda._sleep(SLEEP_CYCLES)
    t0 = time.perf_counter()
    for _ in range(CALLS):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) * 1e6 / CALLS


def measure(variants):
    """Host microseconds per call of each variant: the median over ROUNDS rounds, the variants
    interleaved round by round (so that drifts of the machine's speed hit them all alike), each
    round queued behind a ~20 ms sleep kernel so that no call waits for the GPU (a launch queue
    that drains slower than the host fills it would time the kernels instead). Also the
    quartiles, as the spread."""
    for fn in variants.values():
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    times = {k: [] for k in variants}
    for _ in range(ROUNDS):
        for k, fn in variants.items():
            times[k].append(fn())
    out = {}
    for k, t in times.items():
        q = statistics.quantiles(t, n=4)
        out[k] = (statistics.median(t), q[0], q[2])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--vocab", type=int, default=151936)
    args = ap.parse_args()
    dev = torch.device("cuda")
    v = args.vocab
    name = torch.cuda.get_device_name()
    rows = []
    for b in (1, 32):
        x = torch.randn(b, v, device=dev)
        tokens = torch.empty(b, dtype=torch.int32, device=dev)
        status = torch.empty(b, dtype=torch.int32, device=dev)
        seeds = torch.arange(b, dtype=torch.int64, device=dev)
        steps = torch.zeros(b, dtype=torch.int64, device=dev)
        temp_t = torch.full((b,), 0.7, device=dev)
        top_p_t = torch.full((b,), 0.9, device=dev)
        s = lmsample.Sampler(b, v, dev)
        stream = torch.cuda.current_stream().cuda_stream

        variants = {
            "C++ lmsample::sample() in a C++ loop": lambda: (
                torch.cuda._sleep(SLEEP_CYCLES),
                ext._bench_cpp_host_us(x, tokens, status, 0.7, 0.9, CALLS, stream),
                torch.cuda.synchronize(),
            )[1],
            "C++ call through one Python->C++ crossing (3 DLPack imports)": lambda: one_round(
                lambda: ext._bench_cpp_host_us(x, tokens, status, 0.7, 0.9, 1, stream)
            ),
            "Sampler.sample, scalar temperature / top_p / seed / step": lambda: one_round(
                lambda: s.sample(x, temperature=0.7, top_p=0.9, seed=1, step=2)
            ),
            "Sampler.sample, per-row tensors (temperature, top_p, seed, step)": lambda: one_round(
                lambda: s.sample(x, temperature=temp_t, top_p=top_p_t, seed=seeds, step=steps)
            ),
            "lmsample.sample (allocates its outputs), scalars": lambda: one_round(
                lambda: lmsample.sample(x, temperature=0.7, top_p=0.9, seed=1, step=2)
            ),
            "lmsample.flashinfer.top_k_top_p_sampling_from_logits": lambda: one_round(
                lambda: lfi.top_k_top_p_sampling_from_logits(x, 50, 0.9, seed=1, offset=2)
            ),
            "torch.argmax(x, dim=1) (one torch op, for scale)": lambda: one_round(
                lambda: torch.argmax(x, dim=1)
            ),
        }
        res = measure(variants)
        cpp_loop = res["C++ lmsample::sample() in a C++ loop"][0]
        for k, (med, q1, q3) in res.items():
            rows.append({"batch": b, "what": k, "host_us_per_call": med, "q1": q1, "q3": q3,
                         "cpp_loop_us": cpp_loop})  # fmt: skip
    lines = [
        f"# Host cost of one lmsample call from Python — {name}, V = {v}, fp32",
        "",
        f"torch {torch.__version__}, lmsample {lmsample.version()}; median (and quartiles) of "
        f"{ROUNDS} rounds of {CALLS} calls, each round queued behind a sleep kernel (host time "
        "only), the variants interleaved round by round. The last column is the row's time "
        "less the C++ loop's: the cost of coming from Python. Parameters: temperature 0.7, "
        "top-p 0.9 (top-k 50 for the flashinfer name).",
        "",
        "| B | call | host µs / call (median) | quartiles | over the C++ loop, µs |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        val = r["host_us_per_call"]
        lines.append(
            f"| {r['batch']} | {r['what']} | {val:.2f} | {r['q1']:.2f}–{r['q3']:.2f} | "
            f"{val - r['cpp_loop_us']:+.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump({"device": name, "vocab": v, "torch": torch.__version__, "rows": rows}, f,
                      indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
