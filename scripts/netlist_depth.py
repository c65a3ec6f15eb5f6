#!/usr/bin/env python3
"""Rank register-to-register paths of an ECP5 design, in ns: the synthesized netlist (Yosys
JSON) or the placed one (nextpnr's --write JSON).

nextpnr prints critical paths only after routing, which takes longer here than synthesis and
placement together, so a timing change is checked on these rankings first:

- **synthesized** (right after Yosys, ~3 min): a fixed delay per cell type and per net hop. Good
  for ranking logic depth, only indicative in nanoseconds (LiteDRAM's own paths, which meet
  50 MHz on smaller designs, come out at ~22 ns).
- **placed** (`nextpnr-ecp5 --no-route --write placed.json`, ~10 min more): each net's delay is
  predicted from its two sites the way nextpnr's placer does (ecp5 Arch::predictDelay: 120 ps per
  unit of a distance that counts the first 5 tiles in x and y twice, speed grade 6). The figures
  run about 1.5x above nextpnr's own post-placement estimate, but name the paths and show which
  hops are long wires rather than logic.

    python scripts/netlist_depth.py build/ulx3s/gateware/ulx3s.json --top 30 --chains 3
    python scripts/netlist_depth.py placed.json --top 40 --chains 2 --match accelerator
"""

import argparse
import collections
import json
import re
import sys

SYNTH_NAME = re.compile(r"_(LUT4|CCU2C|TRELLIS|PFUMX|L6MUX21|MULT18X18D|DP16KD)_")
CLOCKS = ("CLK", "CLKA", "CLKB", "WCK", "LSR", "CE")


class SynthModel:
    """Yosys cells before packing: fixed delays per cell and per net hop."""
    NET_HOP = 0.9
    CELL = {"LUT4": 0.45, "PFUMX": 0.3, "L6MUX21": 0.3, "MULT18X18D": 4.5, "TRELLIS_DPR16X4": 1.0}
    CLOCK_TO_Q = {"TRELLIS_FF": 0.5, "DP16KD": 4.0}
    ENDPOINTS = ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4")

    def __init__(self, cells):
        pass

    def start(self, cn, c, port):
        if c["type"] in self.CLOCK_TO_Q:
            return self.CLOCK_TO_Q[c["type"]]
        if c["type"] == "TRELLIS_DPR16X4" and not port.startswith("DO"):
            return 0.0
        return None

    def step(self, c, in_port, out_port, dcn, dport):
        if c["type"] == "TRELLIS_DPR16X4" and not in_port.startswith("RAD"):
            return None
        if c["type"] == "CCU2C" and in_port == "CIN":
            return 0.06 if out_port == "COUT" else 0.35
        return self.NET_HOP + self.CELL.get(c["type"], 0.5)

    def end(self, cn, dcn, dport, port):
        return self.NET_HOP + 0.2


class PlacedModel:
    """nextpnr's packed cells with their sites: nets by predicted distance delay."""
    UNIT = 0.120                                  # predictDelay's unit at speed grade 6
    CLOCK_TO_Q = {"TRELLIS_FF": 0.45, "DP16KD": 4.3, "TRELLIS_RAMW": 0.5}
    STARTS = ("TRELLIS_IO", "IOLOGIC", "SIOLOGIC", "DCCA", "EHXPLLL", "DDRDLL", "DQSBUFM",
              "ECLKSYNCB", "CLKDIVF")
    ENDPOINTS = ("TRELLIS_FF", "DP16KD", "IOLOGIC", "SIOLOGIC")

    def __init__(self, cells):
        self.site = {}
        for cn, c in cells.items():
            m = re.match(r"X(\d+)/Y(\d+)/", c.get("attributes", {}).get("NEXTPNR_BEL", ""))
            if m:
                self.site[cn] = (int(m.group(1)), int(m.group(2)))
        self.const = {cn for cn in cells if cn.startswith(("$PACKER_GND", "$PACKER_VCC"))}

    def net(self, dcn, dport, cn, port):
        if dcn in self.const or (dport == "FCO" and port == "FCI") or port in ("FXA", "FXB"):
            return 0.0                            # constants, dedicated carry and mux wires
        a, b = self.site.get(dcn), self.site.get(cn)
        if a is None or b is None:
            return 0.7
        dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
        return self.UNIT * (6 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5)))

    def start(self, cn, c, port):
        if cn in self.const or c["type"] in self.STARTS:
            return 0.0
        return self.CLOCK_TO_Q.get(c["type"])

    def step(self, c, in_port, out_port, dcn, dport):
        cell = {"MULT18X18D": 4.8, "ALU54B": 3.0}.get(c["type"], 0.4)
        if c["type"] == "TRELLIS_COMB":
            cell = 0.06 if (in_port, out_port) == ("FCI", "FCO") else {"FCO": 0.35, "OFX": 0.5}.get(out_port, 0.42)
        return self.net(dcn, dport, c["_name"], in_port) + cell

    def end(self, cn, dcn, dport, port):
        return self.net(dcn, dport, cn, port) + 0.2


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
    cells = top["cells"]
    for cn, c in cells.items():
        c["_name"] = cn
    placed = any("NEXTPNR_BEL" in c.get("attributes", {}) for c in cells.values())
    return cells, {b: n for b, (_, n) in names.items()}, (PlacedModel if placed else SynthModel)(cells)


def analyse(cells, model):
    """Longest arrival into every endpoint input: [(ns, cell, port, bit)], worst first."""
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
        t0 = 0.0 if c is None else model.start(cn, c, port)
        if t0 is not None:
            arrival[b], prev[b] = t0, None
            return t0
        best, via = 0.0, None
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) != "input":
                continue
            for ib in bits:
                if isinstance(ib, int) and ib in driver:
                    d = model.step(c, p, port, *driver[ib])
                    if d is not None and arrive(ib) + d > best:
                        best, via = arrive(ib) + d, ib
        arrival[b], prev[b] = best, via
        return best

    ends = []
    for cn, c in cells.items():
        if c["type"] not in model.ENDPOINTS:
            continue
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "input" and port not in CLOCKS:
                ends += [(arrive(b) + model.end(cn, *driver[b], port), cn, port, b)
                         for b in bits if isinstance(b, int) and b in driver]
    ends.sort(reverse=True)
    return ends, prev, driver


def main():
    sys.setrecursionlimit(1_000_000)          # carry chains and mux trees make deep cones
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("netlist", help="Yosys JSON, or nextpnr --write JSON of a placed design")
    ap.add_argument("--top", type=int, default=30, help="endpoint groups to list")
    ap.add_argument("--chains", type=int, default=0, help="also print the N worst paths cell by cell")
    ap.add_argument("--match", default="", help="only endpoints whose group name contains this")
    args = ap.parse_args()
    cells, names, model = load(args.netlist)
    ends, prev, driver = analyse(cells, model)
    group_of = lambda cn, b: re.sub(r"_TRELLIS_FF.*|\[.*|\$IOL$", "", names.get(
        cells[cn]["connections"].get("Q", [b])[0] if cells[cn]["type"] == "TRELLIS_FF" else b, cn))
    ends = [e for e in ends if args.match in group_of(e[1], e[3])]
    groups = collections.OrderedDict()
    for t, cn, port, b in ends:
        g = groups.setdefault(group_of(cn, b), [t, 0])
        g[1] += 1
    print(f"{type(model).__name__[:-5].lower()} netlist, {len(cells)} cells")
    for name, (t, n) in list(groups.items())[:args.top]:
        print(f"{t:6.1f} ns {n:5d} endpoints  {name}")
    site = getattr(model, "site", {})
    for t, cn, port, b in ends[:args.chains]:
        print(f"\n{t:.1f} ns into {group_of(cn, b)}.{port}:")
        chain = []
        while b is not None:
            chain.append(b)
            b = prev.get(b)
        for x in reversed(chain):
            dcn = driver[x][0] if x in driver else None
            kind = cells[dcn]["type"] if dcn else "?"
            where = str(site.get(dcn, "")) if site else ""
            print(f"  {kind:12s} {where:10s} {names.get(x, x)}"[:170])


if __name__ == "__main__":
    sys.exit(main())
