"""The CPU yardsticks on this machine, beside the core's projections: what users would run
instead of the accelerator.

For each shape (the bench's random weights, driver.bench.SHAPES): the project's own C kernel
(driver.cpu_baseline: fp32, one thread, one sequence) and llama.cpp (driver.llamacpp_baseline,
the optional bench extra) in F32 and Q8_0, on one thread and on every core, decoding one
sequence and a batch of sequences. One-thread runs are pinned to one core. Every figure is also
given per GB/s of memory bandwidth — the boards' peak DRAM bandwidth as LiteX instantiates them,
and for this machine its measured copy bandwidth (a lower bound of its peak, which the host
does not report) — because at these sizes every engine streams its weights once per step and
the memory system, not the arithmetic, decides.
"""

import contextlib
import os
import time

import numpy as np

from driver import bench, cpu_baseline, llamacpp_baseline


def copy_bandwidth(mbytes=256, repeats=5):
    """This machine's memory bandwidth as numpy measures it: bytes read plus written by a large
    array copy over its best time, in bytes/s."""
    a = np.ones(mbytes << 18, np.float32)           # mbytes MB
    b = np.empty_like(a)
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
    return 2 * a.nbytes / best


@contextlib.contextmanager
def pinned(threads):
    """One-thread runs on one core (the process's first allowed CPU); others on all of them."""
    if threads != 1 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def run(shapes, batch=8, positions=32, seed=1, qtypes=llamacpp_baseline.QTYPES, progress=None):
    """The yardstick report: {cpu, cores, copy_bytes_per_s, runs: [{shape, engine, weights,
    threads, batch, tokens_per_s}], skipped}."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    report = {"cpu": cpu_baseline.cpu_name(), "cores": cores, "copy_bytes_per_s": copy_bandwidth(),
              "positions": positions, "llama_cpp_python": llamacpp_baseline.LLAMA_CPP_PYTHON, "runs": []}
    why = llamacpp_baseline.available()
    if why:
        report["skipped"] = why
        if progress:
            progress(why)
    for name in shapes:
        label, model = bench.resolve_model(name, seed)
        n = max(1, min(positions, model.config.seq_len))
        if progress:
            progress(f"{label}: the C baseline")
        with pinned(1):
            c = bench.cpu_baseline(model, n, seed=seed, label=label)
        report["runs"].append(dict(shape=label, engine="C (this project)", weights="F32", threads=1, batch=1,
                                   tokens_per_s=c["tokens_per_s"]))
        if why:
            continue
        for qtype in qtypes:
            for threads in sorted({1, cores}):
                for b in sorted({1, batch}):
                    if progress:
                        progress(f"{label}: llama.cpp {qtype}, {threads} thread(s), batch {b}")
                    with pinned(threads):
                        r = llamacpp_baseline.run(model, qtype, threads=threads, batch=b, positions=n, seed=seed)
                    report["runs"].append(dict(shape=label, engine="llama.cpp", weights=qtype, threads=threads,
                                               batch=b, tokens_per_s=r["tokens_per_s"]))
    return report


def tables(report, projections=None):
    """Markdown: every CPU run, then (with ``projections``, a bench report) the boards'
    projected decode figures for the same shapes, each also per GB/s."""
    gbs = report["copy_bytes_per_s"] / 1e9
    out = [f"CPU: {report['cpu']}, {report['cores']} cores; measured copy bandwidth {gbs:.1f} GB/s; "
           f"decode of {report['positions']} positions, best of 3 passes; llama-cpp-python "
           f"{report['llama_cpp_python']}.", ""]
    if report.get("skipped"):
        out += [f"({report['skipped']}.)", ""]
    out += ["| shape | engine | weights | threads | B | tokens/s | tokens/s per GB/s |", "|" + " --- |" * 7]
    for r in report["runs"]:
        out.append(f"| {r['shape']} | {r['engine']} | {r['weights']} | {r['threads']} | {r['batch']} | "
                   f"{r['tokens_per_s']:.0f} | {r['tokens_per_s'] / gbs:.0f} |")
    if projections:
        shapes = {r["shape"] for r in report["runs"]}
        out += ["", "The core, projected from its measured cycles (docs/performance.md), per GB/s of the "
                "board's peak DRAM bandwidth:", "",
                "| shape | board | B | tokens/s | tokens/s per GB/s |", "|" + " --- |" * 5]
        for r in projections["runs"]:
            if r["shape"] not in shapes or r["phase"] != "decode":
                continue
            for name, b in bench.BOARDS.items():
                tps = r["projected_tokens_per_s"].get(name)
                if tps is not None:
                    out.append(f"| {r['shape']} | {name} | {r['batch']} | {tps:.0f} | "
                               f"{tps / (b['dram_bytes_per_s'] / 1e9):.0f} |")
    return out
