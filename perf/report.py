#!/usr/bin/env python3
"""Runs ioq's benchmarks and its peers side by side, in one run, and writes
perf/reports/<date>-<commit>/report.md with tables and PNG plots.

What runs (every ratio compares figures measured in this same run):
  * the ring suite (BM_Ring_*) through perf/ring_report.py's table;
  * the end-to-end dispatcher suite (BM_E2E_*) against its two peers;
  * the dispatch round trips (BM_Dispatch_*) and forward progress (BM_ForwardProgress_*);
  * ioq-bench on the null target against fio's null engine (fio --ioengine=null),
    at several iodepths, with fio's defaults and with the same batch on both;
  * ioq-bench on one core and on two;
  * instructions and cycles per request: perf stat where the machine exposes
    hardware counters, else instructions counted by valgrind --tool=callgrind;
  * the CPU an idle runtime costs (bench/idle_cpu);
  * the io_uring target against fio's io_uring engine on the same file, and its
    no-op path against a bare liburing loop (perf/uring_report.py).
Plots (gnuplot): throughput against iodepth, latency percentiles, one core against two.

Usage: perf/report.py [--build build/release] [--quick] [--out DIR]
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def try_sh(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        return None


def gbench(binary, flt, min_time, reps):
    out = sh([binary, "--benchmark_format=json", f"--benchmark_min_time={min_time}",
              f"--benchmark_repetitions={reps}", "--benchmark_report_aggregates_only=true",
              f"--benchmark_filter={flt}"])
    doc = json.loads(out)
    res = {}
    for b in doc["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        res[b["run_name"].split("/")[0]] = b
    return doc, res


def ioq_bench(binary, args):
    out = sh([binary, "--output-format=json"] + args)
    return json.loads(out)["jobs"][0]


def fio_null(iodepth, batch, runtime, extra=()):
    cmd = ["fio", "--name=null", "--ioengine=null", "--size=100g", f"--iodepth={iodepth}", "--rw=read",
           "--bs=4k", "--time_based", f"--runtime={runtime}", "--output-format=json"]
    if batch is not None:
        cmd += [f"--iodepth_batch_submit={batch}", f"--iodepth_batch_complete_max={batch}"]
    cmd += list(extra)
    return json.loads(sh(cmd))["jobs"][0]


def pct(job, p):
    table = job["read"]["clat_ns"].get("percentile", {})
    for k, v in table.items():
        if abs(float(k) - p) < 1e-9:
            return v
    return None


def gnuplot(script):
    if shutil.which("gnuplot") is None:
        return False
    subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    return True


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cxx = try_sh(["c++", "--version"])
    fio = try_sh(["fio", "--version"])
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "compiler": cxx.stdout.splitlines()[0] if cxx and cxx.stdout else "?",
        "fio": fio.stdout.strip() if fio and fio.stdout else "not installed",
    }


def counters_per_request(bench, requests):
    """Instructions (and cycles) per request for a fixed amount of work."""
    args = [bench, "--size", f"{requests * 4}k", "--runtime=0", "--output-format=json", "--lat-sample=1"]
    r = try_sh(["perf", "stat", "-x,", "-e", "instructions,cycles"] + args)
    if r and r.returncode == 0 and "<not supported>" not in r.stderr:
        vals = {}
        for line in r.stderr.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                vals[parts[2]] = float(parts[0])
        if "instructions" in vals:
            return {"method": "perf stat", "instructions": vals["instructions"] / requests,
                    "cycles": vals.get("cycles", 0) / requests}
    if shutil.which("valgrind") is None:
        return {"method": "none (no hardware counters, no valgrind)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        # Two runs of different length: the difference is per-request work,
        # free of start-up and tear-down.
        irs = []
        for n in (requests, 2 * requests):
            a = [bench, "--size", f"{n * 4}k", "--runtime=0", "--output-format=json", "--lat-sample=1"]
            rr = try_sh(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + a)
            m = re.search(r"Collected\s*:\s*(\d+)", rr.stderr if rr else "")
            if not m:
                return {"method": "callgrind failed"}
            irs.append(int(m.group(1)))
        return {"method": "valgrind --tool=callgrind (no hardware counters here; perf stat reports <not supported>)",
                "instructions": (irs[1] - irs[0]) / requests}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test of the script)")
    ap.add_argument("--out")
    args = ap.parse_args()
    b = args.build
    bench = os.path.join(b, "bench", "ioq-bench")
    for exe in ("ioq-bench", "ring_bench", "e2e_bench", "dispatch_bench", "forward_progress_bench", "idle_cpu",
                "uring_bench"):
        if not os.access(os.path.join(b, "bench", exe), os.X_OK):
            sys.exit(f"report: {exe} not built in {b}/bench; build the release preset first")
    quick = args.quick
    runtime = "0.5" if quick else "3"
    min_time = "0.05" if quick else "0.3"
    reps = 1 if quick else 3
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    stamp = datetime.date.today().isoformat()
    out_dir = args.out or os.path.join(ROOT, "perf", "reports", f"{stamp}-{commit}")
    os.makedirs(out_dir, exist_ok=True)
    raw = {"machine": machine(), "commit": commit}
    md = []
    m = raw["machine"]
    md.append(f"# ioq benchmark report, {stamp}, commit {commit}\n")
    md.append(f"Machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}. Compiler: {m['compiler']}, "
              f"`-O3` (CMake Release), no `-march`. fio: {m['fio']}. Every ratio compares figures from this run.\n")

    # 1. ioq-bench vs fio's null engine across iodepths.
    depths = [1, 4, 32] if quick else [1, 2, 4, 8, 16, 32, 64, 128]
    rows = []
    have_fio = shutil.which("fio") is not None
    for d in depths:
        job = ioq_bench(bench, ["--time_based", f"--runtime={runtime}", f"--iodepth={d}"])
        row = {"iodepth": d, "ioq": job["read"]["iops"], "ioq_cpu_ns": job["ioq"]["cpu_ns_per_io"]}
        if have_fio:
            row["fio_default"] = fio_null(d, None, runtime)["read"]["iops"]
            row["fio_batched"] = fio_null(d, d, runtime)["read"]["iops"]
            job1 = ioq_bench(bench, ["--time_based", f"--runtime={runtime}", f"--iodepth={d}",
                                     "--iodepth_batch_submit=1"])
            row["ioq_batch1"] = job1["read"]["iops"]
        rows.append(row)
    raw["null_by_iodepth"] = rows
    md.append("## ioq-bench against fio's null engine\n")
    md.append("1 core, 4 KiB reads, every request timed. ioq-bench submits the whole iodepth at once by default; "
              "fio's default submits one at a time. Both are shown, and each tool at both settings.\n")
    md.append("| iodepth | ioq-bench (batch = iodepth) | ioq CPU ns/req | fio null (defaults) | ratio | "
              "ioq-bench (batch 1) | fio null (batch = iodepth) | ratio, same batch |")
    md.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if have_fio:
            md.append(f"| {r['iodepth']} | {r['ioq'] / 1e6:.2f} M | {r['ioq_cpu_ns']:.1f} | "
                      f"{r['fio_default'] / 1e6:.2f} M | {r['ioq'] / r['fio_default']:.2f}x | "
                      f"{r['ioq_batch1'] / 1e6:.2f} M | {r['fio_batched'] / 1e6:.2f} M | "
                      f"{r['ioq'] / r['fio_batched']:.2f}x |")
        else:
            md.append(f"| {r['iodepth']} | {r['ioq'] / 1e6:.2f} M | {r['ioq_cpu_ns']:.1f} | - | - | - | - | - |")
    md.append("")

    # 2. Latency percentiles at iodepth 32, each request timed on its own: both
    #    tools submit one request at a time (at batch N, ioq-bench's clock
    #    starts when the whole batch is handed over, fio's per request).
    job = ioq_bench(bench, ["--time_based", f"--runtime={runtime}", "--iodepth=32", "--iodepth_batch_submit=1"])
    lat = {"ioq": {p: pct(job, p) for p in (50, 90, 99, 99.9)}}
    if have_fio:
        fj = fio_null(32, None, runtime)
        lat["fio"] = {p: pct(fj, p) for p in (50, 90, 99, 99.9)}
    raw["latency_iodepth32"] = lat
    md.append("## Completion latency at iodepth 32, requests submitted one at a time (ns)\n")
    md.append("| percentile | ioq-bench | fio null |")
    md.append("|---:|---:|---:|")
    for p in (50, 90, 99, 99.9):
        md.append(f"| p{p} | {lat['ioq'][p]} | {lat.get('fio', {}).get(p, '-')} |")
    md.append("")

    # 3. The headline: iodepth 32, one core and two, median of interleaved
    #    repeats (this kind of machine drifts by tens of percent minute to minute).
    reps_head = 1 if quick else 3
    runs = {1: [], 2: [], "fio": []}
    for _ in range(reps_head):
        for c in (1, 2):
            runs[c].append(ioq_bench(bench, ["--time_based", f"--runtime={runtime}", f"--cores={c}",
                                              "--iodepth=32"])["read"]["iops"])
        if have_fio:
            runs["fio"].append(fio_null(32, None, runtime)["read"]["iops"])
    med = lambda v: sorted(v)[len(v) // 2] if v else 0
    scale = {1: med(runs[1]), 2: med(runs[2])}
    raw["headline"] = runs
    md.append("## Headline: null target, parallel queue, iodepth 32 (median of "
              f"{reps_head} interleaved runs)\n")
    md.append(f"| | IOPS |\n|---|---:|\n| ioq-bench, 1 core | {scale[1] / 1e6:.2f} M |\n"
              f"| ioq-bench, 2 cores | {scale[2] / 1e6:.2f} M |")
    if have_fio:
        md.append(f"| fio --ioengine=null --iodepth=32 | {med(runs['fio']) / 1e6:.2f} M |")
    md.append("")
    md.append(f"Two cores: **{scale[2] / scale[1]:.2f}x** one core.")
    if have_fio:
        md.append(f" ioq-bench (1 core) / fio null: **{scale[1] / med(runs['fio']):.2f}x**.")
    md.append("")

    # 4. Instructions per request, allocations, idle CPU.
    cnt = counters_per_request(bench, 20000 if quick else 100000)
    raw["counters"] = cnt
    md.append("## Work per request\n")
    if "instructions" in cnt:
        line = f"- instructions per request (null target, batch 32): **{cnt['instructions']:.0f}** ({cnt['method']})"
        if cnt.get("cycles"):
            line += f"; cycles per request: {cnt['cycles']:.0f}"
        md.append(line)
    else:
        md.append(f"- instructions per request: {cnt['method']}")
    md.append(f"- heap allocations per request in steady state (ioq-bench counts every operator new): "
              f"**{job['ioq']['allocations_per_io']:.3f}**")
    idle = json.loads(sh([os.path.join(b, "bench", "idle_cpu"), "2", "1" if quick else "3"]))
    raw["idle"] = idle
    md.append(f"- an idle runtime with 2 reactors: **{idle['share_of_one_core'] * 100:.3f}%** of one core "
              f"({idle['cpu_us']:.0f} us of CPU in {idle['seconds']} s)\n")

    # 5. Google Benchmark suites.
    _, e2e = gbench(os.path.join(b, "bench", "e2e_bench"), "BM_E2E_", min_time, reps)
    raw["e2e"] = {k: v["items_per_second"] for k, v in e2e.items()}
    md.append("## End-to-end dispatch (BM_E2E_*), requests/s\n")
    md.append("| queue | Ioq | MutexCondvar | TbbQueue | Ioq / MutexCondvar | Ioq / TbbQueue |")
    md.append("|---|---:|---:|---:|---:|---:|")
    for q in ("Parallel", "Sequential", "Forward"):
        v = {i: e2e.get(f"BM_E2E_{i}_{q}", {}).get("items_per_second") for i in ("Ioq", "MutexCondvar", "TbbQueue")}
        if not all(v.values()):
            continue
        md.append(f"| {q} | {v['Ioq'] / 1e6:.2f} M | {v['MutexCondvar'] / 1e6:.2f} M | {v['TbbQueue'] / 1e6:.2f} M | "
                  f"{v['Ioq'] / v['MutexCondvar']:.1f}x | {v['Ioq'] / v['TbbQueue']:.1f}x |")
    md.append("")
    _, disp = gbench(os.path.join(b, "bench", "dispatch_bench"), "BM_Dispatch_", min_time, reps)
    _, fp = gbench(os.path.join(b, "bench", "forward_progress_bench"), "BM_ForwardProgress_", min_time, reps)
    md.append("## Single-thread round trips\n")
    md.append("| benchmark | ns per request |")
    md.append("|---|---:|")
    for name, v in list(disp.items()) + list(fp.items()):
        md.append(f"| {name} | {1e9 / v['items_per_second']:.1f} |")
    n = fp.get("BM_ForwardProgress_Normal_RoundTrip", {}).get("items_per_second")
    r = fp.get("BM_ForwardProgress_Reserved_RoundTrip", {}).get("items_per_second")
    if n and r:
        md.append(f"\nReserved path / normal path: **{r / n:.2f}x**.\n")

    # 6. The ring suite.
    ring = sh([sys.executable, os.path.join(HERE, "ring_report.py"), "--bench",
               os.path.join(b, "bench", "ring_bench"), "--min-time", min_time, "--repetitions", str(reps)])
    md.append("## Ring (BM_Ring_*)\n")
    md.append(ring)

    # 7. The io_uring target (perf/uring_report.py).
    sys.path.insert(0, HERE)
    import uring_report
    umd, uraw = uring_report.run(b, quick, size="256m" if quick else "1g")
    raw["uring"] = uraw
    md.extend(umd)

    # Plots.
    with open(os.path.join(out_dir, "iodepth.dat"), "w") as f:
        for r in rows:
            f.write(f"{r['iodepth']} {r['ioq'] / 1e6} {r.get('fio_default', 0) / 1e6} {r.get('fio_batched', 0) / 1e6}\n")
    plots = []
    if gnuplot(f"""set terminal pngcairo size 800,480 noenhanced
set output '{out_dir}/iodepth.png'
set title 'Null target, 1 core: requests/s against iodepth'
set xlabel 'iodepth'; set ylabel 'M requests/s'; set logscale x 2; set key top left; set grid
plot '{out_dir}/iodepth.dat' u 1:2 w lp t 'ioq-bench', '' u 1:3 w lp t 'fio null (defaults)', '' u 1:4 w lp t 'fio null (batch = iodepth)'
"""):
        plots.append("iodepth.png")
        with open(os.path.join(out_dir, "latency.dat"), "w") as f:
            for p in (50, 90, 99, 99.9):
                f.write(f"p{p} {lat['ioq'][p] or 0} {lat.get('fio', {}).get(p) or 0}\n")
        gnuplot(f"""set terminal pngcairo size 800,480 noenhanced
set output '{out_dir}/latency.png'
set title 'Completion latency at iodepth 32, one request per submit (ns)'
set style data histograms; set style fill solid 0.7; set logscale y; set grid ytics
plot '{out_dir}/latency.dat' u 2:xtic(1) t 'ioq-bench', '' u 3 t 'fio null'
""")
        plots.append("latency.png")
        with open(os.path.join(out_dir, "cores.dat"), "w") as f:
            f.write(f"1 {scale[1] / 1e6}\n2 {scale[2] / 1e6}\n")
        gnuplot(f"""set terminal pngcairo size 600,420 noenhanced
set output '{out_dir}/cores.png'
set title 'Parallel queue, null target: one core against two'
set style data histograms; set style fill solid 0.7; set ylabel 'M requests/s'; set yrange [0:*]; set grid ytics
plot '{out_dir}/cores.dat' u 2:xtic(1) t 'ioq-bench'
""")
        plots.append("cores.png")
    if plots:
        md.append("## Plots\n")
        md.extend(f"![{p}]({p})" for p in plots)
        md.append("")

    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(out_dir, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1, default=str)
    print("\n".join(md))
    print(f"\nreport: {out_dir}/report.md")


if __name__ == "__main__":
    main()
