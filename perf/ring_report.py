#!/usr/bin/env python3
"""Runs the ring benchmark suite once and prints ioq's ring against its peers.

Every figure comes from one run of one binary: the peers are measured beside
ioq, under the same load, so the ratios mean something on a shared machine.
Each benchmark is repeated (--repetitions) and the median is used.

Usage: perf/ring_report.py [--bench build/release/bench/ring_bench]
                           [--min-time 0.2] [--repetitions 3] [--out DIR]
Writes DIR/ring.md and DIR/ring.json when --out is given.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

IMPLS = ["Ioq", "TbbBounded", "Moodycamel", "BoostLockfree", "RteRing", "MutexDeque"]
SCENARIOS = ["Pair", "1P1C", "2P2C", "Bulk32"]


def run_suite(bench, min_time, repetitions):
    cmd = [bench, "--benchmark_format=json", f"--benchmark_min_time={min_time}",
           f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true",
           "--benchmark_filter=^BM_Ring_"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def parse(doc):
    """-> {(impl, scenario): items_per_second (median)}"""
    rates = {}
    for b in doc["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"].split("/")[0]          # BM_Ring_<Impl>_<Scenario>
        _, _, impl, scenario = name.split("_", 3)
        rates[(impl, scenario)] = b["items_per_second"]
    return rates


def fmt_rate(r):
    return "-" if r is None else f"{r / 1e6:,.1f}"


def fmt_ns(r):
    return "-" if r is None else f"{1e9 / r:.2f}"


def build_report(doc, rates):
    impls = [i for i in IMPLS if any((i, s) in rates for s in SCENARIOS)]
    peers = [i for i in impls if i != "Ioq"]
    ctx = doc.get("context", {})
    lines = []
    lines.append(f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
                 f"{platform.system()} {platform.release()}, {platform.machine()}; "
                 f"run {ctx.get('date', '?')}")
    lines.append("")
    lines.append("Millions of items per second (median of the repetitions; higher is better).")
    lines.append("One item is one push+pop pair; Bulk32 moves bursts of 32.")
    lines.append("")
    lines.append("| Scenario | " + " | ".join(impls) + " | Ioq / best peer | Ioq / TbbBounded |")
    lines.append("|---|" + "---:|" * (len(impls) + 2))
    verdicts = []
    for s in SCENARIOS:
        row = [fmt_rate(rates.get((i, s))) for i in impls]
        ioq = rates.get(("Ioq", s))
        best_peer = max(((rates[(p, s)], p) for p in peers if (p, s) in rates), default=(None, None))
        tbb = rates.get(("TbbBounded", s))
        r_best = f"{ioq / best_peer[0]:.2f}x ({best_peer[1]})" if ioq and best_peer[0] else "-"
        r_tbb = f"{ioq / tbb:.1f}x" if ioq and tbb else "-"
        lines.append(f"| {s} | " + " | ".join(row) + f" | {r_best} | {r_tbb} |")
    lines.append("")
    lines.append("Nanoseconds per item (lower is better):")
    lines.append("")
    lines.append("| Scenario | " + " | ".join(impls) + " |")
    lines.append("|---|" + "---:|" * len(impls))
    for s in SCENARIOS:
        lines.append(f"| {s} | " + " | ".join(fmt_ns(rates.get((i, s))) for i in impls) + " |")
    lines.append("")

    # The targets of the foundation issue, checked against this run.
    def best_of(s, pool):
        vals = [(rates[(p, s)], p) for p in pool if (p, s) in rates]
        return max(vals) if vals else (None, None)

    pair = rates.get(("Ioq", "Pair"))
    if pair:
        ns = 1e9 / pair
        bp = best_of("Pair", peers)
        verdicts.append(("Pair at most 6 ns per pair", ns <= 6.0,
                         f"{ns:.2f} ns (best peer {bp[1]} {1e9 / bp[0]:.2f} ns)" if bp[0] else f"{ns:.2f} ns"))
    bulk = rates.get(("Ioq", "Bulk32"))
    bb = best_of("Bulk32", peers)
    if bulk and bb[0]:
        verdicts.append(("Bulk32 per item at least as fast as the fastest peer's bulk form",
                         bulk >= bb[0],
                         f"{1e9 / bulk:.2f} ns/item vs {bb[1]} {1e9 / bb[0]:.2f} ns/item"))
    for s in ("1P1C", "2P2C"):
        v = rates.get(("Ioq", s))
        bp = best_of(s, peers)
        tbb = rates.get(("TbbBounded", s))
        if v and bp[0]:
            verdicts.append((f"{s} at least 1.0x the fastest peer", v >= bp[0],
                             f"{v / bp[0]:.2f}x {bp[1]}"))
        if v and tbb:
            verdicts.append((f"{s} at least 5x TbbBounded", v >= 5 * tbb, f"{v / tbb:.1f}x"))
    lines.append("Targets (foundation issue), this run:")
    lines.append("")
    for name, met, detail in verdicts:
        lines.append(f"- {'met' if met else 'MISSED'}: {name}: {detail}")
    return "\n".join(lines) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(here, "..", "build", "release", "bench", "ring_bench"))
    ap.add_argument("--min-time", default="0.2")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--out", help="directory for ring.md and ring.json")
    ap.add_argument("--json-in", help="read an earlier ring.json instead of running")
    args = ap.parse_args()

    if args.json_in:
        with open(args.json_in) as f:
            doc = json.load(f)
    else:
        if not os.access(args.bench, os.X_OK):
            sys.exit(f"ring_report: no benchmark binary at {args.bench}; build the release preset first")
        doc = run_suite(args.bench, args.min_time, args.repetitions)
    rates = parse(doc)
    report = build_report(doc, rates)
    print(report, end="")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "ring.json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(args.out, "ring.md"), "w") as f:
            f.write("# Ring benchmark\n\n" + report)


if __name__ == "__main__":
    main()
