#!/usr/bin/env bash
# Builds the CPU benchmarks (Release) and runs them; writes results/cpu/<date>-<machine>.json
# (Google Benchmark's JSON) and results/cpu/<date>-<machine>.md (tables).
#
# Environment (all optional):
#   BUILD_DIR  build directory              (default: build-bench)
#   REPS       repetitions per case         (default: 5; the tables report the median)
#   MIN_TIME   seconds per repetition       (default: 0.2)
#   FILTER     --benchmark_filter regex     (default: all cases)
#   MACHINE    machine label in file names  (default: from the CPU model and core count)
#   OUT_DIR    where results go             (default: results/cpu)
#   QUIET_WAIT seconds to wait for the 1-minute load average to drop below 0.5 before running
#              (default: 0 = don't wait; the report flags a busy machine either way)
# Takes about 4-6 minutes on a 2-core VM with the defaults.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build_dir="${BUILD_DIR:-build-bench}"
reps="${REPS:-5}"
min_time="${MIN_TIME:-0.2}"
filter="${FILTER:-.}"
out_dir="${OUT_DIR:-results/cpu}"

cpu_model="$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/ *$//')"
cpu_model="${cpu_model:-unknown CPU}"
nproc_all="$(nproc --all)"
slug="$(printf '%s' "$cpu_model" | tr '[:upper:]' '[:lower:]' | sed 's/([^)]*)//g; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//')"
machine="${MACHINE:-${slug}-${nproc_all}c}"
stamp="$(date -u +%Y-%m-%d)"
base="$out_dir/$stamp-$machine"
compiler="$(${CXX:-c++} --version | head -n1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo uncommitted)"
if [ -n "$(git status --porcelain 2>/dev/null | head -n1)" ]; then commit="$commit+dirty"; fi

echo "== building $build_dir (Release)"
# CUDA off: these are CPU benchmarks, and the CPU code is the same with or without the GPU backend.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DLMSAMPLE_BENCH=ON -DLMSAMPLE_CUDA=OFF >/dev/null
cmake --build "$build_dir" -j "$nproc_all" --target lmsample_bench_cpu
bench="$build_dir/bench/lmsample_bench_cpu"

mkdir -p "$out_dir"
quiet_wait="${QUIET_WAIT:-0}"
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while awk -v l="$(load1)" 'BEGIN { exit !(l >= 0.5) }' && [ "$waited" -lt "$quiet_wait" ]; do
  [ "$waited" = 0 ] && echo "== waiting up to ${quiet_wait}s for the machine to go quiet (load $(load1))"
  sleep 10
  waited=$((waited + 10))
done
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== running on: $cpu_model, $nproc_all CPUs (load average $load_before)"
# Commas separate --benchmark_context entries, so none may appear in the values.
# A failed case (e.g. a disagreement with the reference) makes the run exit 1 after the report.
bench_rc=0
"$bench" \
  --benchmark_filter="$filter" \
  --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true \
  --benchmark_min_time="$min_time" \
  --benchmark_out="$base.json" \
  --benchmark_out_format=json \
  --benchmark_context="cpu_model=${cpu_model//,/ },cpus=$nproc_all,compiler=${compiler//,/ },commit=$commit,build_type=Release,load_avg_before=${load_before// //}" || bench_rc=$?
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

if ! command -v python3 >/dev/null; then
  echo "python3 not found: wrote $base.json only" >&2
  exit "$bench_rc"
fi

python3 - "$base.json" "$base.md" "$reps" "$min_time" "$load_after" <<'PY'
import json, re, sys
from collections import defaultdict

json_path, md_path, reps, min_time, load_after = sys.argv[1:6]
doc = json.load(open(json_path))
ctx = doc["context"]

# run_name -> {aggregate: entry}
runs = defaultdict(dict)
errors = {}
for b in doc["benchmarks"]:
    name = b.get("run_name", b["name"])
    if b.get("error_occurred"):
        errors[name] = b.get("error_message", "error")
        continue
    runs[name][b.get("aggregate_name", "iteration")] = b

def parse(name):
    fields = dict(re.findall(r"([A-Za-z_]+):([^/]+)", name))
    return (fields["impl"], fields["op"], fields["dtype"], fields["logits"], int(fields["V"]),
            int(fields["cpu_threads"]))

def stat(name, key, agg="median"):
    r = runs.get(name, {})
    e = r.get(agg) or r.get("iteration")
    return None if e is None else e.get(key)

table = {}
for name in list(runs) + list(errors):
    table[parse(name)] = name

def fmt(v, nd=1):
    return "—" if v is None else f"{v:,.{nd}f}"

def cv(name):
    c = stat(name, "us_per_row", "cv")
    return "" if c is None else f" ±{100 * c:.0f}%"

ops = []
for k in table:
    if k[1] not in ops:
        ops.append(k[1])
order = ["greedy", "temp1", "topk50", "topp0.9", "minp0.05", "topk50_topp0.9",
         "topk50_topp0.9_logprobs20"]
ops.sort(key=lambda o: order.index(o) if o in order else len(order))
labels = {"greedy": "greedy (T=0)", "temp1": "temperature only (T=1)", "topk50": "top-k 50",
          "topp0.9": "top-p 0.9", "minp0.05": "min-p 0.05", "topk50_topp0.9": "top-k 50 + top-p 0.9",
          "topk50_topp0.9_logprobs20": "top-k 50 + top-p 0.9 + logprobs (top 20)"}

L = []
L.append(f"# CPU benchmark: lmsample CPU backend vs std::sort reference")
L.append("")
L.append(f"* date (UTC): {ctx.get('date', '?')}; lmsample {ctx.get('lmsample_version', '?')}, "
         f"commit {ctx.get('commit', '?')}")
L.append(f"* CPU: {ctx.get('cpu_model', '?')}, {ctx.get('cpus', ctx.get('num_cpus', '?'))} logical CPUs "
         f"({ctx.get('mhz_per_cpu', '?')} MHz reported)")
caches = ", ".join(f"L{c['level']} {c['type'].lower()} {c['size'] // 1024} KiB"
                   + (f" (shared by {c['num_sharing']})" if c.get('num_sharing', 1) > 1 else "")
                   for c in ctx.get("caches", []))
if caches:
    L.append(f"* caches: {caches}")
L.append(f"* compiler: {ctx.get('compiler', '?')}, Release (-O3 -ffp-contract=off)")
lb = ctx.get('load_avg_before', '?').replace('/', ' ')
L.append(f"* load average before / after: {lb} / {load_after}")
try:
    busy = float(lb.split()[0]) >= 0.5 or float(load_after.split()[0]) >= 2.0
except ValueError:
    busy = False
if busy:
    L.append("* **WARNING: the machine was busy during this run; the times are not reliable**")
L.append(f"* each call samples {ctx.get('rows_per_call', '?')} rows (different logits, seeds, steps); "
         f"times are wall clock per row, median of {reps} repetitions of >= {min_time} s "
         f"(± = coefficient of variation; `best` = fastest repetition); speedup = ratio of medians; "
         f"GB/s = logits bytes read per second (median)")
L.append("* `lmsample` = `lmsample::sample`, Backend::kCpu, cpu_threads = 1 (one core); "
         "`std::sort ref` = `lmsample::check::reference_sample_batch` (full sort per row, one core)")
L.append("* logits: `gauss` = N(0,1)·4 (as in the peer baselines); `llm` = heavy-tailed LLM-like rows "
         "(bulk N(0,1)·2, 2% heavy right tail, a 32-token head with per-row sharpness); "
         "`kept` = mean kept-set size over the rows")
L.append("* every lmsample case was checked against the reference (tokens, statuses, kept sizes, "
         "logprobs) before it was timed")
L.append("")

# The issue's target.
L.append("## Target: top-k 50 + top-p 0.9, V = 151,936, <= 300 µs per row per core")
L.append("")
L.append("| dtype | logits | lmsample µs/row (median) | best repetition | target | |")
L.append("|---|---|---:|---:|---:|---|")
for dt in ("f32", "bf16"):
    for sh in ("gauss", "llm"):
        n = table.get(("cpu", "topk50_topp0.9", dt, sh, 151936, 1))
        if n is None:
            continue
        v = stat(n, "us_per_row") if n in runs else None
        best = stat(n, "us_per_row", "min") if n in runs else None
        ok = "error" if v is None else ("PASS" if v <= 300 else "FAIL")
        L.append(f"| {dt} | {sh} | {fmt(v)}{cv(n) if v else ''} | {fmt(best)} | 300 | {ok} |")
L.append("")

L.append("## Single core, per row")
L.append("")
L.append("| op | dtype | logits | V | lmsample µs/row | best | lmsample GB/s | std::sort ref µs/row | speedup | kept |")
L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for op in ops:
    keys = sorted({k for k in table if k[1] == op and k[5] == 1 and k[0] == "cpu"} |
                  {("cpu",) + k[1:] for k in table if k[1] == op and k[5] == 1 and k[0] == "ref"},
                  key=lambda k: (k[2] != "f32", k[3], k[4]))
    for k in keys:
        c = table.get(k)
        r = table.get(("ref",) + k[1:])
        cu = stat(c, "us_per_row") if c in runs else None
        ru = stat(r, "us_per_row") if r in runs else None
        gbs = stat(c, "bytes_per_second") if c in runs else None
        kept = stat(c, "kept") if c in runs else (stat(r, "kept") if r in runs else None)
        sp = f"{ru / cu:.1f}×" if cu and ru else "—"
        cell = fmt(cu) + (cv(c) if cu else "") if c not in errors else "error"
        best = stat(c, "us_per_row", "min") if c in runs else None
        L.append(f"| {labels.get(op, op)} | {k[2]} | {k[3]} | {k[4]:,} | {cell} | {fmt(best)} | "
                 f"{fmt(gbs / 1e9 if gbs else None, 2)} | {fmt(ru)}{cv(r) if ru else ''} | {sp} | "
                 f"{fmt(kept, 1)} |")
L.append("")

mt = sorted(k for k in table if k[0] == "cpu" and k[5] > 1)
if mt:
    L.append("## Several threads (wall clock per row over the batch)")
    L.append("")
    L.append("| op | dtype | logits | V | cpu_threads | µs/row | best | vs 1 thread |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|")
    for k in mt:
        n = table[k]
        v = stat(n, "us_per_row") if n in runs else None
        one = table.get(k[:5] + (1,))
        v1 = stat(one, "us_per_row") if one in runs else None
        sp = f"{v1 / v:.2f}×" if v and v1 else "—"
        L.append(f"| {labels.get(k[1], k[1])} | {k[2]} | {k[3]} | {k[4]:,} | {k[5]} | "
                 f"{fmt(v)}{cv(n) if v else ''} | {fmt(stat(n, 'us_per_row', 'min'))} | {sp} |")
    L.append("")

if errors:
    L.append("## Cases that failed")
    L.append("")
    for n, m in sorted(errors.items()):
        L.append(f"* `{n}`: {m}")
    L.append("")

L.append("Reproduce: `bash bench/run_cpu.sh` (raw numbers: the .json next to this file).")
open(md_path, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
echo "== wrote $base.json and $base.md"
if [ "$bench_rc" != 0 ]; then echo "== some cases FAILED (see the report)" >&2; fi
exit "$bench_rc"
