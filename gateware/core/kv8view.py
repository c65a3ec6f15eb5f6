"""ATTN with int8 K/V rows (Params.kv_format "int8", spec.isa's layout): 16 elements a beat.

The read stream's beats of a KV head are groups of a scale beat and 8 rows of int8. Kv8View
takes each group's scale beat into a register on the way and hands ATTN the row beats whole:
16 int8 lanes, with the scale words of the beat's rows beside them. ATTN's datapaths then
take 16 elements a cycle, the 16 bytes a cycle DRAM gives: a row of m >= 16 elements is m / 16
beats; at head size 8 a beat holds two rows, positions t and t + 1, so each beat gives two
scores and two exponentials (``two``), and t steps by 2.

AttnKv8, a mixin of Attention, holds where ATTN's datapath differs with the rows' format: the
spans it reads, how a beat steps through the rows, the 16-lane dot products and their per-row
key scales, the score memory's two banks (even and odd positions: two scores written or read a
cycle), the second exponential, the value lanes' weights and shifts, and the drain's rounding.
Each hook gives the int16 rows' logic unchanged when the rows are int16.
"""

from migen import *

from spec import isa, numerics as N
from gateware.arith import round_shift, round_shift_split, saturate, as_signed
from gateware.core.pipeline import delay_chain

ADDR_W = 50


def _lanes(sig, width, n):
    return [sig[width * k:width * (k + 1)] for k in range(n)]


class Kv8View(Module):
    """Raw side: ``raw_valid``, ``raw_data``, ``raw_ready``. ATTN's side: ``want`` (it would
    take a beat now), ``valid``, ``data`` (16 int8 lanes), ``scale`` (the scale word of the
    beat's row t), ``scale_b`` (of row t + 1: head size 8, t even), ``take`` (it takes the
    beat: want and valid). Counters: ``t`` (its low 3 bits), ``k`` (the beat in the row).
    ``reset`` forgets a group's scale beat (a run's or a slot's start)."""

    def __init__(self):
        self.raw_valid, self.raw_data, self.raw_ready = Signal(), Signal(128), Signal()
        self.want, self.valid, self.take = Signal(), Signal(), Signal()
        self.data, self.scale, self.scale_b = Signal(128), Signal(16), Signal(16)
        self.t, self.k, self.reset = Signal(3), Signal(13), Signal()

        # # #

        scales = Signal(128)               # the group's eight scale words
        have = Signal()                    # taken for the current group
        due = Signal()                     # a group's first row beat: its scale beat comes first
        words = _lanes(scales, 16, 8)
        self.comb += [
            due.eq((self.t == 0) & (self.k == 0) & ~have),
            self.valid.eq(self.raw_valid & ~due),
            self.data.eq(self.raw_data),
            self.scale.eq(Array(words)[self.t]),
            self.scale_b.eq(Array(words)[self.t | 1]),
            self.raw_ready.eq((self.want & due) | self.take),
        ]
        self.sync += [
            If(self.want & due & self.raw_valid, scales.eq(self.raw_data), have.eq(1)),
            If(self.take & (self.t == 0) & (self.k == 0), have.eq(0)),
            If(self.reset, have.eq(0)),
        ]


class ScoreMemory(Module):
    """A head's scores by position. Write: ``wadr``, ``we``, ``wdat``; with int8 rows also
    ``we_b``, ``wdat_b``: the score of position wadr + 1 in the same cycle (``two``: head size
    8, wadr even). Read: ``radr``; a cycle later ``rdat`` (its score) and ``rdat_b`` (radr +
    1's, with ``two``). ``memories``: int16 rows, one; int8, two banks (even and odd
    positions)."""

    def __init__(self, depth, banked, name):
        self.wadr, self.radr = Signal(max=depth), Signal(max=depth)
        self.we, self.we_b, self.two = Signal(), Signal(), Signal()
        self.wdat, self.wdat_b = Signal(32), Signal(32)
        self.rdat, self.rdat_b = Signal(32), Signal(32)

        # # #

        if not banked:
            mem = Memory(32, depth, name=name)
            self.memories = [mem]
            rp, wp = mem.get_port(), mem.get_port(write_capable=True)
            self.specials += mem, rp, wp
            self.comb += [wp.adr.eq(self.wadr), wp.dat_w.eq(self.wdat), wp.we.eq(self.we),
                          rp.adr.eq(self.radr), self.rdat.eq(rp.dat_r)]
            return
        self.memories = [Memory(32, (depth + 1) // 2, name=f"{name}_{x}") for x in ("even", "odd")]
        (even, odd) = ports = [(b.get_port(), b.get_port(write_capable=True)) for b in self.memories]
        for b, (rp, wp) in zip(self.memories, ports):
            self.specials += b, rp, wp
            self.comb += [wp.adr.eq(self.wadr[1:]), rp.adr.eq(self.radr[1:])]
        odd_r = Signal()                   # the read's position is odd (a cycle on)
        self.sync += odd_r.eq(self.radr[0])
        self.comb += [
            even[1].we.eq(self.we & (self.two | ~self.wadr[0])), even[1].dat_w.eq(self.wdat),
            odd[1].we.eq((self.we & ~self.two & self.wadr[0]) | (self.we_b & self.two)),
            odd[1].dat_w.eq(Mux(self.two, self.wdat_b, self.wdat)),
            self.rdat.eq(Mux(odd_r & ~self.two, odd[0].dat_r, even[0].dat_r)),
            self.rdat_b.eq(odd[0].dat_r),
        ]


class AttnKv8:
    """A mixin of gateware/core/attention.py's Attention: where its datapath differs with the
    K/V rows' format (Params.kv_format, ``self.kv8``)."""

    def _kv_stream(self):
        """The K/V beats as the datapath takes them (kv_valid, kv_data; kv_ready: it would take
        one now): the read stream's int16 rows, or int8 rows through Kv8View (kv_scale,
        kv_scale_b: the scale words of the beat's rows; ``two``: a beat holds two rows)."""
        self.kv_ready = Signal()
        self.two = Signal()
        if self.kv8:
            self.submodules.kv8view = v8 = Kv8View()
            self.kv_valid, self.kv_data, self.kv_scale, self.kv_scale_b = v8.valid, v8.data, v8.scale, v8.scale_b
            self.comb += [v8.raw_valid.eq(self.rd_valid), v8.raw_data.eq(self.rd_data),
                          self.rd_ready.eq(v8.raw_ready), v8.want.eq(self.kv_ready),
                          v8.reset.eq(self.start | self.clear), self.two.eq(self.m == 8)]
        else:
            self.kv_valid, self.kv_data, self.kv_scale = self.rd_valid, self.rd_data, None
            self.comb += self.rd_ready.eq(self.kv_ready)

    def _span_of(self, pos, pos_off):
        """The bytes ATTN reads from a KV head's base at position ``pos`` (spec.isa.kv_span),
        one register on: int16 rows from ``pos_off`` (pos * 2m, the sequencer's), int8 rows
        from pos's group and row offsets."""
        m = self.m
        if not self.kv8:
            return pos_off + (m << 1)
        goff, roff = Signal(ADDR_W), Signal(ADDR_W)
        self.sync += [goff.eq((pos >> 3) * (isa.BEAT_BYTES + (m << 3))), roff.eq(pos[:3] * m)]
        return goff + roff + isa.BEAT_BYTES + m

    # How a beat steps through the rows ---------------------------------------------------------

    def _beats_per_row(self, m):
        """A row's beats: m / 8 int16; m / 16 int8 (head size 8: one, two rows to it)."""
        return Mux(self.two, 1, m >> 4) if self.kv8 else m >> 3

    def _next_row(self, t):
        """t after a row's last beat (two rows a beat: t + 2)."""
        return t + 1 + self.two if self.kv8 else t + 1

    def _last_row(self, t, cur_pos):
        """The beat at row t holds the span's last row (two rows a beat: t + 1 >= pos)."""
        return Mux(self.two, t + 1 >= cur_pos, t == cur_pos) if self.kv8 else t == cur_pos

    def _second_row(self, t, cur_pos):
        """The beat's second row (two rows a beat) lies in the span: its score and weight count."""
        return self.two & (t + 1 <= cur_pos) if self.kv8 else C(0)

    def _kv8_view_counters(self, t, k, take):
        if self.kv8:
            self.comb += [self.kv8view.t.eq(t[:3]), self.kv8view.k.eq(k[:13]), self.kv8view.take.eq(take)]

    # Keys and scores ----------------------------------------------------------------------------

    def _kv_lanes(self, beat):
        """A key or value beat's elements, signed: 8 int16 or 16 int8."""
        if self.kv8:
            return [as_signed(self, v, 8) for v in _lanes(beat, 8, 16)]
        return [as_signed(self, v, 16) for v in _lanes(beat, 16, 8)]

    def _query_reads(self, r, port, hbit):
        """The query memory's read of the key beat's query elements (``port``, in q_mem's half
        ``hbit``): one int16 beat; int8 rows, 16 elements (query beats 2k and 2k + 1, or beat
        0 twice with two rows a beat), so a second port. Returns what _score_lane takes."""
        lb = log2_int(r.q_beats)
        if not self.kv8:
            self.comb += port.adr.eq(Cat(r.k[:lb], hbit))
            return port.dat_r
        port_b = r.q_mem.get_port()
        self.specials += port_b
        self.comb += [port.adr.eq(Cat((r.k << 1)[:lb], hbit)), port_b.adr.eq(Cat(((r.k << 1) | 1)[:lb], hbit))]
        return port.dat_r, port_b.dat_r

    def _kv8_key_scales(self, r, ka2, kl2, scale):
        """int8 keys: the rows' scale words ride with their beats to stage 2; with a row's sum
        (stage 3) come attscale * mant (``r.k_sm``) and the shift 30 - shift (``r.k_s3``), and
        both move on with the product (stage 4: ``r.k_s4``; spec.numerics.scores8). The
        second row's (two rows a beat): ``r.k_smb``, ``r.k_s4b``."""
        r.k_s4, r.k_s4b, r.k_sm, r.k_smb = Signal(6), Signal(6), Signal(26), Signal(26)
        for x, word, sm, s4 in (("a", self.kv_scale, r.k_sm, r.k_s4), ("b", self.kv_scale_b, r.k_smb, r.k_s4b)):
            ksc = delay_chain(self, word, 4, name=f"at_kscale_{x}")
            s3 = Signal(6, name=f"at_ks3_{x}")
            self.sync += [
                If(ka2 & kl2, sm.eq(scale * ksc[4][:8]), s3.eq(N.KV_FRAC + 7 + 15 - ksc[4][8:12])),
                s4.eq(s3),
            ]

    def _score_lane8(self, r, qdat, name):
        """_score_lane for int8 keys: 16 products a beat (1b), summed as two halves (2). A row
        of m >= 16 sums both halves over its beats; two rows a beat are two sums, each scaled
        by its row's scale word (4) and rounded, shifted and saturated (5, 6). Returns the
        scores of the beat's rows (the second: two rows a beat)."""
        qa, qb = Signal(128, name=f"{name}_qword"), Signal(128, name=f"{name}_qword_b")
        kp = [Signal((24, True), name=f"{name}_kp{l}") for l in range(16)]
        dot_a, dot_b = Signal((28, True), name=f"{name}_dot_a"), Signal((28, True), name=f"{name}_dot_b")
        dacc, dsum_a, dsum_b = Signal((48, True)), Signal((48, True)), Signal((48, True))
        dprod_a, dprod_b = Signal((80, True)), Signal((80, True))
        qs = [as_signed(self, v, 16) for v in _lanes(qa, 16, 8) + _lanes(qb, 16, 8)]
        self.sync += [
            qa.eq(qdat[0]), qb.eq(Mux(self.two, qdat[0], qdat[1])),
            [kp[l].eq(r.keys_r[l] * qs[l]) for l in range(16)],
            dot_a.eq(sum(kp[:8])), dot_b.eq(sum(kp[8:])),
            If(r.ka2, dacc.eq(Mux(r.kf2, 0, dacc) + dot_a + dot_b)),
            If(r.ka2 & r.kl2, dsum_a.eq(Mux(r.kf2, 0, dacc) + dot_a + Mux(self.two, 0, dot_b)), dsum_b.eq(dot_b)),
            dprod_a.eq(dsum_a * as_signed(self, r.k_sm, 27)), dprod_b.eq(dsum_b * as_signed(self, r.k_smb, 27)),
        ]
        scores = []
        for x, dprod, s4 in (("a", dprod_a, r.k_s4), ("b", dprod_b, r.k_s4b)):
            finish = round_shift_split(self, dprod, s4, 80, x_bits=64, s_range=(15, 30), sat_bits=32)
            sc = Signal((32, True), name=f"{name}_score_{x}")
            self.sync += sc.eq(saturate(self, as_signed(self, finish(), 80), 32))
            scores.append(sc)
        return scores

    def _count_scores(self, take, count, smax, sc, kb):
        """Statements: a score (two with ``kb``, int8 rows two a beat) into the head's count and
        running max."""
        if not self.kv8:
            return If(take, count.eq(count + 1), If((count == 0) | (sc[0] > smax), smax.eq(sc[0])))
        m1 = Signal((32, True))
        self.comb += m1.eq(Mux((count == 0) | (sc[0] > smax), sc[0], smax))
        return If(take, count.eq(count + 1 + kb), smax.eq(Mux(kb & (sc[1] > m1), sc[1], m1)))

    def _score_memory(self, r, name):
        sm = ScoreMemory(r.max_seq, self.kv8, name)
        self.submodules += sm
        self.comb += sm.two.eq(self.two)
        return sm

    # Values -----------------------------------------------------------------------------------

    def _kv8_weights(self, r, ev, ev_b, name):
        """int8 values (stages 5..7): each row's exponential times its mant (6), times each int8
        value (7), shifted left by its row's shift as it is summed (spec.numerics.attend8).
        Two rows a beat: lanes 8..15 are the second row's, and each of the first 8
        accumulators takes both rows' terms. Returns the 16 lanes' terms."""
        w5, w5b = Signal(25, name=f"{name}_w5"), Signal(25, name=f"{name}_w5b")
        vprod = [Signal((34, True), name=f"{name}_vprod{l}") for l in range(16)]
        wa = ev * r.vsc[5][:8]
        self.sync += [w5.eq(wa), w5b.eq(Mux(self.two, ev_b * r.vscb[5][:8], wa))]
        self.sync += [vprod[l].eq(as_signed(self, w5 if l < 8 else w5b, 26) * r.vals[l]) for l in range(16)]
        terms = [Signal((self.wacc_bits, True), name=f"{name}_vterm{l}") for l in range(16)]
        sh_b = Mux(self.two, r.vscb[7][8:12], r.vsc[7][8:12])
        self.comb += [terms[l].eq(vprod[l] << (r.vsc[7][8:12] if l < 8 else sh_b)) for l in range(16)]
        ins = [Signal((self.wacc_bits, True), name=f"{name}_vin{l}") for l in range(8)]
        self.comb += [ins[l].eq(Mux(self.two, terms[l] + terms[8 + l], terms[l])) for l in range(8)]
        return ins + terms[8:]

    def _acc_group(self, vk, g):
        """Accumulator group g (8 elements) takes the beat k of its row: k == g (int16), k ==
        g // 2 (int8: 16 lanes)."""
        return vk == (g >> 1 if self.kv8 else g)

    def _drain_sum(self, acc):
        """The sum a drain multiplies by the reciprocal: int8 rows' exact sums rounded by
        ATTN8_ACC_DROP first (spec.numerics.attend8: the product stays below 2**61)."""
        if not self.kv8:
            return acc
        st, rounded = round_shift(acc, N.ATTN8_ACC_DROP, self.wacc_bits)
        self.comb += st
        return rounded
