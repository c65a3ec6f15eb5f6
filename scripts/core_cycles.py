#!/usr/bin/env python3
"""Cycles of decode steps on the core alone (Verilator, soc.coresim), checked against golden.

The yardstick for changes to the core's structure: a model shape with random weights is
compiled for a target's parameters, the decode program runs on the core-alone simulator and
on the golden model at the given batch and positions, every DRAM byte is compared, and the
cycles and counters of each step are printed. The ports here never refresh or change rows,
so the figures are the core's own (the SoC's figures come from `litetransformer bench`).

    .venv/bin/python scripts/core_cycles.py --shape stories260K --batch 8 --config sim
    .venv/bin/python scripts/core_cycles.py --shape aidreams260K --batch 2 --config ulx3s --positions 3,100
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from driver.bench import SHAPES                            # noqa: E402
from driver.compiler import compile_model, GoldenRunner    # noqa: E402
from driver.intforward import QuantizedModel               # noqa: E402
from driver.model import random_model                      # noqa: E402
from spec import isa                                       # noqa: E402


def measure(shape, batch, config, positions, stall_percent=0, seed=1):
    from soc.coresim import CoreSim
    params = isa.TARGET_PARAMS[config]
    if batch > params.slots:
        raise ValueError(f"--batch {batch}: the {config} core has {params.slots} slots")
    c = SHAPES[shape]
    seq_len = min(c.seq_len, params.max_seq)
    if max(positions) >= seq_len:
        raise ValueError(f"--positions: {max(positions)} is past the context of {seq_len}")
    cm = compile_model(QuantizedModel(random_model(c, seed=seed)), params, seq_len=seq_len,
                       dram_size=1 << 30, kv_regions=batch)
    dram_size = -(-(cm.base + cm.total_bytes) // (1 << 20)) << 20
    golden = GoldenRunner(cm)
    golden.core.dram = bytearray(golden.core.dram) + bytearray(dram_size - len(golden.core.dram))
    tokens = [(17 * s + 3) % c.vocab_size for s in range(batch)]
    steps = []
    with CoreSim(params, dram_size, progress=lambda m: print(m, file=sys.stderr)) as sim:
        for pos in range(max(positions) + 1):
            slots = [(t, pos) for t in tokens]
            table = isa.pack_slots([(t, p, cm.kv_base(s)) for s, (t, p) in enumerate(slots)])
            golden.core.dram[cm.slots:cm.slots + len(table)] = table
            before = bytes(golden.core.dram)
            _, argmax = golden.step(slots, want_logits=False)      # the greedy program, as bench runs
            if pos not in positions:            # fill the KV cache on golden only
                tokens = argmax
                continue
            # The hardware starts from golden's DRAM before this step and must end where it did.
            r = sim.run(before, cm.prog_greedy, cm.slots, batch, stall_percent=stall_percent, seed=seed + pos)
            same = r.error == 0 and r.dram == bytes(golden.core.dram)
            steps.append({"pos": pos, "cycles": r.counters["cycles"], "bit_exact": same,
                          **{k: r.counters[k] for k in ("mac_busy", "dram_stall", "bytes_read", "bytes_written",
                                                        "retired")}})
            tokens = argmax
    return {"shape": shape, "batch": batch, "config": config, "stall_percent": stall_percent, "steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="stories260K", choices=list(SHAPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--config", default="sim", choices=list(isa.TARGET_PARAMS))
    ap.add_argument("--positions", default="0", help="comma-separated positions to measure (e.g. 0,100)")
    ap.add_argument("--stall-percent", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        positions = sorted({int(p) for p in args.positions.split(",")})
    except ValueError:
        ap.error(f"--positions {args.positions!r}: expected comma-separated integers")
    if positions[0] < 0:
        ap.error("--positions: positions are not negative")
    try:
        out = measure(args.shape, args.batch, args.config, positions, args.stall_percent)
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
