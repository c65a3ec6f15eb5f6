"""ARGMAX's pass: every slot's largest element of act[src:+n] and its index, the first on a tie
(as numpy's argmax), all slots at once.

Each slot's scratchpad has its own read ports, so the pass reads ``read_ports`` elements of
every slot a cycle. Two: read (S0, S1), the pair's larger, the first on a tie (S2), against
the running maximum (S3). Four: the two pairs' larger (S2), the larger pair, the first on a
tie (S3), the running maximum (S4). The sequencer then writes one result beat per slot.

The results are held between passes: with ``acc`` a pass starts from them (a later element
replaces a held one only if it is greater), so a classifier's row chunks, each its own ARGMAX
with its first row in ``base``, find the first index of the maximum of all of them. ``clear``
(a run's start) holds (0, -2**31).

With ``use`` (the range is the one a MATVEC has just written, gateware/core/writestats.py)
there is no pass: the write statistics' maximum and its first index (``use_best[s]``,
``use_i[s]``) stand for the pass's, under the same rule.
"""

from migen import *

from gateware.core.pipeline import drive_running


class Argmax(Module):
    """Start/done: ``start`` begins a pass over ``n`` elements from ``src`` (they hold still
    until ``done``, high in the pass's last cycle); ``abort`` stops it; ``base`` is added to
    every index, ``acc`` keeps the held results unless beaten, ``clear`` resets them. Scratchpad
    side: ``radr[p]`` (element src + i + p; data ``rdat[p][s]`` two cycles later). Out:
    ``best[s]`` and ``best_i[s]``, the held results, valid from ``done`` until the next start."""

    def __init__(self, slots, read_ports):
        XR = read_ports
        self.start, self.abort, self.done, self.running = Signal(), Signal(), Signal(), Signal()
        self.src, self.n, self.base = Signal(16), Signal(16), Signal(16)
        self.acc, self.clear = Signal(), Signal()
        self.radr = [Signal(17, name=f"am_radr{p}") for p in range(XR)]
        self.rdat = [[Signal((32, True), name=f"am_rdat{p}_{s}") for s in range(slots)] for p in range(XR)]
        self.best = [Signal((32, True), name=f"am_best{s}") for s in range(slots)]
        self.best_i = [Signal(32, name=f"am_index{s}") for s in range(slots)]
        self.use = Signal()
        self.use_best = [Signal((32, True), name=f"am_use_best{s}") for s in range(slots)]
        self.use_i = [Signal(17, name=f"am_use_i{s}") for s in range(slots)]

        # # #

        n, run = self.n, self.running
        i, i1, i2 = Signal(17), Signal(17), Signal(17)      # the pair (quad) read, and 1, 2 cycles on
        v1, v2, two1, two2 = Signal(), Signal(), Signal(), Signal()
        v3, first3 = Signal(), Signal()
        self.comb += [self.radr[p].eq(self.src + i + p) for p in range(XR)]
        self.sync += [
            If(self.start,
                i.eq(Mux(self.use, n, 0)), v1.eq(0), v2.eq(0)
            ).Elif(run,
                If(i < n, i.eq(i + XR)),
                v1.eq(i < n), i1.eq(i), two1.eq(i + 1 < n),
                v2.eq(v1), i2.eq(i1), two2.eq(two1),
            ),
            v3.eq(run & v2), first3.eq(i2 == 0),
        ]
        drive_running(self, run, self.start, self.done, self.abort)
        tail = ~v3
        if XR == 4:
            in1, in2 = Signal(4), Signal(4)      # elements i1 + e, i2 + e are in range
            v4, first4, p23ok = Signal(), Signal(), Signal()
            self.sync += [in1.eq(Cat(*[i + e < n for e in range(4)])), in2.eq(in1),
                          v4.eq(v3 & run), first4.eq(first3), p23ok.eq(in2[2])]
            tail = tail & ~v4
        self.comb += self.done.eq(run & (i >= n) & ~v1 & ~v2 & tail)
        for s in range(slots):
            r0, r1 = self.rdat[0][s], self.rdat[1][s]
            pair, pair_i = Signal((32, True)), Signal(32)
            second = two2 & (r1 > r0)
            self.sync += [pair.eq(Mux(second, r1, r0)), pair_i.eq(Mux(second, i2 + 1, i2) + self.base)]
            best, best_i = self.best[s], self.best_i[s]
            if XR == 4:
                r2, r3 = self.rdat[2][s], self.rdat[3][s]
                fourth = in2[3] & (r3 > r2)
                pair2, pair2_i = Signal((32, True)), Signal(32)
                quad, quad_i = Signal((32, True)), Signal(32)
                upper = p23ok & (pair2 > pair)
                self.sync += [
                    pair2.eq(Mux(fourth, r3, r2)), pair2_i.eq(Mux(fourth, i2 + 3, i2 + 2) + self.base),
                    quad.eq(Mux(upper, pair2, pair)), quad_i.eq(Mux(upper, pair2_i, pair_i)),
                    If(run & v4 & ((first4 & ~self.acc) | (quad > best)), best.eq(quad), best_i.eq(quad_i)),
                ]
            else:
                self.sync += If(run & v3 & ((first3 & ~self.acc) | (pair > best)), best.eq(pair), best_i.eq(pair_i))
            self.sync += If(self.start & self.use & (~self.acc | (self.use_best[s] > best)),
                best.eq(self.use_best[s]), best_i.eq(self.use_i[s] + self.base))
            self.sync += If(self.clear, best.eq(-(1 << 31)), best_i.eq(0))
