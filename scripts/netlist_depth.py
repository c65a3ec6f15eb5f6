#!/usr/bin/env python3
"""Rank register-to-register paths of a synthesized ECP5 netlist (Yosys JSON), in seconds.

nextpnr gives critical paths only after routing, which takes longer than the whole of synthesis
on the ULX3S build; this gives a ranking right after Yosys (~3 min) so that a timing change can
be checked before a 40-minute place and route. The delays are a fixed cost per cell type and per
net hop — good for ranking paths, only indicative in nanoseconds (LiteDRAM's own paths, which
meet 50 MHz on smaller designs, come out at ~22 ns).

    python scripts/netlist_depth.py build/ulx3s/gateware/ulx3s.json              # worst endpoint groups
    python scripts/netlist_depth.py build/ulx3s/gateware/ulx3s.json --chains 5   # the 5 worst paths, cell by cell
"""

import argparse
import collections
import json
import re
import sys

NET_HOP = 0.9                       # ns per routed net
CELL = {"LUT4": 0.45, "PFUMX": 0.3, "L6MUX21": 0.3, "MULT18X18D": 4.5, "TRELLIS_DPR16X4": 1.0}
CLOCK_TO_Q = {"TRELLIS_FF": 0.5, "DP16KD": 4.0}
SYNTH_NAME = re.compile(r"_(LUT4|CCU2C|TRELLIS|PFUMX|L6MUX21|MULT18X18D|DP16KD)_")


def load(path):
    with open(path) as f:
        d = json.load(f)
    top = max(d["modules"].values(), key=lambda m: len(m.get("cells", {})))
    names = {}
    for name, net in top["netnames"].items():
        score = (name.count("$") + 10 * bool(SYNTH_NAME.search(name)), len(name))
        for b in net["bits"]:
            if isinstance(b, int) and (b not in names or score < names[b][0]):
                names[b] = (score, name)
    return top["cells"], {b: n for b, (_, n) in names.items()}


def analyse(cells):
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
        if c is None or c["type"] in CLOCK_TO_Q or (c["type"] == "TRELLIS_DPR16X4" and not port.startswith("DO")):
            arrival[b], prev[b] = (CLOCK_TO_Q.get(c["type"], 0.0) if c else 0.0), None
            return arrival[b]
        best, via = 0.0, None
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) != "input" or (c["type"] == "TRELLIS_DPR16X4" and not p.startswith("RAD")):
                continue
            carry = c["type"] == "CCU2C" and p == "CIN"
            delay = (0.06 if port == "COUT" else 0.35) if carry else CELL.get(c["type"], 0.5)
            for ib in bits:
                if isinstance(ib, int):
                    t = arrive(ib) + (0.0 if carry else NET_HOP) + delay
                    if t > best:
                        best, via = t, ib
        arrival[b], prev[b] = best, via
        return best

    ends = []
    for cn, c in cells.items():
        if c["type"] not in ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4"):
            continue
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "input" and port not in ("CLK", "CLKA", "CLKB", "WCK"):
                ends += [(arrive(b) + NET_HOP + 0.2, cn, port, b) for b in bits if isinstance(b, int)]
    ends.sort(reverse=True)
    return ends, prev, driver


def main():
    sys.setrecursionlimit(200000)            # carry chains and mux trees make deep cones
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("netlist")
    ap.add_argument("--top", type=int, default=30, help="endpoint groups to list")
    ap.add_argument("--chains", type=int, default=0, help="also print the N worst paths cell by cell")
    args = ap.parse_args()
    cells, names = load(args.netlist)
    ends, prev, driver = analyse(cells)
    group_of = lambda cn, b: re.sub(r"_TRELLIS_FF.*|\[.*", "", names.get(
        cells[cn]["connections"].get("Q", [b])[0] if cells[cn]["type"] == "TRELLIS_FF" else b, cn))
    groups = collections.OrderedDict()
    for t, cn, port, b in ends:
        g = groups.setdefault(group_of(cn, b), [t, 0])
        g[1] += 1
    for name, (t, n) in list(groups.items())[:args.top]:
        print(f"{t:6.1f} ns {n:5d} endpoints  {name}")
    for t, cn, port, b in ends[:args.chains]:
        print(f"\n{t:.1f} ns into {group_of(cn, b)}.{port}:")
        chain = []
        while b is not None:
            chain.append(b)
            b = prev.get(b)
        for x in reversed(chain):
            kind = cells[driver[x][0]]["type"] if x in driver else "?"
            print(f"  {kind:12s} {names.get(x, x)}"[:160])


if __name__ == "__main__":
    sys.exit(main())
