#!/usr/bin/env python3
"""Cycles of decode steps on the core alone (Verilator, soc.coresim), checked against golden.

The yardstick for changes to the core's structure: a model shape with random weights is
compiled for a target's parameters, the decode program runs on the core-alone simulator and
on the golden model at the given batch and positions, every DRAM byte is compared, and the
cycles and counters of each step are printed. The ports here never refresh or change rows,
so the figures are the core's own (the SoC's figures come from `litetransformer bench`).

    .venv/bin/python scripts/core_cycles.py --shape stories260K --batch 8 --config sim
    .venv/bin/python scripts/core_cycles.py --shape aidreams260K --batch 2 --config ulx3s --positions 3,100
    .venv/bin/python scripts/core_cycles.py --shape stories15M --batch 2 --config ulx3s --dram-mib 32
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from driver.bench import SHAPES                            # noqa: E402
from soc.coresim import decode_steps                       # noqa: E402
from spec import isa                                       # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="stories260K", choices=list(SHAPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--config", default="sim", choices=list(isa.TARGET_PARAMS))
    ap.add_argument("--positions", default="0", help="comma-separated positions to measure (e.g. 0,100)")
    ap.add_argument("--stall-percent", type=int, default=0)
    ap.add_argument("--dram-mib", type=int, default=None,
                    help="compile for and simulate a board's DRAM (e.g. 32 for the ULX3S); default 1 GiB")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        positions = sorted({int(p) for p in args.positions.split(",")})
    except ValueError:
        ap.error(f"--positions {args.positions!r}: expected comma-separated integers")
    if positions[0] < 0:
        ap.error("--positions: positions are not negative")
    try:
        out = decode_steps(args.shape, args.batch, args.config, positions, args.stall_percent, dram_mib=args.dram_mib,
                           progress=lambda m: print(m, file=sys.stderr))
    except ValueError as e:
        print(f"core_cycles: {e}", file=sys.stderr)
        return 2
    for s in out["steps"]:
        print(f"{out['shape']} B={out['batch']} {out['config']} pos {s['pos']}: {s['cycles']} cycles "
              f"({s['cycles'] / out['batch']:.0f}/token), bytes read {s['bytes_read']}, "
              f"{'bit-exact' if s['bit_exact'] else 'MISMATCH'}")
    if args.json:
        print(json.dumps(out))
    return 0 if all(s["bit_exact"] for s in out["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
