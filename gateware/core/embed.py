"""EMBED's conversion: act[dst + k] = embed(q[k], mant[k // 8], shift) for k < n
(spec.numerics.embed), one slot's row of a matrix in pack_matrix's format at a time.

The sequencer checks the slot's token and issues the row's two reads (spec.isa.matrix_row_reads)
as it starts the unit: the beat of its block's row shifts, then the superblocks that hold the
row, where a mantissa beat comes before every 8 weight beats and the first ``skip`` weight
beats belong to the rows before. One element a cycle (plus one cycle a beat): the product of
its weight and its group's mantissa (S1), rounding bias (S2), shift (S3), saturate and write.
"""

from migen import *

from spec import isa
from spec import numerics as N
from gateware.arith import round_shift_split, saturate, as_signed
from gateware.core.pipeline import delay_chain, stop_on_abort

LATENCY = 3           # cycles from an element's issue to its write


class Embed(Module):
    """The row's reads: from ``token`` (the slot's), ``base`` (the table's byte address) and
    ``n``, two register stages later, ``hdr_addr`` (the block's shift beat) and ``span_addr``,
    ``span_bytes`` (the superblocks). Start/granted/done/abort as Rmsnorm's: ``start`` as the
    sequencer issues the first read, ``granted`` each time BURST has sent one (the unit reads
    once both are out), ``done`` in the last cycle; ``dst``, ``n``, ``token`` and ``base`` hold
    still until then. Read stream: ``rd_valid``, ``rd_data`` in; ``rd_ready`` and ``rd_wait``
    (a beat is wanted) out. Out: one slot's write, ``wadr``, ``wdat``, ``we``."""

    def __init__(self, max_cols, addr_w=50):
        self.start, self.granted, self.abort, self.done = Signal(), Signal(), Signal(), Signal()
        self.dst, self.n, self.token, self.base = Signal(16), Signal(16), Signal(16), Signal(addr_w)
        self.hdr_addr, self.span_addr, self.span_bytes = Signal(addr_w), Signal(addr_w), Signal(20)
        self.rd_valid, self.rd_data = Signal(), Signal(128)
        self.rd_ready, self.rd_wait = Signal(), Signal()
        self.wadr, self.wdat, self.we = Signal(17), Signal((32, True)), Signal()

        # # #

        self.row, self.skip = Signal(4), Signal(3)
        self._reads(max_cols, addr_w)

        SB = isa.SUPERBLOCK
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        run = fsm.ongoing("RUN")
        shift6 = Signal(6)
        mant_beat, beat, held = Signal(128), Signal(128), Signal()
        pos = Signal(max=SB + 1)          # the next beat's place in its superblock (0: mantissas)
        pair = Signal(max=SB)             # the held weight beat's place among the superblock's 8
        lane = Signal(4)
        w = Signal((12, True))            # the next weight beat, counted from the row's first
        i = Signal(17)                    # the held beat's element in this cycle
        issued = Signal()                 # every element of the row has issued

        # One element a cycle from the held beat: its weight and its group's mantissa.
        q = Signal((8, True))
        mt = Signal((9, True))
        self.comb += [
            q.eq(Array(beat[8 * k:8 * (k + 1)] for k in range(isa.LANES))[lane]),
            mt.eq(Array(mant_beat[8 * k:8 * (k + 1)] for k in range(isa.LANES))[Cat(lane[3], pair)]),
        ]
        issue = Signal()
        self.comb += issue.eq(run & held)
        take = Signal()
        self.comb += [
            take.eq(run & ~held & ~issued),
            self.rd_ready.eq(fsm.ongoing("HDR") | take), self.rd_wait.eq(self.rd_ready),
        ]
        last_elem = Signal()
        self.comb += last_elem.eq((lane == isa.LANES - 1) | (i == self.n - 1))
        self.sync += [
            If(fsm.ongoing("HDR") & self.rd_valid,
                shift6.eq(Array(self.rd_data[8 * k:8 * (k + 1)] for k in range(isa.LANES))[self.row][0:6]),
                pos.eq(0), w.eq(-self.skip), i.eq(0), held.eq(0), issued.eq(0)
            ),
            If(take & self.rd_valid,
                If(pos == 0,
                    mant_beat.eq(self.rd_data)
                ).Elif(w >= 0,
                    beat.eq(self.rd_data), held.eq(1), lane.eq(0), pair.eq(pos - 1)
                ),
                pos.eq(Mux(pos == SB, 0, pos + 1)),
                If(pos != 0, w.eq(w + 1))
            ),
            If(issue,
                i.eq(i + 1), lane.eq(lane + 1),
                If(last_elem, held.eq(0)),
                If(i == self.n - 1, issued.eq(1))
            ),
        ]

        # S1: the weight times its mantissa (|q * mant| < 2**15); S2, S3: the rounding shift.
        emb_q = Signal((16, True))
        shift = as_signed(self, shift6 - N.ACT_FRAC, 8)
        finish = round_shift_split(self, emb_q, shift, 64, x_bits=16, s_range=(-N.ACT_FRAC, 63 - N.ACT_FRAC),
                                   sat_bits=32)
        emb_r = Signal((len(finish()), True))
        self.sync += [emb_q.eq(q * mt), emb_r.eq(finish())]
        valid = delay_chain(self, issue, LATENCY, name="emb_v")
        index = delay_chain(self, i[:16], LATENCY, name="emb_i")
        self.comb += self.wdat.eq(saturate(self, emb_r, 32))

        fsm.act("IDLE", If(self.start, NextState("WAIT")))
        fsm.act("WAIT", If(self.granted, NextState("WAIT2")))
        fsm.act("WAIT2", If(self.granted, NextState("HDR")))
        fsm.act("HDR", If(self.rd_valid, NextState("RUN")))
        fsm.act("RUN",
            self.wadr.eq(self.dst + index[LATENCY]), self.we.eq(valid[LATENCY]),
            If(issued & (Cat(*valid[1:]) == 0), self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)

    def _reads(self, max_cols, addr_w):
        """spec.isa.matrix_row_reads in hardware: the beats per row and per block from ``n``
        (registered: ``n`` holds still from the instruction's decode on), the full blocks
        before the row's and the row's first weight beat (products, registered), then the
        addresses (registered)."""
        SB, RB = isa.SUPERBLOCK, isa.ROW_BLOCK
        bpr = Signal(max=max_cols // isa.LANES + 1)        # n <= max_cols: checked at decode
        block_beats = Signal(len(bpr) + 5)
        blk_off, w0 = Signal(addr_w), Signal(len(bpr) + 4)
        skip = w0[0:3]
        self.comb += self.row.eq(self.token[0:4])
        self.sync += [
            bpr.eq((self.n + isa.LANES - 1) >> 4), block_beats.eq(1 + (RB + RB // SB) * bpr),
            blk_off.eq(self.token[4:] * block_beats),
            w0.eq(self.token[0:4] * bpr),
            self.hdr_addr.eq(self.base + (blk_off << 4)),
            self.span_addr.eq(self.base + ((blk_off + 1 + (SB + 1) * (w0 >> 3)) << 4)),
            self.span_bytes.eq(((((skip + bpr - 1) >> 3) + 1 + skip + bpr) << 4)),
            self.skip.eq(skip),
        ]
