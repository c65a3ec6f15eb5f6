"""MATVEC: act[dst + r] (+)= W[r] @ x for r < n, on every slot at once, W an int8 matrix of n rows
and m columns streamed from DRAM (spec.isa.pack_matrix; spec.numerics.matvec).

The input quantiser (gateware/core/quantise.py) first turns each slot's x into int16 lane words
and an exponent. Then the weight stream is parsed: per block of 16 rows a beat of row shifts,
then a beat of group mantissas before every 8 weight beats. Each weight beat feeds every slot:
it is multiplied in P = LANES / mac_lanes chunks of mac_lanes weights (stage M), each chunk's
products summed (T) and added into its mantissa group's sum (G); the beat's two group sums then
get their mantissas (stage 2), are accumulated over the row (3), rounded by the row shift minus
the input exponent (4, 4b, 5, 6), and written, with the residual added when ``accumulate``
(7). Integer sums are exact, so any P gives the same rows.

With Params.mac_beats = 2 (P = 1) the parser takes the next beat too when both are weight
beats of one row under one mantissa beat: a second set of multipliers and group sums takes it,
and stage 2 adds both beats' scaled group sums into the row. Shift and mantissa beats, and a
weight beat whose successor starts the next row, go one a cycle.
"""

from types import SimpleNamespace

from migen import *

from spec import isa, numerics as N
from gateware.arith import round_shift_split, saturate, as_signed, as_unsigned
from gateware.core.pipeline import stop_on_abort
from gateware.core.quantise import InputQuantiser


def _lanes(sig, width, n):
    return [sig[width * k:width * (k + 1)] for k in range(n)]


def matrix_bytes(m, rows, m15, cpb):
    """spec.isa.matrix_bytes in gateware, in module ``m``: full 16-row blocks, then the partial
    one. ``m15`` is the column count plus 15, ``cpb`` the weight beats per row. Returns the
    matrix's bytes and the partial block's weight beats.

    Registered in three steps, so each product's operands come straight from registers
    (timing): the operands, the products, their sum; three cycles after rows and columns
    settle."""
    full, rem = Signal(12), Signal(4)
    # A full block: its shift beat, 16 rows of cpb weight beats, a mantissa beat per 8 of
    # those. From m15 (not a registered cpb) so that it is ready a cycle sooner.
    block_beats = Signal(50)
    wb = Signal(32)                   # the partial block's weight beats
    full_beats = Signal(50)
    total = Signal(50)
    m.sync += [
        full.eq(rows >> 4), rem.eq(rows[0:4]),
        block_beats.eq(1 + (m15[4:] << 4) + (m15[4:] << 1)),
        wb.eq(rem * cpb), full_beats.eq(full * block_beats),
        total.eq((full_beats + Mux(rem != 0, 1 + wb + ((wb + 7) >> 3), 0)) << 4),
    ]
    return total, wb


class Matvec(Module):
    """Start/done: ``start`` begins the instruction (the sequencer issues the weights' burst in
    the same cycle, or has queued it ahead: ``queued``); ``granted`` says the burst has gone to
    DRAM; ``done`` is high in the last cycle; ``abort`` stops the unit at once. Operands
    ``src``, ``dst``, ``n``, ``m``, ``accumulate``, ``nslots`` and, with ``write_stats``,
    ``use``/``use_amax[s]`` hold still until ``done``; ``bytes`` (the matrix's size, for the
    burst) is valid three cycles after n and m. Scratchpad side: ``radr[p]`` (data
    ``rdat[p][s]`` two cycles later), ``wadr``, ``we`` and ``out[s]`` (every slot at once).
    Read stream: ``rd_valid``/``rd_data`` in, ``rd_ready`` and ``rd_wait`` (the unit waits for
    a beat) out; with mac_beats = 2 also the beat after it, ``rd_valid2``/``rd_data2``, and
    ``rd_ready2`` (take both). ``mac_beats``: weight beats the multipliers work on this cycle
    (P > 1: a beat counts in each of its P cycles)."""

    def __init__(self, params, write_stats=False):
        B, XR, L = params.slots, params.act_read_ports, params.mac_lanes
        P = isa.LANES // L
        half = isa.LANES // 2
        self.start, self.granted, self.queued = Signal(), Signal(), Signal()
        self.abort, self.done = Signal(), Signal()
        self.src, self.dst, self.n, self.m = Signal(16), Signal(16), Signal(16), Signal(16)
        self.accumulate = Signal()
        self.nslots = Signal(max=B + 1)
        self.radr = [Signal(17, name=f"mv_radr{p}") for p in range(XR)]
        self.rdat = [[Signal((32, True), name=f"mv{s}_rdat{p}") for s in range(B)] for p in range(XR)]
        self.wadr, self.we = Signal(17), Signal()
        self.out = [Signal((32, True), name=f"mv_out{s}") for s in range(B)]
        self.rd_valid, self.rd_data = Signal(), Signal(128)
        self.rd_ready, self.rd_wait = Signal(), Signal()
        self.two = two = params.mac_beats == 2
        self.mac_beats = Signal(2 if two else 1)
        if two:
            assert P == 1
            self.rd_valid2, self.rd_data2, self.rd_ready2 = Signal(), Signal(128), Signal()

        # # #

        n, m, dst = self.n, self.m, self.dst
        cp = Signal(17)                   # columns, padded to whole beats
        cpb = Signal(13)                  # beats per row
        m15 = as_unsigned(self, m + 15, 17)
        self.sync += [cp.eq(Cat(C(0, 4), m15[4:])), cpb.eq(m15[4:])]
        self.bytes, part_beats = matrix_bytes(self, n, m15, cpb)

        self.submodules.quant = q = InputQuantiser(B, XR, params.max_cols, params.fast_exponent, write_stats,
                                                   second_word=two)
        self.use, self.use_amax = q.use, q.use_amax
        self.comb += [
            q.src.eq(self.src), q.m.eq(m), q.cp.eq(cp), q.nslots.eq(self.nslots), q.abort.eq(self.abort),
            *[q.rdat[p][s].eq(self.rdat[p][s]) for p in range(XR) for s in range(B)],
        ]
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        streaming = fsm.ongoing("STREAM")
        # What the parts below share.
        r = SimpleNamespace(B=B, L=L, P=P, half=half, n=n, cp=cp, cpb=cpb, part_beats=part_beats, q=q,
                            fsm=fsm, streaming=streaming, two=two)
        self._parser(r)
        self._stages(r)
        self._mac_array(r)
        want, rows_done, s4b_row, s7_row, s7_valid = r.want, r.rows_done, r.s4b_row, r.s7_row, r.s7_valid
        # The sequence: wait for the weights' burst, quantise the input (the beats wait in the
        # read FIFO meanwhile), then stream the rows.
        fsm.act("IDLE",
            If(self.start,
                q.prepare.eq(1),
                If(self.queued, q.start.eq(1), NextState("QUANT")).Else(NextState("WAIT"))
            )
        )
        fsm.act("WAIT", If(self.granted, q.start.eq(1), NextState("QUANT")))
        fsm.act("QUANT",
            *[self.radr[p].eq(q.radr[p]) for p in range(XR)],
            If(q.done, NextState("INIT"))
        )
        fsm.act("INIT", NextState("STREAM"))
        fsm.act("STREAM",
            self.rd_ready.eq(want), self.rd_wait.eq(want), *([self.rd_ready2.eq(want & r.pair)] if two else []),
            self.radr[0].eq(dst + s4b_row), self.wadr.eq(dst + s7_row), self.we.eq(s7_valid),
            If(rows_done == n, self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)

    def _parser(self, r):
        """The weight stream's parser: shift, mantissa and weight beats; a weight beat to the multipliers."""
        (P, cp, cpb, fsm, n, part_beats, q, streaming) = (
            r.P, r.cp, r.cpb, r.fsm, r.n, r.part_beats, r.q, r.streaming)
        # Stream parser: stage 0 accepts a beat and addresses the input words for its columns.
        phase = Signal(2)                 # 0: shifts, 1: mantissas, 2: weights
        shifts, mants = Signal(128), Signal(128)
        row, rows_done = Signal(16), Signal(16)
        k = Signal(16)                    # the beat's lane word in the row
        rib = Signal(4)                   # the row in its block
        blk_left = Signal(32)             # the block's weight beats still to come
        sb = Signal(3)                    # the weight beat after its mantissa beat
        blk_rows = Signal(5)
        self.comb += blk_rows.eq(Mux(n - row >= isa.ROW_BLOCK, isa.ROW_BLOCK, n - row))
        accept = Signal()
        s1_first, s1_last = Signal(), Signal()
        s1_w = Signal(128)
        s1_m0, s1_m1 = Signal(8), Signal(8)
        # Two beats a cycle: ``pair``, the next beat is a weight beat of this row under this
        # mantissa beat; ``accept2``, it is taken too. Its weights (zero when it is not taken,
        # so its products add nothing) and mantissas ride beside the first beat's.
        pair, accept2, mul_two = Signal(), Signal(), Signal()
        s1_w2 = Signal(128)
        s1_mb0, s1_mb1 = Signal(8), Signal(8)
        s1_rsh = Signal(6)
        s1_row = Signal(16)
        mul_busy = Signal()               # a weight beat is in the multipliers
        sub = Signal(max=max(P, 2))       # its chunk being multiplied
        mul_last = Signal()
        mac_free = Signal()
        is_weight = Signal()
        # A beat is taken while rows remain and the multipliers can take it (~abort: not in the
        # cycle the sequencer has left for FLUSH). "Rows remain" (row < n) is a register, set as
        # the row count moves (timing: the instruction's n is far away, and the compare's carry
        # chain would sit in front of the read stream's handshake).
        rows_left = Signal()
        want = rows_left & (~is_weight | mac_free) & ~self.abort
        self.comb += [
            is_weight.eq(phase == 2),
            mul_last.eq(mul_busy & (sub == P - 1)),
            mac_free.eq(~mul_busy | mul_last),
            q.xadr.eq(Mux(streaming, k, 0)),
            accept.eq(streaming & self.rd_valid & want),
            self.mac_beats.eq(mul_busy + (mul_busy & mul_two) if r.two else mul_busy),
        ]
        lanes = Array(_lanes(mants, 8, 16))
        # The weight beat's fields, for the beat taken alone (one) or with the next (two).
        one = [s1_m0.eq(lanes[Cat(C(0, 1), sb)]), s1_m1.eq(lanes[Cat(C(1, 1), sb)]),
               s1_first.eq(k == 0), s1_last.eq(k == cpb - 1)]

        def step(beats):
            """The parser's state past ``beats`` (1 or 2) weight beats of one row."""
            return [
                If((k if beats == 1 else k + beats - 1) == cpb - 1,
                    k.eq(0), rib.eq(rib + 1), row.eq(row + 1), rows_left.eq(row + 1 < n)
                ).Else(
                    k.eq(k + beats)
                ),
                sb.eq(sb + beats),
                blk_left.eq(blk_left - beats),
                If(blk_left == beats,
                    phase.eq(0)
                ).Elif(sb == 8 - beats,
                    phase.eq(1)
                ),
            ]
        if r.two:
            sb1 = as_unsigned(self, sb + 1, 3)
            self.comb += [
                pair.eq(is_weight & (k + 1 < cpb) & (sb != 7)),
                accept2.eq(accept & pair & self.rd_valid2),
                q.xadr2.eq(k + 1),
            ]
            self.sync += If(accept, mul_two.eq(accept2))
            weight = If(accept2,
                s1_w2.eq(self.rd_data2),
                s1_mb0.eq(lanes[Cat(C(0, 1), sb1)]), s1_mb1.eq(lanes[Cat(C(1, 1), sb1)]),
                s1_first.eq(k == 0), s1_last.eq(k + 1 == cpb - 1),
                *step(2)
            ).Else(s1_w2.eq(0), *step(1))
        else:
            weight = step(1)

        self.sync += [
            If(accept & is_weight,
                mul_busy.eq(1), sub.eq(0)
            ).Elif(mul_busy,
                If(mul_last, mul_busy.eq(0)).Else(sub.eq(sub + 1))
            ),
            If(accept,
                Case(phase, {
                    0: [shifts.eq(self.rd_data), phase.eq(1), sb.eq(0), rib.eq(0),
                        blk_left.eq(Mux(blk_rows == isa.ROW_BLOCK, cp, part_beats))],
                    1: [mants.eq(self.rd_data), phase.eq(2), sb.eq(0)],
                    2: [
                        s1_w.eq(self.rd_data),
                        *one,
                        s1_rsh.eq(Array(_lanes(shifts, 8, 16))[rib][0:6]),
                        s1_row.eq(row),
                        weight,
                    ],
                })
            ),
            If(fsm.ongoing("INIT"), phase.eq(0), k.eq(0), row.eq(0), rows_left.eq(n != 0), rib.eq(0),
               mul_busy.eq(0)),
        ]
        vars(r).update(accept=accept, is_weight=is_weight, mul_busy=mul_busy, mul_last=mul_last,
                       rows_done=rows_done, s1_first=s1_first, s1_last=s1_last, s1_m0=s1_m0,
                       s1_m1=s1_m1, s1_row=s1_row, s1_rsh=s1_rsh, s1_w=s1_w, sub=sub, want=want,
                       pair=pair, s1_w2=s1_w2, s1_mb0=s1_mb0, s1_mb1=s1_mb1)

    def _stages(self, r):
        """The stage registers that carry a beat's fields along its chunks and through the row's rounding."""
        (P, fsm, mul_busy, mul_last, rows_done, s1_first, s1_last, s1_m0, s1_m1, s1_row, s1_rsh,
         sub) = (
            r.P, r.fsm, r.mul_busy, r.mul_last, r.rows_done, r.s1_first, r.s1_last, r.s1_m0,
            r.s1_m1, r.s1_row, r.s1_rsh, r.sub)
        # The beat's fields ride along its last chunk: C (the chunk's operands registered next
        # to the multipliers), M (products), T (chunk sums), then G hands the group sums and
        # fields to stage 2.
        fields = [s1_first, s1_last, s1_m0, s1_m1, s1_rsh, s1_row] + ([r.s1_mb0, r.s1_mb1] if r.two else [])
        cm_valid, cm_c, cm_last = Signal(), Signal(max=max(P, 2)), Signal()
        mt_valid, mt_c, mt_last = Signal(), Signal(max=max(P, 2)), Signal()
        tg_valid, tg_c, tg_last = Signal(), Signal(max=max(P, 2)), Signal()
        cm_f, mt_f, tg_f = ([Signal(len(x)) for x in fields] for _ in range(3))
        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        s2_m0, s2_m1, s2_rsh, s2_row = Signal(8), Signal(8), Signal(6), Signal(16)
        s2_mb0, s2_mb1 = Signal(8), Signal(8)     # the second beat's mantissas (mac_beats = 2)
        s3_valid, s3_first, s3_last, s3_rsh, s3_row = Signal(), Signal(), Signal(), Signal(6), Signal(16)
        s4_valid, s4_rsh, s4_row = Signal(), Signal(6), Signal(16)
        s4b_valid, s4b_row = Signal(), Signal(16)
        s5_valid, s5_row = Signal(), Signal(16)
        s6_valid, s6_row = Signal(), Signal(16)
        s7_valid, s7_row = Signal(), Signal(16)
        self.sync += [
            cm_valid.eq(mul_busy), cm_c.eq(sub), cm_last.eq(mul_last),
            [a.eq(b) for a, b in zip(cm_f, fields)],
            mt_valid.eq(cm_valid), mt_c.eq(cm_c), mt_last.eq(cm_last),
            [a.eq(b) for a, b in zip(mt_f, cm_f)],
            tg_valid.eq(mt_valid), tg_c.eq(mt_c), tg_last.eq(mt_last),
            [a.eq(b) for a, b in zip(tg_f, mt_f)],
            s2_valid.eq(tg_valid & tg_last),
            s2_first.eq(tg_f[0]), s2_last.eq(tg_f[1]), s2_m0.eq(tg_f[2]), s2_m1.eq(tg_f[3]),
            s2_rsh.eq(tg_f[4]), s2_row.eq(tg_f[5]),
            *([s2_mb0.eq(tg_f[6]), s2_mb1.eq(tg_f[7])] if r.two else []),
            # Stages 2-7: scale by the mantissas (2), accumulate over the row (3), round: bias
            # add (4b; the residual's address) | shift (5) | saturate (6; the residual
            # arrives), add the residual (7), saturate and write.
            s3_valid.eq(s2_valid), s3_first.eq(s2_first), s3_last.eq(s2_last), s3_rsh.eq(s2_rsh), s3_row.eq(s2_row),
            s4_valid.eq(s3_valid & s3_last), s4_rsh.eq(s3_rsh), s4_row.eq(s3_row),
            s4b_valid.eq(s4_valid), s4b_row.eq(s4_row),
            s5_valid.eq(s4b_valid), s5_row.eq(s4b_row),
            s6_valid.eq(s5_valid), s6_row.eq(s5_row),
            s7_valid.eq(s6_valid), s7_row.eq(s6_row),
            If(s7_valid, rows_done.eq(rows_done + 1)),
            If(fsm.ongoing("INIT"), rows_done.eq(0)),
        ]
        vars(r).update(cm_valid=cm_valid, mt_valid=mt_valid, s2_m0=s2_m0, s2_m1=s2_m1, s2_mb0=s2_mb0, s2_mb1=s2_mb1,
                       s2_valid=s2_valid, s3_first=s3_first, s3_last=s3_last, s3_valid=s3_valid,
                       s4_rsh=s4_rsh, s4b_row=s4b_row, s4b_valid=s4b_valid, s5_valid=s5_valid,
                       s6_valid=s6_valid, s7_row=s7_row, s7_valid=s7_valid, tg_c=tg_c,
                       tg_valid=tg_valid)

    def _mac_array(self, r):
        """Every slot's multipliers, group sums, row accumulator, rounding and residual."""
        (B, L, P, accept, cm_valid, half, is_weight, mt_valid, mul_busy, q, s1_w, s2_m0, s2_m1,
         s2_valid, s3_first, s3_last, s3_valid, s4_rsh, s4b_valid, s5_valid, s6_valid, tg_c,
         tg_valid) = (
            r.B, r.L, r.P, r.accept, r.cm_valid, r.half, r.is_weight, r.mt_valid, r.mul_busy,
            r.q, r.s1_w, r.s2_m0, r.s2_m1, r.s2_valid, r.s3_first, r.s3_last, r.s3_valid,
            r.s4_rsh, r.s4b_valid, r.s5_valid, r.s6_valid, r.tg_c, r.tg_valid)
        # The MAC array. Every stage's registers load only when the stage holds data (in
        # hardware a clock enable; in Verilator an idle core then costs less). With P > 1 a
        # beat's chunks shift out of a register, chunk 0 straight from the beat (timing: no P:1
        # multiplexer steered by ``sub`` over the whole beat). ``mul_first`` flags chunk 0,
        # multiplied the cycle after its beat is accepted.
        w_chunk = Signal(8 * L)
        mul_first = Signal()
        self.sync += mul_first.eq(accept & is_weight)
        if P == 1:
            self.sync += If(mul_busy, w_chunk.eq(s1_w))
            if r.two:
                w_chunk2 = Signal(128)
                self.sync += If(mul_busy, w_chunk2.eq(r.s1_w2))
                w2 = [as_signed(self, v, 8) for v in _lanes(w_chunk2, 8, L)]
        else:
            w_rest = Signal(len(s1_w) - 8 * L)
            self.sync += If(mul_busy,
                If(mul_first,
                    w_chunk.eq(s1_w[:8 * L]), w_rest.eq(s1_w[8 * L:])
                ).Else(
                    w_chunk.eq(w_rest[:8 * L]), w_rest.eq(w_rest[8 * L:])
                )
            )
        w = [as_signed(self, v, 8) for v in _lanes(w_chunk, 8, L)]
        for s in range(B):
            # The input word is read the cycle after its beat is accepted (chunk 0); the rest
            # of it shifts out for the beat's later chunks (the read address moves on with the
            # next beat's k).
            x_chunk = Signal(16 * L)
            if P == 1:
                self.sync += If(mul_busy, x_chunk.eq(q.xdat[s]))
            else:
                x_rest = Signal(16 * (isa.LANES - L))
                self.sync += If(mul_busy,
                    If(mul_first,
                        x_chunk.eq(q.xdat[s][:16 * L]), x_rest.eq(q.xdat[s][16 * L:])
                    ).Else(
                        x_chunk.eq(x_rest[:16 * L]), x_rest.eq(x_rest[16 * L:])
                    )
                )
            x = [as_signed(self, v, 16) for v in _lanes(x_chunk, 16, L)]
            prod = [Signal((24, True), name=f"mv_prod{l}") for l in range(L)]
            q0, q1 = Signal((28, True)), Signal((28, True))
            g0, g1 = Signal((28, True)), Signal((28, True))
            scaled = g0 * s2_m0 + g1 * s2_m1
            if r.two:
                # The second beat: its own multipliers and group sums, scaled beside the first's.
                x_chunk2 = Signal(16 * L)
                self.sync += If(mul_busy, x_chunk2.eq(q.xdat2[s]))
                x2 = [as_signed(self, v, 16) for v in _lanes(x_chunk2, 16, L)]
                prod2 = [Signal((24, True), name=f"mv_prodb{l}") for l in range(L)]
                q0b, q1b, g0b, g1b = (Signal((28, True)) for _ in range(4))
                self.sync += [
                    If(cm_valid, *[prod2[l].eq(w2[l] * x2[l]) for l in range(L)]),
                    If(mt_valid, q0b.eq(sum(prod2[:half])), q1b.eq(sum(prod2[half:]))),
                    If(tg_valid, g0b.eq(q0b), g1b.eq(q1b)),
                ]
                scaled = scaled + g0b * r.s2_mb0 + g1b * r.s2_mb1
            pp, acc, s4_acc = Signal((40, True)), Signal((56, True)), Signal((56, True))
            # The row shift is 0..63 and the input exponent 0..31.
            finish = round_shift_split(self, s4_acc, as_signed(self, s4_rsh - q.ex[s], 8), 72,
                                       x_bits=len(s4_acc), s_range=(-31, 63), sat_bits=32)
            s5_y, s6_y, s7_y = Signal((len(finish()), True)), Signal((32, True)), Signal((32, True))
            s7_res = Signal((34, True))
            self.sync += If(cm_valid, *[prod[l].eq(w[l] * x[l]) for l in range(L)])
            if P == 1:
                self.sync += [If(mt_valid, q0.eq(sum(prod[:half])), q1.eq(sum(prod[half:]))),
                              If(tg_valid, g0.eq(q0), g1.eq(q1))]
            else:
                # Chunks 0..P/2-1 hold the first 8 lanes (mantissa group 0), the rest group 1.
                self.sync += [
                    If(mt_valid, q0.eq(sum(prod))),
                    If(tg_valid,
                        If(tg_c < P // 2,
                            g0.eq(Mux(tg_c == 0, 0, g0) + q0)
                        ).Else(
                            g1.eq(Mux(tg_c == P // 2, 0, g1) + q0)
                        )
                    ),
                ]
            self.sync += [
                If(s2_valid, pp.eq(scaled)),
                If(s3_valid, acc.eq(Mux(s3_first, 0, acc) + pp)),
                If(s3_valid & s3_last, s4_acc.eq(Mux(s3_first, 0, acc) + pp)),
                If(s4b_valid, s5_y.eq(finish())),
                If(s5_valid, s6_y.eq(saturate(self, s5_y, 32))),
                If(s6_valid, s7_y.eq(s6_y), s7_res.eq(self.rdat[0][s] + s6_y)),
            ]
            self.comb += self.out[s].eq(Mux(self.accumulate, saturate(self, s7_res, 32), s7_y))
