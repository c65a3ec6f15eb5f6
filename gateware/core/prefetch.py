"""The weight prefetch (Params.weight_ports): finds the next MATVEC in the instruction buffer and
queues its weights' burst on the weight stream while the instructions before it run.

From the instruction after the current one it reads ahead through the buffer, one instruction
per two cycles, past every instruction that is not a MATVEC and does not change what a
MATVEC's address means (the loop instructions, SETR and HALT stop it; so do the end of the
buffer and ``MAX_AHEAD`` instructions). At a MATVEC whose weights lie inside DRAM it waits
until the sequencer may push (``may_push``: the current instruction writes no DRAM, its own
weights' burst is out, the earlier writes have reached LiteDRAM, the weight queue is free),
pushes the burst and holds it as pending for that instruction (``target``, an absolute pc).

Golden reads a MATVEC's weights when it executes, so anything that may have changed them
since the push makes the prefetch stale: a write burst over the prefetched range, or over the
instructions from the one after the current to the MATVEC (the MATVEC, or what its address
means, may have changed). The sequencer then drains the weight
stream and asks for the weights again; it does the same for a pending prefetch that is not
for the MATVEC it executes. A fault or the end of the run drains it too.
"""

from functools import reduce
from operator import or_

from migen import *

from spec import isa
from gateware.arith import as_unsigned
from gateware.core.matvec import matrix_bytes

O = isa.OPCODES
MAX_AHEAD = 8        # instructions read ahead of the current one
# Instructions the reading ahead passes (they leave a later MATVEC's address as it is).
PASSES = [O[name] for name in ("EMBED", "RMSNORM", "ROPE", "KVWRITE", "ATTN", "SILU", "STORE", "ARGMAX", "LOAD")]


class WeightPrefetch(Module):
    """Instruction buffer side: ``scan_off`` (a buffer offset) out, ``word`` (the instruction
    there, a cycle later), ``base`` (the current instruction's offset), ``count`` (valid
    instructions), ``pc`` and ``pc_beat`` (its DRAM beat) in. ``w_layer_off`` (the layer's weight offset) and the
    constant ``dram_beats``. Events: ``restart`` (a new current instruction is being decoded),
    ``may_push``, ``write``/``write_beat``/``write_beats`` (a write burst is sent),
    ``consume`` (the sequencer took or dropped the
    pending prefetch), ``reset`` (the run starts or stops). Out: ``push`` with ``push_beat``/
    ``push_beats``; ``pending``, ``hit`` (pending for the instruction at ``pc``) and
    ``stale``."""

    def __init__(self, fb_depth, dram_beats, addr_w):
        self.scan_off, self.word = Signal(max=fb_depth + MAX_AHEAD + 1), Signal(128)
        self.base, self.count = Signal(32), Signal(max=fb_depth + 1)
        self.pc, self.pc_beat = Signal(32), Signal(addr_w)
        self.w_layer_off = Signal(addr_w)
        self.restart, self.may_push, self.consume, self.reset = Signal(), Signal(), Signal(), Signal()
        self.write, self.write_beat, self.write_beats = Signal(), Signal(addr_w), Signal(addr_w)
        self.push, self.push_beat, self.push_beats = Signal(), Signal(addr_w), Signal(addr_w)
        self.pending, self.hit, self.stale = Signal(), Signal(), Signal()

        # # #

        ahead = Signal(max=MAX_AHEAD + 1)         # the instruction read: base + ahead
        target = Signal(32)
        # The MATVEC found: its fields, then its address and size (matrix_bytes registers in
        # three steps, so CHECK waits for them).
        layered, n, m, addr = Signal(), Signal(16), Signal(16), Signal(32)
        waddr = Signal(addr_w)
        m15 = as_unsigned(self, m + 15, 17)
        nbytes, _ = matrix_bytes(self, n, m15, m15[4:])
        beats = as_unsigned(self, (nbytes + 15) >> 4, addr_w)
        inside = Signal()
        settle = Signal(3)
        self.sync += [
            waddr.eq(addr + Mux(layered, self.w_layer_off, 0)),
            inside.eq((n != 0) & ((waddr >> 4) + beats <= dram_beats)),
        ]
        op = self.word[0:8]
        passes = reduce(or_, [op == o for o in PASSES])
        pf_beat, pf_beats = Signal(addr_w), Signal(addr_w)       # what was pushed
        ins_lo, ins_hi = Signal(addr_w), Signal(addr_w)          # the instructions it relies on
        self.comb += [
            self.scan_off.eq(self.base + ahead),
            self.push_beat.eq(waddr >> 4), self.push_beats.eq(beats),
            self.hit.eq(self.pending & (target == self.pc)),
        ]
        # STOP; READ addresses the instruction base + ahead, LOOK sees it; CHECK lets a MATVEC's
        # address and size settle; READY waits to push; PENDING holds the pushed burst.
        STOP, READ, LOOK, CHECK, READY, PENDING = range(6)
        state = Signal(max=6)
        def overlaps(lo, hi):
            return self.write & (self.write_beat < hi) & (self.write_beat + self.write_beats > lo)
        self.comb += self.push.eq((state == READY) & self.may_push & ~self.restart & ~self.reset)
        self.sync += [
            Case(state, {
                READ: state.eq(LOOK),
                LOOK: If(self.base + ahead >= self.count,
                        state.eq(STOP)
                    ).Elif(op == O["MATVEC"],
                        layered.eq(self.word[8]), n.eq(self.word[64:80]), m.eq(self.word[80:96]),
                        addr.eq(self.word[96:128]), settle.eq(0), state.eq(CHECK)
                    ).Elif(passes & (ahead != MAX_AHEAD) & (self.base + ahead + 1 < self.count),
                        ahead.eq(ahead + 1), state.eq(READ)
                    ).Else(
                        state.eq(STOP)
                    ),
                CHECK: [settle.eq(settle + 1), If(settle == 5, state.eq(Mux(inside, READY, STOP)))],
                READY: If(self.push,
                        target.eq(self.pc + ahead), pf_beat.eq(self.push_beat), pf_beats.eq(self.push_beats),
                        ins_lo.eq(self.pc_beat + 1), ins_hi.eq(self.pc_beat + ahead + 1),
                        self.pending.eq(1), self.stale.eq(0), state.eq(PENDING)
                    ),
                PENDING: If(self.consume, self.pending.eq(0), ahead.eq(1), state.eq(READ)),
            }),
            If(self.pending & (overlaps(pf_beat, pf_beat + pf_beats) | overlaps(ins_lo, ins_hi)), self.stale.eq(1)),
            # A new current instruction: read ahead from the one after it, unless a prefetch is
            # pending (it stays until its MATVEC, or another, consumes it).
            If(self.restart & ~self.pending, ahead.eq(1), state.eq(READ)),
            If(self.reset, self.pending.eq(0), self.stale.eq(0), state.eq(STOP)),
        ]


class ReadQueuePrefetch(Module):
    """Without a weight stream (Params.weight_ports = 0, with an instruction buffer): the next
    MATVEC's weights queued on the read stream behind the current instruction's last read.
    While RMSNORM, SILU or a MATVEC runs (instructions that write no DRAM and, once their own
    burst is out, read nothing more: ``own_burst_out``), the instruction after it (``la_word``,
    valid with ``la_hit``) is looked at; if it is a MATVEC whose weights lie inside DRAM, their
    burst is pushed (``push``, ``push_beat``, ``push_beats``) once the read queue is free
    (``queue_free``) and the writes before have landed (``writes_landed``), and the MATVEC
    finds it ``pending`` after NEXT (``next``). ``restart``: a new instruction is being
    decoded; ``idle``: no run. Where the burst would leave DRAM, the MATVEC asks for it itself
    and faults there, as golden does; a fault drains the queued beats (FLUSH)."""

    def __init__(self, dram_beats, addr_w):
        self.la_hit, self.la_word = Signal(), Signal(128)
        self.w_layer_off = Signal(addr_w)
        self.own_burst_out, self.queue_free, self.writes_landed = Signal(), Signal(), Signal()
        self.restart, self.next, self.idle = Signal(), Signal(), Signal()
        self.push, self.push_beat, self.push_beats = Signal(), Signal(addr_w), Signal(addr_w)
        self.pending = Signal()

        # # #

        done = Signal()
        la_mv, la_layered = Signal(), Signal()
        la_n, la_m, la_addr = Signal(16), Signal(16), Signal(32)
        la_waddr = Signal(addr_w)
        la_ok = Signal()
        la_age = Signal(4)            # cycles the lookahead has had to settle
        la_m15 = as_unsigned(self, la_m + 15, 17)
        la_bytes, _ = matrix_bytes(self, la_n, la_m15, la_m15[4:])
        word = self.la_word
        self.comb += [self.push_beats.eq(as_unsigned(self, (la_bytes + 15) >> 4, addr_w)),
                      self.push_beat.eq(la_waddr >> 4)]
        self.sync += [
            la_mv.eq(self.la_hit & (word[0:8] == O["MATVEC"])), la_layered.eq(word[8]),
            la_n.eq(word[64:80]), la_m.eq(word[80:96]), la_addr.eq(word[96:128]),
            la_waddr.eq(la_addr + Mux(la_layered, self.w_layer_off, 0)),
            la_ok.eq(la_mv & (la_n != 0) & ((la_waddr >> 4) + self.push_beats <= dram_beats)),
            If(self.restart, la_age.eq(0)).Elif(la_age != 15, la_age.eq(la_age + 1)),
        ]
        self.comb += self.push.eq(self.own_burst_out & ~done & la_ok & (la_age >= 8) & self.queue_free
                                  & self.writes_landed)
        self.sync += [
            If(self.push, done.eq(1)),
            If(self.next, self.pending.eq(done), done.eq(0)),
            If(self.idle, self.pending.eq(0), done.eq(0)),
        ]
