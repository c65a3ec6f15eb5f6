"""The benchmark's report (driver.bench results) as Markdown tables, a roofline plot, and a
section of docs/performance.md rewritten in place."""

import os
import re

from driver.bench import BOARDS
from spec import isa

MAIN_CLASSES = ("MATVEC", "ATTN", "RMSNORM", "FETCH", "ROPE", "SILU", "KVWRITE", "STORE", "ARGMAX", "EMBED")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def tables(report):
    """The report as Markdown: figures per run, cycles per instruction class, projections
    beside the CPU, and the simulator's speed."""
    runs, cpu = report["runs"], {c["shape"]: c for c in report.get("cpu", [])}
    p = report["params"]
    beats = ", two weight beats a cycle" if p.get("mac_beats", 1) == 2 else ""
    out = [f"Target `{report['target']}`, core of {p['slots']} slots × {p.get('mac_lanes', isa.LANES)} lanes{beats}, "
           f"{isa.BEAT_BYTES}-byte port; decode measured at positions "
           f"{report['decode_positions'][0]}–{report['decode_positions'][1]}, prefill over "
           f"{report['prompt_len']} prompt positions.", ""]
    out += _table(
        ["shape", "phase", "B", "cycles/token", "tokens/Mcycle", "batch speedup", "roofline eff.",
         "MAC util.", "MAC/cycle", "DRAM bytes/token", "DRAM-stalled"],
        [[r["shape"], r["phase"], r["batch"], f"{r['cycles_per_token']:.0f}", f"{1e6 * r['tokens_per_cycle']:.1f}",
          _fmt(r["batch_speedup"], 2), _fmt(r["roofline_efficiency"]), _fmt(r["mac_utilisation"]),
          _fmt(r["macs_per_cycle"], 1), r["bytes_read_per_token"], _fmt(r["dram_stall_fraction"])] for r in runs])
    out += ["", "Cycles per token by instruction class (FETCH: fetching and decoding instructions):", ""]
    out += _table(
        ["shape", "phase", "B"] + list(MAIN_CLASSES) + ["other"],
        [[r["shape"], r["phase"], r["batch"]]
         + [f"{r['class_cycles_per_token'].get(k, 0):.0f}" for k in MAIN_CLASSES]
         + [f"{sum(v for k, v in r['class_cycles_per_token'].items() if k not in MAIN_CLASSES):.0f}"] for r in runs])
    out += ["", "Projected tokens/s (the model is in docs/performance.md; — where the board's build has fewer "
            "slots or cannot hold the model) beside the C baseline on one core of this machine:", ""]
    out += _table(
        ["shape", "phase", "B"] + [f"{name} ({b['clock_hz'] / 1e6:.0f} MHz, {b['dram_bytes_per_s'] / 1e6:.0f} MB/s)"
                                   for name, b in BOARDS.items()] + ["CPU, 1 thread"],
        [[r["shape"], r["phase"], r["batch"]] + [_fmt(r["projected_tokens_per_s"][name], 1) for name in BOARDS]
         + [f"{cpu[r['shape']]['tokens_per_s']:.1f}" if r["shape"] in cpu and r["phase"] == "decode" and r["batch"] == 1
            else ""] for r in runs])
    if cpu:
        c0 = next(iter(cpu.values()))
        out += ["", f"CPU: {c0['cpu']}, `cc {c0['cflags']}`, {c0['threads']} thread, fp32, best of 3 passes "
                f"over {c0['positions']} decode positions."]
    out += ["", "Simulator speed (the whole SoC in Verilator; core cycles are the ones the core was running):", ""]
    out += _table(["shape", "simulated cycles / wall s", "core busy", "wall s", "upload s"],
                  [[s["shape"], f"{s['cycles_per_second']:,}", f"{s['core_busy_fraction']:.2f}", s["seconds"],
                    s["upload_seconds"]] for s in report["simulator"]])
    return out


def pyplot():
    """matplotlib.pyplot drawing to files, or a RuntimeError saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pinned in pyproject.toml; scripts/setup.sh installs it)") from None
    return plt


def plot(report, path):
    """The roofline: MAC/cycle against MAC per DRAM byte, the port-bandwidth roof, the MAC
    array's roof at each batch (mac_lanes × B), and every run as a point."""
    plt = pyplot()
    runs = report["runs"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    # Roofs: the port's bytes per cycle times MAC per byte, up to the MAC array's mac_lanes × B for
    # each batch B measured and for all the core's slots.
    xs = [r["arithmetic_intensity"] for r in runs]
    lanes = report["params"].get("mac_lanes", isa.LANES)
    peaks = sorted({lanes * r["batch"] for r in runs} | {lanes * report["params"]["slots"]})
    x0, x1 = min(xs + [0.5]) / 2, max(xs + [peaks[-1] / isa.BEAT_BYTES]) * 2
    ax.plot([x0, peaks[-1] / isa.BEAT_BYTES], [isa.BEAT_BYTES * x0, peaks[-1]], "k-", lw=1.5,
            label=f"port roof ({isa.BEAT_BYTES} B/cycle)")
    for peak in peaks:
        ax.plot([peak / isa.BEAT_BYTES, x1], [peak, peak], color="grey", ls="-" if peak == peaks[-1] else ":", lw=1)
        ax.text(x1, peak, f"L×B = {peak} ", va="bottom", ha="right", fontsize=8, color="grey")
    ax.set_xlim(x0, x1)
    shapes = list(dict.fromkeys(r["shape"] for r in runs))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r in runs:
        colour = colours[shapes.index(r["shape"]) % len(colours)]
        ax.plot(r["arithmetic_intensity"], r["macs_per_cycle"], "o" if r["phase"] == "decode" else "s",
                color=colour, mfc=colour if r["phase"] == "decode" else "none", ms=7)
        ax.annotate(str(r["batch"]), (r["arithmetic_intensity"], r["macs_per_cycle"]), fontsize=7,
                    xytext=(4, -3), textcoords="offset points")
    for s in shapes:
        colour = colours[shapes.index(s) % len(colours)]
        ax.plot([], [], "o", color=colour, label=s)
    ax.plot([], [], "ko", label="decode (label: B)")
    ax.plot([], [], "ks", mfc="none", label="prefill (label: B)")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (matrix MAC per DRAM byte read)",
           ylabel="MAC / cycle", title=f"Roofline of the transformer core ({report['target']}, measured counters)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(report, path, section="results"):
    """Put the report's tables into a section of ``path`` (write_section)."""
    write_section(path, section, tables(report))


def write_section(path, section, lines):
    """Put ``lines`` into ``path`` between ``<!-- bench:SECTION -->`` and ``<!-- /bench:SECTION -->``
    (appended with its markers when the file or the section is new); the prose around stays."""
    begin, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = "\n".join([begin, *lines, end])
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda m: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.lstrip("\n"))
