#!/usr/bin/env python3
"""Host-side cost of one Python call of lmsample on a GPU (issue: at most 5 us of Python overhead
per call at B = 1), against calling the C++ API directly from the same process, and against one
plain torch op. Prints a Markdown table and writes it (and JSON) to --out.

Each figure is the median over 30 rounds of (host time of 100 back-to-back calls) / 100, taken
after warm-up. Each round first queues a ~20 ms sleep kernel, so the GPU never drains the queue
during the round and no call waits for it: the figure is the time the host spends issuing a
call, not the kernel's time. Rounds are separated by a device synchronisation.
"""

import argparse
import json
import statistics
import time

import torch

import lmsample
from lmsample import _lmsample as ext


CALLS = 100
ROUNDS = 30
SLEEP_CYCLES = 40_000_000  # ~20 ms of GPU time: longer than a round's host time


def per_call_us(fn):
    """Host microseconds per call, with the GPU held busy by a sleep kernel queued first, so
    that no call waits for the GPU (a launch queue that drains slower than the host fills it
    would time the kernels instead)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(ROUNDS):
        torch.cuda._sleep(SLEEP_CYCLES)
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        out.append((t1 - t0) * 1e6 / CALLS)
    return statistics.median(out)


def cpp_loop_us(x, tokens, status, stream):
    out = []
    for _ in range(ROUNDS):
        torch.cuda._sleep(SLEEP_CYCLES)
        out.append(ext._bench_cpp_host_us(x, tokens, status, 0.7, 0.9, CALLS, stream))
        torch.cuda.synchronize()
    return statistics.median(out)


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

        cpp = per_call_us(lambda: ext._bench_cpp_host_us(x, tokens, status, 0.7, 0.9, 1, stream))
        cpp_loop = cpp_loop_us(x, tokens, status, stream)
        res = {
            "C++ lmsample::sample() in a C++ loop": cpp_loop,
            "C++ call through one Python->C++ crossing": cpp,
            "Sampler.sample, scalar temperature / top_p / seed / step": per_call_us(
                lambda: s.sample(x, temperature=0.7, top_p=0.9, seed=1, step=2)
            ),
            "Sampler.sample, per-row tensors (temperature, top_p, seed, step)": per_call_us(
                lambda: s.sample(x, temperature=temp_t, top_p=top_p_t, seed=seeds, step=steps)
            ),
            "lmsample.sample (allocates its outputs), scalars": per_call_us(
                lambda: lmsample.sample(x, temperature=0.7, top_p=0.9, seed=1, step=2)
            ),
            "torch.argmax(x, dim=1) (one torch op, for scale)": per_call_us(
                lambda: torch.argmax(x, dim=1)
            ),
        }
        try:
            from lmsample import flashinfer as lfi

            res["lmsample.flashinfer.top_k_top_p_sampling_from_logits"] = per_call_us(
                lambda: lfi.top_k_top_p_sampling_from_logits(x, 50, 0.9, seed=1, offset=2)
            )
        except Exception as e:  # noqa: BLE001 -- reported, not hidden
            res["lmsample.flashinfer.top_k_top_p_sampling_from_logits"] = f"failed: {e}"
        for k, val in res.items():
            rows.append({"batch": b, "what": k, "host_us_per_call": val, "cpp_loop_us": cpp_loop})
    lines = [
        f"# Host cost of one lmsample call from Python — {name}, V = {v}, fp32",
        "",
        f"torch {torch.__version__}, lmsample {lmsample.version()}; median of 30 rounds of 100 "
        "calls queued behind a sleep kernel (host time only). Overhead = row − the C++ loop's "
        "figure. The parameters: temperature 0.7, top-p 0.9.",
        "",
        "| B | call | host µs / call | Python overhead µs |",
        "|---:|---|---:|---:|",
    ]
    for r in rows:
        val = r["host_us_per_call"]
        if isinstance(val, float):
            lines.append(
                f"| {r['batch']} | {r['what']} | {val:.2f} | {val - r['cpp_loop_us']:+.2f} |"
            )
        else:
            lines.append(f"| {r['batch']} | {r['what']} | {val} | |")
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
