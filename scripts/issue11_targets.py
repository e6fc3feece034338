#!/usr/bin/env python3
"""Issue 11's GPU targets, point by point, from one results folder.

Reads what scripts/gpu_results.sh-style calls write into results/gpu/<run>/: lmsample's
`bench_scalar.json` (and `bench_greedy.md`'s call for greedy, if present), FlashInfer's
`fi_bench.txt` and PyTorch's `torch.csv`, every ratio between numbers of one device call, and
prints the markdown tables that results/gpu/README.md quotes.

    python3 scripts/issue11_targets.py results/gpu/2026-12-01-h200-c5269b6
"""
import csv
import json
import re
import sys
from pathlib import Path

BATCHES = [1, 8, 32, 128, 512]


def lmsample_times(path):
    """{(op, logits, dtype, B): median µs} from a bench JSON or markdown table."""
    out = {}
    if path.suffix == ".json":
        for r in json.loads(path.read_text())["results"]:
            out[(r["op"], r["logits"], r["dtype"], r["batch"])] = r["median_us"]
        return out
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 6 and re.fullmatch(r"\d+", cells[3] or ""):
            out[(cells[0], cells[1], cells[2], int(cells[3]))] = float(cells[5])
    return out


def fi_times(path):
    """{(op, dist, B): median µs} from fi_bench's output."""
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and not line.startswith("#") and f[2].isdigit():
            out[(f[0], f[1], int(f[2]))] = float(f[4])
    return out


def torch_times(path):
    out = {}
    with path.open() as fh:
        for r in csv.DictReader(fh):
            out[(r["op"], r["dtype"], int(r["batch"]))] = float(r["median_us"])
    return out


def row(name, vals, fmt="{:.1f}"):
    return "| " + name + " | " + " | ".join(fmt.format(v) if v is not None else "" for v in vals) + " |"


def main(folder):
    d = Path(folder)
    lm = lmsample_times(d / "bench_scalar.json")
    fi = fi_times(d / "fi_bench.txt")
    greedy = lmsample_times(d / "bench_greedy.md") if (d / "bench_greedy.md").exists() else lm
    floor_g = fi_times(d / "fi_floor.txt") if (d / "fi_floor.txt").exists() else fi
    th = torch_times(d / "torch.csv") if (d / "torch.csv").exists() else {}

    def L(op, b, dt="f32", dist="peaked", src=lm):
        return src.get((op, dist, dt, b))

    def F(op, b, dist="peaked", src=fi):
        return src.get((op, dist, b))

    print("| | " + " | ".join(f"B={b}" for b in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    fl = [F("floor", b) for b in BATCHES]
    print(row("floor (FlashInfer's, fp32)", fl))
    g = [L("greedy", b, src=greedy) for b in BATCHES]
    am = [th.get(("greedy", "fp32", b)) for b in BATCHES]
    flg = [F("floor", b, src=floor_g) for b in BATCHES]
    print(row("greedy", g))
    print(row("`torch.argmax` (greedy's call)", am))
    print(row("greedy / argmax", [x / y if x and y else None for x, y in zip(g, am)], "{:.2f}"))
    print(row("greedy × floor (greedy's call)", [x / y for x, y in zip(g, flg)], "{:.2f}"))
    t = [L("temperature", b) for b in BATCHES]
    sfl = [F("sampling_from_logits", b) for b in BATCHES]
    print(row("temperature", t))
    print(row("FlashInfer `sampling_from_logits`", sfl))
    print(row("temperature / FlashInfer", [x / y for x, y in zip(t, sfl)], "{:.2f}"))
    print(row("temperature × floor", [x / y for x, y in zip(t, fl)], "{:.2f}"))
    for p, op in (("0.9", "top_p0.9"), ("0.95", "top_p0.95")):
        tp = [L(op, b) for b in BATCHES]
        print(row(f"top-p {p}", tp))
        if p == "0.9":
            sm = [F("softmax", b) + F("top_p_sampling", b) for b in BATCHES]
            alone = [F("top_p_sampling", b) for b in BATCHES]
            print(row("FlashInfer softmax + `top_p_sampling_from_probs` (p = 0.9)", sm))
            print(row("FlashInfer `top_p_sampling_from_probs` alone", alone))
            print(row("top-p / (softmax + top_p)", [x / y for x, y in zip(tp, sm)], "{:.2f}"))
            print(row("top-p / top_p alone", [x / y for x, y in zip(tp, alone)], "{:.2f}"))
    for name, op, peer in (
        ("top-k 50", "top_k50", "top_k_sampling"),
        ("min-p 0.05", "min_p0.05", "min_p_sampling"),
        ("top-k 50 + top-p 0.9", "top_k50+top_p0.9", "tktp_logits_kfirst_fast"),
    ):
        x = [L(op, b) for b in BATCHES]
        if peer == "tktp_logits_kfirst_fast":
            y = [F(peer, b) for b in BATCHES]
            label = f"{name}: FlashInfer (from logits, kfirst_fast) / lmsample"
        else:
            y = [F("softmax", b) + F(peer, b) for b in BATCHES]
            label = f"{name}: FlashInfer (softmax + {peer}) / lmsample"
        print(row(name, x))
        print(row(label, [b_ / a for a, b_ in zip(x, y)], "{:.2f}"))
        print(row(f"{name} × floor", [a / f for a, f in zip(x, fl)], "{:.2f}"))
    print()
    print("bf16 / fp32 (peaked), B = 128 and 512:")
    print()
    print("| op | B=128 | B=512 |")
    print("|---|---:|---:|")
    for op in ("greedy", "temperature", "top_k50", "top_p0.9", "min_p0.05", "top_k50+top_p0.9"):
        src = greedy if op == "greedy" else lm
        r = [L(op, b, "bf16", src=src) / L(op, b, src=src) for b in (128, 512)]
        print(f"| {op} | {r[0]:.2f} | {r[1]:.2f} |")
    print()
    print("B = 1, µs: " + ", ".join(
        f"{op} {L(op, 1, src=greedy if op == 'greedy' else lm):.1f}"
        for op in ("greedy", "temperature", "top_k50", "top_p0.9", "min_p0.05", "top_k50+top_p0.9")))


if __name__ == "__main__":
    main(sys.argv[1])
