"""The sequencer: fetches, decodes and checks spec.isa instructions, walks the batch slots, and
starts the units (start/done), answering their DRAM burst requests (BURST checks every burst
against the window first).

It owns the architectural state (registers, the slot table, the layer loop, the program counter
and the instruction buffer), the operand addresses, and the run's outcome (busy, done, the
error code and address). What it lends is said by ``own``: one signal per unit that is running
on the scratchpads or the streams (``own.matvec`` while MATVEC has them, …); the top
(gateware/accelerator.py) connects each unit's ports under its signal. The sequencer itself
drives the read stream only in its own states (``rd_ready``, ``rd_wait``).

A fault stops the units in FLUSH (``abort``), the cycle after it is recorded (registered,
timing: the error checks' compares stay off the paths into every unit's registers). Their
outputs are cut off a cycle sooner, as the sequencer leaves the state that lent them.
"""

from functools import reduce
from operator import or_
from types import SimpleNamespace

from migen import *

from litex.gen import LiteXModule

from spec import isa
from gateware.arith import as_unsigned
from gateware.core.fetchbuffer import InstructionBuffer
from gateware.core.pipeline import check_no_dead_states
from gateware.core.prefetch import ReadQueuePrefetch, WeightPrefetch

ADDR_W = 50      # byte-address arithmetic width: every sum of fields and registers is exact
CLASSES = isa.CLASSES
O = isa.OPCODES

# The states that lend a unit the scratchpads or the streams (``Sequencer.own``).
OWNERS = {"embed": "EMB_WAIT", "rmsnorm": "RMS_WAIT", "matvec": "MV_WAIT", "rope": "RP_RUN",
          "kvwrite": "KVW_RUN", "attention": "AT_RUN", "silu": "SI_RUN", "store": "ST_WAIT",
          "load": "LD_RUN", "argmax": "AM_RUN", "argmax_write": "AM_WR"}


class Sequencer(LiteXModule):
    """``rd``: the read stream (the sequencer reads its valid and data); ``wr_ready``,
    ``wr_pending`` (writes handed to the write stream and not yet to LiteDRAM), ``rdq_valid``
    (a read is queued), ``drained`` (DRAIN's condition) and ``watchdog_fired`` come from the
    top; ``units``: the units it starts (their start/done, burst requests and status)."""

    def __init__(self, params, dram_beats, rd, units):
        B, D = params.slots, params.act_depth
        U = params.element_units
        FB = params.fetch_beats
        self.params = params
        # From the host (CSRs) and the top.
        self.go, self.prog, self.table, self.nslots_in = Signal(), Signal(32), Signal(32), Signal(8)
        self.wr_ready, self.wr_pending, self.rdq_valid = Signal(), Signal(8), Signal()
        self.flush_done = Signal()        # FLUSH's condition: no read data requested or held
        self.rd_more = Signal()           # the read bursts have addresses left to send
        self.drained, self.watchdog_fired = Signal(), Signal()
        # To the host: the run's outcome.
        self.busy, self.done, self.err_code, self.err_addr = Signal(), Signal(), Signal(8), Signal(32)
        # To the read stream, the write stream and the read bursts (BURST).
        self.rd_ready, self.rd_wait = Signal(), Signal()
        self.rd_start, self.req_beat, self.req_beats = Signal(), Signal(ADDR_W), Signal(ADDR_W)
        self.wr_load = Signal()           # a write burst starts at req_beat
        self.granted = Signal()           # BURST has sent the request it was given
        self.abort, self.idle = Signal(), Signal()
        # To the counters and the write statistics.
        self.cls, self.retire, self.clear = Signal(max=len(CLASSES)), Signal(), Signal()
        self.issue, self.advance = Signal(), Signal()
        # The next MATVEC's weights requested ahead (pf_push: queue la_beat/la_beats).
        self.pf_push, self.pf_pending = Signal(), Signal()
        # The weight stream (Params.weight_ports): a burst starts at req_beat; one is queued;
        # wdrain: drop what it holds (flush its bursts, take its beats) until wdrained.
        self.wrd_start, self.wrdq_valid = Signal(), Signal()
        self.wdrain, self.wdrained = Signal(), Signal()
        self.own = SimpleNamespace(**{name: Signal(name=f"own_{name}") for name in OWNERS})

        r = SimpleNamespace(params=params, B=B, D=D, U=U, FB=FB, dram_beats=dram_beats, rd=rd, u=units)
        self.fsm = r.fsm = FSM(reset_state="IDLE")
        self._state(r)
        self._control(r)
        self._execute(r)
        self._element_units(r)
        self._matvec(r)
        self._slot_units(r)
        self._burst(r)
        for name, state in OWNERS.items():
            own = r.fsm.ongoing(state)
            if name == "kvwrite":
                # KVWRITE's reader runs on while BURST sends its writer's requests, so the
                # unit keeps the scratchpads' read ports there too.
                own = own | (r.fsm.ongoing("BURST") & (self._ret_id == self._ret_states.index(state)))
            self.comb += getattr(self.own, name).eq(own)
        check_no_dead_states(r.fsm, "Sequencer")
        # The watchdog stops any state but the ones that are already stopping.
        for state, stmts in r.fsm.actions.items():
            if state not in ("IDLE", "FLUSH", "DRAIN", "DONE"):
                stmts.append(If(self.watchdog_fired, *self.fail("TIMEOUT")))

    # Helpers for the states ------------------------------------------------------------------------

    def burst(self, byte_addr, nbytes, then, write=False, weights=False):
        """Go to BURST with a request; it returns to ``then`` once the request is sent.
        ``weights``: a read for the weight stream (Params.weight_ports; else the read stream)."""
        if then not in self._ret_states:
            self._ret_states.append(then)
        return [NextValue(self._req_addr, byte_addr), NextValue(self._req_bytes, nbytes),
                NextValue(self._req_write, write), NextValue(self._ret_id, self._ret_states.index(then)),
                *([NextValue(self._req_weights, weights)] if self.params.weight_ports else []),
                NextState("BURST")]

    def fail(self, code, where=None):
        return [NextValue(self.err_code, isa.ERRORS[code]), NextValue(self.err_addr, self.pc_addr if where is None else where),
                NextState("FLUSH")]

    def next_group(self, again):
        """After an element unit pass: the next group of slots, or the next instruction."""
        U = self.params.element_units
        return If(self.last_group,
            NextState("NEXT")
        ).Else(
            NextValue(self.group, self.group + 1), NextValue(self.slot, (self.group + 1) * U),
            NextValue(self.lane, 0), NextState(again)
        )

    def next_slot(self, again):
        return If(self.slot == self.nslots - 1,
            NextState("NEXT")
        ).Else(
            NextValue(self.slot, self.slot + 1), NextState(again)
        )

    # Architectural state and operand addresses ----------------------------------------------------

    def _state(self, r):
        B, U, FB = r.B, r.U, r.FB
        self.op, self.flags = Signal(8), Signal(8)
        self.dst, self.src, self.src2, self.n, self.m = (Signal(16) for _ in range(5))
        self.addr = Signal(32)
        self.regs = Array(Signal(32, name=f"reg_{name.lower()}") for name in isa.REGS)
        self.R = {k: self.regs[v] for k, v in isa.REGS.items()}
        self.tok = Array(Signal(32, name=f"slot{s}_token") for s in range(B))
        self.pos = Array(Signal(32, name=f"slot{s}_pos") for s in range(B))
        self.kvb = Array(Signal(32, name=f"slot{s}_kv_base") for s in range(B))
        self.slot = Signal(max=max(B, 2))
        self.nslots = Signal(max=B + 1)
        # RMSNORM, SILU and ROPE take the slots in groups of U, one datapath (lane) per slot of
        # the group; with U = B there is one group.
        self.group = Signal(max=max(B // U, 2))
        self.lane = Signal(max=max(U, 2))
        self.i = Signal(32)               # ROPE's beat
        if U == B:
            self.last_group = C(1)
        else:
            self.last_group = Signal()
            self.comb += self.last_group.eq(self.group == (self.nslots - 1) >> log2_int(U))
        self.lane_last = (self.lane == U - 1) | (self.slot == self.nslots - 1)      # the group's last slot
        self.pc, self.loop_start = Signal(32), Signal(32)
        self.layer, self.loop_n = Signal(16), Signal(16)
        self.in_loop, self.jump = Signal(), Signal()
        self.pc_addr = Signal(32)
        self.comb += self.pc_addr.eq(Cat(C(0, 4), self.prog[4:]) + (self.pc << 4))
        if FB:
            # The instruction buffer (gateware/core/fetchbuffer.py).
            self.submodules.ibuf = r.ib = InstructionBuffer(FB, r.dram_beats)
            self.comb += r.ib.pc_beat.eq(self.pc_addr[4:])
        layered = self.flags[0]
        self.waddr, self.kvaddr = Signal(ADDR_W), Signal(ADDR_W)
        self.cur_pos = Signal(32)
        # Operand base addresses, registered: an instruction's fields, the layer and the slot
        # settle at least one cycle before a state issues a burst from them (timing: the
        # layer x stride products stay out of the burst address paths).
        # Each product and each slot pick is registered before the add that uses it: the layer
        # products change only at ENDLOOP, the slot's KV base a cycle after a new slot.
        self.comb += self.cur_pos.eq(self.pos[self.slot])
        # The slot's position, registered (timing: the slot pick, a route across the chip, fed
        # ATTN's compares and the position products' DSPs): valid a cycle after a new slot.
        # ATTN first reads it after the cycle it starts in; the products below follow it.
        self.attn_pos = Signal(32)
        self.sync += self.attn_pos.eq(self.cur_pos)
        self.w_layer_off, kv_layer_off = Signal(ADDR_W), Signal(ADDR_W)
        kv_slot_base = Signal(32)
        self.sync += [
            self.w_layer_off.eq(self.layer * self.R["WSTRIDE"]), kv_layer_off.eq(self.layer * self.R["KVSTRIDE"]),
            kv_slot_base.eq(self.kvb[self.slot]),
            self.waddr.eq(self.addr + Mux(layered, self.w_layer_off, 0)),
            self.kvaddr.eq(kv_slot_base + self.addr + Mux(layered, kv_layer_off, 0)),
        ]
        self.kv_off = self.addr + Mux(layered, kv_layer_off, 0)     # ATTN's next slot's, before its base
        # The slot position's row offset (pos * 2m), shared by KVWRITE and ATTN; KVWRITE's row
        # address from it, registered in steps (the slot's base, the head's offset, the
        # position's row): KVW_H..KVW_H3 let it settle after a new slot.
        self.pos_off, self.kvw_addr = Signal(ADDR_W), Signal(ADDR_W)
        self.sync += [self.pos_off.eq(self.attn_pos * (self.m << 1)), self.kvw_addr.eq(self.kvaddr + self.pos_off)]
        # STORE's and LOAD's row (registered: ST_GO/LD_GO wait for a new slot's).
        self.slot_off = Signal(ADDR_W)
        self.sync += self.slot_off.eq(self.slot * (self.m << 4))
        # Field checks are registered in PREP and PREP2, the cycles between DECODE and EXECUTE
        # (timing: the n*m product, from the registered fields, is valid in PREP2, and the
        # range compares stay out of EXECUTE's error path).
        self.nm = Signal(32)
        self.sync += self.nm.eq(self.n * self.m)
        self._req_addr, self._req_bytes = Signal(ADDR_W), Signal(ADDR_W)
        self._req_write = Signal()
        self._req_weights = Signal() if self.params.weight_ports else C(0)
        self._ret_id = Signal(6)
        self._ret_states = []
        self.comb += [self.req_beat.eq(self._req_addr >> 4), self.req_beats.eq((self._req_bytes + 15) >> 4)]

    # Control: start, fetch, decode, next, stop ----------------------------------------------------

    def _control(self, r):
        fsm, rd, B, FB = r.fsm, r.rd, r.B, r.FB
        burst, fail = self.burst, self.fail
        slot, nslots = self.slot, self.nslots
        fsm.act("IDLE",
            If(self.go,
                self.clear.eq(1),
                NextValue(self.busy, 1), NextValue(self.done, 0), NextValue(self.err_code, 0),
                NextValue(self.err_addr, 0),
                NextValue(self.pc, 0), NextValue(self.layer, 0), NextValue(self.in_loop, 0),
                *([r.ib.clear.eq(1)] if FB else []),               # the host may have rewritten DRAM
                NextValue(nslots, self.nslots_in),
                NextState("START"),
            )
        )
        fsm.act("START",
            If((self.nslots_in == 0) | (self.nslots_in > B),
                *fail("BAD_SLOTS")
            ).Else(
                NextValue(slot, 0),
                *burst(self.table, nslots << 4, "SLOTS")
            )
        )
        fsm.act("SLOTS",
            self.rd_ready.eq(1), self.rd_wait.eq(1),
            If(rd.valid,
                NextValue(self.tok[slot], rd.data[0:32]),
                NextValue(self.pos[slot], rd.data[32:64]),
                NextValue(self.kvb[slot], rd.data[64:96]),
                NextValue(slot, slot + 1),
                If(slot == nslots - 1, NextState("FETCH"))
            )
        )
        if FB:
            # FETCH reads the instruction from the buffer; on a miss it first fills the buffer
            # with up to FB beats from pc (no further than the end of DRAM, so a fill faults
            # only where a one-beat fetch would). Like every read burst, a fill waits until the
            # writes issued so far have reached LiteDRAM (BURST), so it reads what the program
            # wrote over itself.
            fsm.act("FETCH",
                If(r.ib.hit,
                    NextState("DECODE")
                ).Else(
                    r.ib.fill.eq(1), *burst(self.pc_addr, r.ib.fill_beats << 4, "FB_FILL")
                )
            )
            self.comb += r.ib.fill_data.eq(rd.data)
            fsm.act("FB_FILL",
                self.rd_ready.eq(1), self.rd_wait.eq(1),
                r.ib.fill_we.eq(rd.valid),
                If(r.ib.fill_last, NextState("FETCH"))
            )
        else:
            fsm.act("FETCH",
                *burst(self.pc_addr, isa.BEAT_BYTES, "DECODE")
            )
        ins = r.ib.word if FB else rd.data            # FETCH addressed the buffer a cycle ago
        fsm.act("DECODE",
            *([] if FB else [self.rd_ready.eq(1), self.rd_wait.eq(1)]),
            If(1 if FB else rd.valid, *self._decode(ins))
        )
        fsm.act("PREP", NextState("PREP2"))
        fsm.act("PREP2", NextState("EXECUTE"))
        # The next instruction in sequence is already read from the instruction buffer (pc + 1,
        # next_word): NEXT decodes it and skips FETCH and DECODE. A jump fetches.
        fsm.act("NEXT",
            self.retire.eq(1),
            NextValue(self.pc, Mux(self.jump, self.loop_start, self.pc + 1)),
            If(~self.jump & r.ib.next_hit, *self._decode(r.ib.next_word)).Else(NextState("FETCH")) if FB
            else NextState("FETCH")
        )
        # An error stops the sequencer; read data already requested is drained and writes
        # already accepted complete, so the next run starts clean.
        fsm.act("FLUSH",
            self.rd_ready.eq(1),
            If(self.flush_done, NextState("DRAIN"))
        )
        fsm.act("DRAIN",
            If(self.drained, NextState("DONE"))
        )
        fsm.act("DONE",
            NextValue(self.busy, 0), NextValue(self.done, 1), NextState("IDLE")
        )
        class_index = {name: CLASSES.index(name) for name in CLASSES}
        self.comb += [
            If(fsm.ongoing("FETCH") | fsm.ongoing("DECODE") | fsm.ongoing("PREP") | fsm.ongoing("PREP2")
               | (fsm.ongoing("FB_FILL") if FB else 0)
               | fsm.ongoing("START")
               | fsm.ongoing("SLOTS"),
                self.cls.eq(class_index["FETCH"])
            ).Else(
                Case(self.op, {O[name]: self.cls.eq(class_index[name]) for name in isa.OPCODES})
            ),
            self.abort.eq(fsm.ongoing("FLUSH")), self.idle.eq(fsm.ongoing("IDLE")),
            self.issue.eq(fsm.ongoing("EXECUTE")), self.advance.eq(fsm.ongoing("NEXT")),
        ]

    def _decode(self, word):
        return [NextValue(self.op, word[0:8]), NextValue(self.flags, word[8:16]),
                NextValue(self.dst, word[16:32]), NextValue(self.src, word[32:48]),
                NextValue(self.src2, word[48:64]), NextValue(self.n, word[64:80]),
                NextValue(self.m, word[80:96]), NextValue(self.addr, word[96:128]),
                NextValue(self.slot, 0), NextValue(self.group, 0), NextValue(self.lane, 0), NextValue(self.jump, 0),
                NextState("PREP")]

    def _execute(self, r):
        """EXECUTE: the instruction's field checks, then its first state."""
        D, params = r.D, r.params
        n, m, dst, src, src2 = self.n, self.m, self.dst, self.src, self.src2
        checks = {}

        def act_ok(base, count):
            key = (id(base), id(count))
            if key not in checks:
                ok = Signal(name="act_ok")
                self.sync += ok.eq((count >= 1) & (as_unsigned(self, base + count, 34) <= D))
                checks[key] = ok
            return checks[key]
        need = lambda cond, *then: If(~(cond), *self.fail("BAD_FIELD")).Else(*then)
        kvhs_ok = (m >= 8) & (m[0:3] == 0) & (m <= params.max_head)
        if params.kv_format == "int8":                   # (int8 rows: 8 or a multiple of 16, spec.isa)
            kvhs_ok = kvhs_ok & ((m == 8) | (m[3] == 0))
        r.fsm.act("EXECUTE",
            Case(self.op, {
                O["HALT"]:    [self.retire.eq(1), NextState("DRAIN")],
                O["SETR"]:    need(dst < isa.N_REGS, NextValue(self.regs[dst[0:3]], self.addr), NextState("NEXT")),
                O["LOOP"]:    need(~self.in_loop & (n >= 1),
                                   NextValue(self.in_loop, 1), NextValue(self.loop_n, n), NextValue(self.layer, 0),
                                   NextValue(self.loop_start, self.pc + 1), NextState("NEXT")),
                O["ENDLOOP"]: need(self.in_loop,
                                   If(self.layer + 1 < self.loop_n,
                                       NextValue(self.layer, self.layer + 1), NextValue(self.jump, 1)
                                   ).Else(
                                       NextValue(self.in_loop, 0), NextValue(self.layer, 0)
                                   ), NextState("NEXT")),
                O["EMBED"]:   need(act_ok(dst, n) & (n <= params.max_cols), NextState("EMBED")),
                O["RMSNORM"]: need(act_ok(src, n) & act_ok(dst, n), NextState("RMSNORM")),
                O["MATVEC"]:  need(act_ok(src, m) & act_ok(dst, n) & (m <= params.max_cols), NextState("MATVEC")),
                O["ROPE"]:    need((m >= 2) & ~m[0] & (m <= params.max_head) & (n >= 2) & ~n[0]
                                   & act_ok(src, n) & act_ok(dst, n), NextState("ROPE")),
                O["KVWRITE"]: need(kvhs_ok & act_ok(src, self.nm), NextState("KVWRITE")),
                O["ATTN"]:    need(kvhs_ok & (src2 >= 1) & act_ok(src, self.nm) & act_ok(dst, self.nm), NextState("ATTN")),
                O["SILU"]:    need(act_ok(dst, n) & act_ok(src, n) & act_ok(src2, n), NextState("SILU")),
                O["STORE"]:   need(act_ok(src, n), NextState("STORE")),
                O["ARGMAX"]:  need(act_ok(src, n), NextState("ARGMAX")),
                O["LOAD"]:    need(act_ok(dst, n), NextState("LOAD")),
                "default":    self.fail("ILLEGAL_OP"),
            })
        )

    # Element units: EMBED, RMSNORM, ROPE, SILU ----------------------------------------------------

    def _element_units(self, r):
        fsm, u, U, params = r.fsm, r.u, r.U, r.params
        burst, fail = self.burst, self.fail
        n, m, slot = self.n, self.m, self.slot
        # A fixed16 vector's bytes (RMSNORM's gains).
        f16bytes = Signal(20)
        self.comb += f16bytes.eq(isa.BEAT_BYTES + (((n + 7) >> 3) << 4))
        # EMBED: the unit works out the row's two reads (spec.isa.matrix_row_reads) from the
        # slot's token while EMBED checks it; the conversion starts as the first read goes out.
        self.cur_tok = Signal(16)         # EMBED fails unless tok < m < 2**16
        self.comb += self.cur_tok.eq(self.tok[slot][0:16])
        fsm.act("EMBED",
            If(self.tok[slot] >= m,
                *fail("BAD_TOKEN")
            ).Else(
                NextState("EMB_GO0")
            )
        )
        fsm.act("EMB_GO0", NextState("EMB_GO"))        # the block's offset, then the addresses settle
        fsm.act("EMB_GO", u.embed.start.eq(1), *burst(u.embed.hdr_addr, isa.BEAT_BYTES, "EMB_GO2"))
        # A read replaces one whose addresses are not all sent: the span waits for the header's.
        fsm.act("EMB_GO2", If(~self.rd_more, *burst(u.embed.span_addr, u.embed.span_bytes, "EMB_WAIT")))
        fsm.act("EMB_WAIT", If(u.embed.done, self.next_slot("EMBED")))

        # RMSNORM: the gains' burst goes out as the unit starts (their beats wait in the read
        # FIFO); one group of slots per pass.
        fsm.act("RMSNORM", u.rmsnorm.start.eq(1), *burst(self.waddr, f16bytes, "RMS_WAIT"))
        fsm.act("RMS_WAIT", If(u.rmsnorm.done, self.next_group("RMSNORM")))

        # ROPE: each slot's (cos, sin) row (its own position) is loaded into its lane's buffer:
        # the group's rows are requested slot after slot without waiting for their data (so
        # DRAM's latency is paid once per group), then their beats are taken in the same order;
        # then one pass rotates every slot of the group at once.
        # A table row's bytes, registered (timing: m's add in front of the pos x rrb DSP was a
        # critical path of the ULX3S build).
        rrb = Signal(16)
        self.sync += rrb.eq(((2 * m + 15) >> 4) << 4)
        rope_addr, rope_off = Signal(ADDR_W), Signal(ADDR_W)
        self.sync += [rope_off.eq(self.attn_pos * rrb), rope_addr.eq(self.waddr + rope_off)]
        fsm.act("ROPE",
            If(self.cur_pos >= self.R["SEQLEN"],
                *fail("BAD_POS")
            ).Else(
                NextValue(self.i, 0), NextState("RP_GO0")
            )
        )
        fsm.act("RP_GO0", NextState("RP_GO1"))       # the position, rope_off, then rope_addr settle
        fsm.act("RP_GO1", NextState("RP_GO"))
        # (Only where a group's rows fit one read port's FIFO: the port takes no more requests
        # than its FIFO holds, and nothing takes the rows out before the last is requested.)
        self.rope_rows_ahead = U > 1 and U * (params.max_head // 8) <= params.read_fifo_depth
        if self.rope_rows_ahead:
            # A burst starts once the one before it has sent its last address.
            fsm.act("RP_GO", If(~self.rd_more, *burst(rope_addr, rrb, "RP_ASKED")))
            fsm.act("RP_ASKED",
                If(self.lane_last,
                    NextValue(slot, self.group * U), NextValue(self.lane, 0), NextState("RP_LOAD")
                ).Else(
                    NextValue(slot, slot + 1), NextValue(self.lane, self.lane + 1), NextState("ROPE")
                )
            )
        else:
            fsm.act("RP_GO", *burst(rope_addr, rrb, "RP_LOAD"))
        fsm.act("RP_LOAD",
            self.rd_ready.eq(1), self.rd_wait.eq(1),
            If(r.rd.valid,
                u.rope.load_we.eq(1), NextValue(self.i, self.i + 1),
                If(self.i == (rrb >> 4) - 1,
                    NextValue(self.i, 0),
                    If(self.lane_last,
                        u.rope.start.eq(1), NextState("RP_RUN")
                    ).Else(
                        NextValue(slot, slot + 1), NextValue(self.lane, self.lane + 1),
                        *([] if self.rope_rows_ahead else [NextState("ROPE")])
                    )
                )
            )
        )
        fsm.act("RP_RUN", If(u.rope.done, self.next_group("ROPE")))

        # SILU: one group of slots per pass.
        fsm.act("SILU", u.silu.start.eq(1), NextState("SI_RUN"))
        fsm.act("SI_RUN", If(u.silu.done, self.next_group("SILU")))

    # MATVEC and its weights requested ahead ----------------------------------------------------------

    def _matvec(self, r):
        fsm, u, FB = r.fsm, r.u, r.FB
        mv = u.matvec
        # The weight stream is requested first: DRAM fills the read FIFO during the passes over
        # the input.
        own_burst = self.burst(self.waddr, mv.bytes, "MV_WAIT", weights=True)
        self.la_beat, self.la_beats = Signal(ADDR_W), Signal(ADDR_W)
        if FB and self.params.weight_ports:
            self._weight_prefetch(r, own_burst)
            return
        fsm.act("MATVEC", mv.start.eq(1),
            *([If(self.pf_pending, NextState("MV_WAIT")).Else(*own_burst)] if FB else own_burst)
        )
        fsm.act("MV_WAIT", If(mv.done, NextState("NEXT")))
        # The next MATVEC's weights, requested ahead on the read stream (gateware/core/prefetch.py).
        if not FB:
            return
        self.submodules.prefetch = pf = ReadQueuePrefetch(r.dram_beats, ADDR_W)
        self.comb += [
            pf.la_hit.eq(r.ib.next_hit), pf.la_word.eq(r.ib.next_word), pf.w_layer_off.eq(self.w_layer_off),
            # (for ATTN: its last slot's last head, whose V burst is its last)
            pf.own_burst_out.eq(fsm.ongoing("MV_WAIT") | (self.last_group & fsm.ongoing("RMS_WAIT"))
                                | fsm.ongoing("SI_RUN") | u.attention.burst_out),
            pf.queue_free.eq(~self.rdq_valid & ~u.attention.pair_busy), pf.writes_landed.eq(self.wr_pending == 0),
            pf.restart.eq(fsm.ongoing("NEXT") | fsm.ongoing("FETCH") | fsm.ongoing("FB_FILL") | fsm.ongoing("DECODE")),
            pf.next.eq(fsm.ongoing("NEXT")), pf.idle.eq(fsm.ongoing("IDLE")),
            self.pf_push.eq(pf.push), self.la_beat.eq(pf.push_beat), self.la_beats.eq(pf.push_beats),
            self.pf_pending.eq(pf.pending),
        ]

    def _weight_prefetch(self, r, own_burst):
        """MATVEC with a weight stream of its own (Params.weight_ports): the next MATVEC's weights
        are queued by gateware/core/prefetch.py, found up to a few instructions ahead, while any
        instruction that writes no DRAM runs. A MATVEC whose prefetch is pending and fresh
        starts on it; any other pending prefetch (stale, or for another instruction) is drained
        first (MV_DRAIN), and the MATVEC asks for its own weights."""
        fsm, mv = r.fsm, r.u.matvec
        self.submodules.prefetch = pf = WeightPrefetch(r.FB, r.dram_beats, ADDR_W)
        scan_adr, scan_dat = r.ib.scan_port()
        req_beat, req_beats = self.req_beat, self.req_beats
        quiet = fsm.ongoing("MV_WAIT") | reduce(or_, [self.op == O[name] for name in
                                                       ("RMSNORM", "SILU", "ATTN", "ROPE", "EMBED")])
        self.comb += [
            scan_adr.eq(pf.scan_off), pf.word.eq(scan_dat),
            pf.base.eq(r.ib.off), pf.count.eq(r.ib.count), pf.pc.eq(self.pc), pf.pc_beat.eq(r.ib.pc_beat),
            pf.w_layer_off.eq(self.w_layer_off), pf.wstride.eq(self.R["WSTRIDE"]),
            pf.in_loop.eq(self.in_loop), pf.last_layer.eq(self.layer + 1 >= self.loop_n),
            pf.loop_start.eq(self.loop_start), pf.endloop.eq(fsm.ongoing("EXECUTE") & (self.op == O["ENDLOOP"])),
            # (PREP: the first state in which pc is the new current instruction's, whichever
            # way it was fetched; the reading starts from there)
            pf.restart.eq(fsm.ongoing("NEXT") | fsm.ongoing("FETCH") | fsm.ongoing("FB_FILL") | fsm.ongoing("DECODE")
                          | fsm.ongoing("PREP")),
            pf.may_push.eq(quiet & ~self.wrdq_valid & (self.wr_pending == 0)),
            pf.write.eq(fsm.ongoing("BURST") & self._req_write & self.granted),
            pf.write_beat.eq(req_beat), pf.write_beats.eq(req_beats),
            pf.consume.eq(fsm.ongoing("MATVEC") & pf.hit & ~pf.stale),
            pf.drop.eq(fsm.ongoing("MATVEC") & pf.pending & ~(pf.hit & ~pf.stale)),
            pf.reset.eq(fsm.ongoing("IDLE") | self.abort | fsm.ongoing("DRAIN")),
            self.pf_push.eq(pf.push), self.la_beat.eq(pf.push_beat), self.la_beats.eq(pf.push_beats),
            self.pf_pending.eq(pf.hit & ~pf.stale),
            self.wdrain.eq(fsm.ongoing("MV_DRAIN") | fsm.ongoing("DRAIN")),
        ]
        fsm.act("MATVEC", mv.start.eq(1),
            If(pf.hit & ~pf.stale,
                NextState("MV_WAIT")
            ).Elif(pf.pending,
                NextState("MV_DRAIN")
            ).Else(*own_burst)
        )
        fsm.act("MV_DRAIN", If(self.wdrained, *own_burst))
        fsm.act("MV_WAIT", If(mv.done, NextState("NEXT")))

    # Units that walk the slots: KVWRITE, ATTN, STORE, LOAD, ARGMAX ----------------------------------

    def _slot_units(self, r):
        fsm, u, params = r.fsm, r.u, r.params
        burst, fail, next_slot = self.burst, self.fail, self.next_slot
        n, m, slot, cur_pos, R = self.n, self.m, self.slot, self.cur_pos, self.R
        # KVWRITE: the sequencer checks the slot's position and lets the row address settle
        # (KVW_H..KVW_H3), then starts the unit, which asks for each head's write bursts in
        # turn. A unit's bursts may run on into the next slot (the int8 unit reads the next
        # slot while its bursts go out): every state serves them, BURST going on to the
        # state's successor, and a bad position waits until the bursts before it are granted
        # (``owed``: golden writes them first).
        kvw = u.kvwrite

        def serve(then, *otherwise):
            return If(kvw.req, *burst(kvw.req_addr, kvw.req_bytes, then, write=True)).Else(*otherwise)
        fsm.act("KVWRITE",
            If(cur_pos >= R["SEQLEN"],
                serve("KVWRITE", If(~kvw.owed, *fail("BAD_POS")))
            ).Else(serve("KVW_H", NextState("KVW_H")))
        )
        fsm.act("KVW_H", serve("KVW_H2", NextState("KVW_H2")))
        fsm.act("KVW_H2", serve("KVW_H3", NextState("KVW_H3")))
        fsm.act("KVW_H3", kvw.start.eq(1), serve("KVW_RUN", NextState("KVW_RUN")))
        fsm.act("KVW_RUN", If(kvw.done, next_slot("KVWRITE")).Else(serve("KVW_RUN")))
        # ATTN: the sequencer checks each slot's position and starts the unit, which runs the
        # slot's heads and asks for its bursts.
        fsm.act("ATTN",
            If(cur_pos >= R["SEQLEN"],
                *fail("BAD_POS")
            ).Elif(cur_pos >= params.max_seq,
                *fail("BAD_FIELD")
            ).Else(
                u.attention.start.eq(1), NextState("AT_RUN")
            )
        )
        fsm.act("AT_RUN",
            If(u.attention.req, *burst(u.attention.req_addr, u.attention.req_bytes, "AT_RUN")),
            If(u.attention.done, next_slot("ATTN"))
        )
        # STORE: its packer starts as the slot's write burst goes out.
        fsm.act("STORE", u.store.start.eq(1), NextState("ST_GO"))
        fsm.act("ST_GO", *burst(self.waddr + self.slot_off, n << 2, "ST_WAIT", write=True))
        fsm.act("ST_WAIT", If(u.store.done, next_slot("STORE")))
        # LOAD: the unpacker's elements into the slot's scratchpad.
        fsm.act("LOAD", u.unpack.clear.eq(1), NextState("LD_GO"))
        fsm.act("LD_GO", *burst(self.waddr + self.slot_off, n << 2, "LD_RUN"))
        fsm.act("LD_RUN", If(u.unpack.issue & u.unpack.last, next_slot("LOAD")))
        # ARGMAX: one pass finds every slot's maximum at once; then one result beat per slot.
        fsm.act("ARGMAX", u.argmax.start.eq(1), NextState("AM_RUN"))
        fsm.act("AM_RUN", If(u.argmax.done, NextState("AM_GO")))
        fsm.act("AM_GO", *burst(self.waddr + (slot << 4), isa.BEAT_BYTES, "AM_WR", write=True))
        fsm.act("AM_WR", If(self.wr_ready, next_slot("AM_GO")))

    # BURST ------------------------------------------------------------------------------------------

    def _burst(self, r):
        """BURST returns to any state that asked for one, so it is written once they all exist.
        A read waits until every write before it has been handed to LiteDRAM: the crossbar
        does not order one port's read after another port's write to the same bank (a write
        port held by another bank can lose the arbitration), e.g. ATTN's keys and values
        right after KVWRITE's, or a LOAD after a STORE."""
        req_beat, req_beats = self.req_beat, self.req_beats
        if r.FB:
            self.comb += [r.ib.write_beat.eq(req_beat), r.ib.write_beats.eq(req_beats)]
        send = If(self._req_write,
            self.wr_load.eq(1),
            # A write over buffered instructions empties the buffer (they are refetched).
            *([r.ib.write.eq(1)] if r.FB else [])
        )
        if self.params.weight_ports:
            send = send.Elif(self._req_weights, self.wrd_start.eq(1))
        send = send.Else(self.rd_start.eq(1))
        r.fsm.act("BURST",
            If(req_beat + req_beats > r.dram_beats,
                *self.fail("WINDOW", req_beat << 4)
            ).Elif(self._req_write | (self.wr_pending == 0),
                send,
                self.granted.eq(1),
                Case(self._ret_id, {idx: NextState(name) for idx, name in enumerate(self._ret_states)})
            )
        )
