"""The transformer core: a sequencer that runs spec.isa programs out of DRAM.

One instruction at a time, fetched from DRAM through the core's own read stream (one or two
native read ports, gateware/readstream.py); weights, tables and the KV cache stream through it
at full width and the KV cache and results leave through a native write port. Each batch slot
has its own int32 activation scratchpad; MATVEC feeds every slot from each weight beat (LANES
int8 x B slots multiply-accumulates per cycle); ARGMAX works on every slot at once, and
RMSNORM, ROPE and SILU on Params.element_units slots at once (every slot when there is a copy
per slot); EMBED, KVWRITE, ATTN, STORE and LOAD, whose DRAM rows differ per slot, walk the
slots one after the other.

The golden model (driver/golden.py) is the specification: every state below computes the same
integers in the same order, including which bursts are checked against the DRAM window before
anything moves. The units with interfaces of their own (gateware/core/: MATVEC and its input
quantiser, EMBED, RMSNORM, ROPE, SILU, STORE, ARGMAX, the scratchpads, the read bursts, the
counters, the write statistics) are
instantiated here; the sequencer starts each and lends it the scratchpads and the streams
(docs/isa.md, "Where each part is").
"""

from functools import reduce
from operator import or_

from migen import *
from migen.fhdl.structure import _Assign

from litex.gen import LiteXModule
from litex.soc.interconnect.csr import CSRStorage, CSRStatus, CSRField
from litex.soc.interconnect import stream

from litedram.frontend.dma import LiteDRAMDMAWriter

from spec import isa, numerics as N, registers as reglayout
from gateware.arith import round_shift, round_shift_split, saturate, Divider, as_signed, \
    as_unsigned
from gateware.readstream import BankInterleavedReader, BankInterleavedWriter
from gateware.core.argmax import Argmax
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


def _lanes(sig, width, n, signed=True):
    return [sig[width * k:width * (k + 1)] for k in range(n)]


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

        self.fsm_state = Signal(8)        # for simulation harnesses

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
        # Flags of the units below, declared here because the sequencer's states (IDLE, DRAIN)
        # read or clear them before those units are written out.
        kv_early = Signal()               # ATTN: the current head's K is already requested
        od_active, od_start = Signal(), Signal()    # ATTN: a head's outputs are being written

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
            self.pack4_idle = Signal()    # the four-element int16 packer is empty
        if params.attn_overlap:
            self.attn_v_busy = Signal()   # ATTN: a head's last V beats are still being summed
        if params.attn_pairs:
            self._attn_pair_signals()     # ATTN's heads two at a time (_attn_pairs)
        slot = Signal(max=max(B, 2))
        nslots = Signal(max=B + 1)
        # RMSNORM, SILU and ROPE take the slots in groups of U, one datapath (lane) per slot of
        # the group; with U = B there is one group.
        group = Signal(max=max(B // U, 2))
        lane = Signal(max=max(U, 2))
        unit_pass = Signal()              # an all-slot write from RMSNORM, SILU or ROPE
        # The sequencer's write mux: one slot's element, or every active slot's at once.
        self.comb += act.wadr.eq(act_wadr)
        wslot = Mux(self.ap_od_wr, self.ap_od_slot, slot) if params.attn_pairs else slot
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
        # The current KV head's offset and the slot position's row offset, shared by KVWRITE
        # and ATTN.
        kvh_off, pos_off = Signal(ADDR_W), Signal(ADDR_W)
        kvhead_base = Signal(ADDR_W)

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

        # Shared units -----------------------------------------------------------------------------
        # Dividers (2, 4 or 8 quotient bits a cycle: Params.divider_steps) that start at the
        # quotient's highest possible bit. RMSNORM's mean square: |x >> RMS_PRE_SHIFT| <=
        # 2**(31 - RMS_PRE_SHIFT), so the mean of the squares fits 63 - 2*RMS_PRE_SHIFT bits (26,
        # 13 or 7 cycles) whenever their sum fits int64 as spec.numerics.rmsnorm assumes. ATTN's
        # 2**46 / sum: the sum is at least 2**15 (the max score's exponential), so the
        # reciprocal fits 32 bits (16, 8 or 4 cycles).
        # RMSNORM has a divider and a 1/sqrt per element lane (gateware/core/rmsnorm.py); ATTN,
        # which walks the slots, has one reciprocal divider.
        self.recip_divider = rdiv = Divider(47, 32, quotient_bits=32, steps=params.divider_steps)

        # Loop indices and scratch registers shared by the instructions.
        i, j, k, t = Signal(32), Signal(8), Signal(16), Signal(32)
        ii = Signal(max=D + 1)
        h, kvh, hg = Signal(16), Signal(16), Signal(16)
        hm = Signal(32)                   # h * m, kept by adding m per head (timing: no multiplier
                                          # between the FSM's registers; its DSP was placed 70
                                          # tiles from both, a 23 ns path on the ULX3S)

        # Control: fetch, decode, next ------------------------------------------------------------
        fsm.act("IDLE",
            If(self.control.fields.start,
                clear.eq(1),
                NextValue(busy, 1), NextValue(done, 0), NextValue(err_code, 0), NextValue(err_addr, 0),
                NextValue(pc, 0), NextValue(layer, 0), NextValue(in_loop, 0), NextValue(kv_early, 0),
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
            If(self._drained(wr_pending, od_active), NextState("DONE"))
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
                pk.read.eq(kvw.pk_read | fsm.ongoing("AT_Q") | fsm.ongoing("AT_NQ")),
                pk.idx.eq(Mux(kvw.pk_read, kvw.pk_idx, j)), pk.half.eq(h[0] ^ fsm.ongoing("AT_NQ")),
                pk.x.eq(ard), *[a.eq(b) for a, b in zip(kvw.pk_v, pk.v)], kvw.pk_word.eq(pk.word),
            ]
        else:
            self.pack16 = pk = Pack16x4(B, len(wr.address))
            self.kvwrite = kvw = Kvwrite4(len(wr.address))
            self.pack4_query = Signal()   # ATTN's query load reads four elements
            self.pack4_qaddr = Signal(16)     # and the q_mem beat they go to
            attn_hi = Mux(self.ap_ql_active, self.ap_ql_j[2], j[2]) if params.attn_pairs else j[2]
            self.comb += [
                pk.read.eq(kvw.pk_read | self.pack4_query), pk.query.eq(self.pack4_query),
                pk.hi.eq(Mux(self.pack4_query, attn_hi, kvw.pk_hi)),
                pk.tag.eq(Mux(self.pack4_query, self.pack4_qaddr, kvw.pk_tag)), pk.slot.eq(slot),
                *[pk.rdat[e][s].eq(act.rdat[e][s]) for e in range(4) for s in range(B)],
                kvw.beat_valid.eq(pk.beat_valid & ~pk.beat_query), kvw.beat_addr.eq(pk.beat_tag),
                kvw.beat_data.eq(pk.beat), kvw.pk_idle.eq(pk.idle),
                kvw.clear.eq(fsm.ongoing("IDLE")), kvw.last.eq(slot == nslots - 1),
                self.pack4_idle.eq(pk.idle), self.kv_idle.eq(kvw.idle),
            ]
        # The row address is registered in steps (the slot's base, the head's offset, the
        # position's row): KVW_H..KVW_H3 let it settle after a new slot.
        kvw_addr = Signal(ADDR_W)
        self.sync += kvw_addr.eq(kvhead_base + pos_off)
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
                NextValue(kvh, 0), NextState("KVW_H")
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

        # ATTN -------------------------------------------------------------------------------------
        # Two heads' queries (halves h[0] and not h[0]): the next head's is loaded while this
        # head's division runs (AT_NQ).
        q_beats = max(params.max_head // 8, 2)
        q_mem = Memory(128, 2 * q_beats)
        q_rp, q_wp = q_mem.get_port(), q_mem.get_port(write_capable=True)
        self.specials += q_mem, q_rp, q_wp
        sbuf = Memory(32, params.max_seq)
        sb_rp, sb_wp = sbuf.get_port(), sbuf.get_port(write_capable=True)
        self.specials += sbuf, sb_rp, sb_wp
        exp_rom = Memory(16, len(N.EXP2_TABLE), init=[int(v) for v in N.EXP2_TABLE])
        exp_rp = exp_rom.get_port()
        self.specials += exp_rom, exp_rp
        hsb = Signal(13)
        self.comb += hsb.eq(m >> 3)
        # Registered: the head's K and V addresses and the causal span settle during
        # AT_H and AT_Q (the first burst leaves from AT_QD, at least 10 cycles later).
        span = Signal(ADDR_W)
        vhead_base = Signal(ADDR_W)
        self.sync += [
            kvh_off.eq(kvh * R["KVHEAD"]),
            pos_off.eq(cur_pos * (m << 1)),
            span.eq(pos_off + (m << 1)),
            kvhead_base.eq(kvaddr + kvh_off),
            vhead_base.eq(kvhead_base + R["VOFF"]),
        ]
        if XR == 2:
            self.comb += [q_wp.adr.eq(Cat(pk.beat_idx[:log2_int(q_beats)], pk.beat_half)), q_wp.dat_w.eq(pk.beat),
                          q_wp.we.eq(pk.beat_done)]
        else:
            self._attn_query_four_ports(fsm, q_wp, q_beats, dict(j=j, ii=ii, m=m, h=h, n=n,
                                                                 act_radr=[act_radr, act_radr2] + act_radr_x))
        # The next head's K is requested right behind this head's V (AT_KN), so its beats wait
        # in the read FIFO and the next AT_K does not wait for DRAM's latency (~25 cycles a
        # head). The next head is h + 1 of this slot, or head 0 of the next slot. It is asked
        # for early only where its burst lies inside DRAM and the next slot's position passes
        # ATTN's checks; otherwise that head asks in AT_QD and faults there, as golden does.
        # Registered in steps during AT_Q and AT_K (at least 10 cycles before AT_KN).
        last_head = Signal()
        nx_pos, nx_kvb, nx_pos_off, nx_kvaddr = Signal(32), Signal(32), Signal(ADDR_W), Signal(ADDR_W)
        nx_base, nx_span = Signal(ADDR_W), Signal(ADDR_W)
        nx_pos_ok, nx_ok = Signal(), Signal()
        self.comb += last_head.eq(h == n - 1)
        self.sync += [
            nx_pos.eq(pos[slot + 1]), nx_kvb.eq(kvb[slot + 1]),
            nx_pos_off.eq(nx_pos * (m << 1)),
            nx_kvaddr.eq(nx_kvb + addr + Mux(layered, kv_layer_off, 0)),
            nx_pos_ok.eq((nx_pos < R["SEQLEN"]) & (nx_pos < params.max_seq) & (slot != nslots - 1)),
            If(last_head,
                nx_base.eq(nx_kvaddr), nx_span.eq(nx_pos_off + (m << 1))
            ).Else(
                nx_base.eq(kvhead_base + Mux(hg == src2 - 1, R["KVHEAD"], 0)), nx_span.eq(span)
            ),
            nx_ok.eq(((nx_base >> 4) + ((nx_span + 15) >> 4) <= dram_beats) & (~last_head | nx_pos_ok)),
        ]
        # wshift (the output shift below) is a register equal to "draining and oj < m": set
        # when a head's drain starts, cleared as oj reaches m. Decoded from the FSM state it
        # fanned out to 3,072 flip-flops, and the routed ULX3S build's longest path crossed the chip through that
        # shared decode and back (issue 3).
        wshift = Signal()
        # Each group of 8 accumulators has its own shift, accumulate and first-beat registers
        # (timing: one register steering all 3,072 flip-flops took a 16.5 ns route with placer
        # seed 2). They differ on purpose, so synthesis cannot merge them back into one: group g
        # shifts while j + 8g < m (it holds no element that is still to come after that), and
        # accumulates only the beats addressed to it.
        groups = (params.max_head + 7) // 8
        wshift_g = [Signal(name=f"wshift{g}") for g in range(groups)]
        wacc_en_g = [Signal(name=f"wacc_en{g}") for g in range(groups)]
        wfirst_g = [Signal(name=f"wacc_first{g}") for g in range(groups)]
        fsm.act("ATTN",
            If(cur_pos >= R["SEQLEN"],
                *fail("BAD_POS")
            ).Elif(cur_pos >= params.max_seq,
                *fail("BAD_FIELD")
            ).Else(
                NextValue(h, 0), NextValue(hm, 0), NextValue(kvh, 0), NextValue(hg, 0), NextState("AT_H"),
            )
        )
        fsm.act("AT_H", NextValue(j, 0), NextValue(ii, src + hm), NextState("AT_Q"))
        # The head's query, one element a cycle through the int16 packer (KVWRITE's; four with
        # four scratchpad ports, _attn_query_four_ports); each full beat goes to q_mem.
        if XR == 2:
            fsm.act("AT_Q",
                act_radr.eq(ii), NextValue(j, j + 1), NextValue(ii, ii + 1),
                If(j == m - 1, NextState("AT_QD"))
            )
        fsm.act("AT_QD", self._attn_pair_first(params,
            If(pk.idle,
                NextValue(t, 0), NextValue(k, 0),
                If(kv_early,
                    NextValue(kv_early, 0), NextState("AT_K")
                ).Else(
                    *burst(kvhead_base, span, "AT_K")
                )
            )
        ))
        # Scores: stage 0 accepts a key beat, 1 registers both operands, 1a multiplies, 1b sums
        # the 8 products, 2 accumulates over the head, 3 scales, 4 adds the rounding bias,
        # 5 shifts and saturates, 6 takes the max and stores.
        a_acc = Signal()
        kt1, kt2, kt3, kt4 = (Signal(32) for _ in range(4))
        ka1, kf1, kl1 = Signal(), Signal(), Signal()
        ka2, kf2, kl2 = Signal(), Signal(), Signal()
        ka3, ka4 = Signal(), Signal()
        kbeat = Signal(128)
        dot8 = Signal((40, True))
        dacc = Signal((48, True))
        dsum = Signal((48, True))
        dprod = Signal((72, True))
        scount = Signal(32)
        smax = Signal((32, True))
        scale = as_signed(self, R["ATTSCALE"][0:16], 17)
        self.comb += [
            a_acc.eq(fsm.ongoing("AT_K") & rd.valid & (t <= cur_pos)),
            q_rp.adr.eq(Cat(k[:log2_int(q_beats)], (h[0] ^ self.ap_ksec) if params.attn_pairs else h[0])),
        ]
        if params.attn_overlap:
            self._attn_overlap(fsm, dict(vhead_base=vhead_base, span=span, dram_beats=dram_beats,
                                         rdq_valid=rdq_valid, scores_done=scount == cur_pos + 1,
                                         next_k_ok=nx_ok, kv_early=kv_early))
        fsm.act("AT_K",
            rd.ready.eq(t <= cur_pos), rd_wait.eq(t <= cur_pos),
            *([If(self.k_push, NextValue(kv_early, 1))] if params.attn_overlap else []),
            If(a_acc,
                If(k == hsb - 1, NextValue(k, 0), NextValue(t, t + 1)).Else(NextValue(k, k + 1))
            ),
            # attn_pairs: the second head's K follows the first's.
            *([If(a_acc & (k == hsb - 1) & (t == cur_pos) & self.ap_pair & ~self.ap_ksec,
                NextValue(t, 0), NextValue(self.ap_ksec, 1))] if params.attn_pairs else []),
            # The head's V is requested now (unless it is already queued, Params.attn_overlap):
            # its beats wait in the read FIFO while the softmax and the division run, so AT_V
            # does not wait for DRAM's latency.
            self._attn_pair_scores_done(params, dict(t=t, dsum=dsum, cur_pos=cur_pos, scount=scount),
            If(scount == cur_pos + 1, NextValue(t, 0), NextValue(self.ap_esum if params.attn_pairs else dsum, 0),
                If(self.v_queued, NextState("AT_KN")).Else(*burst(vhead_base, span, "AT_KN"))
                if params.attn_overlap else burst(vhead_base, span, "AT_KN")))
        )
        # The queue also takes the next MATVEC's weights (pf_push, below; never in ATTN's AT_KN)
        # and, with attn_overlap, this head's V (v_push) and the next head's K (k_push).
        self._read_queue_requests(rdq_push, rdq_push_addr, rdq_push_len,
            ([(pf_push, la_waddr >> 4, la_beats)] if FB else [])
            + ([(self.v_push, vhead_base >> 4, (span + 15) >> 4)] if params.attn_overlap else [])
            + ([(self.ap_push, self.ap_push_beat, self.ap_push_beats)] if params.attn_pairs else []),
            next_k=(nx_base >> 4, (nx_span + 15) >> 4), next_k_pushes=[self.k_push] if params.attn_overlap else [])
        fsm.act("AT_KN",
            If((nx_ok & ~kv_early) if params.attn_overlap else nx_ok, rdq_push.eq(1), NextValue(kv_early, 1)),
            NextState("AT_SM_RUN")
        )
        sc_finish = round_shift_split(self, dprod, 15 + 2 * N.KV_FRAC - N.ACT_FRAC, 80)
        sc_r = as_signed(self, sc_finish(), 80)
        sc = Signal((32, True))
        ka5, kt5, ka6, kt6 = Signal(), Signal(32), Signal(), Signal(32)
        kp = [Signal((32, True), name=f"at_kp{l}") for l in range(8)]
        ka1a, kf1a, kl1a, kt1a = Signal(), Signal(), Signal(), Signal(32)
        ka1b, kf1b, kl1b, kt1b = Signal(), Signal(), Signal(), Signal(32)
        kbeat_r, qword_r = Signal(128), Signal(128)
        keys_r = [as_signed(self, v, 16) for v in _lanes(kbeat_r, 16, 8)]
        qs_r = [as_signed(self, v, 16) for v in _lanes(qword_r, 16, 8)]
        self.sync += [
            ka1.eq(a_acc), kbeat.eq(rd.data), kf1.eq(k == 0), kl1.eq(k == hsb - 1), kt1.eq(t),
            kbeat_r.eq(kbeat), qword_r.eq(q_rp.dat_r),               # operands (timing: registered
            ka1a.eq(ka1), kf1a.eq(kf1), kl1a.eq(kl1), kt1a.eq(kt1),  # next to the multipliers),
            [kp[l].eq(keys_r[l] * qs_r[l]) for l in range(8)],       # products (registered
            ka1b.eq(ka1a), kf1b.eq(kf1a), kl1b.eq(kl1a), kt1b.eq(kt1a),  # before the 8-way sum)
            ka2.eq(ka1b), kf2.eq(kf1b), kl2.eq(kl1b), kt2.eq(kt1b),
            dot8.eq(sum(kp)),
            If(ka2, dacc.eq(Mux(kf2, 0, dacc) + dot8)),
            ka3.eq(ka2 & kl2), kt3.eq(kt2),
            If(ka2 & kl2, dsum.eq(Mux(kf2, 0, dacc) + dot8)),
            ka4.eq(ka3), kt4.eq(kt3),
            dprod.eq(dsum * scale),
            ka5.eq(ka4), kt5.eq(kt4),                     # rounding bias added
            ka6.eq(ka5), kt6.eq(kt5),
            sc.eq(saturate(self, sc_r, 32)),
            If(ka6 & ~self.ap_ks[-1] if params.attn_pairs else ka6,
                scount.eq(scount + 1),
                If((scount == 0) | (sc > smax), smax.eq(sc))
            ),
            If(fsm.ongoing("AT_Q") | fsm.ongoing("AT_NEXTH"), scount.eq(0)),
        ]
        # Softmax: exponentials in place over the scores, then the reciprocal of their sum.
        u = Signal(40)
        dd = Signal((34, True))
        st, u_r = round_shift(as_signed(self, dd * N.LOG2E_Q15, 56), 15, 56)
        self.comb += st
        # One score per cycle: read (S0), distance to the max (S1), scale it (S2), table (S3),
        # shift (S4), accumulate the sum and write back (S5).
        u4 = Signal(40)
        ev, ev5 = Signal(17), Signal(17)
        self.comb += [exp_rp.adr.eq(u[N.ACT_FRAC - N.EXP2_TABLE_BITS:N.ACT_FRAC]),
                      ev.eq(exp_rp.dat_r >> Mux(u4[N.ACT_FRAC:] > 31, 31, u4[N.ACT_FRAC:]))]
        # 1/sum in Q46: the max score's exponential is 2**15, so the sum is at least that and
        # the reciprocal fits 32 bits.
        recip = Signal(32)
        smv1, smv2, smv3, smv4, smv5 = Signal(), Signal(), Signal(), Signal(), Signal()
        smt1, smt2, smt3, smt4, smt5 = Signal(32), Signal(32), Signal(32), Signal(32), Signal(32)
        sm_run = fsm.ongoing("AT_SM_RUN")
        self.sync += [
            smv1.eq(sm_run & (t <= cur_pos) & self.ap_sm_go if params.attn_pairs else sm_run & (t <= cur_pos)), smt1.eq(t),
            smv2.eq(smv1 & sm_run), smt2.eq(smt1), dd.eq((Mux(self.ap_sh[0], self.ap_smax1, smax) if params.attn_pairs else smax)
                                                         - as_signed(self, self.ap_sb_rdat if params.attn_pairs else sb_rp.dat_r, 32)),
            smv3.eq(smv2 & sm_run), smt3.eq(smt2), u.eq(u_r),
            smv4.eq(smv3 & sm_run), smt4.eq(smt3), u4.eq(u),
            smv5.eq(smv4 & sm_run), smt5.eq(smt4), ev5.eq(ev),     # timing: the table's output shifted
            If(smv5 & sm_run, dsum.eq(dsum + ev5)) if not params.attn_pairs else
            If(smv5 & sm_run & ~self.ap_sh[4], self.ap_esum.eq(self.ap_esum + ev5)
            ).Elif(smv5 & sm_run, self.ap_esum1.eq(self.ap_esum1 + ev5)),
        ]
        fsm.act("AT_SM_RUN",
            If((t <= cur_pos) & self.ap_sm_go if params.attn_pairs else t <= cur_pos, NextValue(t, t + 1)),
            # attn_pairs: the second head's softmax right behind the first's
            *([If(self.ap_pair & ~self.ap_smh & (t == cur_pos), NextValue(t, 0), NextValue(self.ap_smh, 1))]
              if params.attn_pairs else []),
            If((t > cur_pos) & ~smv1 & ~smv2 & ~smv3 & ~smv4 & ~smv5,
               If(self.ap_pair, NextState("AP_DIV1W")).Else(NextState("AT_DIV"))
               if params.attn_pairs else NextState("AT_DIV"))
        )
        # While the division runs, the next head's query (same slot) goes into q_mem's other
        # half, so that head starts with its scores; its K is already requested (kv_early).
        nq_ii = Signal(max=D + 1)
        self.sync += nq_ii.eq(src + hm + m)
        fsm.act("AT_DIV",
            rdiv.start.eq(1), rdiv.dividend.eq(1 << 46), rdiv.divisor.eq(self.ap_esum if params.attn_pairs else dsum),
            If(last_head,
                NextState("AT_DIVW")
            ).Else(
                NextValue(j, 0), NextValue(ii, nq_ii), NextState("AT_NQ")
            )
        )
        if XR == 2:
            fsm.act("AT_NQ",
                act_radr.eq(ii), NextValue(j, j + 1), NextValue(ii, ii + 1),
                If(j == m - 1, NextState("AT_NQD"))
            )
        fsm.act("AT_NQD", If(pk.idle, NextState("AT_DIVW")))
        # The reciprocal is kept when it is done, which may be during AT_NQ.
        recip_ok = Signal()
        self.sync += If(rdiv.start, recip_ok.eq(0)).Elif(rdiv.done, recip_ok.eq(1), recip.eq(rdiv.quotient))
        fsm.act("AT_DIVW",
            If(recip_ok, NextValue(t, 0), NextValue(k, 0), NextState("AT_V"))
        )
        # Weighted sum of V: stage 0 accepts a value beat and addresses its exponential,
        # 1 reads it, 2 makes the probability, 3 multiplies, 4 accumulates.
        # The previous head's outputs leave the accumulators first (od_active: the drain below).
        a_v, v_take = Signal(), Signal()
        self.comb += [v_take.eq((t <= cur_pos) & ~od_active) if not params.attn_pairs else
                      # attn_pairs: the drain works from its own copy of the sums (ap_osnap)
                      v_take.eq((t <= cur_pos) & ~self.ap_od_pend
                                & (~self.ap_vsec | (self.ap_r1ok & (self.ap_vgo | ~self.attn_v_busy)))),
                      a_v.eq(fsm.ongoing("AT_V") & rd.valid & v_take)]
        va1, va2, va3, va4 = Signal(), Signal(), Signal(), Signal()
        vf1, vf2, vf3, vf4 = Signal(), Signal(), Signal(), Signal()
        vk1, vk2, vk3, vk4 = Signal(13), Signal(13), Signal(13), Signal(13)
        vl1, vl2, vl3, vl4 = Signal(), Signal(), Signal(), Signal()
        vbeat1, vbeat2, vbeat3 = Signal(128), Signal(128), Signal(128)
        ev_r = Signal(17)
        prob = Signal(17)
        vprod = [Signal((34, True)) for _ in range(8)]
        wacc = [Signal((48, True), name=f"wacc{x}") for x in range(params.max_head)]
        wdone = Signal()
        self.comb += sb_rp.adr.eq(t)
        # (attn_pairs: each head of a pair has its own score memory, _attn_pairs)
        self.comb += [sb_wp.adr.eq(Mux(sm_run, smt5, kt6)),
                      sb_wp.dat_w.eq(Mux(sm_run, ev5, sc)),
                      sb_wp.we.eq((sm_run & smv5) | ka6)] if not params.attn_pairs else []
        fsm.act("AT_V",
            rd.ready.eq(v_take), rd_wait.eq(v_take),
            If(a_v,
                If(k == hsb - 1, NextValue(k, 0), NextValue(t, t + 1)).Else(NextValue(k, k + 1))
            ),
            # The head is done: its outputs drain on their own while the next head starts.
            # With attn_overlap the next head starts as the last V beat is taken, and the drain
            # when that beat has been summed (wdone, below).
            If((a_v & (t == cur_pos) & (k == hsb - 1)) if params.attn_overlap else wdone,
                *([] if params.attn_overlap else [od_start.eq(1)]),
                NextValue(h, h + 1), NextValue(hm, hm + m),
                If(hg == src2 - 1,
                    NextValue(hg, 0), NextValue(kvh, kvh + 1)
                ).Else(
                    NextValue(hg, hg + 1)
                ),
                If(last_head, NextState("AT_OUTW")).Else(NextState("AT_NEXTH")),
                # attn_pairs: the pair's second head next (its V is next in the stream).
                *([If(self.ap_pair & ~self.ap_vsec,
                    NextValue(self.ap_vsec, 1), NextValue(t, 0), NextValue(k, 0), NextState("AT_V")
                ).Elif(self.ap_pair, NextValue(self.ap_vsec, 0))] if params.attn_pairs else [])
            )
        )
        # The next head of this slot: its query is in q_mem; its K was requested (kv_early), or
        # it is requested from AT_QD after a fresh query load (where it may fault).
        fsm.act("AT_NEXTH", self._attn_pair_next(params, kv_early,
            If(kv_early,
                NextValue(kv_early, 0), NextValue(t, 0), NextValue(k, 0), NextState("AT_K")
            ).Else(
                NextState("AT_H")
            )
        ))
        # A new slot writes to its own scratchpad: the drain ends first.
        # (attn_pairs: the drain writes the slot it started in; only the last waits for it)
        fsm.act("AT_OUTW", If((~self.attn_v_busy & ~self.ap_busy & (~od_active | (slot != nslots - 1)))
                              if params.attn_pairs
                              else (~od_active & ~self.attn_v_busy) if params.attn_overlap else ~od_active,
                              next_slot("ATTN")))
        vals = [as_signed(self, v, 16) for v in _lanes(vbeat3, 16, 8)]
        self.sync += [
            va1.eq(a_v), vf1.eq(t == 0), vk1.eq(k), vl1.eq((t == cur_pos) & (k == hsb - 1)), vbeat1.eq(rd.data),
            va2.eq(va1), vf2.eq(vf1), vk2.eq(vk1), vl2.eq(vl1), vbeat2.eq(vbeat1), ev_r.eq(self.ap_sb_rdat if params.attn_pairs else sb_rp.dat_r),
            va3.eq(va2), vf3.eq(vf2), vk3.eq(vk2), vl3.eq(vl2), vbeat3.eq(vbeat2),
            prob.eq(as_unsigned(self, ev_r * (Mux(self.ap_vh[1], self.ap_recip1, recip) if params.attn_pairs else recip), 49) >> 31),     # widened: Verilog sizes a product by its context
            va4.eq(va3), vf4.eq(vf3), vk4.eq(vk3), vl4.eq(vl3),
            [vprod[l].eq(as_signed(self, prob, 18) * vals[l]) for l in range(8)],
            wdone.eq(va4 & vl4),
            [wacc_en_g[g].eq(va3 & (vk3 == g)) for g in range(groups)],     # va4 & (vk4 == g)
            [wfirst_g[g].eq(vf3 & (vk3 == g)) for g in range(groups)],      # vf4, where it counts
            If(fsm.ongoing("AT_DIVW"), wdone.eq(0)),
        ]
        if params.attn_overlap:
            self.comb += [self.attn_v_busy.eq(va1 | va2 | va3 | va4 | wdone), od_start.eq(wdone)] if not params.attn_pairs \
                else [self.attn_v_busy.eq(va1 | va2 | va3 | va4 | wdone | self.ap_od_pend),
                      od_start.eq((wdone | self.ap_od_pend) & ~od_active)]
        # Output: the accumulators shift down one per output (wacc0 holds element j) rather
        # than being muxed by j: a 64:1 mux of 48-bit registers drew half of the ULX3S's routing
        # congestion into one spot (router2 heatmap, issue 3). S0 registers wacc0, S1 rounds,
        # saturates and writes.
        if params.attn_pairs:
            self._attn_pair_drain(wacc, wshift_g, wacc_en_g, wfirst_g, vprod, od_start)
        for x in range(params.max_head) if not params.attn_pairs else []:
            below = wacc[x + 1] if x + 1 < params.max_head else 0
            g = x // 8
            self.sync += If(wshift_g[g], wacc[x].eq(below)
                         ).Elif(wacc_en_g[g], wacc[x].eq(Mux(wfirst_g[g], 0, wacc[x]) + vprod[x % 8]))
        # The drain runs beside the FSM (which starts the next head meanwhile; nothing else
        # writes the scratchpads then): output oj is in wacc0, registered (wsel), rounded,
        # saturated and written to dst + h*m + oj.
        wsel = Signal((48, True))
        ov1 = Signal()
        oj, oj1 = Signal(8), Signal(8)
        od_base = Signal(max=D + 1)
        self.sync += [
            If(od_start,
                # (attn_overlap: hm has moved on to the next head by now)
                od_active.eq(1), oj.eq(0), od_base.eq((dst + hm - m) if params.attn_overlap else (dst + hm)),
                wshift.eq(m != 0), *[wshift_g[g].eq(8 * g < m) for g in range(groups)]
            ).Elif(od_active,
                If(oj < m, oj.eq(oj + 1)),
                wshift.eq(oj + 1 < m), *[wshift_g[g].eq(oj + 1 + 8 * g < m) for g in range(groups)],
                If((oj == m) & ov1 & (oj1 == m - 1), od_active.eq(0))
            ),
            wsel.eq(self.ap_osnap[0] if params.attn_pairs else wacc[0]), ov1.eq(wshift), oj1.eq(oj),
        ]
        st, wo_r = round_shift(wsel, N.PROB_FRAC + N.KV_FRAC - N.ACT_FRAC, 56)
        self.comb += st
        self.comb += If(ov1, act_wadr.eq(od_base + oj1), act_wdat.eq(saturate(self, wo_r, 32)), act_we.eq(1))
        if params.attn_pairs:
            self._attn_pairs(fsm, dict(
                burst=burst, j=j, ii=ii, k=k, t=t, h=h, n=n, m=m, src2=src2, dsum=dsum, rdiv=rdiv,
                recip_ok=recip_ok, kv_early=kv_early, ka6=ka6, sc=sc, cur_pos=cur_pos, span=span,
                kvaddr=kvaddr, kvhead_base=kvhead_base, vhead_base=vhead_base, nx_kvaddr=nx_kvaddr,
                nx_pos_off=nx_pos_off, nx_pos_ok=nx_pos_ok, dram_beats=dram_beats, rdq_valid=rdq_valid,
                kvhead=R["KVHEAD"], voff=R["VOFF"], act_radr=[act_radr, act_radr2] + act_radr_x, src=src, hm=hm,
                od_start=od_start, od_active=od_active, wdone=wdone, slot=slot, od_write=ov1,
                sb_rp=sb_rp, sb_wp=sb_wp, max_seq=params.max_seq, divider_steps=params.divider_steps, sm_run=sm_run, smv5=smv5, smt5=smt5, ev5=ev5, kt6=kt6))

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
                | (last_head & (slot == nslots - 1) & reduce(or_, [fsm.ongoing(st) for st in
                    ("AT_SM_RUN", "AT_DIV", "AT_NQ", "AT_NQD", "AT_DIVW", "AT_V")]))
            self.comb += pf_push.eq(own_burst_out & ~pf_done & la_ok & (la_age >= 8) & ~rdq_valid
                                    & (wr_pending == 0) & (~self.ap_busy if params.attn_pairs else 1))
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

    def _drained(self, wr_pending, od_active):
        """DRAIN's condition: every accepted write sent, ATTN's outputs written, and the
        optional units' work in flight done."""
        done = (wr_pending == 0) & ~od_active
        if hasattr(self, "kv_idle"):
            done = done & self.kv_idle
        if hasattr(self, "attn_v_busy"):
            done = done & ~self.attn_v_busy
        return done

    def _attn_query_four_ports(self, fsm, q_wp, q_beats, sig):
        """ATTN's query loads (AT_Q: this head's; AT_NQ: the next head's, into the other half
        of q_mem) through the four-port packer, four elements a cycle."""
        j, ii, m, h = sig["j"], sig["ii"], sig["m"], sig["h"]
        pk = self.pack16
        loading = fsm.ongoing("AT_Q") | fsm.ongoing("AT_NQ")
        other = fsm.ongoing("AT_NQ")      # the next head's query: the other half of q_mem
        qaddr = Cat((j >> 3)[:log2_int(q_beats)], h[0] ^ other)
        if hasattr(self, "ap_pair"):      # attn_pairs' loads (_attn_pairs)
            loading = loading | fsm.ongoing("AP_Q1") | self.ap_ql_active
            qaddr = Mux(self.ap_ql_active, Cat((self.ap_ql_j >> 3)[:log2_int(q_beats)], self.ap_ql_sec),
                        Cat((j >> 3)[:log2_int(q_beats)], h[0] ^ (other | fsm.ongoing("AP_Q1"))))
        self.comb += [
            self.pack4_query.eq(loading),
            self.pack4_qaddr.eq(qaddr),
            q_wp.adr.eq(pk.beat_tag), q_wp.dat_w.eq(pk.beat), q_wp.we.eq(pk.beat_valid & pk.beat_query),
        ]
        for state, done in (("AT_Q", "AT_QD"), ("AT_NQ", "AT_NQD")):
            # (attn_pairs: AT_Q goes on with the next head's query, AP_Q1)
            then = If(sig["h"] + 1 < sig["n"], NextValue(j, 0), NextState("AP_Q1")).Else(NextState(done)) \
                if hasattr(self, "ap_pair") and state == "AT_Q" else NextState(done)
            fsm.act(state,
                *[adr.eq(ii + e) for e, adr in enumerate(sig["act_radr"])],
                NextValue(j, j + 4), NextValue(ii, ii + 4),
                If(j + 4 == m, then)
            )

    def _attn_overlap(self, fsm, sig):
        """Params.attn_overlap, the requests: while AT_K computes a head's scores, its V goes
        into the read queue, and once the stream has taken V, the next head's K (head h + 1, or
        head 0 of the next slot) follows it. Their beats then wait in the read FIFO instead of
        each waiting a DRAM latency after the scores (V) or after V's request (K). Each only
        where its burst lies inside DRAM (and the next slot's position passes ATTN's checks):
        otherwise the head asks at AT_K's end and AT_KN, as without the option, and faults
        there as golden does. The addresses settle four cycles after a new KV head (kvh ->
        kvh_off -> kvhead_base -> vhead_base -> in_dram; the next head's, one more), so AT_K
        waits four cycles before V and seven before K."""
        self.v_push, self.v_queued, self.k_push = Signal(), Signal(), Signal()
        age = Signal(3)                   # cycles in AT_K, up to 7
        in_dram = Signal()
        at_k = fsm.ongoing("AT_K")
        self.sync += [
            in_dram.eq((sig["vhead_base"] >> 4) + ((sig["span"] + 15) >> 4) <= sig["dram_beats"]),
            If(at_k, If(age != 7, age.eq(age + 1))).Else(age.eq(0)),
            If(self.v_push, self.v_queued.eq(1)),
            # Taken at AT_K's end (or dropped with the instruction, after a fault).
            If(fsm.ongoing("AT_KN") | fsm.ongoing("ATTN"), self.v_queued.eq(0)),
        ]
        scoring = at_k & ~sig["scores_done"]
        if hasattr(self, "ap_pair"):
            scoring = scoring & ~self.ap_pair          # a pair makes its own requests
        self.comb += [
            self.v_push.eq(scoring & (age == 4) & in_dram & ~self.v_queued & ~sig["rdq_valid"]),
            self.k_push.eq(scoring & (age == 7) & self.v_queued & ~sig["rdq_valid"] & sig["next_k_ok"]
                           & ~sig["kv_early"]),
        ]

    # Params.attn_pairs ------------------------------------------------------------------------
    # Heads h and h + 1 of a slot as a pair: the stream brings K(h), K(h + 1), V(h), V(h + 1),
    # so the second head's scores follow the first's without a gap, the first head's softmax
    # starts as its scores are in, the second's follows it through the softmax pipeline, each
    # divides as its last element leaves (the second on a divider of its own), and the first
    # head's V is summed while the second divides. Each head keeps a half of q_mem (the head's
    # h[0]) and a score memory of its own; a drain works from a copy of the accumulators. A slot's heads
    # go in pairs only when every K and V burst of the slot lies inside DRAM (so none can fault,
    # and the order of the requests cannot change what golden reports) and the query heads
    # share K/V heads one or two at a time (src2 = 1 or 2); otherwise, and for an odd last
    # head, a head runs alone as before.

    def _attn_pair_signals(self):
        """The pair state that the ATTN code above _attn_pairs reads."""
        self.ap_pair = Signal()           # the current head h is the first of a pair
        self.ap_ksec = Signal()           # AT_K takes the second head's K
        self.ap_smh = Signal()            # AT_SM_RUN runs the second head's softmax
        self.ap_vsec = Signal()           # AT_V takes the second head's V
        self.ap_ks = [Signal(name=f"ap_ks{x}") for x in range(8)]    # the score pipeline's head
        self.ap_vh = [Signal(name=f"ap_vh{x}") for x in range(2)]    # the V pipeline's head
        self.ap_smax1 = Signal((32, True))
        self.ap_scount1 = Signal(32)
        self.ap_recip1 = Signal(32)
        self.ap_r1ok = Signal()           # ap_recip1 is the second head's
        self.ap_sh = [Signal(name=f"ap_sh{x}") for x in range(5)]    # the softmax pipeline's head
        self.ap_esum1 = Signal(48)        # the second head's softmax sum
        self.ap_busy = Signal()           # the pair's requests are not all in the read queue
        self.ap_push = Signal()
        self.ap_push_beat, self.ap_push_beats = Signal(ADDR_W), Signal(32)
        self.ap_pair_go = Signal()        # heads h and h + 1 may go as a pair
        self.ap_slot_age = Signal(3)      # cycles since the slot's ATTN state, up to 7
        self.ap_start = Signal()          # a pair's K phase begins: its requests start over
        self.ap_od_pend = Signal()        # a head's sums wait for the drain before them to end
        self.ap_vgo = Signal()            # the first head's sums are out: the second's V goes
        # The next pair's queries load during this pair's softmax and V (_attn_pairs).
        self.ap_ql_start, self.ap_ql_active = Signal(), Signal()
        self.ap_ql_j, self.ap_ql_sec = Signal(8), Signal()
        self.ap_esum = Signal(48)         # the softmax's sum (the score pipeline keeps dsum)
        self.ap_sb_rdat = Signal(32)      # the score memory read, of the head being read
        self.ap_sm_go = Signal()          # the softmax may read: the second head's scores are in
        self.ap_od_wr, self.ap_od_slot = Signal(), Signal(8)    # the drain's write, and its slot

    def _attn_pair_first(self, params, alone):
        """AT_QD (``alone``: its own statements, which ask for the first K): a slot's first pair
        (both queries loaded: AT_Q, AP_Q1) starts there as a pair."""
        if not params.attn_pairs:
            return alone
        # ap_pair_go settles within seven cycles of a new slot.
        return If(self.ap_slot_age == 7,
            alone,
            If(self.ap_pair_go & self.pack4_idle, NextValue(self.ap_pair, 1), self.ap_start.eq(1))
        )

    def _attn_pair_scores_done(self, params, sig, alone):
        """AT_K's end: a pair's once both heads' scores are in."""
        if not params.attn_pairs:
            return alone
        t, cur_pos = sig["t"], sig["cur_pos"]
        # The first head's softmax starts once its scores are in and the second head's keys
        # are all taken (its scores finish meanwhile, into the other score memory).
        return If(self.ap_pair,
            If(self.ap_ksec & (t > cur_pos) & (sig["scount"] == cur_pos + 1),
                NextValue(t, 0), NextValue(self.ap_esum, 0), NextValue(self.ap_esum1, 0), NextValue(self.ap_ksec, 0),
                NextValue(self.ap_smh, 0), self.ap_ql_start.eq(1), NextState("AT_SM_RUN"))
        ).Else(alone)

    def _attn_pair_next(self, params, kv_early, alone):
        """AT_NEXTH: once the pair's requests are queued, the next head alone or a new pair."""
        if not params.attn_pairs:
            return alone
        return If(~self.ap_busy & self.pack4_idle,
            NextValue(self.ap_pair, self.ap_pair_go),
            alone,
            If(kv_early & self.ap_pair_go, self.ap_start.eq(1))
        )

    def _attn_pair_drain(self, wacc, wshift_g, wacc_en_g, wfirst_g, vprod, od_start):
        """The accumulators only sum; a drain starts by copying them (ap_osnap) and shifts the
        copy out, so the next head's V is summed meanwhile. A head whose sums are done while a
        drain runs waits for it (ap_od_pend), and V waits while one waits."""
        self.ap_osnap = [Signal((48, True), name=f"ap_osnap{x}") for x in range(len(wacc))]
        for x in range(len(wacc)):
            g = x // 8
            self.sync += [
                If(wacc_en_g[g], wacc[x].eq(Mux(wfirst_g[g], 0, wacc[x]) + vprod[x % 8])),
                If(od_start, self.ap_osnap[x].eq(wacc[x])
                ).Elif(wshift_g[g], self.ap_osnap[x].eq(self.ap_osnap[x + 1] if x + 1 < len(wacc) else 0)),
            ]

    def _attn_pairs(self, fsm, sig):
        """The pairs' states, per-head registers and requests."""
        j, ii, k, t, h, n, m, src2 = (sig[x] for x in ("j", "ii", "k", "t", "h", "n", "m", "src2"))
        rdiv, kv_early, span, cur_pos = sig["rdiv"], sig["kv_early"], sig["span"], sig["cur_pos"]
        kvhead, voff, dram_beats = sig["kvhead"], sig["voff"], sig["dram_beats"]
        # Whether the slot's heads may pair: its last KV head's V burst (the highest) inside
        # DRAM. Registered in steps; valid four cycles after a new slot.
        last_kvh = Signal(16)
        ext, vlast = Signal(ADDR_W), Signal(ADDR_W)
        slot_ok = Signal()
        self.sync += [
            last_kvh.eq(Mux(src2 == 2, (n - 1) >> 1, n - 1)),
            ext.eq(last_kvh * kvhead + voff),
            vlast.eq(sig["kvaddr"] + ext),
            slot_ok.eq(((src2 == 1) | (src2 == 2)) & (n >= 2)
                       & ((vlast >> 4) + ((span + 15) >> 4) <= dram_beats)),
            If(fsm.ongoing("ATTN"), self.ap_slot_age.eq(0)
            ).Elif(self.ap_slot_age != 7, self.ap_slot_age.eq(self.ap_slot_age + 1)),
        ]
        self.comb += self.ap_pair_go.eq(slot_ok & (h + 1 < n))
        fsm.act("ATTN", NextValue(self.ap_pair, 0), NextValue(self.ap_ksec, 0), NextValue(self.ap_smh, 0),
                NextValue(self.ap_vsec, 0))

        self.sync += [
            If(sig["od_start"], self.ap_od_pend.eq(0)
            ).Elif(sig["wdone"] & sig["od_active"], self.ap_od_pend.eq(1)),
            If(~self.ap_vsec, self.ap_vgo.eq(0)).Elif(~self.attn_v_busy, self.ap_vgo.eq(1)),
        ]
        self.sync += If(sig["od_start"], self.ap_od_slot.eq(sig["slot"]))
        self.comb += self.ap_od_wr.eq(sig["od_write"])
        # Per-head scores, softmax and reciprocal.
        ks, sc = self.ap_ks, sig["sc"]
        self.comb += self.ap_sm_go.eq(~self.ap_smh | (self.ap_scount1 == cur_pos + 1))
        # The score memories: the first head's is the one-head path's (sbuf), the second's its
        # own, so the first head's softmax writes while the second's scores still arrive.
        sb0_rp, sb0_wp = sig["sb_rp"], sig["sb_wp"]
        sbuf1 = Memory(32, sig["max_seq"])
        sb1_rp, sb1_wp = sbuf1.get_port(), sbuf1.get_port(write_capable=True)
        self.specials += sbuf1, sb1_rp, sb1_wp
        sm_run, smv5, smt5, ev5, kt6 = (sig[x] for x in ("sm_run", "smv5", "smt5", "ev5", "kt6"))
        read_half = Signal()              # the head of the read issued a cycle ago
        self.sync += read_half.eq(Mux(sm_run, self.ap_smh, self.ap_vsec))    # (= ap_sh[0] in a softmax)
        self.comb += [sb1_rp.adr.eq(t), self.ap_sb_rdat.eq(Mux(read_half, sb1_rp.dat_r, sb0_rp.dat_r))]
        for port, half in ((sb0_wp, 0), (sb1_wp, 1)):
            sm_write = sm_run & smv5 & (self.ap_sh[4] == half)
            self.comb += [
                port.adr.eq(Mux(sm_write, smt5, kt6)), port.dat_w.eq(Mux(sm_write, ev5, sc)),
                port.we.eq(sm_write | (sig["ka6"] & (ks[7] == half))),
            ]
        self.sync += [
            ks[0].eq(self.ap_ksec), [ks[x].eq(ks[x - 1]) for x in range(1, 8)],
            If(sig["ka6"] & ks[7],
                self.ap_scount1.eq(self.ap_scount1 + 1),
                If((self.ap_scount1 == 0) | (sc > self.ap_smax1), self.ap_smax1.eq(sc))
            ),
            If(fsm.ongoing("AT_Q") | fsm.ongoing("AT_NEXTH"), self.ap_scount1.eq(0)),
            self.ap_vh[0].eq(self.ap_vsec), self.ap_vh[1].eq(self.ap_vh[0]),
        ]
        # The softmax issues the first head's elements, then the second's; each head's division
        # starts as its last element leaves the pipeline (the second on a divider of its own),
        # and the first head's V is summed while the second's divides.
        smt5, smv5 = sig["smt5"], sig["smv5"]
        sh = self.ap_sh
        div0_go, div1_go = Signal(), Signal()
        self.ap_rdiv1 = rdiv1 = Divider(47, 32, quotient_bits=32, steps=sig["divider_steps"])
        self.sync += [
            sh[0].eq(self.ap_smh), [sh[x].eq(sh[x - 1]) for x in range(1, 5)],
            div0_go.eq(self.ap_pair & sm_run & smv5 & ~sh[4] & (smt5 == cur_pos)),
            div1_go.eq(self.ap_pair & sm_run & smv5 & sh[4] & (smt5 == cur_pos)),
            If(div1_go, self.ap_r1ok.eq(0)).Elif(rdiv1.done, self.ap_recip1.eq(rdiv1.quotient), self.ap_r1ok.eq(1)),
        ]
        self.comb += [
            If(div0_go, rdiv.start.eq(1), rdiv.dividend.eq(1 << 46), rdiv.divisor.eq(self.ap_esum)),
            rdiv1.start.eq(div1_go), rdiv1.dividend.eq(1 << 46), rdiv1.divisor.eq(self.ap_esum1),
        ]
        fsm.act("AP_DIV1W",
            If(sig["recip_ok"],
                NextValue(self.ap_smh, 0), NextValue(t, 0), NextValue(k, 0), NextState("AT_V")
            )
        )

        # Query loads through the four-element packer (_attn_query_four_ports): head h + 1's
        # right behind head h's in AT_Q (AP_Q1); the next pair's two while this pair's softmax
        # and V run (the loader below: the FSM's states then use no scratchpad read port).
        fsm.act("AP_Q1",
            *[adr.eq(ii + e) for e, adr in enumerate(sig["act_radr"])],
            NextValue(j, j + 4), NextValue(ii, ii + 4),
            If(j + 4 == m, NextState("AT_QD"))
        )
        ql_ii, ql_two = Signal(32), Signal()
        qj = self.ap_ql_j
        self.sync += If(self.ap_ql_start,
            self.ap_ql_active.eq(h + 2 < n), qj.eq(0), self.ap_ql_sec.eq(0), ql_two.eq(h + 3 < n),
            ql_ii.eq(sig["src"] + sig["hm"] + (m << 1))
        ).Elif(self.ap_ql_active,
            qj.eq(qj + 4), ql_ii.eq(ql_ii + 4),
            If(qj + 4 == m,
                qj.eq(0), self.ap_ql_sec.eq(1),
                If(self.ap_ql_sec | ~ql_two, self.ap_ql_active.eq(0))
            )
        )
        self.comb += If(self.ap_ql_active, *[adr.eq(ql_ii + e) for e, adr in enumerate(sig["act_radr"])])

        # Requests, in the order the pair takes them: K(h + 1) (unless the pair before asked
        # for it), V(h), V(h + 1), then the next pair's K: K(h + 2) or the next slot's first
        # head (where that passes ATTN's checks and lies inside DRAM; it sets kv_early), and
        # K(h + 3) or the next slot's second head (where that slot will pair its heads: the
        # same test as its own, on its KV base and position). With src2 = 2, h is even and
        # heads h, h + 1 share a KV head.
        kb1, vb1, kb2, kb3 = (Signal(ADDR_W, name=f"ap_{x}") for x in ("kb1", "vb1", "kb2", "kb3"))
        f1, f1_len = Signal(ADDR_W), Signal(ADDR_W)
        f1_ok, f2_ok = Signal(), Signal()
        f2, f2_len = Signal(ADDR_W), Signal(ADDR_W)
        next_pairs = Signal()             # the next slot will pair its heads
        next_span = Signal(ADDR_W)
        kq2 = Signal()                    # K(h + 1) of the next pair is queued
        step = Signal(3)                  # 0..4: the request to make; 5: all made
        age = Signal(3)                   # cycles since the pair began, up to 7
        self.sync += [
            kb1.eq(sig["kvhead_base"] + Mux(src2 == 1, kvhead, 0)),
            vb1.eq(kb1 + voff),
            kb2.eq(sig["kvhead_base"] + Mux(src2 == 1, kvhead << 1, kvhead)),
            kb3.eq(sig["kvhead_base"] + Mux(src2 == 1, (kvhead << 1) + kvhead, kvhead)),
            next_span.eq(sig["nx_pos_off"] + (m << 1)),
            If(h + 2 < n,
                f1.eq(kb2), f1_len.eq(span), f1_ok.eq(1)
            ).Else(
                f1.eq(sig["nx_kvaddr"]), f1_len.eq(next_span),
                f1_ok.eq(sig["nx_pos_ok"] & ((sig["nx_kvaddr"] >> 4) + ((next_span + 15) >> 4) <= dram_beats))
            ),
            next_pairs.eq(((src2 == 1) | (src2 == 2)) & (n >= 2)
                          & (((sig["nx_kvaddr"] + ext) >> 4) + ((next_span + 15) >> 4) <= dram_beats)),
            If(h + 3 < n,
                f2.eq(kb3), f2_len.eq(span), f2_ok.eq(1)
            ).Elif(h + 2 >= n,
                f2.eq(sig["nx_kvaddr"] + Mux(src2 == 1, kvhead, 0)), f2_len.eq(next_span),
                f2_ok.eq(f1_ok & next_pairs)
            ).Else(
                f2_ok.eq(0)
            ),
        ]
        # Latched when the pair's addresses have settled (age 5): the later requests may leave
        # after the pair has moved on to its second head (kvh and h with it), when the read
        # port is slow to take the bursts before them.
        vb0_l, vb1_l, f1_l, f1_len_l, f2_l, f2_len_l = (Signal(ADDR_W) for _ in range(6))
        f1_ok_l, f2_ok_l = Signal(), Signal()
        self.sync += If(age == 5,
            vb0_l.eq(sig["vhead_base"]), vb1_l.eq(vb1), f1_l.eq(f1), f1_len_l.eq(f1_len), f2_l.eq(f2),
            f2_len_l.eq(f2_len), f1_ok_l.eq(f1_ok), f2_ok_l.eq(f2_ok)
        )
        pairing = self.ap_pair & reduce(or_, [fsm.ongoing(st) for st in
            ("AT_K", "AT_SM_RUN", "AP_DIV1W", "AT_V")])
        # K(h + 1) is asked for at once (step 0 is only a slot's first pair, whose addresses
        # settled with the slot); the others once the pair's own addresses have settled.
        ready = pairing & ((age >= 6) | (step == 0)) & (step != 5)
        skip = ((step == 3) & ~f1_ok_l) | ((step == 4) & ~f2_ok_l)
        self.comb += [
            self.ap_busy.eq((self.ap_pair & (step != 5)) | self.ap_ql_active),
            self.ap_push.eq(ready & ~skip & ~sig["rdq_valid"]),
            self.ap_push_beat.eq(Array([kb1, vb0_l, vb1_l, f1_l, f2_l, f2_l, f2_l, f2_l])[step] >> 4),
            self.ap_push_beats.eq(Mux(step == 3, (f1_len_l + 15) >> 4,
                                      Mux(step == 4, (f2_len_l + 15) >> 4, (span + 15) >> 4))),
        ]
        self.sync += [
            If(self.ap_start,
                step.eq(Mux(kq2, 1, 0)), kq2.eq(0), age.eq(0)
            ).Else(
                If(age != 7, age.eq(age + 1)),
                If(self.ap_push | (ready & skip), step.eq(step + 1)),
                If(self.ap_push & (step == 3), kv_early.eq(1)),
                If(self.ap_push & (step == 4), kq2.eq(1)),
            ),
            If(fsm.ongoing("IDLE"), kq2.eq(0)),   # (kept into the next slot, whose first pair takes it)
        ]

    def do_finalize(self):
        self.comb += self.fsm_state.eq(self.fsm.state)
        # One-hot on the FPGA (timing): each state's decode is one flip-flop instead of a
        # 7-bit compare fanned out over the chip. Yosys re-encodes a state register only when
        # asked, since Migen gives every register an initial value.
        self.fsm.state.attr.add(("fsm_encoding", "one-hot"))
