"""The weight prefetch (Params.weight_ports): finds the next MATVECs in the instruction buffer
and queues their weights' bursts on the weight stream while the instructions before them run.

From the current instruction it reads ahead through the buffer, one instruction per two
cycles, past every instruction that is not a MATVEC and does not change what a MATVEC's
address means (SETR and HALT stop it; so do the end of the buffer and ``MAX_AHEAD``
instructions). It follows the layer loop: at an ENDLOOP that will jump back it goes on from
the loop's first instruction, where a MATVEC's layer offset is the next layer's; at one that
ends the loop it goes on past it, where the offset is layer 0's. It follows one ENDLOOP per
reading; a LOOP passes (layer 0 already holds outside a loop) but no ENDLOOP after it does.
At a MATVEC whose weights lie inside DRAM it waits until the sequencer may push (``may_push``:
the current instruction writes no DRAM, its own weights' burst is out, the earlier writes
have reached LiteDRAM, the weight queue is free), pushes the burst and holds it as pending for
that instruction (its pc), then reads on. Up to ``REQUESTS`` are pending, in program order;
the first is for the next MATVEC to run. Reading again from a new current instruction, it
passes a MATVEC that has a request when it reaches it through as many ENDLOOPs as the request
did (counting the ENDLOOPs that ran since: ``endloop``), and stops there otherwise.

Golden reads a MATVEC's weights when it executes, so anything that may have changed them
since the push makes a request stale: a write burst over its weights, or over the
instructions it read through to reach its MATVEC (the MATVEC, or what its address means, may
have changed). The sequencer drains the weight stream (every request) and asks for the
weights again when the MATVEC it executes finds the first request stale or for another
instruction; a fault or the end of the run drains it too.
"""

from functools import reduce
from operator import or_

from migen import *

from spec import isa
from gateware.arith import as_unsigned
from gateware.core.matvec import matrix_bytes

O = isa.OPCODES
MAX_AHEAD = 16       # instructions read ahead of the current one
REQUESTS = 4         # requests pending at most
# Instructions the reading ahead passes (they leave a later MATVEC's address as it is).
PASSES = [O[name] for name in ("EMBED", "RMSNORM", "ROPE", "KVWRITE", "ATTN", "SILU", "STORE", "ARGMAX", "LOAD")]
SAME, NEXT_LAYER, AFTER_LOOP = range(3)     # the layer offset of a MATVEC read ahead


def _weights_burst(m, layered, n, cols, addr, layer_off, dram_beats, addr_w):
    """A MATVEC's weights as a burst, from its fields (held still by the caller): the first
    beat and the beat count (``matrix_bytes`` registers in three steps), and ``inside``:
    registered, the matrix is not empty and lies inside DRAM. Valid six cycles after the
    fields settle."""
    waddr, inside = Signal(addr_w), Signal()
    m15 = as_unsigned(m, cols + 15, 17)
    nbytes, _ = matrix_bytes(m, n, m15, m15[4:])
    beats = as_unsigned(m, (nbytes + 15) >> 4, addr_w)
    m.sync += [
        waddr.eq(addr + Mux(layered, layer_off, 0)),
        inside.eq((n != 0) & ((waddr >> 4) + beats <= dram_beats)),
    ]
    return waddr >> 4, beats, inside


class WeightPrefetch(Module):
    """Instruction buffer side: ``scan_off`` (a buffer offset) out, ``word`` (the instruction
    there, a cycle later), ``base`` (the current instruction's offset), ``count`` (valid
    instructions), ``pc`` and ``pc_beat`` (its DRAM beat) in. The loop: ``in_loop``,
    ``last_layer`` (its ENDLOOP ends it), ``loop_start`` (a pc), ``w_layer_off`` (the layer's
    weight offset) and ``wstride``. The constant ``dram_beats``. Events: ``restart`` (a new
    current instruction is being decoded), ``may_push``, ``write``/``write_beat``/
    ``write_beats`` (a write burst is sent), ``consume`` (the MATVEC the first request is for
    takes it), ``drop`` (the sequencer drains them all), ``endloop`` (an ENDLOOP runs), ``reset``
    (the run starts or stops); a
    write and a consume never come in one cycle. Out: ``push`` with ``push_beat``/
    ``push_beats``; ``pending``, ``hit`` (the first request is for the instruction at ``pc``)
    and ``stale`` (the first request's)."""

    def __init__(self, fb_depth, dram_beats, addr_w, requests=REQUESTS):
        N = requests
        self.scan_off, self.word = Signal(max=fb_depth + 1), Signal(128)
        self.base, self.count = Signal(32), Signal(max=fb_depth + 1)
        self.pc, self.pc_beat = Signal(32), Signal(addr_w)
        self.in_loop, self.last_layer, self.loop_start = Signal(), Signal(), Signal(32)
        self.w_layer_off, self.wstride = Signal(addr_w), Signal(32)
        self.restart, self.may_push, self.reset, self.endloop = Signal(), Signal(), Signal(), Signal()
        self.consume, self.drop = Signal(), Signal()
        self.write, self.write_beat, self.write_beats = Signal(), Signal(addr_w), Signal(addr_w)
        self.push, self.push_beat, self.push_beats = Signal(), Signal(addr_w), Signal(addr_w)
        self.pending, self.hit, self.stale = Signal(), Signal(), Signal()

        # # #

        # The reading: the buffer offset it is at, instructions read, the layer offset mode,
        # whether a LOOP was passed, and the DRAM beats of the instructions read [lo, hi).
        scan, steps = Signal(max=fb_depth + 1), Signal(max=MAX_AHEAD + 2)
        mode, looped = Signal(2), Signal()
        lo, hi = Signal(addr_w), Signal(addr_w)
        scan_pc = Signal(32)
        scan_beat = Signal(addr_w)
        self.comb += [
            self.scan_off.eq(scan),
            scan_pc.eq(self.pc - self.base + scan),
            scan_beat.eq(self.pc_beat - self.base + scan),
        ]
        # The loop's first instruction in the buffer (offset, when there).
        loop_off = Signal(33)
        loop_there = Signal()
        self.comb += [loop_off.eq(self.loop_start + self.base - self.pc),
                      loop_there.eq((self.loop_start + self.base >= self.pc) & (loop_off < self.count))]
        # The requests, in program order: [0] is the first. ``used`` of them are pending.
        def entries(name, width=1):
            return [Signal(width, name=f"{name}{i}") for i in range(N)]
        pend, target, stale = entries("pend"), entries("target", 32), entries("stale")
        w_lo, w_hi, i_lo, i_hi = (entries(name, addr_w) for name in ("w_lo", "w_hi", "i_lo", "i_hi"))
        # Each request's layer offset mode, as seen from the current layer (an ENDLOOP that
        # runs makes the next layer's, or layer 0's after the loop, the current one).
        r_mode = entries("mode", 2)
        used = Signal(max=N + 1)
        self.comb += used.eq(reduce(lambda a, b: a + b, pend))

        # The MATVEC found: its fields, then its address and size (matrix_bytes registers in
        # three steps, so CHECK waits for them).
        layered, n, m, addr = Signal(), Signal(16), Signal(16), Signal(32)
        next_off = Signal(addr_w)
        settle = Signal(3)
        layer_off = Array([self.w_layer_off, next_off, C(0, addr_w), C(0, addr_w)])[mode]
        self.sync += next_off.eq(self.w_layer_off + self.wstride)
        beat, beats, inside = _weights_burst(self, layered, n, m, addr, layer_off, dram_beats, addr_w)
        op = self.word[0:8]
        passes = reduce(or_, [op == o for o in PASSES])
        self.comb += [
            self.push_beat.eq(beat), self.push_beats.eq(beats),
            self.pending.eq(pend[0]), self.stale.eq(stale[0]),
            self.hit.eq(pend[0] & (target[0] == self.pc)),
        ]
        # STOP; READ addresses the instruction at ``scan``, LOOK sees it; CHECK lets a MATVEC's
        # address and size settle; READY waits to push.
        STOP, READ, LOOK, CHECK, READY = range(5)
        state = Signal(max=5)
        self.comb += self.push.eq((state == READY) & self.may_push & ~self.restart & ~self.reset)
        more = (steps != MAX_AHEAD) & (scan + 1 < self.count)
        go_on = If(more, scan.eq(scan + 1), steps.eq(steps + 1), state.eq(READ)).Else(state.eq(STOP))
        seen = [If(scan_beat < lo, lo.eq(scan_beat)), If(scan_beat + 1 > hi, hi.eq(scan_beat + 1))]
        # A requested MATVEC, reached the way it was (through as many ENDLOOPs): its request's,
        # passed; reached another way, the reading stops.
        requested = reduce(or_, [pend[i] & (scan_pc == target[i]) & (mode == r_mode[i]) for i in range(N)])
        other_way = reduce(or_, [pend[i] & (scan_pc == target[i]) for i in range(N)])
        reread = [scan.eq(self.base), steps.eq(0), mode.eq(SAME), looped.eq(0),
                  lo.eq(self.pc_beat + 1), hi.eq(self.pc_beat + 1), state.eq(READ)]
        self.sync += [
            Case(state, {
                READ: state.eq(LOOK),
                LOOK: If(steps == 0,
                        # The current instruction: at an ENDLOOP wait for the next.
                        If(op == O["ENDLOOP"], state.eq(STOP)).Else(looped.eq(op == O["LOOP"]), go_on)
                    ).Elif(scan >= self.count,
                        state.eq(STOP)
                    ).Elif(op == O["MATVEC"],
                        *seen,
                        If(requested,
                            go_on
                        ).Elif(pend[N - 1] | other_way,
                            state.eq(STOP)
                        ).Else(
                            layered.eq(self.word[8]), n.eq(self.word[64:80]), m.eq(self.word[80:96]),
                            addr.eq(self.word[96:128]), settle.eq(0), state.eq(CHECK)
                        )
                    ).Elif((op == O["ENDLOOP"]) & (mode == SAME) & ~looped & self.in_loop,
                        *seen,
                        If(self.last_layer,
                            mode.eq(AFTER_LOOP), go_on
                        ).Elif(loop_there & (steps != MAX_AHEAD),
                            mode.eq(NEXT_LAYER), scan.eq(loop_off), steps.eq(steps + 1), state.eq(READ)
                        ).Else(state.eq(STOP))
                    ).Elif((op == O["LOOP"]) & ~self.in_loop,
                        *seen, looped.eq(1), go_on
                    ).Elif(passes,
                        *seen, go_on
                    ).Else(
                        state.eq(STOP)
                    ),
                CHECK: [settle.eq(settle + 1), If(settle == 5, state.eq(Mux(inside, READY, STOP)))],
                READY: If(self.push,
                        # Into the first free request; read on while one is left.
                        Array(pend)[used].eq(1), Array(stale)[used].eq(0), Array(target)[used].eq(scan_pc),
                        Array(w_lo)[used].eq(self.push_beat), Array(w_hi)[used].eq(self.push_beat + self.push_beats),
                        Array(i_lo)[used].eq(lo), Array(i_hi)[used].eq(hi), Array(r_mode)[used].eq(mode),
                        If(used == N - 1, state.eq(STOP)).Else(go_on)
                    ),
            }),
        ]
        # Writes since a push make it stale.
        def overlaps(a, b):
            return self.write & (self.write_beat < b) & (self.write_beat + self.write_beats > a)
        for i in range(N):
            self.sync += If(pend[i] & (overlaps(w_lo[i], w_hi[i]) | overlaps(i_lo[i], i_hi[i])), stale[i].eq(1))
        self.sync += [
            # The first request taken: the others move up; read again from the current one.
            If(self.consume,
                *[dst[i].eq(dst[i + 1]) for dst in (pend, target, stale, w_lo, w_hi, i_lo, i_hi, r_mode)
                  for i in range(N - 1)],
                pend[N - 1].eq(0), *reread
            ),
            If(self.drop, *[p.eq(0) for p in pend], *reread),
            If(self.endloop, *[md.eq(SAME) for md in r_mode]),
            # A new current instruction: read ahead from it, unless every request is pending.
            If(self.restart & ~pend[N - 1], *reread),
            If(self.reset, *[p.eq(0) for p in pend + stale], state.eq(STOP)),
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
        la_age = Signal(4)            # cycles the lookahead has had to settle
        beat, beats, inside = _weights_burst(self, la_layered, la_n, la_m, la_addr, self.w_layer_off,
                                             dram_beats, addr_w)
        la_ok = la_mv & inside
        word = self.la_word
        self.comb += [self.push_beats.eq(beats), self.push_beat.eq(beat)]
        self.sync += [
            la_mv.eq(self.la_hit & (word[0:8] == O["MATVEC"])), la_layered.eq(word[8]),
            la_n.eq(word[64:80]), la_m.eq(word[80:96]), la_addr.eq(word[96:128]),
            If(self.restart, la_age.eq(0)).Elif(la_age != 15, la_age.eq(la_age + 1)),
        ]
        self.comb += self.push.eq(self.own_burst_out & ~done & la_ok & (la_age >= 8) & self.queue_free
                                  & self.writes_landed)
        self.sync += [
            If(self.push, done.eq(1)),
            If(self.next, self.pending.eq(done), done.eq(0)),
            If(self.idle, self.pending.eq(0), done.eq(0)),
        ]
