#!/usr/bin/env python3
"""Each board's tokens/s, projected from its own core: decode steps at the board's full batch on
the core alone built with the board's parameters (spec.isa.TARGET_PARAMS[board], Verilator,
soc.coresim), bit-exact against golden, at positions spread over the context.

A step's time on the board: where its DRAM delivers a 16-byte beat a cycle as the simulated
ports do (the Acorn's and the Arty's DDR3 at 1:4), its cycles at its clock; where it delivers
less (the ULX3S's SDRAM), the non-streaming cycles at its clock plus the weight stream (the
cycles MATVEC took a weight beat) or the DRAM bytes read over its bandwidth, whichever is longer
(driver.bench.project's rule, which over-counts the reads outside MATVEC). The core-alone ports never refresh
or change rows: on the simulated SoC, LiteDRAM's refreshes and row changes cost the same core
~3 % (its B = 1 roofline efficiency, 0.97), which these figures leave out.

    .venv/bin/python scripts/board_projection.py --shape stories15M [--boards acorn,arty,ulx3s]
        [--positions 0,51,102,153,204,255] [--markdown docs/performance.md] [--json]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from driver.bench import BOARDS, SHAPES, check_fits        # noqa: E402
from spec import isa                                       # noqa: E402

LLAMA_CPP_BATCHED = 1249      # tok/s, llama.cpp, stories15M, 8 sequences, one core of this machine


def project_board(board, shape, positions, progress=print):
    """{board, shape, batch, steps: [...], tokens_per_s, ...} for ``board`` at its full batch;
    raises ValueError where its core or DRAM cannot take ``shape``."""
    from soc.coresim import decode_steps
    b, params, config = BOARDS[board], isa.TARGET_PARAMS[board], SHAPES[shape]
    check_fits(params, config, b["dram_bytes"])
    # The smaller boards' DRAM is simulated at its size (the model must fit it); the Acorn's
    # 1 GiB is left to the model's own size (the compiler was given 1 GiB either way).
    dram_mib = b["dram_bytes"] >> 20 if b["dram_bytes"] < 1 << 30 else None
    out = decode_steps(shape, params.slots, board, positions, dram_mib=dram_mib, progress=progress)
    if not all(s["bit_exact"] for s in out["steps"]):
        raise RuntimeError(f"{board}: the core's DRAM differs from golden's: {out['steps']}")
    f, bw = b["clock_hz"], b["dram_bytes_per_s"]
    for s in out["steps"]:
        if bw >= isa.BEAT_BYTES * f:
            # The simulated ports' beat a cycle is the board's own memory system: its cycles.
            s["seconds"] = s["cycles"] / f
        else:
            s["seconds"] = (s["cycles"] - s["mac_busy"]) / f + max(s["mac_busy"] / f, s["bytes_read"] / bw)
    seconds = sum(s["seconds"] for s in out["steps"]) / len(out["steps"])
    cycles = sum(s["cycles"] for s in out["steps"]) / len(out["steps"])
    return {"board": board, "what": b["what"], "shape": shape, "batch": params.slots,
            "positions": positions, "steps": out["steps"],
            "cycles_per_step": round(cycles), "cycles_per_token": round(cycles / params.slots),
            "bytes_per_step": round(sum(s["bytes_read"] for s in out["steps"]) / len(out["steps"])),
            "tokens_per_s": round(params.slots / seconds, 1)}


def markdown(rows):
    lines = ["| board | core | batch | cycles/step | cycles/token | DRAM bytes/step | tokens/s (aggregate) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        p = isa.TARGET_PARAMS[r["board"]]
        core = f"{p.slots} slots × {p.mac_lanes} lanes, {p.act_depth:,} words"
        lines.append(f"| {r['what']} | {core} | {r['batch']} | {r['cycles_per_step']:,} | {r['cycles_per_token']:,} "
                     f"| {r['bytes_per_step']:,} | **{r['tokens_per_s']:,.1f}** |")
    pos = rows[0]["positions"] if rows else []
    lines.append("")
    lines.append(f"{rows[0]['shape'] if rows else ''}, positions {', '.join(map(str, pos))} averaged; "
                 f"llama.cpp on one core of this machine, 8 sequences: {LLAMA_CPP_BATCHED:,} tok/s.")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="stories15M", choices=list(SHAPES))
    ap.add_argument("--boards", default=",".join(b for b in BOARDS if b in isa.TARGET_PARAMS))
    ap.add_argument("--positions", default="0,51,102,153,204,255")
    ap.add_argument("--markdown", default=None, help="rewrite this file's <!-- bench:boards --> section")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    boards = args.boards.split(",")
    unknown = [b for b in boards if b not in BOARDS or b not in isa.TARGET_PARAMS]
    if unknown:
        ap.error(f"--boards: {', '.join(unknown)}: the boards with a core are "
                 f"{', '.join(b for b in BOARDS if b in isa.TARGET_PARAMS)}")
    try:
        positions = sorted({int(p) for p in args.positions.split(",")})
    except ValueError:
        ap.error(f"--positions {args.positions!r}: expected comma-separated integers")
    rows = []
    for board in boards:
        t0 = time.monotonic()
        try:
            rows.append(project_board(board, args.shape, positions,
                                      progress=lambda m: print(m, file=sys.stderr, flush=True)))
        except ValueError as e:
            print(f"board_projection: {board}: {e}", file=sys.stderr)
            continue
        r = rows[-1]
        print(f"{board}: {args.shape} B={r['batch']}: {r['cycles_per_step']:,} cycles/step, "
              f"{r['tokens_per_s']:,.1f} tok/s ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    if args.markdown:
        from driver.bench_report import write_section
        write_section(args.markdown, "boards", markdown(rows))
    if args.json:
        print(json.dumps(rows))
    else:
        print("\n".join(markdown(rows)))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
