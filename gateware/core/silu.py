"""SILU: act[dst + k] = silu(act[src + k]) * act[src2 + k] for k < n (spec.numerics.silu_mul),
on a group of ``lanes`` slots at once, one element of each per cycle.

Per lane: read a and b (S0, S1), look up the sigmoid interval (S3), the interval's ends (S4),
interpolate (S5), a*sigmoid (S6), round (S7), times b (S8), round (S9), saturate and write
(S10). The sequencer walks the groups; this unit runs one group's pass.
"""

from migen import *

from spec import numerics as N
from gateware.arith import round_shift, saturate, as_signed
from gateware.core.pipeline import delay_chain, drive_running

LATENCY = 10          # cycles from an element's read address to its write



class Silu(Module):
    """Start/done: ``start`` begins a pass over ``n`` elements (the operand fields ``src``,
    ``src2``, ``dst``, ``n`` hold still until ``done``); ``done`` is high in the pass's last
    cycle; ``abort`` stops it at once (a fault elsewhere). Scratchpad side: ``radr``/``radr2``
    (the read addresses, data ``a[x]``/``b[x]`` of lane x two cycles later), ``wadr``, ``we``
    and ``out[x]`` (every lane's slot written at once). ``running``: between start and done."""

    def __init__(self, lanes):
        self.start, self.abort, self.done, self.running = Signal(), Signal(), Signal(), Signal()
        self.src, self.src2, self.dst, self.n = (Signal(16) for _ in range(4))
        self.a = [Signal((32, True), name=f"silu_a{x}") for x in range(lanes)]
        self.b = [Signal((32, True), name=f"silu_b{x}") for x in range(lanes)]
        self.radr, self.radr2, self.wadr = Signal(17), Signal(17), Signal(17)
        self.we = Signal()
        self.out = [Signal((32, True), name=f"silu_out{x}") for x in range(lanes)]

        # # #

        i = Signal(17)                    # the next element to read (n < 2**16)
        valid = delay_chain(self, self.running & (i < self.n), LATENCY, keep=self.running, name="silu_v")
        index = delay_chain(self, i[:16], LATENCY, name="silu_i")
        busy = Signal()
        self.comb += [
            busy.eq(Cat(*valid[1:]) != 0),
            self.radr.eq(self.src + i), self.radr2.eq(self.src2 + i),
            self.wadr.eq(self.dst + index[LATENCY]), self.we.eq(valid[LATENCY] & self.running),
            self.done.eq(self.running & (i == self.n) & ~busy),
        ]
        self.sync += If(self.start, i.eq(0)).Elif(self.running, If(i < self.n, i.eq(i + 1)))
        drive_running(self, self.running, self.start, self.done, self.abort)
        for x in range(lanes):
            self.comb += self.out[x].eq(self._lane(self.a[x], self.b[x]))

    def _lane(self, a_in, b_in):
        """One lane's datapath; returns its saturated output (S10)."""
        step_bits = N.ACT_FRAC + (2 * N.SIGMOID_RANGE).bit_length() - 1 - N.SIGMOID_TABLE_BITS
        top = (2 * N.SIGMOID_RANGE << N.ACT_FRAC) - 1
        sig_rom = Memory(16, len(N.SIGMOID_TABLE), init=[int(v) for v in N.SIGMOID_TABLE])
        sig_p0, sig_p1 = sig_rom.get_port(), sig_rom.get_port()
        self.specials += sig_rom, sig_p0, sig_p1
        sa = Signal((32, True))
        spos = Signal(33)
        shifted = as_signed(self, sa + (N.SIGMOID_RANGE << N.ACT_FRAC), 34)
        self.comb += [
            spos.eq(Mux(shifted < 0, 0, Mux(shifted > top, top, shifted))),
            sig_p0.adr.eq(spos >> step_bits), sig_p1.adr.eq((spos >> step_bits) + 1),
        ]
        sfrac = Signal(step_bits)
        sg = Signal((18, True))
        pa = Signal((56, True))
        # The sigmoid is at most 2**15, so a*sigmoid/2**15 keeps within int32 (33 bits
        # signed) and times b within 64 bits.
        sv = Signal((34, True))
        pb = Signal((66, True))
        so_q = Signal((66, True))
        st, sv_r = round_shift(pa, 15, 56)
        self.comb += st
        st, so_r = round_shift(pb, N.ACT_FRAC, 66)
        self.comb += st
        sb1, sb2, sb3, sb3b, sb4, sb5 = (Signal((32, True)) for _ in range(6))
        sa3, sa3b, sa4 = Signal((32, True)), Signal((32, True)), Signal((32, True))
        sig_lo, sig_d = Signal((17, True)), Signal((18, True))   # timing: the table's outputs
        sfrac2 = Signal(step_bits)                                # registered before the product
        self.sync += [
            sa.eq(a_in), sb1.eq(b_in),
            sfrac.eq(spos[0:step_bits]), sa3.eq(sa), sb2.eq(sb1),
            sig_lo.eq(sig_p0.dat_r), sig_d.eq(sig_p1.dat_r - sig_p0.dat_r), sfrac2.eq(sfrac),
            sa3b.eq(sa3), sb3.eq(sb2),
            sg.eq(sig_lo + (as_signed(self, sig_d * sfrac2, 30) >> step_bits)),
            sb3b.eq(sb3), sa4.eq(sa3b),
            pa.eq(sa4 * sg), sb4.eq(sb3b),
            sv.eq(sv_r), sb5.eq(sb4),
            pb.eq(sv * sb5),
            so_q.eq(so_r),
        ]
        return as_signed(self, saturate(self, so_q, 32), 32)
