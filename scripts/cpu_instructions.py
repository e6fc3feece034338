#!/usr/bin/env python3
"""Instructions per row of the CPU backend, by function, under valgrind's callgrind.

Callgrind counts instructions (not time), so the numbers repeat on a noisy machine: this is how
results/cpu/ explains where the CPU backend's time per row goes. Runs lmsample_bench_cpu once per
op (1 iteration: 2 calls of 8 rows each, V = 151,936, N(0,1)*4 logits, one thread) and prints,
per op, the instructions per row and per token of lmsample::cpu::sample and of the functions
under it that take at least 3% of it.

    python3 scripts/cpu_instructions.py build-bench/bench/lmsample_bench_cpu
"""
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

OPS = ["greedy", "temp1", "topk50", "topp0.9", "minp0.05", "topk50_topp0.9"]
V = 151936


def parse(path):
    """Inclusive instruction counts and call counts per function of a callgrind file."""
    names, self_ir, incl, calls = {}, defaultdict(int), defaultdict(int), defaultdict(int)
    fn = cfn = None
    pending_call = False
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^(fn|cfn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1) == "fn":
                fn = m.group(2)
            else:
                cfn = m.group(2)
            continue
        m = re.match(r"^calls=(\d+)", line)
        if m:
            calls[cfn] += int(m.group(1))
            pending_call = True
            continue
        m = re.match(r"^[+-]?\d+ (\d+)$", line) or re.match(r"^\* (\d+)$", line)
        if m:
            if pending_call:
                incl[(fn, cfn)] += int(m.group(1))
                pending_call = False
            else:
                self_ir[fn] += int(m.group(1))
    total = defaultdict(int)  # inclusive cost of each callee summed over its call sites
    for (_, c), ir in incl.items():
        total[c] += ir
    return names, total, calls


def main(binary):
    for op in OPS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary,
                 f"--benchmark_filter=impl:cpu/op:{op}/dtype:f32/logits:gauss/V:{V}/cpu_threads:1/",
                 "--benchmark_min_time=0.001"],
                check=True, capture_output=True)
            names, total, calls = parse(out)
        by_name = defaultdict(int)
        call_by_name = defaultdict(int)
        for k, ir in total.items():
            by_name[names.get(k, k)] += ir
            call_by_name[names.get(k, k)] += calls[k]
        top = [n for n in by_name if n.startswith("lmsample::cpu::sample_rows(") or
               n.startswith("lmsample::cpu::avx2::sample_row(")]
        if not top:
            print(f"{op}: no sample_row found")
            continue
        root = top[0]
        rows = call_by_name[root]
        ir_row = by_name[root] / rows
        print(f"\n{op}: {ir_row / 1e6:.2f} M instructions a row ({ir_row / V:.1f} a token), {rows} rows")
        parts = sorted(((ir, n) for n, ir in by_name.items()
                        if "lmsample::cpu" in n and n != root and "sample(" not in n and
                        ir / rows >= 0.03 * ir_row), reverse=True)
        for ir, n in parts[:8]:
            short = re.sub(r"\(.*", "", re.sub(r"lmsample::cpu::avx2::\(anonymous namespace\)::", "", n))
            short = re.sub(r"^.*?(\w+)<", r"\1<", short)
            print(f"  {ir / rows / 1e6:6.2f} M  {ir / rows / V:5.1f}/token  {short[:70]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build-bench/bench/lmsample_bench_cpu")
