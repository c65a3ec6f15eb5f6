"""ATTN's view of int8 K/V rows (Params.kv_format "int8", spec.isa's layout): the read
stream's beats of a KV head, groups of a scale beat and 8 rows of int8, as the int16 rows
ATTN's datapath takes: each half beat (8 int8) becomes a beat of 8 int16 lanes, with its row's
scale word beside it, and the scale beats are taken into a register on the way.

Which raw byte comes next follows from ATTN's own counters: ``t`` (the row's position) and
``k`` (the expanded beat in the row, m / 8 of them): a group's scale beat comes before its
first row (t % 8 = 0, k = 0); head size 8 puts rows t and t + 1 in one beat (the half is t's
low bit), larger head sizes take whole beats (the half is k's low bit). A raw beat leaves once
its second half is taken, or with a burst's last row (``last``: t = pos) where that row ends
in its first half.

AttnKv8, a mixin of Attention, holds the rest of where ATTN's datapath differs with the rows'
format: the spans it reads, the keys' per-row scale, and the drain's rounding.
"""

from migen import *

from spec import isa, numerics as N
from gateware.arith import round_shift
from gateware.core.pipeline import delay_chain

ADDR_W = 50


class Kv8View(Module):
    """Raw side: ``raw_valid``, ``raw_data``, ``raw_ready``. ATTN's side: ``want`` (it would
    take a beat now), ``valid``, ``data`` (8 int16 lanes), ``scale`` (the row's scale word),
    ``take`` (it takes the beat: want and valid). Counters: ``t`` (its low 3 bits), ``k``,
    ``m8`` (head size 8), ``last``. ``reset`` forgets a group's scale beat (a run's or a
    slot's start)."""

    def __init__(self):
        self.raw_valid, self.raw_data, self.raw_ready = Signal(), Signal(128), Signal()
        self.want, self.valid, self.take = Signal(), Signal(), Signal()
        self.data, self.scale = Signal(128), Signal(16)
        self.t, self.k, self.m8, self.last, self.reset = Signal(3), Signal(13), Signal(), Signal(), Signal()

        # # #

        scales = Signal(128)               # the group's eight scale words
        have = Signal()                    # taken for the current group
        due = Signal()
        half = Signal()
        self.comb += [
            due.eq((self.t == 0) & (self.k == 0) & ~have),
            half.eq(Mux(self.m8, self.t[0], self.k[0])),
            self.valid.eq(self.raw_valid & ~due),
            self.scale.eq(Array([scales[16 * r:16 * (r + 1)] for r in range(8)])[self.t]),
            self.raw_ready.eq((self.want & due) | (self.take & (half | (self.m8 & self.last)))),
        ]
        lanes = Array([self.raw_data[64 * h:64 * (h + 1)] for h in range(2)])[half]
        for l in range(8):
            b = lanes[8 * l:8 * (l + 1)]
            self.comb += self.data[16 * l:16 * (l + 1)].eq(Cat(b, Replicate(b[7], 8)))
        self.sync += [
            If(self.want & due & self.raw_valid, scales.eq(self.raw_data), have.eq(1)),
            If(self.take & (self.t == 0) & (self.k == 0), have.eq(0)),
            If(self.reset, have.eq(0)),
        ]


class AttnKv8:
    """A mixin of gateware/core/attention.py's Attention: where its datapath differs with the
    K/V rows' format (Params.kv_format, ``self.kv8``). Each hook gives the int16 rows' logic
    unchanged when the rows are int16."""

    def _kv_stream(self):
        """The K/V beats as the datapath takes them (kv_valid, kv_data; kv_ready: it would take
        one now): the read stream's int16 rows, or int8 rows through Kv8View (kv_scale: the
        row's scale word)."""
        self.kv_ready = Signal()
        if self.kv8:
            self.submodules.kv8view = v8 = Kv8View()
            self.kv_valid, self.kv_data, self.kv_scale = v8.valid, v8.data, v8.scale
            self.comb += [v8.raw_valid.eq(self.rd_valid), v8.raw_data.eq(self.rd_data),
                          self.rd_ready.eq(v8.raw_ready), v8.want.eq(self.kv_ready),
                          v8.reset.eq(self.start | self.clear)]
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

    def _kv8_key_scales(self, r, ka2, kl2, scale):
        """int8 keys: the row's scale word rides with its beats to stage 2; with the row's sum
        (stage 3) come attscale * mant (``r.k_sm``) and the shift 30 - shift (``r.k_s3``), and
        both move on with the product (stage 4: ``r.k_s4``; spec.numerics.scores8)."""
        ksc = delay_chain(self, self.kv_scale, 4, name="at_kscale")
        r.k_sm, r.k_s3, r.k_s4 = Signal(26), Signal(6), Signal(6)
        self.sync += [
            If(ka2 & kl2, r.k_sm.eq(scale * ksc[4][:8]), r.k_s3.eq(N.KV_FRAC + 7 + 15 - ksc[4][8:12])),
            r.k_s4.eq(r.k_s3),
        ]

    def _drain_sum(self, acc):
        """The sum a drain multiplies by the reciprocal: int8 rows' exact sums rounded by
        ATTN8_ACC_DROP first (spec.numerics.attend8: the product stays below 2**61)."""
        if not self.kv8:
            return acc
        st, rounded = round_shift(acc, N.ATTN8_ACC_DROP, self.wacc_bits)
        self.comb += st
        return rounded
