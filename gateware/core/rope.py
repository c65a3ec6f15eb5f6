"""ROPE's rotation: act[dst:+n] = rope(act[src:+n]) with head size m (spec.numerics.rope_pairs),
on a group of ``lanes`` slots at once, each with its own position's (cos, sin) row.

The sequencer loads each lane's table row into its buffer (``load_*``: one beat a cycle, as
they arrive), then starts the pass. One element a cycle: element e is read (S0, S1), in the
scratchpad's output (S2), the pair's operands and cos/sin registered when its odd element is
in S2 (S3), the rotation products (S4), their rounding bias (S5: timing, a 50-bit add
and the saturation in one cycle did not route at 50 MHz on the ULX3S), and the even element
writes the first in S6, the odd one the second a cycle later. A pair's products stay put for
both writes, since the operands change only every other cycle.
"""

from migen import *

from spec import numerics as N
from gateware.arith import round_shift_split, saturate, as_signed
from gateware.core.pipeline import delay_chain, drive_running

LATENCY = 6           # cycles from an element's read address to its write



class Rope(Module):
    """Table rows: ``load_we`` writes ``load_data`` (a beat of four (cos, sin) int16 pairs) at
    beat ``load_adr`` of lane ``load_lane``'s buffer (``depth`` beats). Pass, start/done:
    ``start`` begins it (``src``, ``dst``, ``n``, ``m`` hold still until ``done``, high in
    its last cycle); ``abort`` stops it at once. Scratchpad side: ``radr`` (data ``x[x]`` two
    cycles later), ``wadr``, ``we``, ``out[x]``; ``running``: the pass runs."""

    def __init__(self, lanes, depth):
        self.load_we, self.load_lane, self.load_adr = Signal(), Signal(max=max(lanes, 2)), Signal(max=depth)
        self.load_data = Signal(128)
        self.start, self.abort, self.done, self.running = Signal(), Signal(), Signal(), Signal()
        self.src, self.dst, self.n, self.m = (Signal(16) for _ in range(4))
        self.x = [Signal((32, True), name=f"rope_x{x}") for x in range(lanes)]
        self.radr, self.wadr, self.we = Signal(17), Signal(17), Signal()
        self.out = [Signal((32, True), name=f"rope_out{x}") for x in range(lanes)]

        # # #

        i = Signal(17)                    # the next element
        jj = Signal(16)                   # its pair's index in the row
        issue = Signal()
        self.comb += issue.eq(self.running & (i < self.n))
        valid = delay_chain(self, issue, LATENCY, name="rope_v")
        index = delay_chain(self, i[:16], LATENCY, name="rope_i")
        # The pair index trails the issue by two cycles, so cos/sin are read (from pair[2]) the
        # cycle before the odd element reaches the scratchpad's output.
        pair = delay_chain(self, jj, 2, name="rope_j")
        self.comb += [
            self.radr.eq(self.src + i),
            self.wadr.eq(self.dst + index[LATENCY]), self.we.eq(valid[LATENCY] & self.running),
            self.done.eq(self.running & (i == self.n) & (Cat(*valid[1:]) == 0)),
        ]
        self.sync += If(self.start,
            i.eq(0), jj.eq(0)
        ).Elif(self.running,
            If(issue,
                i.eq(i + 1),
                If(i[0], jj.eq(Mux(jj == (self.m >> 1) - 1, 0, jj + 1)))
            )
        )
        drive_running(self, self.running, self.start, self.done, self.abort)
        for x in range(lanes):
            cs_mem = Memory(128, depth)
            cs_rp, cs_wp = cs_mem.get_port(), cs_mem.get_port(write_capable=True)
            self.specials += cs_mem, cs_rp, cs_wp
            self.comb += [cs_wp.adr.eq(self.load_adr), cs_wp.dat_w.eq(self.load_data),
                          cs_wp.we.eq(self.load_we & (self.load_lane == x)), cs_rp.adr.eq(pair[2] >> 2)]
            v0, v1r, d1 = Signal((32, True)), Signal((32, True)), Signal((32, True))
            csw = Signal(32)
            ra, rb = Signal((50, True)), Signal((50, True))
            cosv = as_signed(self, csw[0:16], 16)
            sinv = as_signed(self, csw[16:32], 16)
            self.sync += [
                d1.eq(self.x[x]),
                If(valid[2] & index[2][0],
                    v0.eq(d1), v1r.eq(self.x[x]),
                    csw.eq(Array(cs_rp.dat_r[32 * k:32 * (k + 1)] for k in range(4))[pair[2][0:2]])
                ),
                ra.eq(v0 * cosv - v1r * sinv), rb.eq(v0 * sinv + v1r * cosv),
            ]
            ra_r = round_shift_split(self, ra, N.ROPE_FRAC, 56)()
            rb_r = round_shift_split(self, rb, N.ROPE_FRAC, 56)()
            self.comb += self.out[x].eq(saturate(self, Mux(index[LATENCY][0], rb_r, ra_r), 32))
