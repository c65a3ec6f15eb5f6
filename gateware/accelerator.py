"""The transformer core: a sequencer that runs spec.isa programs out of DRAM.

One instruction at a time, fetched from DRAM through the core's own read stream (one or two
native read ports, gateware/readstream.py); weights, tables and the KV cache stream through it
at full width and the KV cache and results leave through a native write port. Each batch slot
has its own int32 activation scratchpad; MATVEC feeds every slot from each weight beat (LANES
int8 x B slots multiply-accumulates per cycle); ARGMAX works on every slot at once, and
RMSNORM, ROPE and SILU on Params.element_units slots at once (every slot when there is a copy
per slot); EMBED, KVWRITE, ATTN, STORE and LOAD, whose DRAM rows differ per slot, walk the
slots one after the other.

The golden model (driver/golden.py) is the specification: the sequencer and its units compute
the same integers in the same order, including which bursts are checked against the DRAM window
before anything moves. Every instruction's datapath is a unit with an interface of its own
(gateware/core/: MATVEC and its input quantiser, KVWRITE and the int16 packer, ATTN, EMBED,
RMSNORM, ROPE, SILU, STORE, ARGMAX; and the scratchpads, the read bursts, the counters, the write
statistics). They are instantiated here; the sequencer starts each, answers its burst requests
(BURST) and lends it the scratchpads and the streams (docs/isa.md, "Where each part is").
"""

from functools import reduce
from operator import or_

from migen import *
from migen.fhdl.structure import _Assign

from litex.gen import LiteXModule
from litex.soc.interconnect.csr import CSRStorage, CSRStatus, CSRField
from litex.soc.interconnect import stream

from litedram.frontend.dma import LiteDRAMDMAWriter

from spec import isa, registers as reglayout
from gateware.arith import saturate, as_signed, as_unsigned
from gateware.readstream import BankInterleavedReader, BankInterleavedWriter
from gateware.core.argmax import Argmax
from gateware.core.attention import Attention
from gateware.core.counters import Counters
from gateware.core.embed import Embed
from gateware.core.kvwrite import Kvwrite, Kvwrite4
from gateware.core.matvec import Matvec, matrix_bytes
from gateware.core.pack16 import Pack16, Pack16x4
from gateware.core.readbursts import ReadBursts
from gateware.core.scratchpad import Scratchpads
from gateware.core.rmsnorm import Rmsnorm
from gateware.core.rope import Rope
from gateware.core.silu import Silu
from gateware.core.store import Store
from gateware.core.unpack import BeatUnpacker
from gateware.core.writestats import WriteStats

ADDR_W = 50      # byte-address arithmetic width: every sum of fields and registers is exact
CLASSES = isa.CLASSES


def _check_no_dead_states(fsm):
    """Raise if a state is only ever asked about (``fsm.ongoing``) and has no action of its own:
    a state moved into a unit, still named where the sequencer tests for it, would never be
    entered and the test would silently read 0."""
    def marker(st):
        return isinstance(st, _Assign) and isinstance(st.l, Signal) and st.l.backtrace \
            and st.l.backtrace[-1][0] == "is_ongoing"
    dead = [state for state, stmts in fsm.actions.items() if all(marker(st) for st in stmts)]
    if dead:
        raise RuntimeError(f"Accelerator: states tested but never defined: {', '.join(dead)}")

# Accelerator --------------------------------------------------------------------------------------

class Accelerator(LiteXModule):
    """The transformer core (see the module docstring). ``read_ports``: a list of one or two 128-bit
    LiteDRAM native read ports (two: beats alternate between them by bank, ``bank_shift`` is the
    bank number's LSB in a beat address; see gateware/readstream.py); ``write_port``: a 128-bit
    native write port, or a list of two (Params.write_ports; beats go to one or the other by
    bank, which needs ``bank_shift`` too); ``dram_size``: bytes of DRAM the core may touch,
    from address 0."""

    def __init__(self, read_ports, write_port, dram_size, params=isa.Params(), bank_shift=None):
        params.validate()
        read_ports = list(read_ports)
        if len(read_ports) != params.read_ports:
            raise ValueError(f"Accelerator: Params.read_ports is {params.read_ports}, got {len(read_ports)} ports")
        if len(read_ports) == 2 and bank_shift is None:
            raise ValueError("Accelerator: two read ports need bank_shift")
        read_port = read_ports[0]
        write_port = self._write_ports(write_port, params, bank_shift)
        for port in read_ports + self.write_ports:
            if port.data_width != 8 * isa.BEAT_BYTES:
                raise ValueError(f"Accelerator: ports must be {8 * isa.BEAT_BYTES} bits, got {port.data_width}")
        if dram_size % isa.BEAT_BYTES:
            raise ValueError("Accelerator: dram_size must be a whole number of beats")
        self.params = params
        B, D = params.slots, params.act_depth
        U = params.element_units          # RMSNORM/SILU/ROPE datapaths: slots per pass
        dram_beats = dram_size // isa.BEAT_BYTES

        # CSRs -------------------------------------------------------------------------------------
        self.control  = CSRStorage(fields=[CSRField("start", size=1, pulse=True, description="Run the program.")])
        self.prog     = CSRStorage(32, description="DRAM byte address of the program.")
        self.slots    = CSRStorage(32, description="DRAM byte address of the slot table.")
        self.nslots   = CSRStorage(8, reset=1, description="Active batch slots (1..B).")
        self.watchdog = CSRStorage(32, description="Stop with TIMEOUT after this many cycles (0: never).")
        self.status   = CSRStatus(fields=[CSRField(name, size=width, offset=lsb) for name, lsb, width in reglayout.STATUS],
            description="Run state (spec.registers.STATUS): busy, done (cleanly or with an error), "
                        "error (spec.isa.ERRORS code; 0 = none).")
        self.err_addr = CSRStatus(32, description="Instruction or DRAM byte address of the error.")
        # What the core was built with (spec.registers: the driver compiles for the core it finds).
        for name, word in zip(("config", "config2", "config3"), reglayout.config_words(params)):
            setattr(self, name, CSRStatus(32, reset=word, name=name,
                                          description=f"Params, as spec.registers.{name.upper()} lays them out."))
        self.cycles      = CSRStatus(64, description="Cycles of the last run.")
        self.mac_busy    = CSRStatus(64, description="Cycles the MAC array multiplied (a weight beat takes LANES/mac_lanes).")
        self.dram_stall  = CSRStatus(64, description="Cycles waiting for DRAM read data.")
        self.bytes_read  = CSRStatus(64, description="DRAM bytes read.")
        self.bytes_written = CSRStatus(64, description="DRAM bytes written.")
        self.retired     = CSRStatus(32, description="Instructions retired.")
        self.class_sel   = CSRStorage(8, description="Instruction class for class_cycles (CLASSES order).")
        self.class_cycles = CSRStatus(64, description="Cycles spent in the selected instruction class.")

        self.fsm_state = Signal(8)        # for simulation harnesses: the sequencer's state
        self.attn_state = Signal(8)       # and the attention unit's

        # # #

        # DRAM read stream ------------------------------------------------------------------------
        self.reader = reader = BankInterleavedReader(read_ports, bank_shift, fifo_depth=params.read_fifo_depth)
        # Registered both ways between the read FIFO and the units (timing: the FIFO's
        # distributed RAM sits wherever the placer compromises, and its 128 data bits feed
        # every unit across the chip).
        self.rd_buffer = rd_buffer = stream.Buffer(reader.source.description, pipe_valid=True, pipe_ready=True)
        self.comb += reader.source.connect(rd_buffer.sink)
        rd = rd_buffer.source
        # Its address side (gateware/core/readbursts.py): the burst in progress and one queued
        # (ATTN's next K, already checked against the window).
        self.bursts = bursts = ReadBursts(reader.sink, read_port.address_width, rd.valid & rd.ready)
        rd_remaining, rd_outstanding, rd_more = bursts.remaining, bursts.outstanding, bursts.more
        rd_start, rd_start_addr, rd_start_len = bursts.start, bursts.start_addr, bursts.start_len
        rdq_valid, rdq_push = bursts.queued, bursts.push
        rdq_push_addr, rdq_push_len = bursts.push_addr, bursts.push_len

        # DRAM write stream -----------------------------------------------------------------------
        if params.write_ports == 1:
            self.writer = writer = LiteDRAMDMAWriter(write_port, fifo_depth=16)
        else:
            self.writer = writer = BankInterleavedWriter(self.write_ports, bank_shift, fifo_depth=16)
        self.wr_buffer = wr_buffer = stream.Buffer(writer.sink.description, pipe_valid=True, pipe_ready=True)
        self.comb += wr_buffer.source.connect(writer.sink)
        wr = wr_buffer.sink
        wr_addr    = Signal(write_port.address_width)
        wr_pending = Signal(8)
        self.comb += wr.address.eq(wr_addr)
        self.sync += [
            wr_pending.eq(wr_pending + (wr.valid & wr.ready) - (writer.wdata_beats if params.write_ports == 2
                                                                 else write_port.wdata.valid & write_port.wdata.ready)),
            If(wr.valid & wr.ready, wr_addr.eq(wr_addr + 1)),
        ]

        # Activation scratchpads, one per slot (gateware/core/scratchpad.py) -----------------------
        XR = params.act_read_ports        # MATVEC's input pass reads XR elements a cycle
        self.act = act = Scratchpads(B, D, XR, write_taps=params.write_stats)
        act_radr, act_radr2 = act.radr[:2]    # the second: SILU reads both operands at once
        act_rdat, act_rdat2 = act.rdat[:2]
        act_radr_x, act_rdat_x = act.radr[2:], act.rdat[2:]    # MATVEC's ports beyond the two
        wq_dat, wq_we = act.wq_dat, act.wq_we                  # each slot's write as it reaches the RAM
        act_wadr  = Signal(max=D)
        act_wdat  = Signal((32, True))
        act_we    = Signal()              # current slot
        act_we_all = Signal()             # every active slot at once (MATVEC, RMSNORM, ROPE, SILU)
        all_wdat  = [Signal((32, True)) for _ in range(B)]     # what act_we_all writes per slot
        if XR == 4:
            self.kv_idle = Signal()       # KVWRITE has handed every beat it read to the port
        # ATTN (gateware/core/attention.py), wired below; its drain writes beside the states.
        self.attention = attn = Attention(params, dram_beats)
        slot = Signal(max=max(B, 2))
        nslots = Signal(max=B + 1)
        # RMSNORM, SILU and ROPE take the slots in groups of U, one datapath (lane) per slot of
        # the group; with U = B there is one group.
        group = Signal(max=max(B // U, 2))
        lane = Signal(max=max(U, 2))
        unit_pass = Signal()              # an all-slot write from RMSNORM, SILU or ROPE
        # The sequencer's write mux: one slot's element, or every active slot's at once.
        self.comb += act.wadr.eq(act_wadr)
        wslot = Mux(attn.od_we, attn.od_slot, slot) if params.attn_pairs else slot
        for s in range(B):
            in_group = ((group == s // U) | ~unit_pass) if U < B else 1   # MATVEC writes every slot
            self.comb += If(act_we_all, act.wdat[s].eq(all_wdat[s]), act.we[s].eq((s < nslots) & in_group)
                         ).Else(act.wdat[s].eq(act_wdat), act.we[s].eq(act_we & (wslot == s)))
        ard = as_signed(self, Array(act_rdat)[slot], 32)
        if U == B:
            lane_rdat, lane_rdat2 = act_rdat, act_rdat2
            last_group = C(1)
        else:
            lane_rdat = [as_signed(self, Array(act_rdat[x::U])[group], 32) for x in range(U)]
            lane_rdat2 = [as_signed(self, Array(act_rdat2[x::U])[group], 32) for x in range(U)]
            last_group = Signal()
            self.comb += last_group.eq(group == (nslots - 1) >> log2_int(U))
        lane_last = (lane == U - 1) | (slot == nslots - 1)      # the group's last slot

        # Instruction and architectural state ------------------------------------------------------
        op, flags = Signal(8), Signal(8)
        dst, src, src2, n, m = (Signal(16) for _ in range(5))
        addr = Signal(32)
        regs = Array(Signal(32, name=f"reg_{name.lower()}") for name in isa.REGS)
        R = {k: regs[v] for k, v in isa.REGS.items()}
        tok = Array(Signal(32, name=f"slot{s}_token") for s in range(B))
        pos = Array(Signal(32, name=f"slot{s}_pos") for s in range(B))
        kvb = Array(Signal(32, name=f"slot{s}_kv_base") for s in range(B))
        pc, loop_start = Signal(32), Signal(32)
        layer, loop_n  = Signal(16), Signal(16)
        in_loop, jump  = Signal(), Signal()
        pc_addr = Signal(32)
        self.comb += pc_addr.eq(Cat(C(0, 4), self.prog.storage[4:]) + (pc << 4))
        # Instruction buffer (Params.fetch_beats): fb_count beats from DRAM beat fb_base.
        FB = params.fetch_beats
        if FB:
            fb_mem = Memory(128, FB)
            fb_rp, fb_wp = fb_mem.get_port(), fb_mem.get_port(write_capable=True)
            self.specials += fb_mem, fb_rp, fb_wp
            fb_base, pc_beat, pc_off = Signal(32), Signal(32), Signal(32)
            fb_count, fb_fill, fb_nb = Signal(max=FB + 1), Signal(max=FB + 1), Signal(max=FB + 1)
            fb_hit = Signal()
            # The instruction after the current one (pc + 1), for NEXT and the weight prefetch.
            fb_rp2 = fb_mem.get_port()
            self.specials += fb_rp2
            la_hit = Signal()
            la_word = fb_rp2.dat_r
            self.comb += fb_rp2.adr.eq(pc_off + 1)
            self.sync += la_hit.eq(pc_off + 1 < fb_count)
            self.comb += [
                pc_beat.eq(pc_addr[4:]), pc_off.eq(pc_beat - fb_base), fb_hit.eq(pc_off < fb_count),
                fb_nb.eq(Mux(pc_beat + FB <= dram_beats, FB, Mux(pc_beat < dram_beats, dram_beats - pc_beat, 1))),
                fb_rp.adr.eq(pc_off),
            ]
        err_code = Signal(8)
        busy, done = Signal(), Signal()
        self.comb += [
            self.status.fields.busy.eq(busy), self.status.fields.done.eq(done),
            self.status.fields.error.eq(err_code),
        ]
        layered = flags[0]
        waddr = Signal(ADDR_W)
        kvaddr = Signal(ADDR_W)
        cur_pos = Signal(32)
        # Operand base addresses, registered: an instruction's fields, the layer and the slot
        # settle at least one cycle before a state issues a burst from them (timing: the
        # layer x stride products stay out of the burst address paths).
        # Each product and each slot pick is registered before the add that uses it: the layer
        # products change only at ENDLOOP, the slot's KV base a cycle after a new slot.
        self.comb += cur_pos.eq(pos[slot])
        w_layer_off, kv_layer_off = Signal(ADDR_W), Signal(ADDR_W)
        kv_slot_base = Signal(32)
        self.sync += [
            w_layer_off.eq(layer * R["WSTRIDE"]), kv_layer_off.eq(layer * R["KVSTRIDE"]),
            kv_slot_base.eq(kvb[slot]),
            waddr.eq(addr + Mux(layered, w_layer_off, 0)),
            kvaddr.eq(kv_slot_base + addr + Mux(layered, kv_layer_off, 0)),
        ]
        # The slot position's row offset (pos * 2m), shared by KVWRITE and ATTN.
        pos_off = Signal(ADDR_W)

        # Bursts: every DRAM access goes through BURST, which checks the window first -------------
        req_addr, req_bytes = Signal(ADDR_W), Signal(ADDR_W)
        req_write = Signal()
        ret_id = Signal(6)
        ret_states = []
        req_beat = Signal(ADDR_W)
        req_beats = Signal(ADDR_W)
        self.comb += [req_beat.eq(req_addr >> 4), req_beats.eq((req_bytes + 15) >> 4)]
        fsm = FSM(reset_state="IDLE")
        self.fsm = fsm

        def burst(byte_addr, nbytes, then, write=False):
            if then not in ret_states:
                ret_states.append(then)
            return [NextValue(req_addr, byte_addr), NextValue(req_bytes, nbytes), NextValue(req_write, write),
                    NextValue(ret_id, ret_states.index(then)), NextState("BURST")]

        err_addr = self.err_addr.status

        # A fault stops the units in FLUSH, the cycle after it is recorded (registered, timing:
        # the error checks' compares stay off the paths into every unit's registers). Their
        # outputs are cut off a cycle sooner, as the sequencer leaves the state that lent them.
        abort = Signal()
        burst_granted = Signal()          # BURST has sent the request it was given (to DRAM)

        def fail(code, where=None):
            return [NextValue(err_code, isa.ERRORS[code]), NextValue(err_addr, pc_addr if where is None else where),
                    NextState("FLUSH")]

        def next_group(again):
            """After an element unit pass: the next group of slots, or the next instruction."""
            return If(last_group,
                NextState("NEXT")
            ).Else(
                NextValue(group, group + 1), NextValue(slot, (group + 1) * U), NextValue(lane, 0),
                NextState(again)
            )

        def next_slot(again):
            return If(slot == nslots - 1,
                NextState("NEXT")
            ).Else(
                NextValue(slot, slot + 1), NextState(again)
            )

        # Counters (gateware/core/counters.py) -----------------------------------------------------
        self.counters = counters = Counters(len(CLASSES))
        cls, counting, clear = counters.cls, counters.counting, counters.clear
        mac_beat, rd_wait = counters.mac_beat, Signal()
        watchdog_fired = counters.watchdog_fired
        wbeats = (write_port.wdata.valid & write_port.wdata.ready) if params.write_ports == 1 else writer.wdata_beats
        self.comb += [
            counters.stall.eq(rd_wait & ~rd.valid), counters.read_beat.eq(rd.valid & rd.ready),
            counters.write_beats.eq(wbeats),
            counters.class_sel.eq(self.class_sel.storage), counters.watchdog.eq(self.watchdog.storage),
            *[getattr(self, name).status.eq(getattr(counters, name)) for name in
              ("cycles", "mac_busy", "dram_stall", "bytes_read", "bytes_written", "retired", "class_cycles")],
        ]

        i = Signal(32)                    # FB_FILL's and ROPE's beat

        # Control: fetch, decode, next ------------------------------------------------------------
        fsm.act("IDLE",
            If(self.control.fields.start,
                clear.eq(1),
                NextValue(busy, 1), NextValue(done, 0), NextValue(err_code, 0), NextValue(err_addr, 0),
                NextValue(pc, 0), NextValue(layer, 0), NextValue(in_loop, 0),
                *([NextValue(fb_count, 0)] if FB else []),      # the host may have rewritten DRAM
                NextValue(nslots, self.nslots.storage),
                NextState("START"),
            )
        )
        fsm.act("START",
            If((self.nslots.storage == 0) | (self.nslots.storage > B),
                *fail("BAD_SLOTS")
            ).Else(
                NextValue(slot, 0),
                *burst(self.slots.storage, nslots << 4, "SLOTS")
            )
        )
        fsm.act("SLOTS",
            rd.ready.eq(1), rd_wait.eq(1),
            If(rd.valid,
                NextValue(tok[slot], rd.data[0:32]),
                NextValue(pos[slot], rd.data[32:64]),
                NextValue(kvb[slot], rd.data[64:96]),
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
                If(fb_hit,
                    NextState("DECODE")
                ).Else(
                    NextValue(fb_count, 0), NextValue(fb_base, pc_beat), NextValue(fb_fill, fb_nb),
                    NextValue(i, 0), *burst(pc_addr, fb_nb << 4, "FB_FILL")
                )
            )
            self.comb += [fb_wp.adr.eq(i), fb_wp.dat_w.eq(rd.data), fb_wp.we.eq(fsm.ongoing("FB_FILL") & rd.valid)]
            fsm.act("FB_FILL",
                rd.ready.eq(1), rd_wait.eq(1),
                If(rd.valid,
                    NextValue(i, i + 1),
                    If(i == fb_fill - 1, NextValue(fb_count, fb_fill), NextState("FETCH"))
                )
            )
        else:
            fsm.act("FETCH",
                *burst(pc_addr, isa.BEAT_BYTES, "DECODE")
            )
        class_index = {name: CLASSES.index(name) for name in CLASSES}
        # Field checks are registered in PREP and PREP2, the cycles between DECODE and EXECUTE
        # (timing: the n*m product, from the registered fields, is valid in PREP2, and the
        # range compares stay out of EXECUTE's error path).
        nm = Signal(32)
        self.sync += nm.eq(n * m)
        checks = {}

        def act_ok(base, count):
            key = (id(base), id(count))
            if key not in checks:
                ok = Signal(name="act_ok")
                self.sync += ok.eq((count >= 1) & (as_unsigned(self, base + count, 34) <= D))
                checks[key] = ok
            return checks[key]
        need = lambda cond, *then: If(~(cond), *fail("BAD_FIELD")).Else(*then)
        kvhs_ok = (m >= 8) & (m[0:3] == 0) & (m <= params.max_head)
        ins = fb_rp.dat_r if FB else rd.data        # FETCH addressed the buffer a cycle ago
        def decode(word):
            return [NextValue(op, word[0:8]), NextValue(flags, word[8:16]),
                    NextValue(dst, word[16:32]), NextValue(src, word[32:48]),
                    NextValue(src2, word[48:64]), NextValue(n, word[64:80]),
                    NextValue(m, word[80:96]), NextValue(addr, word[96:128]),
                    NextValue(slot, 0), NextValue(group, 0), NextValue(lane, 0), NextValue(jump, 0),
                    NextState("PREP")]
        fsm.act("DECODE",
            *([] if FB else [rd.ready.eq(1), rd_wait.eq(1)]),
            If(1 if FB else rd.valid, *decode(ins))
        )
        fsm.act("PREP", NextState("PREP2"))
        fsm.act("PREP2", NextState("EXECUTE"))
        O = isa.OPCODES
        fsm.act("EXECUTE",
            Case(op, {
                O["HALT"]:    [counters.retire.eq(1), NextState("DRAIN")],
                O["SETR"]:    need(dst < isa.N_REGS, NextValue(regs[dst[0:3]], addr), NextState("NEXT")),
                O["LOOP"]:    need(~in_loop & (n >= 1),
                                   NextValue(in_loop, 1), NextValue(loop_n, n), NextValue(layer, 0),
                                   NextValue(loop_start, pc + 1), NextState("NEXT")),
                O["ENDLOOP"]: need(in_loop,
                                   If(layer + 1 < loop_n,
                                       NextValue(layer, layer + 1), NextValue(jump, 1)
                                   ).Else(
                                       NextValue(in_loop, 0), NextValue(layer, 0)
                                   ), NextState("NEXT")),
                O["EMBED"]:   need(act_ok(dst, n), NextState("EMBED")),
                O["RMSNORM"]: need(act_ok(src, n) & act_ok(dst, n), NextState("RMSNORM")),
                O["MATVEC"]:  need(act_ok(src, m) & act_ok(dst, n) & (m <= params.max_cols), NextState("MATVEC")),
                O["ROPE"]:    need((m >= 2) & ~m[0] & (m <= params.max_head) & (n >= 2) & ~n[0]
                                   & act_ok(src, n) & act_ok(dst, n), NextState("ROPE")),
                O["KVWRITE"]: need(kvhs_ok & act_ok(src, nm), NextState("KVWRITE")),
                O["ATTN"]:    need(kvhs_ok & (src2 >= 1) & act_ok(src, nm) & act_ok(dst, nm), NextState("ATTN")),
                O["SILU"]:    need(act_ok(dst, n) & act_ok(src, n) & act_ok(src2, n), NextState("SILU")),
                O["STORE"]:   need(act_ok(src, n), NextState("STORE")),
                O["ARGMAX"]:  need(act_ok(src, n), NextState("ARGMAX")),
                O["LOAD"]:    need(act_ok(dst, n), NextState("LOAD")),
                "default":    fail("ILLEGAL_OP"),
            })
        )
        self.comb += [
            If(fsm.ongoing("FETCH") | fsm.ongoing("DECODE") | fsm.ongoing("PREP") | fsm.ongoing("PREP2")
               | (fsm.ongoing("FB_FILL") if FB else 0)
               | fsm.ongoing("START")
               | fsm.ongoing("SLOTS"),
                cls.eq(class_index["FETCH"])
            ).Else(
                Case(op, {O[name]: cls.eq(class_index[name]) for name in isa.OPCODES})
            ),
            counting.eq(busy),
        ]
        # The next instruction in sequence is already read from the instruction buffer (pc + 1,
        # la_word): NEXT decodes it and skips FETCH and DECODE. A jump fetches.
        fsm.act("NEXT",
            counters.retire.eq(1),
            NextValue(pc, Mux(jump, loop_start, pc + 1)),
            If(~jump & la_hit, *decode(la_word)).Else(NextState("FETCH")) if FB else NextState("FETCH")
        )
        self.comb += [rd_start_addr.eq(req_beat), rd_start_len.eq(req_beats)]
        # An error stops the sequencer; read data already requested is drained and writes
        # already accepted complete, so the next run starts clean.
        fsm.act("FLUSH",
            rd.ready.eq(1),
            If((rd_remaining == 0) & (rd_outstanding == 0) & ~rd.valid, NextState("DRAIN"))
        )
        fsm.act("DRAIN",
            If(self._drained(wr_pending, attn), NextState("DONE"))
        )
        fsm.act("DONE",
            NextValue(busy, 0), NextValue(done, 1), NextState("IDLE")
        )
        self.comb += [bursts.flush.eq(fsm.ongoing("FLUSH")), abort.eq(fsm.ongoing("FLUSH"))]

        # Write statistics (gateware/core/writestats.py): an input vector's largest |x| and sum of
        # squares, gathered as an instruction before wrote it (Params.write_stats; without it,
        # st_use stays 0 and MATVEC and RMSNORM take their first passes).
        WS = params.write_stats
        if WS:
            self.wstats = wstats = WriteStats(B)
            self.comb += [
                wstats.op.eq(op), wstats.dst.eq(dst), wstats.src.eq(src), wstats.n.eq(n), wstats.m.eq(m),
                wstats.nm.eq(nm), wstats.issue.eq(fsm.ongoing("EXECUTE")), wstats.advance.eq(fsm.ongoing("NEXT")),
                wstats.reset.eq(fsm.ongoing("IDLE")),
                *[wstats.wdat[s].eq(wq_dat[s]) for s in range(B)], *[wstats.we[s].eq(wq_we[s]) for s in range(B)],
            ]
            st_use, use_amax, use_sumsq = wstats.use, wstats.amax, wstats.sumsq
        else:
            st_use = Signal()
            use_amax = [Signal(32, name=f"wstat_use_amax{s}") for s in range(B)]
            use_sumsq = [Signal(64, name=f"wstat_use_sumsq{s}") for s in range(B)]

        # Beats into elements (gateware/core/unpack.py): EMBED's row, RMSNORM's gains, LOAD.
        self.unpack = unp = BeatUnpacker()
        self.comb += [unp.rd_valid.eq(rd.valid), unp.rd_data.eq(rd.data), unp.n.eq(n)]
        unp_rd = [rd.ready.eq(unp.rd_ready), rd_wait.eq(unp.rd_wait)]     # while a state lends it the stream

        # EMBED ------------------------------------------------------------------------------------
        f16bytes = Signal(20)
        self.comb += f16bytes.eq(isa.BEAT_BYTES + (((n + 7) >> 3) << 4))
        # The row address is a registered product: EMBED checks the token while it settles.
        emb_addr = Signal(ADDR_W)
        tok16 = Signal(16)                # EMBED fails unless tok < m < 2**16
        emb_off = Signal(ADDR_W)
        self.comb += tok16.eq(tok[slot][0:16])
        self.sync += [emb_off.eq(tok16 * f16bytes), emb_addr.eq(waddr + emb_off)]
        fsm.act("EMBED",
            If(tok[slot] >= m,
                *fail("BAD_TOKEN")
            ).Else(
                NextState("EMB_GO0")
            )
        )
        fsm.act("EMB_GO0", NextState("EMB_GO"))        # emb_off, then emb_addr settle
        # The conversion (gateware/core/embed.py) starts as the row's burst goes out.
        self.embed = emb = Embed()
        self.comb += [
            emb.dst.eq(dst), emb.n.eq(n), emb.abort.eq(abort), emb.granted.eq(burst_granted), *unp.feed(emb),
        ]
        fsm.act("EMB_GO", emb.start.eq(1), *burst(emb_addr, f16bytes, "EMB_WAIT"))
        fsm.act("EMB_WAIT",
            act_wadr.eq(emb.wadr), act_wdat.eq(emb.wdat), act_we.eq(emb.we),
            *unp.lend_to(emb), *unp_rd,
            If(emb.done, next_slot("EMBED"))
        )


        # RMSNORM (gateware/core/rmsnorm.py): one group of slots per pass -------------------------
        self.rmsnorm = rms = Rmsnorm(U, params.divider_steps, write_stats=WS)
        use_sumsq_lane = use_sumsq if U == B or not WS else \
            [as_unsigned(self, Array(use_sumsq[x::U])[group], 64) for x in range(U)]
        self.comb += [
            rms.src.eq(src), rms.dst.eq(dst), rms.n.eq(n), rms.abort.eq(abort), rms.granted.eq(burst_granted),
            *[rms.x[x].eq(lane_rdat[x]) for x in range(U)], *unp.feed(rms),
        ]
        if WS:
            self.comb += [rms.use.eq(st_use), *[rms.use_sumsq[x].eq(use_sumsq_lane[x]) for x in range(U)]]
        rms_run, rms_out = rms.pass2, rms.out
        # The gains' burst goes out as the unit starts (their beats wait in the read FIFO).
        fsm.act("RMSNORM", rms.start.eq(1), *burst(waddr, f16bytes, "RMS_WAIT"))
        fsm.act("RMS_WAIT",
            act_radr.eq(rms.radr), act_wadr.eq(rms.wadr), act_we_all.eq(rms.we),
            *unp.lend_to(rms), *unp_rd,
            If(rms.done, next_group("RMSNORM"))
        )

        # MATVEC (gateware/core/matvec.py): the input quantiser and the MAC array, every slot at
        # once -------------------------------------------------------------------------------------
        self.matvec = mv = Matvec(params, write_stats=WS)
        pf_pending = Signal()             # this MATVEC's weights were requested ahead (below)
        self.comb += [
            mv.src.eq(src), mv.dst.eq(dst), mv.n.eq(n), mv.m.eq(m), mv.accumulate.eq(flags[1]),
            mv.nslots.eq(nslots), mv.abort.eq(abort), mv.granted.eq(burst_granted), mv.queued.eq(pf_pending),
            *[mv.rdat[p][s].eq(act.rdat[p][s]) for p in range(XR) for s in range(B)],
            mv.rd_valid.eq(rd.valid), mv.rd_data.eq(rd.data), mac_beat.eq(mv.mac_beat),
        ]
        if WS:
            self.comb += [mv.use.eq(st_use), *[mv.use_amax[s].eq(use_amax[s]) for s in range(B)]]
        mv_out = mv.out
        # The weight stream is requested first: DRAM fills the read FIFO during the passes over
        # the input.
        fsm.act("MATVEC", mv.start.eq(1),
            *([If(pf_pending, NextState("MV_WAIT")).Else(*burst(waddr, mv.bytes, "MV_WAIT"))] if FB
              else burst(waddr, mv.bytes, "MV_WAIT"))
        )
        fsm.act("MV_WAIT",
            *[act.radr[p].eq(mv.radr[p]) for p in range(XR)],
            act_wadr.eq(mv.wadr), act_we_all.eq(mv.we), rd.ready.eq(mv.rd_ready), rd_wait.eq(mv.rd_wait),
            If(mv.done, NextState("NEXT"))
        )
        # The next MATVEC's weights, requested ahead. While RMSNORM, SILU or a MATVEC runs
        # (instructions that write no DRAM and, once their own burst is out, read nothing
        # more), the instruction after it is looked up in the instruction buffer; if it is a
        # MATVEC whose weights lie inside DRAM, their burst is queued behind the current one
        # (the read queue ATTN uses for its next K). The beats wait in the read FIFO, so the
        # MATVEC starts with its input passes, not DRAM's latency (~30 cycles after them in
        # the simulated SoC). Where the burst would leave DRAM, the MATVEC asks for it itself
        # and faults there, as golden does; a fault before it drains the queued beats (FLUSH).
        pf_push, pf_done = Signal(), Signal()
        if FB:
            la_mv, la_layered = Signal(), Signal()
            la_n, la_m, la_addr = Signal(16), Signal(16), Signal(32)
            la_waddr = Signal(ADDR_W)
            la_ok = Signal()
            la_age = Signal(4)            # cycles the lookahead has had to settle
            la_m15 = as_unsigned(self, la_m + 15, 17)
            la_bytes, _ = matrix_bytes(self, la_n, la_m15, la_m15[4:])
            la_beats = as_unsigned(self, (la_bytes + 15) >> 4, ADDR_W)
            self.sync += [
                la_mv.eq(la_hit & (la_word[0:8] == O["MATVEC"])), la_layered.eq(la_word[8]),
                la_n.eq(la_word[64:80]), la_m.eq(la_word[80:96]), la_addr.eq(la_word[96:128]),
                la_waddr.eq(la_addr + Mux(la_layered, w_layer_off, 0)),
                la_ok.eq(la_mv & (la_n != 0) & ((la_waddr >> 4) + la_beats <= dram_beats)),
                If(fsm.ongoing("NEXT") | fsm.ongoing("FETCH") | fsm.ongoing("FB_FILL") | fsm.ongoing("DECODE"),
                    la_age.eq(0)
                ).Elif(la_age != 15,
                    la_age.eq(la_age + 1)
                ),
            ]

        # ROPE -------------------------------------------------------------------------------------
        # Each slot's (cos, sin) row (its own position) is loaded into its lane's buffer: the
        # group's rows are requested slot after slot without waiting for their data (so DRAM's
        # latency is paid once per group), then their beats are taken in the same order; then
        # one pass rotates every slot of the group at once.
        cs_depth = max(params.max_head // 8, 2)
        # A table row's bytes, registered (timing: m's add in front of the pos x rrb DSP was the
        # ULX3S build's 20 ns critical path at 79a18b1).
        rrb = Signal(16)
        self.sync += rrb.eq(((2 * m + 15) >> 4) << 4)
        rope_addr, rope_off = Signal(ADDR_W), Signal(ADDR_W)
        self.sync += [rope_off.eq(cur_pos * rrb), rope_addr.eq(waddr + rope_off)]
        # The rotation (gateware/core/rope.py): each lane's row buffer and one pass over the group.
        self.rope = rope = Rope(U, cs_depth)
        self.comb += [
            rope.src.eq(src), rope.dst.eq(dst), rope.n.eq(n), rope.m.eq(m), rope.abort.eq(abort),
            *[rope.x[x].eq(lane_rdat[x]) for x in range(U)],
            rope.load_lane.eq(lane), rope.load_adr.eq(i), rope.load_data.eq(rd.data),
        ]
        fsm.act("ROPE",
            If(cur_pos >= R["SEQLEN"],
                *fail("BAD_POS")
            ).Else(
                NextValue(i, 0), NextState("RP_GO0")
            )
        )
        fsm.act("RP_GO0", NextState("RP_GO"))        # rope_off, then rope_addr settle
        # (Only where a group's rows fit one read port's FIFO: the port takes no more requests
        # than its FIFO holds, and nothing takes the rows out before the last is requested.)
        self.rope_rows_ahead = U > 1 and U * (params.max_head // 8) <= params.read_fifo_depth
        if self.rope_rows_ahead:
            # A burst starts once the one before it has sent its last address.
            fsm.act("RP_GO", If(~rd_more, *burst(rope_addr, rrb, "RP_ASKED")))
            fsm.act("RP_ASKED",
                If(lane_last,
                    NextValue(slot, group * U), NextValue(lane, 0), NextState("RP_LOAD")
                ).Else(
                    NextValue(slot, slot + 1), NextValue(lane, lane + 1), NextState("ROPE")
                )
            )
        else:
            fsm.act("RP_GO", *burst(rope_addr, rrb, "RP_LOAD"))
        fsm.act("RP_LOAD",
            rd.ready.eq(1), rd_wait.eq(1),
            If(rd.valid,
                rope.load_we.eq(1), NextValue(i, i + 1),
                If(i == (rrb >> 4) - 1,
                    NextValue(i, 0),
                    If(lane_last,
                        rope.start.eq(1), NextState("RP_RUN")
                    ).Else(
                        NextValue(slot, slot + 1), NextValue(lane, lane + 1),
                        *([] if self.rope_rows_ahead else [NextState("ROPE")])
                    )
                )
            )
        )
        rp_run, rope_out = rope.running, rope.out
        fsm.act("RP_RUN",
            act_radr.eq(rope.radr), act_wadr.eq(rope.wadr), act_we_all.eq(rope.we),
            If(rope.done, next_group("ROPE"))
        )

        # KVWRITE (gateware/core/kvwrite.py) and the int16 packer (gateware/core/pack16.py) that
        # it shares with ATTN's query load ---------------------------------------------------------
        # The sequencer walks the slots: it checks the slot's position and lets the row address
        # settle (KVW_H..KVW_H3: the slot's base, the head's offset, the position's row), then
        # starts the unit, which asks for each head's write burst in turn.
        if XR == 2:
            self.pack16 = pk = Pack16()
            self.kvwrite = kvw = Kvwrite()
            self.comb += [
                pk.read.eq(kvw.pk_read | attn.pk_read),
                pk.idx.eq(Mux(kvw.pk_read, kvw.pk_idx, attn.pk_idx)), pk.half.eq(attn.pk_half),
                attn.pk_beat_done.eq(pk.beat_done), attn.pk_beat_idx.eq(pk.beat_idx),
                attn.pk_beat_half.eq(pk.beat_half),
                pk.x.eq(ard), *[a.eq(b) for a, b in zip(kvw.pk_v, pk.v)], kvw.pk_word.eq(pk.word),
            ]
        else:
            self.pack16 = pk = Pack16x4(B, len(wr.address))
            self.kvwrite = kvw = Kvwrite4(len(wr.address))
            self.comb += [
                pk.read.eq(kvw.pk_read | attn.pk_query), pk.query.eq(attn.pk_query),
                pk.hi.eq(Mux(attn.pk_query, attn.pk_hi, kvw.pk_hi)),
                pk.tag.eq(Mux(attn.pk_query, attn.pk_qaddr, kvw.pk_tag)), pk.slot.eq(slot),
                attn.pk_beat_valid.eq(pk.beat_valid), attn.pk_beat_query.eq(pk.beat_query),
                attn.pk_beat_tag.eq(pk.beat_tag),
                *[pk.rdat[e][s].eq(act.rdat[e][s]) for e in range(4) for s in range(B)],
                kvw.beat_valid.eq(pk.beat_valid & ~pk.beat_query), kvw.beat_addr.eq(pk.beat_tag),
                kvw.beat_data.eq(pk.beat), kvw.pk_idle.eq(pk.idle),
                kvw.clear.eq(fsm.ongoing("IDLE")), kvw.last.eq(slot == nslots - 1),
                self.kv_idle.eq(kvw.idle),
            ]
        # The row address is registered in steps (the slot's base, the head's offset, the
        # position's row): KVW_H..KVW_H3 let it settle after a new slot.
        kvw_addr = Signal(ADDR_W)
        self.sync += kvw_addr.eq(kvaddr + pos_off)
        self.comb += [attn.pk_idle.eq(pk.idle), attn.pk_beat.eq(pk.beat)]
        self.comb += [
            kvw.src.eq(src), kvw.n.eq(n), kvw.m.eq(m), kvw.stride.eq(R["KVHEAD"]), kvw.base.eq(kvw_addr),
            kvw.abort.eq(abort), kvw.granted.eq(burst_granted), kvw.wr_ready.eq(wr.ready),
            # The unit's beats own the write stream while it offers them (the four-port FIFO's
            # also after the unit is done: KVWRITE's last slot ends only once it is empty, and
            # DRAIN waits for it, so no other writer is active then).
            If(kvw.wr_valid,
                wr.valid.eq(1), wr.data.eq(kvw.wr_data),
                *([wr.address.eq(kvw.wr_address)] if kvw.wr_address is not None else [])
            ),
        ]
        fsm.act("KVWRITE",
            If(cur_pos >= R["SEQLEN"],
                *fail("BAD_POS")
            ).Else(
                NextState("KVW_H")
            )
        )
        fsm.act("KVW_H", NextState("KVW_H2"))
        fsm.act("KVW_H2", NextState("KVW_H3"))
        fsm.act("KVW_H3", kvw.start.eq(1), NextState("KVW_RUN"))
        fsm.act("KVW_RUN",
            *[act.radr[p].eq(kvw.radr[p]) for p in range(len(kvw.radr))],
            If(kvw.req, *burst(kvw.req_addr, m << 1, "KVW_RUN", write=True)),
            If(kvw.done, next_slot("KVWRITE"))
        )

        # ATTN (gateware/core/attention.py): the sequencer checks each slot's position and starts
        # the unit, which runs the slot's heads, asks for its bursts (BURST checks them) and
        # queues the reads it makes ahead behind the next MATVEC's weights (pf_push first).
        self.sync += pos_off.eq(cur_pos * (m << 1))
        self.comb += [
            attn.src.eq(src), attn.dst.eq(dst), attn.n.eq(n), attn.m.eq(m), attn.src2.eq(src2),
            attn.cur_pos.eq(cur_pos), attn.pos_off.eq(pos_off), attn.kvaddr.eq(kvaddr),
            attn.slot.eq(slot), attn.last_slot.eq(slot == nslots - 1),
            attn.next_pos.eq(pos[slot + 1]), attn.next_kvb.eq(kvb[slot + 1]),
            attn.kv_off.eq(addr + Mux(layered, kv_layer_off, 0)),
            attn.seqlen.eq(R["SEQLEN"]), attn.kvhead.eq(R["KVHEAD"]), attn.voff.eq(R["VOFF"]),
            attn.attscale.eq(R["ATTSCALE"]),
            attn.abort.eq(abort), attn.clear.eq(fsm.ongoing("IDLE")), attn.granted.eq(burst_granted),
            attn.rd_valid.eq(rd.valid), attn.rd_data.eq(rd.data), attn.rdq_valid.eq(rdq_valid),
            # Its query loads and its drain use the scratchpads beside its states (the drain
            # while the next head starts; nothing else reads or writes them then).
            If(attn.reading, *[act.radr[p].eq(attn.radr[p]) for p in range(XR)]),
            If(attn.od_we, act_wadr.eq(attn.od_wadr), act_wdat.eq(attn.od_wdat), act_we.eq(1)),
        ]
        self._read_queue_requests(rdq_push, rdq_push_addr, rdq_push_len,
            [(pf_push, la_waddr >> 4, la_beats)] if FB else [],
            next_k=(attn.q_addr, attn.q_len), next_k_pushes=[attn.q_push])
        fsm.act("ATTN",
            If(cur_pos >= R["SEQLEN"],
                *fail("BAD_POS")
            ).Elif(cur_pos >= params.max_seq,
                *fail("BAD_FIELD")
            ).Else(
                attn.start.eq(1), NextState("AT_RUN")
            )
        )
        fsm.act("AT_RUN",
            rd.ready.eq(attn.rd_ready), rd_wait.eq(attn.rd_wait),
            If(attn.req, *burst(attn.req_addr, attn.req_bytes, "AT_RUN")),
            If(attn.done, next_slot("ATTN"))
        )

        # SILU (gateware/core/silu.py): one group of slots per pass ---------------------------------
        self.silu = silu = Silu(U)
        si_run = silu.running
        self.comb += [
            silu.src.eq(src), silu.src2.eq(src2), silu.dst.eq(dst), silu.n.eq(n), silu.abort.eq(abort),
            *[silu.a[x].eq(lane_rdat[x]) for x in range(U)], *[silu.b[x].eq(lane_rdat2[x]) for x in range(U)],
        ]
        silu_out = silu.out
        fsm.act("SILU", silu.start.eq(1), NextState("SI_RUN"))
        fsm.act("SI_RUN",
            act_radr.eq(silu.radr), act_radr2.eq(silu.radr2),
            act_wadr.eq(silu.wadr), act_we_all.eq(silu.we),
            If(silu.done, next_group("SILU"))
        )

        # What an all-slot write (act_we_all) writes to each slot (of the group, for the units).
        self.comb += unit_pass.eq(rms_run | si_run | rp_run)
        for x in range(B):
            self.comb += all_wdat[x].eq(Mux(rms_run, rms_out[x % U], Mux(si_run, silu_out[x % U],
                                        Mux(rp_run, rope_out[x % U], mv_out[x]))))

        # STORE / LOAD / ARGMAX --------------------------------------------------------------------
        slot_off = Signal(ADDR_W)
        self.sync += slot_off.eq(slot * (m << 4))         # registered: ST_GO/LD_GO wait for a new slot's
        # STORE's packer (gateware/core/store.py) starts as the slot's write burst goes out.
        self.store = st = Store()
        self.comb += [st.src.eq(src), st.n.eq(n), st.abort.eq(abort), st.granted.eq(burst_granted),
                      st.x.eq(ard), st.wr_ready.eq(wr.ready)]
        fsm.act("STORE", st.start.eq(1), NextState("ST_GO"))
        fsm.act("ST_GO", *burst(waddr + slot_off, n << 2, "ST_WAIT", write=True))
        fsm.act("ST_WAIT",
            act_radr.eq(st.radr), wr.valid.eq(st.wr_valid), wr.data.eq(st.wr_data),
            If(st.done, next_slot("STORE"))
        )
        fsm.act("LOAD", unp.clear.eq(1), NextState("LD_GO"))
        fsm.act("LD_GO", *burst(waddr + slot_off, n << 2, "LD_RUN"))
        fsm.act("LD_RUN",
            unp.run.eq(1), unp.wide.eq(1), *unp_rd,
            act_wadr.eq(dst + unp.i), act_wdat.eq(saturate(self, unp.element, 32)), act_we.eq(unp.issue),
            If(unp.issue & (unp.i == n - 1), next_slot("LOAD"))
        )
        # ARGMAX (gateware/core/argmax.py): one pass finds every slot's maximum at once; then one
        # result beat per slot.
        self.argmax = am = Argmax(B, XR)
        self.comb += [
            am.src.eq(src), am.n.eq(n), am.abort.eq(abort),
            *[am.rdat[p][x].eq(act.rdat[p][x]) for p in range(XR) for x in range(B)],
        ]
        best, best_i = am.best, am.best_i
        fsm.act("ARGMAX", am.start.eq(1), NextState("AM_RUN"))
        fsm.act("AM_RUN",
            *[act.radr[p].eq(am.radr[p]) for p in range(XR)],
            If(am.done, NextState("AM_GO"))
        )
        fsm.act("AM_GO", *burst(waddr + (slot << 4), isa.BEAT_BYTES, "AM_WR", write=True))
        fsm.act("AM_WR",
            wr.valid.eq(1), wr.data.eq(Cat(Array(best_i)[slot], Array(best)[slot])),
            If(wr.ready, next_slot("AM_GO"))
        )

        # BURST returns to any state that asked for one, so it is written once they all exist.
        # The next MATVEC's weights are queued once the current instruction's own burst is out
        # (for ATTN: its last slot's last head, whose V burst is its last).
        if FB:
            own_burst_out = fsm.ongoing("MV_WAIT") \
                | (last_group & fsm.ongoing("RMS_WAIT")) \
                | fsm.ongoing("SI_RUN") \
                | attn.burst_out
            self.comb += pf_push.eq(own_burst_out & ~pf_done & la_ok & (la_age >= 8) & ~rdq_valid
                                    & (wr_pending == 0) & ~attn.pair_busy)
            self.sync += [
                If(pf_push, pf_done.eq(1)),
                If(fsm.ongoing("NEXT"), pf_pending.eq(pf_done), pf_done.eq(0)),
                If(fsm.ongoing("IDLE"), pf_pending.eq(0), pf_done.eq(0)),
            ]

        # A read waits until every write before it has been handed to LiteDRAM: the crossbar
        # does not order one port's read after another port's write to the same bank (a write
        # port held by another bank can lose the arbitration), e.g. ATTN's keys and values
        # right after KVWRITE's, or a LOAD after a STORE.
        fsm.act("BURST",
            If(req_beat + req_beats > dram_beats,
                *fail("WINDOW", req_beat << 4)
            ).Elif(req_write | (wr_pending == 0),
                If(req_write,
                    NextValue(wr_addr, req_beat),
                    # A write over buffered instructions empties the buffer (they are refetched).
                    *([If((req_beat < fb_base + fb_count) & (req_beat + req_beats > fb_base), NextValue(fb_count, 0))]
                      if FB else [])
                ).Else(
                    rd_start.eq(1)
                ),
                burst_granted.eq(1),
                Case(ret_id, {idx: NextState(name) for idx, name in enumerate(ret_states)})
            )
        )
        _check_no_dead_states(fsm)
        # The watchdog stops any state but the ones that are already stopping.
        for state, stmts in fsm.actions.items():
            if state not in ("IDLE", "FLUSH", "DRAIN", "DONE"):
                stmts.append(If(watchdog_fired, *fail("TIMEOUT")))

    def _write_ports(self, write_port, params, bank_shift):
        """The write ports as a list (``self.write_ports``), checked against Params.write_ports;
        returns the first."""
        self.write_ports = list(write_port) if isinstance(write_port, (list, tuple)) else [write_port]
        if len(self.write_ports) != params.write_ports:
            raise ValueError(f"Accelerator: Params.write_ports is {params.write_ports}, "
                             f"got {len(self.write_ports)} ports")
        if params.write_ports == 2 and bank_shift is None:
            raise ValueError("Accelerator: two write ports need bank_shift")
        return self.write_ports[0]

    def _read_queue_requests(self, push, push_addr, push_len, requests, next_k, next_k_pushes):
        """The read queue's next request: the first of ``requests`` (push, beat address,
        beats) whose push is set, else ATTN's next head's K (``next_k``; pushed by AT_KN or by
        one of ``next_k_pushes``)."""
        addr, beats = next_k
        for p, a, n in reversed(requests):
            addr, beats = Mux(p, a, addr), Mux(p, n, beats)
        self.comb += [push_addr.eq(addr), push_len.eq(beats)]
        pushes = [p for p, _, _ in requests] + next_k_pushes
        if pushes:
            self.comb += If(reduce(or_, pushes), push.eq(1))

    def _drained(self, wr_pending, attn):
        """DRAIN's condition: every accepted write sent, ATTN's outputs summed and written, and
        KVWRITE's FIFO (four scratchpad ports) empty."""
        done = (wr_pending == 0) & ~attn.od_active & ~attn.v_busy
        if hasattr(self, "kv_idle"):
            done = done & self.kv_idle
        return done

    def do_finalize(self):
        self.comb += [self.fsm_state.eq(self.fsm.state), self.attn_state.eq(self.attention.fsm.state)]
        # One-hot on the FPGA (timing): each state's decode is one flip-flop instead of a
        # 7-bit compare fanned out over the chip. Yosys re-encodes a state register only when
        # asked, since Migen gives every register an initial value.
        self.fsm.state.attr.add(("fsm_encoding", "one-hot"))
