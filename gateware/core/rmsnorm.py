"""RMSNORM: act[dst + k] = rmsnorm(act[src:+n])[k] with the fixed16 gains at addr
(spec.numerics.rmsnorm), on a group of ``lanes`` slots at once.

Pass 1 sums each lane's squares, one element a cycle: read (S0, S1), round (S2), the square's
three partial products (S3) and their sum (S4), accumulate (S5); it is skipped when the write statistics already hold the sum. Then
every lane divides by n and takes 1/sqrt at once (their latencies are fixed, so lane 0's done
stands for all of them). Pass 2, one element a cycle plus one a gain beat: read (S1, S2),
x*y (S3), round by 15-e (S4 bias, S5 shift, S6 saturate), times the gain (S7), round by the
gain shift (S8 bias, S9 shift), saturate and write (S10) to every lane's slot.

The gains are asked for first (the sequencer issues their burst as it starts the unit): their
beats wait in the read FIFO during pass 1 and the division, so pass 2 does not wait for DRAM.
"""

from migen import *

from spec import numerics as N
from gateware.arith import round_shift, round_shift_split, saturate, Divider, Rsqrt, as_signed
from gateware.core.pipeline import delay_chain, stop_on_abort
from gateware.core.unpack import add_unpacker_port

LATENCY = 10          # pass 2: cycles from an element's read address to its write



class Rmsnorm(Module):
    """Start/done: ``start`` begins the group's pass (the sequencer issues the gains' burst in
    the same cycle); ``granted`` says that burst has gone to DRAM; ``done`` is high in the last
    cycle; ``abort`` stops the unit at once. Operands ``src``, ``dst``, ``n`` hold still until
    ``done``. With ``write_stats``, ``use`` and ``use_sumsq[x]``: the sums of squares are
    known and pass 1 is skipped. Scratchpad side: ``radr`` (data ``x[x]`` two cycles later),
    ``wadr``, ``we``, ``out[x]``. Gains, through a BeatUnpacker: ``f16_header`` and ``f16_run``
    drive it; ``f16_issue``, ``f16_i``, ``f16_element`` and ``f16_shift`` come back from it.
    ``pass2``: pass 2 runs (the all-slot write is this unit's)."""

    def __init__(self, lanes, divider_steps, write_stats=False):
        self.start, self.granted, self.abort, self.done = Signal(), Signal(), Signal(), Signal()
        self.src, self.dst, self.n = Signal(16), Signal(16), Signal(16)
        self.use = Signal()
        self.use_sumsq = [Signal(64, name=f"rms_use_sumsq{x}") for x in range(lanes)]
        self.x = [Signal((32, True), name=f"rms_x{x}") for x in range(lanes)]
        self.radr, self.wadr, self.we = Signal(17), Signal(17), Signal()
        self.out = [Signal((32, True), name=f"rms_out{x}") for x in range(lanes)]
        add_unpacker_port(self)
        self.pass2 = Signal()

        # # #

        n = self.n
        i = Signal(17)                    # pass 1's next element
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        sum_v = delay_chain(self, fsm.ongoing("SUM") & (i < n), 5, name="rms_sum_v")
        sumsq = [Signal(64, name=f"rms_sumsq{x}") for x in range(lanes)]
        ry = [Signal((20, True), name=f"rms_y{x}") for x in range(lanes)]
        re_ = [Signal((8, True), name=f"rms_e{x}") for x in range(lanes)]

        # Pass 1's read address src + i, kept in a register that steps with i: the add and its
        # carry chain were on the ULX3S's worst path (the unit's state into the scratchpads'
        # address mux, 18.8 ns).
        sa = Signal(17)
        fsm.act("IDLE", If(self.start, NextValue(i, 0), NextState("WAIT")))
        fsm.act("WAIT", NextValue(sa, self.src),
                If(self.granted, NextState("SUM") if not write_stats else
                   If(self.use, NextState("DIV")).Else(NextState("SUM"))))
        fsm.act("SUM",
            self.radr.eq(sa),
            If(i < n, NextValue(i, i + 1), NextValue(sa, sa + 1)),
            If((i == n) & (Cat(*sum_v[1:]) == 0), NextState("DIV"))
        )
        # Pass 1: the sum starts from the gathered one, or 0, as the unit starts.
        starting = fsm.ongoing("IDLE") & self.start
        for x in range(lanes):
            st, xs = round_shift(self.x[x], N.RMS_PRE_SHIFT, 40)
            self.comb += st
            xs_r = Signal((32 - N.RMS_PRE_SHIFT + 1, True))     # |x| < 2**31 (timing: a narrow square)
            # The square from three registered 14 x 14 products, one DSP each: a 27 x 27
            # multiplier's own partial-product adder behind its DSPs was the ULX3S's worst
            # path (18.7 ns). xs = hi * 2**13 + lo, lo unsigned.
            hi, lo = xs_r[13:], Cat(xs_r[:13], C(0, 1))
            p_hh, p_hl, p_ll = Signal((28, True)), Signal((28, True)), Signal((28, True))
            sq = Signal(64)
            self.sync += [
                xs_r.eq(xs),
                p_hh.eq(as_signed(self, hi, 14) * as_signed(self, hi, 14)),
                p_hl.eq(as_signed(self, hi, 14) * as_signed(self, lo, 14)),
                p_ll.eq(as_signed(self, lo, 14) * as_signed(self, lo, 14)),
                sq.eq((p_hh << 26) + (p_hl << 14) + p_ll),
                If(starting, sumsq[x].eq(Mux(self.use, self.use_sumsq[x], 0) if write_stats else 0)
                ).Elif(fsm.ongoing("SUM") & sum_v[5], sumsq[x].eq(sumsq[x] + sq)),
            ]

        # Every lane divides and takes 1/sqrt at once.
        eps_q = int(round(N.RMS_EPS * (1 << (2 * (N.ACT_FRAC - N.RMS_PRE_SHIFT)))))
        divs = [Divider(64, 32, quotient_bits=63 - 2 * N.RMS_PRE_SHIFT, steps=divider_steps) for _ in range(lanes)]
        rsqs = [Rsqrt() for _ in range(lanes)]
        for x in range(lanes):
            self.submodules += divs[x], rsqs[x]
            ms = Signal(64)
            self.comb += [
                divs[x].start.eq(fsm.ongoing("DIV")), divs[x].dividend.eq(sumsq[x]), divs[x].divisor.eq(n),
                rsqs[x].start.eq(fsm.ongoing("RSQ")), rsqs[x].m.eq(ms),
            ]
            self.sync += [
                If(divs[x].done, ms.eq(divs[x].quotient + eps_q)),
                If(rsqs[x].done, ry[x].eq(rsqs[x].y), re_[x].eq(rsqs[x].e)),
            ]
        fsm.act("DIV", NextState("DIVW"))
        fsm.act("DIVW", If(divs[0].done, NextState("RSQ")))
        fsm.act("RSQ", NextState("RSQW"))
        fsm.act("RSQW", If(rsqs[0].done, NextState("HDR")))

        # Pass 2.
        fsm.act("HDR", self.f16_header.eq(1), If(self.f16_header & self.f16_taken, NextState("RUN")))
        self.comb += self.pass2.eq(fsm.ongoing("RUN"))
        rv = delay_chain(self, self.f16_issue & self.pass2, LATENCY, keep=self.pass2, name="rms_v")
        ri = delay_chain(self, self.f16_i[:16], LATENCY, name="rms_i")
        g = delay_chain(self, as_signed(self, self.f16_element[:16], 16), 7, name="rms_g")
        for x in range(lanes):
            x1 = Signal((32, True))
            p1 = Signal((64, True))
            xn = Signal((32, True))
            p2 = Signal((64, True))
            s1 = Signal((8, True))        # registered: a constant per instruction and slot
            # x * y is int32 x Q15 (52 bits); xn * gain is int32 x int16 (48 bits).
            xn_finish = round_shift_split(self, p1, s1, 72, x_bits=52, sat_bits=32)
            out_finish = round_shift_split(self, p2, as_signed(self, self.f16_shift, 8), 72, x_bits=48,
                                           s_range=(0, 63), sat_bits=32)
            xn_r, out_r = Signal((len(xn_finish()), True)), Signal((len(out_finish()), True))
            self.sync += [
                s1.eq(15 - re_[x]),
                x1.eq(self.x[x]),
                p1.eq(x1 * ry[x]),
                xn_r.eq(xn_finish()),
                xn.eq(saturate(self, xn_r, 32)),
                p2.eq(xn * g[7]),
                out_r.eq(out_finish()),
            ]
            self.comb += self.out[x].eq(saturate(self, out_r, 32))
        # Pass 2's read address src + f16_i, a register that steps with each element issued
        # (the add was on the ULX3S's worst path into the scratchpads' address mux, 18.2 ns).
        sa2 = Signal(17)
        self.sync += If(fsm.ongoing("HDR"), sa2.eq(self.src)).Elif(self.f16_issue, sa2.eq(sa2 + 1))
        fsm.act("RUN",
            self.radr.eq(sa2), self.f16_run.eq(1),
            self.wadr.eq(self.dst + ri[LATENCY]), self.we.eq(rv[LATENCY]),
            If((self.f16_i == n) & (Cat(*rv[1:]) == 0), self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)
