#!/usr/bin/env python3
"""Host microseconds per call of lmsample.sample() (temperature alone, and temperature + top_p)
and of Sampler.sample() (temperature alone) on a CUDA tensor, B = 1, V = 151,936: each figure is
the median over 40 rounds of 100 back-to-back calls queued behind a ~20 ms sleep kernel, so the
host never waits for the GPU inside a round (as scripts/bench_python_overhead.py does)."""

import statistics
import time

import torch

import lmsample


def main():
    x = torch.randn(1, 151936, device="cuda")
    smp = lmsample.Sampler(1, 151936, "cuda", framework="torch")
    variants = {
        "sample(), temperature alone": lambda: lmsample.sample(x, temperature=0.7, seed=1, step=2),
        "sample(), temperature + top_p": lambda: lmsample.sample(
            x, temperature=0.7, top_p=0.9, seed=1, step=2
        ),
        "Sampler.sample(), temperature alone": lambda: smp.sample(
            x, temperature=0.7, seed=1, step=2
        ),
    }
    for f in variants.values():
        for _ in range(50):
            f()
    torch.cuda.synchronize()
    res = {k: [] for k in variants}
    for _ in range(40):
        for k, f in variants.items():
            torch.cuda._sleep(int(2e7))
            t0 = time.perf_counter()
            for _ in range(100):
                f()
            res[k].append((time.perf_counter() - t0) / 100 * 1e6)
            torch.cuda.synchronize()
    for k, v in res.items():
        print(f"{k}: {statistics.median(v):.1f} us host per call")


if __name__ == "__main__":
    main()
