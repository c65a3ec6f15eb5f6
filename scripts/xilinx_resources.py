#!/usr/bin/env python3
"""What the transformer core alone would take on a 7-series FPGA: Yosys ``synth_xilinx``'s
LUT, LUTRAM, FF, DSP48E1 and RAMB36/RAMB18 counts for a target's core parameters.

The core is elaborated between plain native ports (soc.coresim.CoreTop, no SoC around it) and
synthesised for the xc7 family; nothing is placed, so the figures are the netlist's, before
any packing a vendor tool would do. Beside them: what an Arty's XC7A100T and an Acorn's
XC7A200T hold. The system's Yosys where there is one (it runs natively), else YoWASP's
(``scripts/setup.sh --fpga``).

    .venv/bin/python scripts/xilinx_resources.py --config sim [--act-depth 8192] [--json]
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spec import isa                                       # noqa: E402
from soc.boards.vivado import PARTS as vivado_parts, synth_counts, yosys_binary  # noqa: E402

PARTS = {"XC7A100T (Arty A7-100)": "XC7A100T", "XC7A200T (Acorn CLE-215+)": "XC7A200T"}

def elaborate(params, path, dram_size=256 << 20):
    from litex.gen.fhdl.verilog import convert
    from soc.coresim import CoreTop
    top = CoreTop(params, dram_size)
    # Migen writes the memories' .init files into the working directory: put them beside the
    # Verilog, where Yosys (run there) looks for them.
    here = os.getcwd()
    os.chdir(os.path.dirname(os.path.abspath(path)))
    try:
        convert(top, ios=top.ios, name="coretop").write(os.path.basename(path))
    finally:
        os.chdir(here)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(isa.TARGET_PARAMS), default="sim")
    ap.add_argument("--act-depth", type=int, default=None, help="override the scratchpad depth")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    params = isa.TARGET_PARAMS[args.config]
    if args.act_depth:
        params = dataclasses.replace(params, act_depth=args.act_depth).validate()
    try:
        yosys = yosys_binary()
    except RuntimeError as e:
        sys.exit(f"xilinx_resources: {e}")
    # In a folder of the working tree (YoWASP's sandbox sees it, not /tmp), where the Verilog
    # and the memories' .init files it names are written and read.
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        elaborate(params, os.path.join(tmp, "coretop.v"))
        print(f"[xilinx] synth_xilinx of the {args.config} core (act_depth {params.act_depth}); "
              f"tens of minutes", file=sys.stderr)
        try:
            figures = synth_counts(["coretop.v"], "coretop", tmp, yosys, timeout=0)
        except RuntimeError as e:
            sys.exit(f"xilinx_resources: {e}")
    report = {"config": args.config, "act_depth": params.act_depth, "cells": figures,
              "parts": {label: {k: round(figures[k] / cap[k], 2) for k in cap}
                        for label, cap in ((lbl, vivado_parts[p]) for lbl, p in PARTS.items())}}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.config} core, act_depth {params.act_depth}: " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
    for part, use in report["parts"].items():
        print(f"  of {part}: " + ", ".join(f"{k} {v:.0%}" for k, v in use.items()))


if __name__ == "__main__":
    main()
