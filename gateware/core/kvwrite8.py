"""KVWRITE into int8 K/V rows (Params.kv_format "int8": spec.numerics.to_kv8, spec.isa's K/V
layout): one slot's n heads of m elements from act[src], each head's scale word and row into
its KV head's group of 8 positions, at the slot's position.

Four parts that overlap, joined by a row buffer of PARTS heads and two command registers:
- the reader reads a head's elements four a cycle into a free part and keeps their largest
  |x|, with the addresses of the head's scale word and row (spec.isa.kv8_scale_offset,
  kv_row_offset: from the slot's position and the head's base); it runs up to PARTS heads
  ahead, into the next slot's heads while this slot's are still being written;
- the scaler takes each full part's maximum to its scale (spec.numerics.kv8_scale, three
  registered steps), kept with the part;
- the requester asks, part by part once its scale is in, for the scale word's burst (bytes 2r
  and 2r + 1 of the group's scale beat, r = pos % 8) and the row's; each request is held until
  the sequencer grants it (``req``, ``req_addr``, ``req_bytes``; the sequencer checks it
  against the DRAM window first and answers ``granted``), and each granted one becomes a
  command;
- the streamer carries the commands out in order, through the quantiser: the scale beat (the
  beat's other bytes skipped), then the row's elements times 2**22 / mant, rounded by 15 +
  shift and saturated to int8, sixteen a beat (head size 8: half a beat, the other half
  skipped); its last read frees the part.
A granted burst is always written, so a fault stops the unit with exactly golden's bytes
written, and the beats reach DRAM in golden's order (where heads overlap, a later write wins).
The beats go out through a FIFO; an entry starts a beat only when a FIFO entry is free for it
(credits).
"""

from functools import reduce
from operator import or_

from migen import *

from litex.soc.interconnect import stream

from spec import isa, numerics as N
from gateware.arith import round_shift_split, saturate, as_signed
from gateware.core.pipeline import delay_chain, drive_running, stop_on_abort

ADDR_W = 50
FIFO_BEATS = 4
PARTS = 8                                  # heads the row buffer holds
PART_BITS = log2_int(PARTS)


def _bit_length(m, v, width):
    """The number of bits of unsigned ``v`` (a priority encoder), as a signal of ``m``."""
    n = Signal(max=width + 1)
    m.comb += n.eq(0)
    for b in range(width):
        m.comb += If(v[b], n.eq(b + 1))
    return n


def _restart_on(fsm, cond, state, *stmts):
    """Every state of ``fsm`` goes to ``state`` (with ``stmts``) on ``cond``: a part's loop that
    runs across slots restarts with a run or an abort."""
    for st in list(fsm.actions):
        fsm.act(st, If(cond, *stmts, NextState(state)))


class Kvwrite8(Module):
    """Start/done: ``start`` begins the slot (``src``, ``n``, ``m`` and ``stride`` hold still for
    the instruction; ``base``, the slot's layer K or V address, and ``pos`` are taken at start),
    ``done`` is high for a cycle once the slot's elements are read (its bursts follow, while the
    sequencer starts the next slot), and for the instruction's ``last`` slot once everything is
    written and the FIFO is empty. ``owed``: a head is read whose bursts are not all granted
    yet (the sequencer serves them before it reports a later slot's fault); ``idle``: nothing
    is left to write. ``abort`` stops the unit's reads and requests at once (what was granted
    is still written); ``clear`` (a run's start) restores the credits and drops the commands.
    Bursts: ``req`` with ``req_addr`` and ``req_bytes``, held until ``granted``; the unit asks
    across slots (OVERLAPS_SLOTS), so the sequencer serves it between them. Scratchpad:
    ``radr[e]``, the slot's elements in ``x[e]`` two cycles later. Write stream: ``wr_valid``,
    ``wr_address`` (beats), ``wr_data``, ``wr_skip`` (bytes not to write), ``wr_ready``."""
    OVERLAPS_SLOTS = True

    def __init__(self, max_head, addr_width):
        self.start, self.abort, self.done, self.clear = Signal(), Signal(), Signal(), Signal()
        self.last, self.idle, self.owed = Signal(), Signal(), Signal()
        self.src, self.n, self.m, self.pos = Signal(16), Signal(16), Signal(16), Signal(16)
        self.base, self.stride = Signal(ADDR_W), Signal(32)
        self.req, self.req_addr, self.req_bytes, self.granted = Signal(), Signal(ADDR_W), Signal(16), Signal()
        self.radr = [Signal(17, name=f"kvw8_radr{e}") for e in range(4)]
        self.x = [Signal((32, True), name=f"kvw8_x{e}") for e in range(4)]
        self.wr_valid, self.wr_ready = Signal(), Signal()
        self.wr_address, self.wr_data, self.wr_skip = Signal(addr_width), Signal(128), Signal(16)

        # # #

        self.entries = entries = max(max_head // 4, 2)         # four elements an entry
        self.specials.buf = buf = Memory(128, PARTS * entries)
        self.specials.buf_wp = buf_wp = buf.get_port(write_capable=True)
        self.specials.buf_rp = buf_rp = buf.get_port()
        # Per part: it holds (or is being read into) a head, its elements and maximum are in,
        # its scale is in, its row's burst is granted; the head's scale word's address and
        # place r in its beat, and its row's address.
        self.busy = Array([Signal(name=f"kvw8_busy{i}") for i in range(PARTS)])
        self.full = Array([Signal(name=f"kvw8_full{i}") for i in range(PARTS)])
        self.amax = Array([Signal(32, name=f"kvw8_amax{i}") for i in range(PARTS)])
        self.scaled = Array([Signal(name=f"kvw8_scaled{i}") for i in range(PARTS)])
        self.reqd = Array([Signal(name=f"kvw8_reqd{i}") for i in range(PARTS)])
        self.mant = Array([Signal(8, name=f"kvw8_mant{i}") for i in range(PARTS)])
        self.shift = Array([Signal(4, name=f"kvw8_shift{i}") for i in range(PARTS)])
        self.p_saddr = Array([Signal(ADDR_W, name=f"kvw8_saddr{i}") for i in range(PARTS)])
        self.p_r = Array([Signal(3, name=f"kvw8_r{i}") for i in range(PARTS)])
        self.p_raddr = Array([Signal(ADDR_W, name=f"kvw8_raddr{i}") for i in range(PARTS)])
        self.release, self.release_part = Signal(), Signal(PART_BITS)   # the streamer is done with a part
        flags = (self.busy, self.full, self.scaled, self.reqd)
        self.sync += [
            If(self.release, *[f[self.release_part].eq(0) for f in flags]),
            If(self.abort | self.clear, *[f[i].eq(0) for f in flags for i in range(PARTS)]),
        ]
        self.comb += self.owed.eq(reduce(or_, [self.busy[i] & ~self.reqd[i] for i in range(PARTS)]))
        self._reader(buf_wp)
        self._scaler()
        self._fifo(addr_width)
        self._requester()
        self._streamer(buf_rp)

    def _reader(self, buf_wp):
        """A head's elements into part ``rsel`` of the row buffer, their largest |x| into
        ``amax[rsel]``, its burst addresses with the part; ``busy`` is set with the head's last
        read, ``full`` once its elements and maximum are in. The parts are taken in turn across
        slots (``rsel`` restarts only with a run or an abort)."""
        ii, jr, hr, rsel = Signal(17), Signal(8), Signal(16), Signal(PART_BITS)
        m = self.m
        # The slot's offsets in a KV head (spec.isa.kv8_scale_offset, kv_row_offset), from its
        # position, and each head's base (beat-aligned) as heads go by.
        r = Signal(3)
        goff, roff, hraw = Signal(ADDR_W), Signal(ADDR_W), Signal(ADDR_W)
        hb = Cat(C(0, 4), hraw[4:])
        fsm = FSM(reset_state="IDLE")
        self.submodules.rfsm = fsm
        go = Signal()
        last_read = jr + 4 == m
        self.comb += go.eq(fsm.ongoing("RUN") & ~self.busy[rsel] & ~self.abort)
        self.comb += [adr.eq(ii + e) for e, adr in enumerate(self.radr)]
        fsm.act("IDLE",
            If(self.start,
                NextValue(ii, self.src), NextValue(jr, 0), NextValue(hr, 0), NextValue(r, self.pos[:3]),
                NextValue(goff, (self.pos >> 3) * (isa.BEAT_BYTES + (m << 3))),
                NextValue(roff, self.pos[:3] * m), NextValue(hraw, self.base), NextState("RUN")))
        fsm.act("RUN",
            If(go,
                NextValue(ii, ii + 4), NextValue(jr, jr + 4),
                If(last_read,
                    NextValue(jr, 0), NextValue(hr, hr + 1), NextValue(rsel, rsel + 1),
                    NextValue(hraw, hraw + self.stride),
                    If(hr == self.n - 1, NextState("IDLE"))
                )
            )
        )
        stop_on_abort(fsm, self.abort)
        self.sync += If(self.abort | self.clear, rsel.eq(0))
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
        self.comb += [buf_wp.adr.eq(Cat(k[2][:log2_int(self.entries)], sel[2])), buf_wp.dat_w.eq(Cat(*self.x)),
                      buf_wp.we.eq(v[2])]
        amax_now = Mux(first[3], 0, acc)
        self.sync += [
            m_r[0].eq(m_ab[0]), m_r[1].eq(m_ab[1]),
            If(v[3], acc.eq(Mux(m4 > amax_now, m4, amax_now)),
               If(lst[3], self.amax[sel[3]].eq(Mux(m4 > amax_now, m4, amax_now)), self.full[sel[3]].eq(1))),
            If(go & last_read, self.busy[rsel].eq(1)),
            If(go & (jr == 0),
                self.p_saddr[rsel].eq(hb + goff + (r << 1)), self.p_r[rsel].eq(r),
                self.p_raddr[rsel].eq(hb + goff + isa.BEAT_BYTES + roff)),
        ]
        self.comb += m4.eq(Mux(m_r[0] > m_r[1], m_r[0], m_r[1]))
        # The slot is read once its last read's elements are taken (stage 2: ``x`` follows the
        # sequencer's slot, which moves on with ``done``).
        self.r_done = fsm.ongoing("IDLE") & ~v[1] & ~v[2]

    def _scaler(self):
        """Each full part's scale (spec.numerics.kv8_scale) from its largest |x|, part by part
        in turn, three cycles a head: t = (amax * 128 + 126) / 127 (a multiply by
        KV8_DIV127_MUL), then its bit length and the rounded mantissa, then the normalised and
        capped (mant, shift)."""
        ssel = Signal(PART_BITS)
        t, n127 = Signal(34), Signal(40)
        mant0, sh0, small = Signal(10), Signal(6), Signal()
        tl = _bit_length(self, t, 34)
        shift0 = Signal(6)
        self.comb += shift0.eq(Mux(tl > 8, tl - 8, 0))
        fsm = FSM(reset_state="DIV")
        self.submodules.sfsm = fsm
        # (the product in a signal of its own: Verilog would size it as its widest operand)
        prod127 = Signal(82)
        self.comb += [n127.eq((self.amax[ssel] << 7) + 126), prod127.eq(n127 * N.KV8_DIV127_MUL)]
        fsm.act("DIV",
            If(self.full[ssel] & ~self.scaled[ssel], NextValue(t, prod127[N.KV8_DIV127_SHIFT:]), NextState("S1")))
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
        fsm.act("S2", commit.eq(~self.abort), NextValue(ssel, ssel + 1), NextState("DIV"))
        _restart_on(fsm, self.abort | self.clear, "DIV", NextValue(ssel, 0))
        # (the release and abort clear ``scaled``: __init__; a part is never both)
        self.sync += If(commit, self.mant[ssel].eq(m_new), self.shift[ssel].eq(s_new), self.scaled[ssel].eq(1))

    def _fifo(self, addr_width):
        """The write FIFO, and its credits: an entry of the quantiser that starts a beat takes
        one (``take``), a beat that leaves returns it."""
        self.submodules.fifo = fifo = stream.SyncFIFO([("address", addr_width), ("data", 128), ("skip", 16)],
                                                      FIFO_BEATS)
        self.credit = credit = Signal(max=FIFO_BEATS + 1, reset=FIFO_BEATS)
        self.take = Signal()
        pop = Signal()
        self.comb += [
            pop.eq(fifo.source.valid & fifo.source.ready),
            self.wr_valid.eq(fifo.source.valid), self.wr_address.eq(fifo.source.address),
            self.wr_data.eq(fifo.source.data), self.wr_skip.eq(fifo.source.skip),
            fifo.source.ready.eq(self.wr_ready),
        ]
        self.sync += [credit.eq(credit - self.take + pop), If(self.clear, credit.eq(FIFO_BEATS))]

    def _requester(self):
        """Part by part in turn, once its scale is in: the scale word's burst, then the row's,
        each held until granted and then posted as a command (``sc_cmd``, ``row_cmd``). A
        head's scale request waits until the row command before it is taken, so the streamer
        sees the commands in order."""
        qsel = Signal(PART_BITS)
        self.sc_cmd, self.row_cmd = Signal(), Signal()
        self.sc_taken, self.row_taken = Signal(), Signal()
        post_sc, post_row = Signal(), Signal()
        self.c_saddr, self.c_r = Signal(ADDR_W), Signal(3)
        self.c_raddr, self.c_part, self.c_mant, self.c_shift = Signal(ADDR_W), Signal(PART_BITS), Signal(8), Signal(4)
        self.c_word = Cat(self.c_mant, self.c_shift)
        self.sync += [
            # (the head's mant and shift with its scale command: the row command, a cycle or
            # more later, finds the reciprocal table's read of c_mant settled)
            If(post_sc,
                self.sc_cmd.eq(1), self.c_saddr.eq(self.p_saddr[qsel]), self.c_r.eq(self.p_r[qsel]),
                self.c_mant.eq(self.mant[qsel]), self.c_shift.eq(self.shift[qsel])
            ).Elif(self.sc_taken, self.sc_cmd.eq(0)),
            If(post_row,
                self.row_cmd.eq(1), self.c_raddr.eq(self.p_raddr[qsel]), self.c_part.eq(qsel),
                self.reqd[qsel].eq(1)
            ).Elif(self.row_taken, self.row_cmd.eq(0)),
            If(self.clear, self.sc_cmd.eq(0), self.row_cmd.eq(0)),
        ]
        fsm = FSM(reset_state="SREQ")
        self.submodules.wfsm = fsm
        # (once ready, a part stays ready until its row is granted: its scale stays in, and
        # only this requester posts row commands)
        ready = self.scaled[qsel] & ~self.reqd[qsel] & (~self.row_cmd | self.row_taken)
        fsm.act("SREQ",
            If(ready,
                self.req.eq(1), self.req_addr.eq(self.p_saddr[qsel]), self.req_bytes.eq(2),
                If(self.granted, post_sc.eq(1), NextState("RREQ"))))
        fsm.act("RREQ",
            self.req.eq(1), self.req_addr.eq(self.p_raddr[qsel]), self.req_bytes.eq(self.m),
            If(self.granted, post_row.eq(1), NextValue(qsel, qsel + 1), NextState("SREQ")))
        _restart_on(fsm, self.abort | self.clear, "SREQ", NextValue(qsel, 0))

    def _streamer(self, buf_rp):
        """The commands in order into the quantiser: a scale command is one entry (its beat), a
        row command m / 4 entries from its part (the last frees the part). A command is
        carried out even after an abort: its burst was granted."""
        m = self.m
        entries = self.entries
        recip_rom = Memory(16, 128, init=[int(v) for v in N.KV8_RECIP])
        self.specials += recip_rom
        recip_rp = recip_rom.get_port()
        self.specials += recip_rp
        self.s_busy = busy = Signal()               # a row is being streamed
        kq, nent, part = Signal(8), Signal(8), Signal(PART_BITS)
        raddr, s = Signal(ADDR_W), Signal(6)
        self.comb += [nent.eq(m[2:]), recip_rp.adr.eq(self.c_mant - 128)]
        a_ent = Signal(ADDR_W)                      # the entry's first byte
        first_of_beat = Signal()
        self.comb += [a_ent.eq(raddr + (kq << 2)), first_of_beat.eq((kq == 0) | (a_ent[2:4] == 0))]
        go, sc_go = Signal(), Signal()
        lastq = kq == nent - 1
        self.comb += [
            # The scale command first (a head's scale comes before its row), with a free entry.
            sc_go.eq(~busy & self.sc_cmd & (self.credit != 0)),
            self.sc_taken.eq(sc_go),
            self.row_taken.eq(~busy & ~self.sc_cmd & self.row_cmd),
            go.eq(busy & (~first_of_beat | (self.credit != 0))),
            self.take.eq((go & first_of_beat) | sc_go),
            buf_rp.adr.eq(Cat(kq[:log2_int(entries)], part)),
            self.release.eq(go & lastq), self.release_part.eq(part),
        ]
        recip = Signal(17)
        self.sync += [
            If(self.row_taken,
                busy.eq(1), kq.eq(0), part.eq(self.c_part), raddr.eq(self.c_raddr),
                recip.eq(recip_rp.dat_r), s.eq(N.KV8_RECIP_FRAC - 7 + self.c_shift)
            ).Elif(go,
                kq.eq(kq + 1), If(lastq, busy.eq(0))
            ),
            If(self.clear, busy.eq(0)),
        ]
        self._quantise(buf_rp, recip, s, go, sc_go, lastq, a_ent, first_of_beat)
        # The slot is done once it is read (its bursts and rows follow in order while the next
        # slot is read), the instruction's last slot once everything is written.
        running, all_free = Signal(), Signal()
        self.comb += all_free.eq(~reduce(or_, [self.busy[i] for i in range(PARTS)]))
        self.comb += self.done.eq(running & self.r_done & (~self.last | (all_free & self.idle)))
        drive_running(self, running, self.start, self.done, self.abort)
        self.comb += self.idle.eq(~self.fifo.source.valid & ~self.q_active & ~busy & ~self.sc_cmd & ~self.row_cmd)

    def _quantise(self, buf_rp, recip, s, go, sc_go, lastq, a_ent, first_of_beat):
        """Entries into beats: a row entry's four elements read from the buffer (stage 1), times
        the reciprocal (2), the rounding bias (3), shifted by ``s`` and saturated to int8 (4),
        packed into the beat, which is complete with its last entry (the row's, or the beat's
        fourth); a scale entry's beat is the scale word at bytes 2r, the others skipped. The
        row's reciprocal and shift ride with its entries."""
        v = delay_chain(self, go, 4, name="kvw8_qv")
        sv = delay_chain(self, sc_go, 4, name="kvw8_qsv")
        addr = delay_chain(self, Mux(sc_go, self.c_saddr, a_ent), 4, name="kvw8_qa")
        fst = delay_chain(self, first_of_beat, 4, name="kvw8_qfirst")
        lst = delay_chain(self, lastq, 4, name="kvw8_qlast")
        word_r = delay_chain(self, Cat(self.c_word, self.c_r), 4, name="kvw8_qword")
        rc = delay_chain(self, recip, 1, name="kvw8_qrecip")
        sc = delay_chain(self, s, 2, name="kvw8_qshift")
        q = []
        for e in range(4):
            prod = Signal((49, True), name=f"kvw8_prod{e}")
            self.sync += prod.eq(as_signed(self, buf_rp.dat_r[32 * e:32 * (e + 1)], 32) * as_signed(self, rc[1], 18))
            finish = round_shift_split(self, prod, sc[2], 56, x_bits=49, s_range=(15, 30), sat_bits=8)
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
        self.q_active = reduce(or_, v[1:] + sv[1:])
        row_skip = Cat(*[Replicate(~new_written[g], 4) for g in range(4)])
        # The scale beat (the shift amounts are signals of their own: Verilog sizes ``r << 4``
        # as r, 3 bits).
        wr4, r4 = Signal(16), word_r[4][12:15]
        r_bits, r_bytes = Signal(7), Signal(4)
        fifo = self.fifo
        self.comb += [
            wr4.eq(word_r[4][:12]), r_bits.eq(r4 << 4), r_bytes.eq(r4 << 1),
            fifo.sink.valid.eq(sv[4] | (v[4] & (lst[4] | (grp == 3)))),
            fifo.sink.address.eq(addr[4] >> 4),
            If(sv[4],
                fifo.sink.data.eq(wr4 << r_bits), fifo.sink.skip.eq(~(C(3, 16) << r_bytes))
            ).Else(
                fifo.sink.data.eq(new_word), fifo.sink.skip.eq(row_skip)
            ),
        ]
