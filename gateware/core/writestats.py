"""Write statistics: an input vector's figures, gathered while an instruction before wrote it.

MATVEC's first pass finds its input's largest |x| and RMSNORM's first pass sums its input's
squares, over a vector an instruction before has just written. Both figures are gathered here
as the writes reach the scratchpads, per slot, for two ranges: the last one MATVEC wrote
(entry 0: the residual stream, RMSNORM's input) and the last one any other instruction wrote
(entry 1: RMSNORM, ATTN and SILU outputs, MATVEC's inputs). An instruction whose input is
exactly such a range, complete and not written since, takes the figures and skips its pass:
the same integers, m/2 + 5 or n + 5 cycles fewer. An instruction starts its entry afresh
when it issues, marks it complete when it retires and drops the other entry if it writes into
that one's range. For the MATVEC entry each slot's largest element and the first place it was
written are kept too, so an ARGMAX over exactly that range (the classifier's logits, or a row
chunk of them) takes its result without a pass: n/4 cycles fewer, 8,000 of a stories15M token.
"""

from functools import reduce
from operator import or_

from migen import *

from spec import isa, numerics as N
from gateware.arith import round_shift
from gateware.core.pipeline import delay_chain


class WriteStats(Module):
    """Sequencer side: the instruction's fields (``op``, ``dst``, ``src``, ``n``, ``m``, and
    ``nm`` = n*m, settled before it issues), ``issue`` (the cycle it issues: EXECUTE),
    ``advance`` (the cycle it retires to the next: NEXT) and ``reset`` (no run: IDLE).
    Scratchpad side: ``wdat[s]``/``we[s]``, each slot's write as it reaches the RAM.
    Out, from the cycle after ``issue``: ``use`` (the instruction's input is a complete
    range) and each slot's ``amax[s]`` and ``sumsq[s]`` over it; ``use_max`` (it is the range
    a MATVEC wrote) and each slot's largest element ``best[s]`` and its first index
    ``best_i[s]`` in the range."""

    def __init__(self, slots):
        B = slots
        self.op = Signal(8)
        self.dst, self.src, self.n, self.m = (Signal(16) for _ in range(4))
        self.nm = Signal(32)
        self.issue, self.advance, self.reset = Signal(), Signal(), Signal()
        self.wdat = [Signal((32, True), name=f"wstat_wdat{s}") for s in range(B)]
        self.we = [Signal(name=f"wstat_we{s}") for s in range(B)]
        self.use = Signal()
        self.amax = [Signal(32, name=f"wstat_use_amax{s}") for s in range(B)]
        self.sumsq = [Signal(64, name=f"wstat_use_sumsq{s}") for s in range(B)]
        self.use_max = Signal()
        self.best = [Signal((32, True), name=f"wstat_use_best{s}") for s in range(B)]
        self.best_i = [Signal(17, name=f"wstat_use_best_i{s}") for s in range(B)]

        # # #

        O = isa.OPCODES
        op, dst, src, n, m, issue = self.op, self.dst, self.src, self.n, self.m, self.issue
        writer_ops = [O[name] for name in ("EMBED", "RMSNORM", "MATVEC", "ROPE", "ATTN", "SILU", "LOAD")]
        is_writer = Signal()
        self.comb += is_writer.eq(reduce(or_, [op == code for code in writer_ops]))
        st_lo = [Signal(17, name=f"wstat_lo{e}") for e in range(2)]
        st_hi = [Signal(17, name=f"wstat_hi{e}") for e in range(2)]
        st_valid = [Signal(name=f"wstat_valid{e}") for e in range(2)]
        st_amax = [[Signal(32, name=f"wstat{e}_amax{s}") for s in range(B)] for e in range(2)]
        st_sumsq = [[Signal(64, name=f"wstat{e}_sumsq{s}") for s in range(B)] for e in range(2)]
        st_entry = Signal()               # the entry the current instruction writes
        st_building = Signal()
        # Registered from the fields (settled in DECODE; nm in PREP2), used as it issues.
        wr_hi, in_hi = Signal(17), Signal(17)
        st_hit = [Signal(name=f"wstat_hit{e}") for e in range(2)]
        st_pipe = Signal()                # writes still on their way into the figures
        self.sync += [
            wr_hi.eq(dst + Mux(op == O["ATTN"], self.nm, n)),
            in_hi.eq(src + Mux(op == O["MATVEC"], m, n)),
            *[st_hit[e].eq(st_valid[e] & (st_lo[e] == src) & (st_hi[e] == in_hi) & ~st_pipe) for e in range(2)],
        ]
        # Captured as the instruction issues, before its own entry starts afresh.
        op_entry = Signal()
        self.comb += op_entry.eq(op != O["MATVEC"])
        # The MATVEC entry's largest element and its first index, per slot (entry 0 only).
        st_best = [Signal((32, True), name=f"wstat0_best{s}") for s in range(B)]
        st_best_i = [Signal(17, name=f"wstat0_best_i{s}") for s in range(B)]
        st_count = [Signal(17, name=f"wstat0_count{s}") for s in range(B)]
        self.sync += If(issue,
            self.use.eq(st_hit[0] | st_hit[1]), self.use_max.eq(st_hit[0]),
            *[self.best[s].eq(st_best[s]) for s in range(B)], *[self.best_i[s].eq(st_best_i[s]) for s in range(B)],
            *[self.amax[s].eq(Mux(st_hit[0], st_amax[0][s], st_amax[1][s])) for s in range(B)],
            *[self.sumsq[s].eq(Mux(st_hit[0], st_sumsq[0][s], st_sumsq[1][s])) for s in range(B)],
        )
        for e in range(2):
            mine = op_entry == e
            overlaps = (dst < st_hi[e]) & (st_lo[e] < wr_hi)
            self.sync += [
                If(self.reset,
                    st_valid[e].eq(0)
                ).Elif(issue & is_writer,
                    If(mine,
                        st_valid[e].eq(0), st_lo[e].eq(dst), st_hi[e].eq(wr_hi)
                    ).Elif(overlaps,
                        st_valid[e].eq(0)
                    )
                ).Elif(self.advance & st_building & (st_entry == e),
                    st_valid[e].eq(1)
                ),
            ]
        self.sync += [
            If(issue, st_building.eq(is_writer), st_entry.eq(op_entry)),
            If(self.advance, st_building.eq(0)),
        ]
        pipe_busy = []
        for s in range(B):
            # A write's |x| and rounded x (S1), its square (S2), into the entry (S3).
            wdat, we = self.wdat[s], self.we[s]
            _, v1, v2 = delay_chain(self, we, 2, name=f"wstat_v{s}_")
            ax1, ax2 = Signal(32), Signal(32)
            x1, x2 = Signal((32, True)), Signal((32, True))
            rnd, xs1 = round_shift(wdat, N.RMS_PRE_SHIFT, 40)
            self.comb += rnd
            xs_r = Signal((32 - N.RMS_PRE_SHIFT + 1, True))      # as RMSNORM's pass rounds it
            sq = Signal(64)
            self.sync += [
                If(we, ax1.eq(Mux(wdat < 0, -wdat, wdat)), xs_r.eq(xs1), x1.eq(wdat)),
                If(v1, ax2.eq(ax1), sq.eq(xs_r * xs_r), x2.eq(x1)),
            ]
            # MATVEC writes its rows in order, so the first write of the largest value is
            # its first index, as ARGMAX's pass finds it.
            self.sync += If(issue & is_writer & (op_entry == 0),
                st_count[s].eq(0)
            ).Elif(v2 & (st_entry == 0),
                st_count[s].eq(st_count[s] + 1),
                If((st_count[s] == 0) | (x2 > st_best[s]), st_best[s].eq(x2), st_best_i[s].eq(st_count[s])),
            )
            for e in range(2):
                self.sync += If(issue & is_writer & (op_entry == e),
                    st_amax[e][s].eq(0), st_sumsq[e][s].eq(0)
                ).Elif(v2 & (st_entry == e),
                    If(ax2 > st_amax[e][s], st_amax[e][s].eq(ax2)),
                    st_sumsq[e][s].eq(st_sumsq[e][s] + sq),
                )
            pipe_busy += [v1, v2]
        self.comb += st_pipe.eq(reduce(or_, pipe_busy) | reduce(or_, self.we))
