#!/usr/bin/env python3
"""ioq's io_uring target against fio's io_uring engine, on the same file in the
same run, and the target's own cost on no-op requests.

  * 4 KiB randread and randwrite, O_DIRECT, iodepth 1, 32 and 128, registered
    files and fixed buffers on both sides, the same submit batch (= iodepth) on
    both: IOPS, CPU time per I/O (user + system over the job's run time), p99
    completion latency. Each cell is the median of interleaved repeats.
  * buffered random reads of a file held in the page cache (iodepth 32);
  * no-ops through the whole ioq path (uring_bench BM_UringNop_Ioq with a
    per-request handler, BM_UringNop_IoqBatch with a batch handler) against a
    bare liburing no-op loop (BM_UringNop_Bare), batch 1 and 32, each ratio
    taken within one run of the benchmark binary.

Usage: perf/uring_report.py [--build build/release] [--quick] [--file PATH] [--size 1g]
Prints the markdown section; perf/report.py includes it in its report.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def summarize(job, rw, lat_key="clat_ns"):
    d = job["write" if "write" in rw else "read"]
    ios = d["total_ios"] or 1
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * job["job_runtime"] / 1000.0
    p99 = None
    for k, v in d[lat_key].get("percentile", {}).items():
        if abs(float(k) - 99.0) < 1e-9:
            p99 = v
    return {"iops": d["iops"], "cpu_us": cpu_s * 1e6 / ios, "p99_us": (p99 or 0) / 1000.0}


def pinned():
    """Both tools run on the same CPU: the last one this process may use (the
    first often takes the device's interrupts, which halves QD1 on both)."""
    return ["taskset", "-c", str(max(os.sched_getaffinity(0)))] if shutil.which("taskset") else []


def ioq_job(bench, path, size, rw, depth, runtime, direct=True, batch=None):
    """batch None: the whole iodepth at once (ioq-bench's default)."""
    cmd = pinned() + [bench, "--target=uring", f"--filename={path}", f"--size={size}", f"--rw={rw}", "--bs=4k",
           f"--iodepth={depth}", f"--iodepth_batch_submit={batch or depth}", f"--direct={1 if direct else 0}",
           "--time_based", f"--runtime={runtime}", "--output-format=json"]
    if direct:
        cmd += ["--fixedbufs", "--registerfiles"]
    return summarize(json.loads(sh(cmd))["jobs"][0], rw)


def fio_job(path, size, rw, depth, runtime, direct=True, batch=None):
    """fio's total latency (lat_ns: submission included, as ioq-bench's clat
    is; fio's own clat starts after the submitting system call returns).
    batch None: fio's default (one I/O per submit)."""
    cmd = pinned() + ["fio", "--name=uring", f"--filename={path}", f"--size={size}", "--ioengine=io_uring",
                      f"--rw={rw}", "--bs=4k", f"--iodepth={depth}", f"--direct={1 if direct else 0}",
                      "--invalidate=0", "--lat_percentiles=1", "--time_based", f"--runtime={runtime}",
                      "--output-format=json"]
    if batch is not None:
        cmd += [f"--iodepth_batch_submit={batch}"]
    if direct:
        cmd += ["--fixedbufs", "--registerfiles"]
    return summarize(json.loads(sh(cmd))["jobs"][0], rw, "lat_ns")


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def median_of(runs, key):
    return median([r[key] for r in runs])


NOP_FORMS = (("Ioq", "per-request handler"), ("IoqBatch", "batch handler (on_batch, send_batch)"))


def nop_bench(build, min_time, reps):
    """Runs uring_bench `reps` times, pinned to one CPU: each run measures the
    bare loop and both ioq forms one after another, so each ratio compares
    figures from one run on the same CPU.
    Returns {name: [items/s per run]}."""
    res = {}
    for _ in range(reps):
        out = sh(pinned() + [os.path.join(build, "bench", "uring_bench"), "--benchmark_format=json",
                  f"--benchmark_min_time={min_time}"])
        for b in json.loads(out)["benchmarks"]:
            if "error_occurred" not in b:
                res.setdefault(b["run_name"], []).append(b["items_per_second"])
    return res


def run(build, quick=False, path=None, size="1g"):
    """Returns (markdown lines, raw dict)."""
    bench = os.path.join(build, "bench", "ioq-bench")
    md, raw = [], {}
    runtime = "1" if quick else "3"
    reps = 1 if quick else 3
    depths = [1, 32] if quick else [1, 32, 128]

    nop_reps = 3 if quick else 7
    nop = nop_bench(build, "0.05" if quick else "0.5", nop_reps)
    raw["nop"] = nop
    md.append("## io_uring target: no-ops through the whole ioq path\n")
    md.append("Each no-op is submitted to a parallel queue, dispatched to its handler, sent to the io_uring target "
              "(IORING_OP_NOP, marked cancelable while in flight), reaped and completed; the bare loop only "
              "prepares, submits and reaps. Same ring flags on both. The per-request handler sends each request "
              "with UringTarget::send; the batch handler (QueueConfig::on_batch) is given the whole run and sends "
              f"it with one UringTarget::send_batch. {nop_reps} runs of the benchmark binary, pinned to one CPU, "
              "each measuring all three one after another: M no-ops/s are medians over the runs, ratios the median of each run's "
              "own ratio.\n")
    md.append("| batch | bare liburing | ioq, per-request handler | ratio | ioq, batch handler | ratio |")
    md.append("|---:|---:|---:|---:|---:|---:|")
    for batch in (1, 32):
        b = nop.get(f"BM_UringNop_Bare/{batch}")
        cells = [f"{batch}", f"{median(b) / 1e6:.2f}" if b else "-"]
        for form, _ in NOP_FORMS:
            i = nop.get(f"BM_UringNop_{form}/{batch}")
            if b and i and len(b) == len(i):
                cells += [f"{median(i) / 1e6:.2f}", f"{median([x / y for x, y in zip(i, b)]):.2f}x"]
            else:
                cells += ["-", "-"]
        md.append("| " + " | ".join(cells) + " |")
    md.append("")

    if shutil.which("fio") is None:
        md.append("fio is not installed: the comparison against fio's io_uring engine is skipped.\n")
        return md, raw
    own = path is None
    if own:
        path = os.path.join(os.environ.get("TMPDIR") or "/var/tmp", f"ioq-uring-report-{os.getpid()}.dat")
    try:
        # Lay out the file once (ioq-bench writes real data, not holes).
        sh([bench, "--target=uring", f"--filename={path}", f"--size={size}", "--rw=read", "--runtime=10ms"])
        rows = []
        for rw in ("randread", "randwrite"):
            for d in depths:
                runs = {"ioq_batch": [], "ioq_single": [], "fio_batch": [], "fio_default": []}
                for _ in range(reps):
                    runs["ioq_batch"].append(ioq_job(bench, path, size, rw, d, runtime))
                    runs["fio_batch"].append(fio_job(path, size, rw, d, runtime, batch=d))
                    if d > 1:
                        runs["ioq_single"].append(ioq_job(bench, path, size, rw, d, runtime, batch=1))
                        runs["fio_default"].append(fio_job(path, size, rw, d, runtime))
                row = {"rw": rw, "iodepth": d}
                for tool in runs:
                    for k in ("iops", "cpu_us", "p99_us"):
                        if runs[tool]:
                            row[f"{tool}_{k}"] = median_of(runs[tool], k)
                # Each tool's better setting (by IOPS) is the one compared.
                for tool, one in (("ioq", "ioq_single"), ("fio", "fio_default")):
                    best = one if row.get(f"{one}_iops", 0) > row[f"{tool}_batch_iops"] else f"{tool}_batch"
                    row[f"{tool}_setting"] = f"batch {d}" if best.endswith("_batch") else "batch 1"
                    for k in ("iops", "cpu_us", "p99_us"):
                        row[f"{tool}_{k}"] = row[f"{best}_{k}"]
                rows.append(row)
        raw["direct"] = rows
        md.append("## io_uring target against fio's io_uring engine (same file, same run)\n")
        md.append(f"{size} file, 4 KiB, O_DIRECT, registered file and fixed buffers on both, both pinned to the same "
                  f"CPU, {runtime} s per job, median of {reps} interleaved runs. Each tool runs with a submit batch of "
                  "the whole iodepth and with one I/O per submit (fio's default; ioq-bench submits each packet "
                  "alone and its target enters the ring once per poll), and each tool's better setting by IOPS "
                  "is compared (the setting is named). CPU per I/O is user + system time over the job's "
                  "run time divided by its I/Os. Latency is submission to completion on both (fio's lat_ns).\n")
        md.append("| rw | iodepth | ioq IOPS (setting) | fio IOPS (setting) | IOPS ratio | ioq CPU us/IO | fio CPU us/IO | "
                  "CPU ratio | ioq p99 us | fio p99 us | p99 ratio |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            md.append(f"| {r['rw']} | {r['iodepth']} | {r['ioq_iops'] / 1e3:.1f} k ({r['ioq_setting']}) | "
                      f"{r['fio_iops'] / 1e3:.1f} k ({r['fio_setting']}) | "
                      f"{r['ioq_iops'] / r['fio_iops']:.2f}x | {r['ioq_cpu_us']:.2f} | {r['fio_cpu_us']:.2f} | "
                      f"{r['ioq_cpu_us'] / r['fio_cpu_us']:.2f}x | {r['ioq_p99_us']:.0f} | {r['fio_p99_us']:.0f} | "
                      f"{r['ioq_p99_us'] / max(r['fio_p99_us'], 1e-9):.2f}x |")
        md.append("")

        # Buffered reads of a cached file: the page cache, not the disk, serves them.
        with open(path, "rb") as f:  # warm the page cache (read through it once)
            while f.read(1 << 20):
                pass
        runs = {"ioq": [], "fio": []}
        for _ in range(reps):
            runs["ioq"].append(ioq_job(bench, path, size, "randread", 32, runtime, direct=False))
            runs["fio"].append(fio_job(path, size, "randread", 32, runtime, direct=False, batch=32))
        buf = {t: {k: median_of(runs[t], k) for k in ("iops", "cpu_us", "p99_us")} for t in runs}
        raw["buffered"] = buf
        md.append("## Buffered random reads of a cached file (4 KiB, iodepth 32)\n")
        md.append("| tool | IOPS | CPU us/IO | p99 us |")
        md.append("|---|---:|---:|---:|")
        for t in ("ioq", "fio"):
            md.append(f"| {t} | {buf[t]['iops'] / 1e3:.1f} k | {buf[t]['cpu_us']:.2f} | {buf[t]['p99_us']:.0f} |")
        md.append(f"\nioq / fio: **{buf['ioq']['iops'] / buf['fio']['iops']:.2f}x** IOPS.\n")
    finally:
        if own and os.path.exists(path):
            os.unlink(path)
    return md, raw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--file", help="the data file (default: a temporary one in $TMPDIR or /var/tmp)")
    ap.add_argument("--size", default="1g")
    ap.add_argument("--json", help="also write the raw figures here")
    a = ap.parse_args()
    for exe in ("ioq-bench", "uring_bench"):
        if not os.access(os.path.join(a.build, "bench", exe), os.X_OK):
            sys.exit(f"uring_report: {exe} not built in {a.build}/bench")
    md, raw = run(a.build, a.quick, a.file, a.size)
    print("\n".join(md))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
