"""MATVEC's input quantiser: every slot's input act[src:+m] as int16 mantissas and one exponent
per slot (spec.numerics.quantize_input), written as lane words (LANES mantissas each) into a
buffer per slot that the MAC array reads (gateware/core/matvec.py).

Pass 1 finds each slot's largest |x|, two elements a cycle (both of the first two scratchpad
ports): read (S0, S1), |x| of each (S2), the pair's larger (S3), the running maximum (S4). It is
skipped when the write statistics already hold that maximum (``use``). The exponent is then
the smallest e with round_shift(amax, e) <= 2**15 - 1. Pass 2 takes ``read_ports`` elements a
cycle over the padded columns: read (S0, S1), rounding bias (S2), shift (S3), saturate (S4),
pack into the lane word (S5), which is written to the buffer once it holds LANES mantissas.
"""

from functools import reduce
from operator import add, and_

from migen import *

from spec import isa, numerics as N
from gateware.arith import round_shift_split, saturate, as_signed
from gateware.core.pipeline import stop_on_abort


class InputQuantiser(Module):
    """Start/done: ``prepare`` readies the passes (their registers cleared), ``start`` begins them
    (in the same cycle as ``prepare`` or any later one), ``done`` is high in their last cycle,
    ``abort`` stops the unit at once. (Two strobes, for timing: MATVEC prepares the unit as the
    instruction starts and starts it when the weights' burst is granted, the end of the window
    check's carry chains, which then reaches the quantiser's state alone, not its wide clears.) Operands ``src``, ``m`` (columns), ``cp`` (columns padded to whole
    lane words), ``nslots`` and, with ``write_stats``, ``use`` and ``use_amax[s]`` hold still
    until ``done``. Scratchpad side: ``radr[p]`` for each of the ``read_ports`` ports, their data
    ``rdat[p][s]`` two cycles later. Results: ``ex[s]``, each slot's exponent, and its lane
    words: ``xdat[s]`` is word ``xadr`` of slot s's buffer, a cycle after the address; with
    ``second_word`` also ``xdat2[s]``, word ``xadr2`` (MATVEC's second beat of a cycle)."""

    def __init__(self, slots, read_ports, max_cols, fast_exponent, write_stats=False, second_word=False):
        B, XR = slots, read_ports
        words = max(max_cols // isa.LANES, 2)
        self.prepare, self.start, self.abort, self.done = Signal(), Signal(), Signal(), Signal()
        self.src, self.m, self.cp = Signal(16), Signal(16), Signal(17)
        self.nslots = Signal(max=B + 1)
        self.use = Signal()
        self.use_amax = [Signal(32, name=f"quant_use_amax{s}") for s in range(B)]
        self.radr = [Signal(17, name=f"quant_radr{p}") for p in range(XR)]
        self.rdat = [[Signal((32, True), name=f"quant{s}_rdat{p}") for s in range(B)] for p in range(XR)]
        self.ex = [Signal(5, name=f"quant_ex{s}") for s in range(B)]
        self.xadr = Signal(max=words)
        self.xdat = [Signal(16 * isa.LANES, name=f"quant_xdat{s}") for s in range(B)]
        if second_word:
            self.xadr2 = Signal(max=words)
            self.xdat2 = [Signal(16 * isa.LANES, name=f"quant_xdat2_{s}") for s in range(B)]

        # # #

        src, m, cp = self.src, self.m, self.cp
        i = Signal(32)                    # the pass's next element
        v1, v2, v3, v4, v5 = Signal(), Signal(), Signal(), Signal(), Signal()    # stage valids
        i1, i2, i3, i4, i5 = Signal(32), Signal(32), Signal(32), Signal(32), Signal(32)
        aw1, aw2 = Signal(), Signal()     # pass 1: the pair's second element is in range
        amax = [Signal(32, name=f"quant_amax{s}") for s in range(B)]
        xwords = [Signal(16 * isa.LANES) for _ in range(B)]
        xin_wdat = [Signal(16 * isa.LANES) for _ in range(B)]
        xin_wadr = Signal(max=words)
        xin_we = Signal()
        exp_ok = []
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        # Pass 2: elements i2 .. i2 + XR - 1 are columns of the input (registered beside i2,
        # timing: the add and compare stay out of the quantiser's path).
        xok = [Signal(name=f"quant_xok{e}") for e in range(XR)]
        self.sync += [xok[e].eq(i1 + e < m) for e in range(XR)]
        starting = fsm.ongoing("IDLE") & self.prepare
        lim = 1 << (N.QIN_BITS - 1)
        for s in range(B):
            mem = Memory(16 * isa.LANES, words)
            rp, wp = mem.get_port(), mem.get_port(write_capable=True)
            self.specials += mem, rp, wp
            self.comb += [rp.adr.eq(self.xadr), self.xdat[s].eq(rp.dat_r),
                          wp.adr.eq(xin_wadr), wp.dat_w.eq(xin_wdat[s]), wp.we.eq(xin_we)]
            if second_word:
                rp2 = mem.get_port()
                self.specials += rp2
                self.comb += [rp2.adr.eq(self.xadr2), self.xdat2[s].eq(rp2.dat_r)]
            a, b = self.rdat[0][s], self.rdat[1][s]
            ax, ax2, pmax = Signal(32), Signal(32), Signal(32)
            # (Mux(aw2, x, 0), not Mux(~aw2, 0, x): Migen's simulator takes ~ of a bit as -1
            # or -2, both true, so the unit test would never see the pair's second element.)
            self.sync += [
                ax.eq(Mux(a < 0, -a, a)),
                ax2.eq(Mux(aw2, Mux(b < 0, -b, b), 0)),
                pmax.eq(Mux(ax2 > ax, ax2, ax)),
            ]
            # The bound round_shift(amax, e) <= 2**15 - 1 is amax below (2**15 << e) - 2**(e-1),
            # a constant per e (no shifter: timing).
            if fast_exponent:
                # Those bounds increase with e, so e is the number of bounds amax reaches:
                # compared at once in EXP (registered), counted in EXP2. amax <= 2**31 reaches
                # none from e = 17 on.
                reached = Signal(17)
                self.sync += reached.eq(Cat(*[amax[s] >= (lim << e) - ((1 << e) >> 1) for e in range(17)]))
                exp_step = self.ex[s].eq(reduce(add, [reached[e] for e in range(17)]))
            else:
                # e grows by one per EXP, EXP2 round while amax reaches its bound.
                fits_below = Array(C((lim << e) - ((1 << e) >> 1), 48) for e in range(32))
                ok = Signal()       # registered in EXP, used in EXP2 (timing)
                self.sync += ok.eq((amax[s] < fits_below[self.ex[s]]) | (s >= self.nslots))
                exp_ok.append(ok)
                exp_step = If(~ok, self.ex[s].eq(self.ex[s] + 1))
            # Pass 2's XR elements of the slot, each rounded and saturated on its way in.
            xms = []
            for e in range(XR):
                xval = as_signed(self, Mux(xok[e], self.rdat[e][s], 0), 32)
                xr_finish = round_shift_split(self, xval, as_signed(self, self.ex[s], 7), 40,
                                              x_bits=32, s_range=(0, 31), sat_bits=N.QIN_BITS)
                xr = Signal((len(xr_finish()), True))
                xm = Signal((16, True))
                self.sync += [xr.eq(xr_finish()), xm.eq(saturate(self, xr, N.QIN_BITS))]
                xms.append(xm)
            self.comb += xin_wdat[s].eq(xwords[s])
            for l in range(0, isa.LANES, XR):
                self.comb += If(i5[0:4] == l, xin_wdat[s][16 * l:16 * (l + XR)].eq(Cat(*xms)))
            self.sync += [
                If(starting, amax[s].eq(Mux(self.use, self.use_amax[s], 0) if write_stats else 0),
                   self.ex[s].eq(0)),
                If(fsm.ongoing("AMAX") & v4 & (pmax > amax[s]), amax[s].eq(pmax)),
                If(fsm.ongoing("EXP2"), exp_step),
                If(fsm.ongoing("XIN") & v5, xwords[s].eq(xin_wdat[s])),
            ]
        self.comb += [xin_wadr.eq(i5 >> 4), xin_we.eq(fsm.ongoing("XIN") & v5 & (i5[0:4] == isa.LANES - XR))]

        first = If(self.use, NextState("EXP")).Else(NextState("AMAX")) if write_stats else NextState("AMAX")
        fsm.act("IDLE",
            If(self.prepare,
                NextValue(i, 0), NextValue(v1, 0), NextValue(v2, 0), NextValue(v3, 0), NextValue(v4, 0),
                If(self.start, first).Else(NextState("READY"))
            )
        )
        fsm.act("READY", If(self.start, first))
        fsm.act("AMAX",
            self.radr[0].eq(src + i), self.radr[1].eq(src + i + 1),
            If(i < m, NextValue(i, i + 2)),
            NextValue(v1, i < m), NextValue(aw1, i + 1 < m), NextValue(v2, v1), NextValue(aw2, aw1),
            NextValue(v3, v2), NextValue(v4, v3),
            If((i >= m) & ~v1 & ~v2 & ~v3 & ~v4, NextState("EXP"))
        )
        fsm.act("EXP",
            NextValue(i, 0), NextValue(v1, 0), NextValue(v2, 0), NextValue(v3, 0), NextValue(v4, 0),
            NextValue(v5, 0), NextState("EXP2")
        )
        fsm.act("EXP2", NextState("XIN") if fast_exponent else
                If(reduce(and_, exp_ok), NextState("XIN")).Else(NextState("EXP")))
        fsm.act("XIN",
            *[self.radr[x].eq(src + i + x if x else src + i) for x in range(XR)],
            If(i < cp, NextValue(i, i + XR)),
            NextValue(v1, i < cp), NextValue(i1, i),
            NextValue(v2, v1), NextValue(i2, i1),
            NextValue(v3, v2), NextValue(i3, i2),
            NextValue(v4, v3), NextValue(i4, i3),
            NextValue(v5, v4), NextValue(i5, i4),
            If((i == cp) & ~v1 & ~v2 & ~v3 & ~v4 & ~v5, self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)
