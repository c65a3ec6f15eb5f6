"""KVWRITE into int8 K/V rows (Params.kv_format "int8": spec.numerics.to_kv8, spec.isa's K/V
layout): one slot's n heads of m elements from act[src], each head's scale word and row into
its KV head's group of 8 positions, at the slot's position.

Three stages, each a head apart at most. The reader reads a head's elements four a cycle into
one half of a row buffer and keeps their largest |x|. The scaler takes a full half's maximum
to its scale (spec.numerics.kv8_scale, in three registered steps), kept with the half. The
writer takes the oldest half once its scale is in: the scale word's write (bytes 2r and 2r + 1
of the group's scale beat, r = pos % 8, the beat's other bytes skipped), then the row's: each
element times 2**22 / mant, rounded by 15 + shift and saturated to int8, sixteen a beat (head
size 8: half a beat, the other half skipped). Each write is a burst the
sequencer checks against the DRAM window first (``req``, ``req_addr``, ``req_bytes``; it
answers ``granted``), so a fault stops the unit with exactly golden's bytes written. The beats
go out through a FIFO; a beat's reads start only when an entry is free for it (credits).
"""

from functools import reduce
from operator import or_

from migen import *

from litex.soc.interconnect import stream

from spec import isa, numerics as N
from gateware.arith import round_shift_split, saturate, as_signed
from gateware.core.pipeline import delay_chain, stop_on_abort

ADDR_W = 50
FIFO_BEATS = 4


def _bit_length(m, v, width):
    """The number of bits of unsigned ``v`` (a priority encoder), as a signal of ``m``."""
    n = Signal(max=width + 1)
    m.comb += n.eq(0)
    for b in range(width):
        m.comb += If(v[b], n.eq(b + 1))
    return n


class Kvwrite8(Module):
    """Start/done: ``start`` begins the slot (``src``, ``n``, ``m``, ``stride``, ``base``, the
    slot's layer K or V address, and ``pos`` hold still until done), ``done`` is high in the
    last cycle, ``abort`` stops the unit at once; ``clear`` (a run's start) restores the
    credits; with ``last`` (the run's last slot) the slot ends once the FIFO is empty, and
    ``idle`` says nothing is left to write. Bursts: ``req`` with ``req_addr`` and
    ``req_bytes``, answered by ``granted``. Scratchpad: ``radr[e]``, the slot's elements in
    ``x[e]`` two cycles later. Write stream: ``wr_valid``, ``wr_address`` (beats),
    ``wr_data``, ``wr_skip`` (bytes not to write), ``wr_ready``."""

    def __init__(self, max_head, addr_width):
        self.start, self.abort, self.done, self.clear = Signal(), Signal(), Signal(), Signal()
        self.last, self.idle = Signal(), Signal()
        self.src, self.n, self.m, self.pos = Signal(16), Signal(16), Signal(16), Signal(16)
        self.base, self.stride = Signal(ADDR_W), Signal(32)
        self.req, self.req_addr, self.req_bytes, self.granted = Signal(), Signal(ADDR_W), Signal(16), Signal()
        self.radr = [Signal(17, name=f"kvw8_radr{e}") for e in range(4)]
        self.x = [Signal((32, True), name=f"kvw8_x{e}") for e in range(4)]
        self.wr_valid, self.wr_ready = Signal(), Signal()
        self.wr_address, self.wr_data, self.wr_skip = Signal(addr_width), Signal(128), Signal(16)

        # # #

        entries = max(max_head // 4, 2)               # four elements an entry
        self.specials.buf = buf = Memory(128, 2 * entries)
        self.specials.buf_wp = buf_wp = buf.get_port(write_capable=True)
        self.specials.buf_rp = buf_rp = buf.get_port()
        busy = Array([Signal(name=f"kvw8_busy{i}") for i in range(2)])    # a half holds (or is being read into)
        full = Array([Signal(name=f"kvw8_full{i}") for i in range(2)])    # its row is complete
        amax = Array([Signal(32, name=f"kvw8_amax{i}") for i in range(2)])
        release = Signal()                 # the writer is done with its half
        qsel = Signal()
        self._reader(buf_wp, entries, busy, full, amax, release, qsel)
        scales = self._scaler(full, amax, release, qsel)
        self._writer(buf_rp, entries, scales, release, qsel, addr_width)

    def _reader(self, buf_wp, entries, busy, full, amax, release, qsel):
        """The reader: a head's elements into the row buffer's half ``rsel``, and its largest
        |x| into ``amax[rsel]``; ``busy`` is set with the head's last read, ``full`` once its
        elements and maximum are in."""
        ii, jr, hr, rsel = Signal(17), Signal(8), Signal(16), Signal()
        fsm = FSM(reset_state="IDLE")
        self.submodules.rfsm = fsm
        go = Signal()
        last_read = jr + 4 == self.m
        self.comb += go.eq(fsm.ongoing("RUN") & ~busy[rsel] & ~self.abort)
        self.comb += [adr.eq(ii + e) for e, adr in enumerate(self.radr)]
        fsm.act("IDLE", If(self.start, NextValue(ii, self.src), NextValue(jr, 0), NextValue(hr, 0),
                           NextValue(rsel, 0), NextState("RUN")))
        fsm.act("RUN",
            If(go,
                NextValue(ii, ii + 4), NextValue(jr, jr + 4),
                If(last_read,
                    NextValue(jr, 0), NextValue(hr, hr + 1), NextValue(rsel, ~rsel),
                    If(hr == self.n - 1, NextState("IDLE"))
                )
            )
        )
        stop_on_abort(fsm, self.abort)
        # The elements arrive two cycles after their reads (stage 2), their largest |x| is
        # registered (3) and accumulated over the head (4).
        v = delay_chain(self, go, 3, keep=~self.abort, name="kvw8_rv")     # an abort drops the head
        sel = delay_chain(self, rsel, 3, name="kvw8_rsel")
        k = delay_chain(self, jr[2:], 2, name="kvw8_rk")
        first = delay_chain(self, jr == 0, 3, name="kvw8_rfirst")
        lst = delay_chain(self, last_read, 3, name="kvw8_rlast")
        mags = [Signal(32, name=f"kvw8_mag{e}") for e in range(4)]
        m4, acc = Signal(32), Signal(32)
        self.comb += [mags[e].eq(Mux(x < 0, -x, x)) for e, x in enumerate(self.x)]
        m_ab = [Mux(mags[0] > mags[1], mags[0], mags[1]), Mux(mags[2] > mags[3], mags[2], mags[3])]
        m_r = [Signal(32), Signal(32)]
        self.comb += [buf_wp.adr.eq(Cat(k[2][:log2_int(entries)], sel[2])), buf_wp.dat_w.eq(Cat(*self.x)),
                      buf_wp.we.eq(v[2])]
        amax_now = Mux(first[3], 0, acc)
        self.sync += [
            m_r[0].eq(m_ab[0]), m_r[1].eq(m_ab[1]),
            If(v[3], acc.eq(Mux(m4 > amax_now, m4, amax_now)),
               If(lst[3], amax[sel[3]].eq(Mux(m4 > amax_now, m4, amax_now)), full[sel[3]].eq(1))),
            If(go & last_read, busy[rsel].eq(1)),
            If(release, busy[qsel].eq(0), full[qsel].eq(0)),
            If(self.abort | self.clear, busy[0].eq(0), busy[1].eq(0), full[0].eq(0), full[1].eq(0)),
        ]
        self.comb += m4.eq(Mux(m_r[0] > m_r[1], m_r[0], m_r[1]))
        self.r_active = reduce(or_, v[1:])

    def _scaler(self, full, amax, release, qsel):
        """The scaler: each full half's scale (spec.numerics.kv8_scale) from its largest |x|:
        amax * 128 + 126, t = that / 127 (a multiply by KV8_DIV127_MUL), then its bit length
        and the rounded mantissa, then the normalised and capped (mant, shift). Returns the
        halves' (mant, shift, ok) arrays; the writer's release clears ``ok``."""
        mant = Array([Signal(8, name=f"kvw8_mant{i}") for i in range(2)])
        sh = Array([Signal(4, name=f"kvw8_shift{i}") for i in range(2)])
        ok = Array([Signal(name=f"kvw8_scaled{i}") for i in range(2)])
        ssel, hs = Signal(), Signal(16)
        t, n127 = Signal(34), Signal(40)
        mant0, sh0, small = Signal(10), Signal(6), Signal()
        tl = _bit_length(self, t, 34)
        shift0 = Signal(6)
        self.comb += shift0.eq(Mux(tl > 8, tl - 8, 0))
        fsm = FSM(reset_state="IDLE")
        self.submodules.sfsm = fsm
        fsm.act("IDLE", If(self.start, NextValue(ssel, 0), NextValue(hs, 0), NextState("WAIT")))
        fsm.act("WAIT", If(full[ssel] & ~ok[ssel], NextValue(n127, (amax[ssel] << 7) + 126), NextState("DIV")))
        # (the product in a signal of its own: Verilog would size it as its widest operand)
        prod127 = Signal(82)
        self.comb += prod127.eq(n127 * N.KV8_DIV127_MUL)
        fsm.act("DIV", NextValue(t, prod127[N.KV8_DIV127_SHIFT:]), NextState("S1"))
        half = Signal(34)
        self.comb += half.eq(Mux(shift0 == 0, 0, (C(1, 35) << shift0) >> 1))
        fsm.act("S1",
            NextValue(small, t < 256), NextValue(sh0, shift0),
            NextValue(mant0, (t + half) >> shift0),
            NextState("S2"))
        m_new, s_new, commit = Signal(8), Signal(4), Signal()
        self.comb += If(small,
            m_new.eq(Mux(t < 128, 128, t[:8])), s_new.eq(0)
        ).Elif(sh0 + (mant0 == 256) > N.KV8_MAX_SHIFT,
            m_new.eq(255), s_new.eq(N.KV8_MAX_SHIFT)
        ).Elif(mant0 == 256,
            m_new.eq(128), s_new.eq(sh0 + 1)
        ).Else(
            m_new.eq(mant0[:8]), s_new.eq(sh0)
        )
        fsm.act("S2",
            commit.eq(~self.abort), NextValue(ssel, ~ssel), NextValue(hs, hs + 1),
            If(hs == self.n - 1, NextState("IDLE")).Else(NextState("WAIT")))
        stop_on_abort(fsm, self.abort)
        self.sync += [
            If(commit, mant[ssel].eq(m_new), sh[ssel].eq(s_new), ok[ssel].eq(1)),
            If(release, ok[qsel].eq(0)),
            If(self.abort | self.clear, ok[0].eq(0), ok[1].eq(0)),
        ]
        return mant, sh, ok

    def _writer(self, buf_rp, entries, scales, release, qsel, addr_width):
        """The writer: per head, once its scale is in, the scale word's burst and beat, the
        row's burst and beats (see the module's docstring)."""
        m = self.m
        fifo = stream.SyncFIFO([("address", addr_width), ("data", 128), ("skip", 16)], FIFO_BEATS)
        self.submodules.fifo = fifo
        credit = Signal(max=FIFO_BEATS + 1, reset=FIFO_BEATS)
        pop = Signal()
        take = Signal()                    # a credit taken this cycle
        self.comb += [
            pop.eq(fifo.source.valid & fifo.source.ready),
            self.wr_valid.eq(fifo.source.valid), self.wr_address.eq(fifo.source.address),
            self.wr_data.eq(fifo.source.data), self.wr_skip.eq(fifo.source.skip),
            fifo.source.ready.eq(self.wr_ready),
        ]
        self.sync += [credit.eq(credit - take + pop), If(self.clear, credit.eq(FIFO_BEATS))]

        # The slot's offsets in a KV head (spec.isa.kv8_scale_offset, kv_row_offset), from its
        # position, and each head's base (beat-aligned) as heads go by.
        r = Signal(3)
        goff, roff, hraw = Signal(ADDR_W), Signal(ADDR_W), Signal(ADDR_W)
        hq = Signal(16)
        hb = Cat(C(0, 4), hraw[4:])
        scale_addr = Signal(ADDR_W)
        row_addr = Signal(ADDR_W)
        self.comb += [scale_addr.eq(hb + goff + (r << 1)), row_addr.eq(hb + goff + isa.BEAT_BYTES + roff)]

        mant, sh, ok = scales
        recip_rom = Memory(16, 128, init=[int(v) for v in N.KV8_RECIP])
        self.specials += recip_rom
        recip_rp = recip_rom.get_port()
        self.specials += recip_rp
        recip = recip_rp.dat_r
        self.comb += recip_rp.adr.eq(mant[qsel] - 128)
        word = Cat(mant[qsel], sh[qsel], C(0, 4))

        fsm = FSM(reset_state="IDLE")
        self.submodules.wfsm = fsm
        kq = Signal(8)                     # the row's next entry
        go = Signal()
        first_of_beat = Signal()
        nent = Signal(8)
        self.comb += nent.eq(m[2:])
        a_ent = Signal(ADDR_W)             # the entry's first byte
        self.comb += a_ent.eq(row_addr + (kq << 2))
        self.comb += first_of_beat.eq((kq == 0) | (a_ent[2:4] == 0))
        self.comb += go.eq(fsm.ongoing("ROW") & (~first_of_beat | (credit != 0)) & ~self.abort)
        scale_push = Signal()
        self.comb += take.eq((go & first_of_beat) | scale_push)
        self.comb += buf_rp.adr.eq(Cat(kq[:log2_int(entries)], qsel))
        fsm.act("IDLE",
            If(self.start,
                NextValue(r, self.pos[:3]), NextValue(goff, (self.pos >> 3) * (isa.BEAT_BYTES + (m << 3))),
                NextValue(roff, self.pos[:3] * m), NextValue(hraw, self.base), NextValue(hq, 0),
                NextValue(qsel, 0), NextState("WAIT"))
        )
        fsm.act("WAIT", If(ok[qsel], NextState("SREQ")))
        # The scale word's burst (two bytes), then its beat once an entry is free and the row
        # before it has left the quantiser: the beats reach DRAM in golden's order (where
        # heads overlap, a later write wins).
        can_push = Signal()
        fsm.act("SREQ", self.req.eq(1), self.req_addr.eq(scale_addr), self.req_bytes.eq(2), NextState("SWAIT"))
        fsm.act("SWAIT", If(self.granted, If(can_push, scale_push.eq(1), NextState("RREQ")).Else(NextState("SPUSH"))))
        fsm.act("SPUSH", If(can_push, scale_push.eq(1), NextState("RREQ")))
        # The row's burst; the quantiser takes this head's reciprocal and shift with it.
        q_recip, q_s = Signal(17), Signal(6)
        fsm.act("RREQ", self.req.eq(1), self.req_addr.eq(row_addr), self.req_bytes.eq(m), NextValue(kq, 0),
                NextValue(q_recip, recip), NextValue(q_s, N.KV8_RECIP_FRAC - 7 + sh[qsel]), NextState("RWAIT"))
        fsm.act("RWAIT", If(self.granted, NextState("ROW")))
        fsm.act("ROW",
            If(go,
                NextValue(kq, kq + 1),
                If(kq == nent - 1,
                    release.eq(1), NextValue(qsel, ~qsel), NextValue(hq, hq + 1),
                    NextValue(hraw, hraw + self.stride),
                    If(hq == self.n - 1, NextState("END")).Elif(ok[~qsel], NextState("SREQ")).Else(NextState("WAIT"))
                )
            )
        )
        row_valid, row_addr_b, row_data, row_skip = self._quantise(buf_rp, q_recip, q_s, go, kq, nent, a_ent,
                                                                    first_of_beat)
        # The FIFO takes the scale beat or a row's beat (never both in one cycle: can_push).
        # (q_active: entries in the quantiser's stages 1..4)
        # (the shift amounts are signals of their own: Verilog sizes ``r << 4`` as r, 3 bits)
        r_bits, r_bytes = Signal(7), Signal(4)
        self.comb += [
            can_push.eq((credit != 0) & ~self.q_active),
            r_bits.eq(r << 4), r_bytes.eq(r << 1),
            fifo.sink.valid.eq(scale_push | row_valid),
            If(scale_push,
                fifo.sink.address.eq(scale_addr >> 4), fifo.sink.data.eq(word << r_bits),
                fifo.sink.skip.eq(~(C(3, 16) << r_bytes))
            ).Else(
                fifo.sink.address.eq(row_addr_b), fifo.sink.data.eq(row_data), fifo.sink.skip.eq(row_skip)
            ),
        ]
        fsm.act("END",
            If(~self.q_active & (~self.last | ~fifo.source.valid), self.done.eq(1), NextState("IDLE")))
        self.comb += self.idle.eq(~fifo.source.valid & ~self.q_active)
        stop_on_abort(fsm, self.abort)

    def _quantise(self, buf_rp, recip, s, go, kq, nent, a_ent, first_of_beat):
        """A row entry's four elements: read from the buffer (stage 1), times the reciprocal
        (2), the rounding bias (3), shifted by ``s`` and saturated to int8 (4), packed into the
        beat, which is complete with its last entry (the row's, or the beat's fourth). Entries
        in flight when the unit aborts still finish: their burst was granted. Returns the
        beat's (valid, beat address, data, skip)."""
        v = delay_chain(self, go, 4, name="kvw8_qv")
        addr = delay_chain(self, a_ent, 4, name="kvw8_qa")
        fst = delay_chain(self, first_of_beat, 4, name="kvw8_qfirst")
        lst = delay_chain(self, kq == nent - 1, 4, name="kvw8_qlast")
        q = []
        for e in range(4):
            prod = Signal((49, True), name=f"kvw8_prod{e}")
            self.sync += prod.eq(as_signed(self, buf_rp.dat_r[32 * e:32 * (e + 1)], 32) * as_signed(self, recip, 18))
            finish = round_shift_split(self, prod, s, 56, x_bits=49, s_range=(15, 30), sat_bits=8)
            qe = Signal(8, name=f"kvw8_q{e}")
            self.sync += qe.eq(saturate(self, as_signed(self, finish(), 56), 8))
            q.append(qe)
        # The beat: each entry's four bytes at its offset; bytes of groups not written are skipped.
        word, written = Signal(128), Signal(4)
        grp = addr[4][2:4]
        new_word, new_written = Signal(128), Signal(4)
        self.comb += [new_word.eq(Mux(fst[4], 0, word)), new_written.eq(Mux(fst[4], 0, written))]
        for g in range(4):
            self.comb += If(grp == g, new_word[32 * g:32 * (g + 1)].eq(Cat(*q)), new_written[g].eq(1))
        self.sync += If(v[4], word.eq(new_word), written.eq(new_written))
        self.q_active = reduce(or_, v[1:])
        skip = Cat(*[Replicate(~new_written[g], 4) for g in range(4)])
        return v[4] & (lst[4] | (grp == 3)), addr[4] >> 4, new_word, skip
