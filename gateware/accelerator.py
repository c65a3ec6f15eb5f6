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
statistics). They and the sequencer (gateware/core/sequencer.py: fetch, decode, the field checks, the slot walk,
BURST) are instantiated and connected here: the sequencer starts each unit and answers its
burst requests; each unit drives the scratchpads and the streams while the sequencer's ``own``
signal for it is set (docs/isa.md, "Where each part is").
"""

from functools import reduce
from operator import or_
from types import SimpleNamespace

from migen import *

from litex.gen import LiteXModule
from litex.soc.interconnect.csr import CSRStorage, CSRStatus, CSRField
from litex.soc.interconnect import stream

from litedram.frontend.dma import LiteDRAMDMAWriter

from spec import isa, registers as reglayout
from gateware.arith import saturate, as_signed, as_unsigned
from gateware.readstream import BANK_BITS, bank_of, BankInterleavedReader, BankInterleavedWriter, SkipWriter, WindowReader
from gateware.core.argmax import Argmax
from gateware.core.attention import Attention
from gateware.core.counters import Counters
from gateware.core.embed import Embed
from gateware.core.kvwrite import Kvwrite, Kvwrite4
from gateware.core.kvwrite8 import Kvwrite8
from gateware.core.matvec import Matvec
from gateware.core.pack16 import Pack16, Pack16x4
from gateware.core.readbursts import ReadBursts
from gateware.core.scratchpad import Scratchpads
from gateware.core.rmsnorm import Rmsnorm
from gateware.core.rope import Rope
from gateware.core.sequencer import Sequencer
from gateware.core.silu import Silu
from gateware.core.store import Store
from gateware.core.unpack import BeatUnpacker
from gateware.core.writestats import WriteStats

# Read-stream addresses left to send from which the weight stream waits for the read stream
# (see _weight_stream).
LONG_READ = 16

CLASSES = isa.CLASSES

# Accelerator --------------------------------------------------------------------------------------

class Accelerator(LiteXModule):
    """The transformer core (see the module docstring). ``read_ports``: a list of one or two 128-bit
    LiteDRAM native read ports (two: beats alternate between them by bank, ``bank_shift`` is the
    bank number's LSB in a beat address; see gateware/readstream.py); ``write_port``: a 128-bit
    native write port, or a list of Params.write_ports (beats go to one of them by bank, which
    needs ``bank_shift`` too); ``weight_ports``: Params.weight_ports 128-bit native
    read ports of MATVEC's weight stream (by bank too when two); ``dram_size``: bytes of DRAM
    the core may touch, from address 0."""

    def __init__(self, read_ports, write_port, dram_size, params=isa.Params(), bank_shift=None, weight_ports=()):
        params.validate()
        read_ports = list(read_ports)
        if len(read_ports) != params.read_ports:
            raise ValueError(f"Accelerator: Params.read_ports is {params.read_ports}, got {len(read_ports)} ports")
        if len(read_ports) == 2 and bank_shift is None:
            raise ValueError("Accelerator: two read ports need bank_shift")
        write_port = self._write_ports(write_port, params, bank_shift)
        weight_ports = list(weight_ports)
        if len(weight_ports) != params.weight_ports:
            raise ValueError(f"Accelerator: Params.weight_ports is {params.weight_ports}, "
                             f"got {len(weight_ports)} ports")
        if len(weight_ports) == 2 and bank_shift is None:
            raise ValueError("Accelerator: two weight ports need bank_shift")
        for port in read_ports + weight_ports + self.write_ports:
            if port.data_width != 8 * isa.BEAT_BYTES:
                raise ValueError(f"Accelerator: ports must be {8 * isa.BEAT_BYTES} bits, got {port.data_width}")
        if dram_size % isa.BEAT_BYTES:
            raise ValueError("Accelerator: dram_size must be a whole number of beats")
        self.params = params
        self._csrs(params)
        self.fsm_state = Signal(8)        # for simulation harnesses: the sequencer's state
        self.attn_state = Signal(8)       # and the attention unit's

        # # #

        self._streams(read_ports, write_port, params, bank_shift)
        self._weight_stream(weight_ports, params, bank_shift, read_ports)
        self._scratchpads(params)
        u = self._units(params, dram_size // isa.BEAT_BYTES)
        self.sequencer = seq = Sequencer(params, dram_size // isa.BEAT_BYTES, self.rd, u)
        self._connect_sequencer(seq, u, params)
        self._connect_units(seq, u, params)
        self._lend(seq, u, params)

    # CSRs -------------------------------------------------------------------------------------------

    def _csrs(self, params):
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
        self.mac_busy    = CSRStatus(64, description="Weight beats multiplied, each counted LANES/mac_lanes times "
                                                     "(the cycles one takes).")
        self.dram_stall  = CSRStatus(64, description="Cycles waiting for DRAM read data.")
        self.bytes_read  = CSRStatus(64, description="DRAM bytes read.")
        self.bytes_written = CSRStatus(64, description="DRAM bytes written.")
        self.retired     = CSRStatus(32, description="Instructions retired.")
        self.class_sel   = CSRStorage(8, description="Instruction class for class_cycles (CLASSES order).")
        self.class_cycles = CSRStatus(64, description="Cycles spent in the selected instruction class.")

    # The DRAM streams -------------------------------------------------------------------------------

    def _streams(self, read_ports, write_port, params, bank_shift):
        """The read stream (``self.rd``) and its bursts, the write stream (``self.wr``), its
        address and the writes not yet handed to LiteDRAM (``self.wr_pending``)."""
        self.rd_wait = Signal()           # a unit waits for read data (the stall counter's)
        if params.mac_beats == 1:
            self.reader = reader = BankInterleavedReader(read_ports, bank_shift, fifo_depth=params.read_fifo_depth)
            # Registered both ways between the read FIFO and the units (timing: the FIFO's
            # distributed RAM sits wherever the placer compromises, and its 128 data bits feed
            # every unit across the chip).
            self.rd_buffer = rd_buffer = stream.Buffer(reader.source.description, pipe_valid=True, pipe_ready=True)
            self.comb += reader.source.connect(rd_buffer.sink)
            self.rd = rd_buffer.source
            self.rd2 = None
            self.rd_taken = self.rd.valid & self.rd.ready             # read beats taken this cycle
        else:
            # The next two beats at once (MATVEC takes two weight beats a cycle; every other
            # unit the first through ``rd``). No buffer: the window's multiplexers sit right
            # behind the FIFOs' output registers.
            self.reader = reader = WindowReader(read_ports, bank_shift, fifo_depth=params.read_fifo_depth)
            self.rd = stream.Endpoint([("data", len(reader.data))])
            self.rd2 = SimpleNamespace(valid=reader.valid2, data=reader.data2, ready=reader.ready2)
            self.rd_taken = reader.taken
            self.comb += [self.rd.valid.eq(reader.valid), self.rd.data.eq(reader.data), reader.ready.eq(self.rd.ready)]
        # Its address side (gateware/core/readbursts.py): the burst in progress and one queued
        # (ATTN's next K or the next MATVEC's weights, already checked against the window).
        self.bursts = ReadBursts(reader.sink, read_ports[0].address_width, self.rd_taken)
        # int8 K/V rows fill parts of beats: the write stream's beats carry a byte mask (skip).
        skip = params.kv_format == "int8"
        if params.write_ports == 1:
            self.writer = writer = (SkipWriter if skip else LiteDRAMDMAWriter)(write_port, fifo_depth=16)
            self.wr_beats = write_port.wdata.valid & write_port.wdata.ready
        else:
            self.writer = writer = BankInterleavedWriter(self.write_ports, bank_shift, fifo_depth=16, skip=skip)
            self.wr_beats = writer.wdata_beats
        self.wr_buffer = wr_buffer = stream.Buffer(writer.sink.description, pipe_valid=True, pipe_ready=True)
        self.comb += wr_buffer.source.connect(writer.sink)
        self.wr = wr = wr_buffer.sink
        self.wr_addr = Signal(write_port.address_width)
        self.wr_pending = Signal(8)
        self.comb += wr.address.eq(self.wr_addr)
        self.sync += self.wr_pending.eq(self.wr_pending + (wr.valid & wr.ready) - self.wr_beats)

    def _weight_stream(self, ports, params, bank_shift, read_ports):
        """MATVEC's own weight stream (Params.weight_ports), ``self.wrd``: the next two beats
        (``valid``/``data``, ``valid2``/``data2``; ``ready``, ``ready2`` take them), its bursts
        (``self.wbursts``: MATVEC's own and the next MATVEC's, queued ahead) and ``wrd_wait``
        (MATVEC waits for a beat). None without weight ports: the weights come through ``rd``.

        The weights give way bank by bank: a bank that a read or write port's command waits for
        gets no weight reads from the next cycle until that command is taken, so the bank's
        queue drains and the crossbar hands the bank over. The weights run far ahead of MATVEC,
        while a unit whose key, value, embedding or table read waits stalls, and so does the
        read burst that waits for KVWRITE's writes to reach LiteDRAM. While the read stream has
        LONG_READ or more addresses of a burst left to send (ATTN's keys and values late in a
        context), the weights wait altogether: the two streams would take turns opening rows in
        the same banks, and weights fetched then only shorten a later MATVEC by what they cost
        ATTN. Otherwise the weights stream whenever the prefetch has a burst for them."""
        self.wrd = self.wbursts = None
        self.wrd_wait = Signal()
        if not ports:
            return
        self.weights_avoid = avoid = Signal(1 << BANK_BITS)
        waiting = [Mux(p.cmd.valid & ~p.cmd.ready, 1 << bank_of(p.cmd.addr, bank_shift), 0)
                   for p in read_ports + self.write_ports]
        long_read = self.bursts.more & (self.bursts.remaining >= LONG_READ)
        self.sync += avoid.eq(reduce(or_, waiting) | Replicate(long_read, len(avoid)))
        self.wreader = w = WindowReader(ports, bank_shift, fifo_depth=params.read_fifo_depth, avoid=avoid)
        self.wrd = SimpleNamespace(valid=w.valid, data=w.data, valid2=w.valid2, data2=w.data2,
                                   ready=w.ready, ready2=w.ready2, taken=w.taken)
        self.wbursts = ReadBursts(w.sink, ports[0].address_width, w.taken)

    # Activation scratchpads, one per slot (gateware/core/scratchpad.py) -------------------------------

    def _scratchpads(self, params):
        """The scratchpads and their write mux: one slot's element (``act_wadr``/``act_wdat``/
        ``act_we``), or every active slot's at once (``act_we_all``, ``all_wdat``)."""
        B, D = params.slots, params.act_depth
        self.act = act = Scratchpads(B, D, params.act_read_ports, write_taps=params.write_stats)
        self.act_wadr, self.act_wdat, self.act_we = Signal(max=D), Signal((32, True)), Signal()
        self.act_we_all = Signal()
        self.all_wdat = [Signal((32, True)) for _ in range(B)]
        self.unit_pass = Signal()         # an all-slot write from RMSNORM, SILU or ROPE (one group)
        self.comb += act.wadr.eq(self.act_wadr)

    def _write_mux(self, seq, u, params):
        B, U = params.slots, params.element_units
        act = self.act
        wslot = Mux(u.attention.od_we, u.attention.od_slot, seq.slot) if params.attn_pairs else seq.slot
        for s in range(B):
            in_group = ((seq.group == s // U) | ~self.unit_pass) if U < B else 1   # MATVEC writes every slot
            self.comb += If(self.act_we_all, act.wdat[s].eq(self.all_wdat[s]), act.we[s].eq((s < seq.nslots) & in_group)
                         ).Else(act.wdat[s].eq(self.act_wdat), act.we[s].eq(self.act_we & (wslot == s)))

    # The units --------------------------------------------------------------------------------------

    def _units(self, params, dram_beats):
        U, WS = params.element_units, params.write_stats
        self.unpack = BeatUnpacker()      # beats into elements: RMSNORM's gains, LOAD
        self.embed = Embed(params.max_cols)
        self.rmsnorm = Rmsnorm(U, params.divider_steps, write_stats=WS)
        self.matvec = Matvec(params, write_stats=WS)
        self.rope = Rope(U, max(params.max_head // 8, 2))
        if params.act_read_ports == 2:
            self.pack16, self.kvwrite = Pack16(), Kvwrite()
        else:
            self.pack16 = Pack16x4(params.slots, len(self.wr.address))
            self.kvwrite = Kvwrite8(params.max_head, len(self.wr.address)) if params.kv_format == "int8" \
                else Kvwrite4(len(self.wr.address))
        self.attention = Attention(params, dram_beats)
        self.silu = Silu(U)
        self.store = Store()
        self.argmax = Argmax(params.slots, params.act_read_ports)
        if WS:
            self.wstats = WriteStats(params.slots)
        return SimpleNamespace(unpack=self.unpack, embed=self.embed, rmsnorm=self.rmsnorm, matvec=self.matvec,
                               rope=self.rope, kvwrite=self.kvwrite, attention=self.attention, silu=self.silu,
                               store=self.store, argmax=self.argmax)

    # Connections ------------------------------------------------------------------------------------

    def _connect_sequencer(self, seq, u, params):
        """The sequencer's CSRs, streams, bursts, counters and write statistics."""
        rd, wr, bursts = self.rd, self.wr, self.bursts
        self.comb += [
            seq.go.eq(self.control.fields.start), seq.prog.eq(self.prog.storage), seq.table.eq(self.slots.storage),
            seq.nslots_in.eq(self.nslots.storage),
            self.status.fields.busy.eq(seq.busy), self.status.fields.done.eq(seq.done),
            self.status.fields.error.eq(seq.err_code), self.err_addr.status.eq(seq.err_addr),
            bursts.start.eq(seq.rd_start), bursts.start_addr.eq(seq.req_beat), bursts.start_len.eq(seq.req_beats),
            bursts.flush.eq(seq.abort), seq.rd_more.eq(bursts.more), seq.rdq_valid.eq(bursts.queued),
            seq.flush_done.eq((bursts.remaining == 0) & (bursts.outstanding == 0) & ~rd.valid & self._weights_drained()
                              if self.wrd else (bursts.remaining == 0) & (bursts.outstanding == 0) & ~rd.valid),
            seq.wr_ready.eq(wr.ready), seq.wr_pending.eq(self.wr_pending),
            seq.drained.eq(self._drained(u)),
        ]
        # A write burst sets the address; each beat the stream takes moves it on.
        self.sync += If(seq.wr_load, self.wr_addr.eq(seq.req_beat)).Elif(wr.valid & wr.ready, self.wr_addr.eq(self.wr_addr + 1))
        if self.wrd:
            # MATVEC's bursts and the next MATVEC's, queued ahead, go to the weight stream; a
            # fault drains it with the read stream, and so do a stale prefetch and the run's end.
            wb, drop = self.wbursts, seq.abort | seq.wdrain
            self.comb += [
                wb.start.eq(seq.wrd_start), wb.start_addr.eq(seq.req_beat), wb.start_len.eq(seq.req_beats),
                wb.push.eq(seq.pf_push), wb.push_addr.eq(seq.la_beat), wb.push_len.eq(seq.la_beats),
                wb.flush.eq(drop), seq.wrdq_valid.eq(wb.queued), seq.wdrained.eq(self._weights_drained()),
                If(drop, self.wrd.ready.eq(1), self.wrd.ready2.eq(1)),      # two beats a cycle
            ]
        self._read_queue_requests(bursts.push, bursts.push_addr, bursts.push_len,
            [(seq.pf_push, seq.la_beat, seq.la_beats)] if params.fetch_beats and not self.wrd else [],
            next_k=(u.attention.q_addr, u.attention.q_len), next_k_pushes=[u.attention.q_push])
        # Counters (gateware/core/counters.py).
        self.counters = counters = Counters(len(CLASSES), mac_beats=params.mac_beats,
                                            read_beats=params.mac_beats + (2 if self.wrd else 0),
                                            write_beats=params.write_ports)
        self.comb += [
            counters.cls.eq(seq.cls), counters.counting.eq(seq.busy), counters.clear.eq(seq.clear),
            counters.retire.eq(seq.retire), counters.mac_beats.eq(u.matvec.mac_beats),
            counters.stall.eq((self.rd_wait & ~rd.valid) | (self.wrd_wait & ~self.wrd.valid) if self.wrd
                              else self.rd_wait & ~rd.valid),
            counters.read_beats.eq(self.rd_taken + self.wrd.taken if self.wrd else self.rd_taken),
            counters.write_beats.eq(self.wr_beats),
            counters.class_sel.eq(self.class_sel.storage), counters.watchdog.eq(self.watchdog.storage),
            seq.watchdog_fired.eq(counters.watchdog_fired),
            *[getattr(self, name).status.eq(getattr(counters, name)) for name in
              ("cycles", "mac_busy", "dram_stall", "bytes_read", "bytes_written", "retired", "class_cycles")],
        ]
        # Write statistics (gateware/core/writestats.py): an input vector's largest |x| and sum
        # of squares, gathered as an instruction before wrote it (Params.write_stats; without
        # it MATVEC and RMSNORM take their first passes).
        if params.write_stats:
            ws, B = self.wstats, params.slots
            self.comb += [
                ws.op.eq(seq.op), ws.dst.eq(seq.dst), ws.src.eq(seq.src), ws.n.eq(seq.n), ws.m.eq(seq.m),
                ws.nm.eq(seq.nm), ws.issue.eq(seq.issue), ws.advance.eq(seq.advance), ws.reset.eq(seq.idle),
                *[ws.wdat[s].eq(self.act.wq_dat[s]) for s in range(B)], *[ws.we[s].eq(self.act.wq_we[s]) for s in range(B)],
            ]

    def _lane_reads(self, seq, params):
        """Each element datapath's operands: slot x of the group, from both read ports."""
        B, U, act = params.slots, params.element_units, self.act
        if U == B:
            return act.rdat[0], act.rdat[1]
        return ([as_signed(self, Array(act.rdat[0][x::U])[seq.group], 32) for x in range(U)],
                [as_signed(self, Array(act.rdat[1][x::U])[seq.group], 32) for x in range(U)])

    def _connect_units(self, seq, u, params):
        """Each unit's operands, from the instruction and the scratchpads."""
        B, U, XR, WS = params.slots, params.element_units, params.act_read_ports, params.write_stats
        rd, act, n = self.rd, self.act, seq.n
        lane_rdat, lane_rdat2 = self._lane_reads(seq, params)
        self.ard = ard = as_signed(self, Array(act.rdat[0])[seq.slot], 32)     # the current slot's element
        unp, emb, rms, mv, rope, silu, st, am = u.unpack, u.embed, u.rmsnorm, u.matvec, u.rope, u.silu, u.store, u.argmax
        self.comb += [
            unp.rd_valid.eq(rd.valid), unp.rd_data.eq(rd.data), unp.n.eq(n),
            emb.dst.eq(seq.dst), emb.n.eq(n), emb.abort.eq(seq.abort), emb.granted.eq(seq.granted),
            emb.token.eq(seq.cur_tok), emb.base.eq(seq.waddr), emb.rd_valid.eq(rd.valid), emb.rd_data.eq(rd.data),
            rms.src.eq(seq.src), rms.dst.eq(seq.dst), rms.n.eq(n), rms.abort.eq(seq.abort), rms.granted.eq(seq.granted),
            *[rms.x[x].eq(lane_rdat[x]) for x in range(U)], *unp.feed(rms),
            mv.src.eq(seq.src), mv.dst.eq(seq.dst), mv.n.eq(n), mv.m.eq(seq.m), mv.accumulate.eq(seq.flags[1]),
            mv.nslots.eq(seq.nslots), mv.abort.eq(seq.abort), mv.granted.eq(seq.granted), mv.queued.eq(seq.pf_pending),
            *[mv.rdat[p][s].eq(act.rdat[p][s]) for p in range(XR) for s in range(B)],
            *self._weights_to(mv),
            rope.src.eq(seq.src), rope.dst.eq(seq.dst), rope.n.eq(n), rope.m.eq(seq.m), rope.abort.eq(seq.abort),
            *[rope.x[x].eq(lane_rdat[x]) for x in range(U)],
            rope.load_lane.eq(seq.lane), rope.load_adr.eq(seq.i), rope.load_data.eq(rd.data),
            silu.src.eq(seq.src), silu.src2.eq(seq.src2), silu.dst.eq(seq.dst), silu.n.eq(n), silu.abort.eq(seq.abort),
            *[silu.a[x].eq(lane_rdat[x]) for x in range(U)], *[silu.b[x].eq(lane_rdat2[x]) for x in range(U)],
            st.src.eq(seq.src), st.n.eq(n), st.abort.eq(seq.abort), st.granted.eq(seq.granted),
            st.x.eq(ard), st.wr_ready.eq(self.wr.ready),
            am.src.eq(seq.src), am.n.eq(n), am.abort.eq(seq.abort), am.base.eq(seq.m), am.acc.eq(seq.flags[1]),
            am.clear.eq(seq.clear),
            *[am.rdat[p][x].eq(act.rdat[p][x]) for p in range(XR) for x in range(B)],
        ]
        if WS:
            ws = self.wstats
            use_sumsq = ws.sumsq if U == B else \
                [as_unsigned(self, Array(ws.sumsq[x::U])[seq.group], 64) for x in range(U)]
            self.comb += [rms.use.eq(ws.use), *[rms.use_sumsq[x].eq(use_sumsq[x]) for x in range(U)],
                          mv.use.eq(ws.use), *[mv.use_amax[s].eq(ws.amax[s]) for s in range(B)],
                          am.use.eq(ws.use_max), *[am.use_best[s].eq(ws.best[s]) for s in range(B)],
                          *[am.use_i[s].eq(ws.best_i[s]) for s in range(B)]]
        # What an all-slot write (act_we_all) writes to each slot (of the group, for the units).
        self.comb += self.unit_pass.eq(rms.pass2 | silu.running | rope.running)
        for x in range(B):
            self.comb += self.all_wdat[x].eq(Mux(rms.pass2, rms.out[x % U], Mux(silu.running, silu.out[x % U],
                                             Mux(rope.running, rope.out[x % U], mv.out[x]))))
        self._write_mux(seq, u, params)
        self._connect_attention(seq, u, params)

    def _connect_attention(self, seq, u, params):
        """KVWRITE, ATTN and the int16 packer they share (gateware/core/pack16.py; ATTN's query
        load uses it too)."""
        B, XR = params.slots, params.act_read_ports
        act, wr, pk, kvw, attn = self.act, self.wr, self.pack16, u.kvwrite, u.attention
        if XR == 2:
            self.comb += [
                pk.read.eq(kvw.pk_read | attn.pk_read),
                pk.idx.eq(Mux(kvw.pk_read, kvw.pk_idx, attn.pk_idx)), pk.half.eq(attn.pk_half),
                attn.pk_beat_done.eq(pk.beat_done), attn.pk_beat_idx.eq(pk.beat_idx),
                attn.pk_beat_half.eq(pk.beat_half),
                pk.x.eq(self.ard), *[a.eq(b) for a, b in zip(kvw.pk_v, pk.v)], kvw.pk_word.eq(pk.word),
            ]
        elif params.kv_format == "int8":
            # Kvwrite8 quantises on its own; the packer packs ATTN's queries only.
            self.comb += [
                pk.read.eq(attn.pk_query), pk.query.eq(attn.pk_query), pk.hi.eq(attn.pk_hi),
                pk.tag.eq(attn.pk_qaddr), pk.slot.eq(seq.slot),
                attn.pk_beat_valid.eq(pk.beat_valid), attn.pk_beat_query.eq(pk.beat_query),
                attn.pk_beat_tag.eq(pk.beat_tag),
                *[pk.rdat[e][s].eq(act.rdat[e][s]) for e in range(4) for s in range(B)],
                *[kvw.x[e].eq(Array(act.rdat[e])[seq.slot]) for e in range(4)],
                kvw.clear.eq(seq.idle), kvw.last.eq(seq.slot == seq.nslots - 1),
                kvw.pos.eq(seq.attn_pos), wr.skip.eq(Mux(kvw.wr_valid, kvw.wr_skip, 0)),
            ]
        else:
            self.comb += [
                pk.read.eq(kvw.pk_read | attn.pk_query), pk.query.eq(attn.pk_query),
                pk.hi.eq(Mux(attn.pk_query, attn.pk_hi, kvw.pk_hi)),
                pk.tag.eq(Mux(attn.pk_query, attn.pk_qaddr, kvw.pk_tag)), pk.slot.eq(seq.slot),
                attn.pk_beat_valid.eq(pk.beat_valid), attn.pk_beat_query.eq(pk.beat_query),
                attn.pk_beat_tag.eq(pk.beat_tag),
                *[pk.rdat[e][s].eq(act.rdat[e][s]) for e in range(4) for s in range(B)],
                kvw.beat_valid.eq(pk.beat_valid & ~pk.beat_query), kvw.beat_addr.eq(pk.beat_tag),
                kvw.beat_data.eq(pk.beat), kvw.pk_idle.eq(pk.idle),
                kvw.clear.eq(seq.idle), kvw.last.eq(seq.slot == seq.nslots - 1),
            ]
        self.comb += [attn.pk_idle.eq(pk.idle), attn.pk_beat.eq(pk.beat)]
        self.comb += [
            kvw.src.eq(seq.src), kvw.n.eq(seq.n), kvw.m.eq(seq.m), kvw.stride.eq(seq.R["KVHEAD"]),
            kvw.base.eq(seq.kvaddr if params.kv_format == "int8" else seq.kvw_addr), kvw.abort.eq(seq.abort), kvw.granted.eq(seq.granted), kvw.wr_ready.eq(wr.ready),
            # The unit's beats own the write stream while it offers them (the four-port FIFO's
            # also after the unit is done: KVWRITE's last slot ends only once it is empty, and
            # DRAIN waits for it, so no other writer is active then).
            If(kvw.wr_valid,
                wr.valid.eq(1), wr.data.eq(kvw.wr_data),
                *([wr.address.eq(kvw.wr_address)] if kvw.wr_address is not None else [])
            ),
        ]
        # ATTN runs a slot's heads, asks for its bursts (BURST checks them) and queues the reads
        # it makes ahead behind the next MATVEC's weights (the sequencer's pf_push first).
        slot, R = seq.slot, seq.R
        self.comb += [
            attn.src.eq(seq.src), attn.dst.eq(seq.dst), attn.n.eq(seq.n), attn.m.eq(seq.m), attn.src2.eq(seq.src2),
            attn.cur_pos.eq(seq.attn_pos), attn.pos_off.eq(seq.pos_off), attn.kvaddr.eq(seq.kvaddr),
            attn.slot.eq(slot), attn.last_slot.eq(slot == seq.nslots - 1),
            attn.next_pos.eq(seq.pos[slot + 1]), attn.next_kvb.eq(seq.kvb[slot + 1]),
            attn.kv_off.eq(seq.kv_off),
            attn.seqlen.eq(R["SEQLEN"]), attn.kvhead.eq(R["KVHEAD"]), attn.voff.eq(R["VOFF"]),
            attn.attscale.eq(R["ATTSCALE"]),
            attn.abort.eq(seq.abort), attn.clear.eq(seq.idle), attn.granted.eq(seq.granted),
            attn.rd_valid.eq(self.rd.valid), attn.rd_data.eq(self.rd.data), attn.rdq_valid.eq(self.bursts.queued),
            # Its query loads and its drain use the scratchpads beside its states (the drain
            # while the next head starts; nothing else reads or writes them then).
            If(attn.reading, *[act.radr[p].eq(attn.radr[p]) for p in range(XR)]),
            If(attn.od_we, self.act_wadr.eq(attn.od_wadr), self.act_wdat.eq(attn.od_wdat), self.act_we.eq(1)),
        ]

    def _lend(self, seq, u, params):
        """Each unit drives the scratchpads and the streams while the sequencer's ``own`` signal
        for it is set (one at a time); the sequencer reads the stream in its own states. (After
        the connections above: a lender's drive takes precedence over ATTN's drain and
        KVWRITE's beats, as the sequencer never lends while they run.)"""
        XR, own, act, rd, wr = params.act_read_ports, seq.own, self.act, self.rd, self.wr
        unp, emb, rms, mv, rope, kvw, attn, silu, st, am = (u.unpack, u.embed, u.rmsnorm, u.matvec, u.rope,
            u.kvwrite, u.attention, u.silu, u.store, u.argmax)
        act_radr, act_radr2 = act.radr[:2]
        unp_rd = [rd.ready.eq(unp.rd_ready), self.rd_wait.eq(unp.rd_wait)]
        self.comb += [
            If(seq.rd_ready, rd.ready.eq(1)), If(seq.rd_wait, self.rd_wait.eq(1)),
            If(own.embed,
                self.act_wadr.eq(emb.wadr), self.act_wdat.eq(emb.wdat), self.act_we.eq(emb.we),
                rd.ready.eq(emb.rd_ready), self.rd_wait.eq(emb.rd_wait)),
            If(own.rmsnorm,
                act_radr.eq(rms.radr), self.act_wadr.eq(rms.wadr), self.act_we_all.eq(rms.we),
                *unp.lend_to(rms), *unp_rd),
            If(own.matvec,
                *[act.radr[p].eq(mv.radr[p]) for p in range(XR)],
                self.act_wadr.eq(mv.wadr), self.act_we_all.eq(mv.we),
                *self._weights_from(mv)),
            If(own.rope, act_radr.eq(rope.radr), self.act_wadr.eq(rope.wadr), self.act_we_all.eq(rope.we)),
            If(own.kvwrite, *[act.radr[p].eq(kvw.radr[p]) for p in range(len(kvw.radr))]),
            If(own.attention, rd.ready.eq(attn.rd_ready), self.rd_wait.eq(attn.rd_wait)),
            If(own.silu,
                act_radr.eq(silu.radr), act_radr2.eq(silu.radr2), self.act_wadr.eq(silu.wadr),
                self.act_we_all.eq(silu.we)),
            If(own.store, act_radr.eq(st.radr), wr.valid.eq(st.wr_valid), wr.data.eq(st.wr_data)),
            If(own.load,
                unp.run.eq(1), unp.wide.eq(1), *unp_rd,
                self.act_wadr.eq(seq.dst + unp.i), self.act_wdat.eq(saturate(self, unp.element, 32)),
                self.act_we.eq(unp.issue)),
            If(own.argmax, *[act.radr[p].eq(am.radr[p]) for p in range(XR)]),
            If(own.argmax_write,
                wr.valid.eq(1), wr.data.eq(Cat(Array(am.best_i)[seq.slot], Array(am.best)[seq.slot]))),
        ]

    # Helpers ----------------------------------------------------------------------------------------

    def _write_ports(self, write_port, params, bank_shift):
        """The write ports as a list (``self.write_ports``), checked against Params.write_ports;
        returns the first."""
        self.write_ports = list(write_port) if isinstance(write_port, (list, tuple)) else [write_port]
        if len(self.write_ports) != params.write_ports:
            raise ValueError(f"Accelerator: Params.write_ports is {params.write_ports}, "
                             f"got {len(self.write_ports)} ports")
        if params.write_ports > 1 and bank_shift is None:
            raise ValueError("Accelerator: several write ports need bank_shift")
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

    def _weights_to(self, mv):
        """MATVEC's view of the stream its weights come through (the next two beats with
        Params.mac_beats = 2)."""
        src = self.wrd or SimpleNamespace(valid=self.rd.valid, data=self.rd.data,
                                          valid2=self.rd2 and self.rd2.valid, data2=self.rd2 and self.rd2.data)
        return [mv.rd_valid.eq(src.valid), mv.rd_data.eq(src.data),
                *([mv.rd_valid2.eq(src.valid2), mv.rd_data2.eq(src.data2)] if mv.two else [])]

    def _weights_from(self, mv):
        """What MATVEC drives while it runs: the weight stream's handshakes (or the read stream's)."""
        if self.wrd:
            return [self.wrd.ready.eq(mv.rd_ready), self.wrd_wait.eq(mv.rd_wait),
                    *([self.wrd.ready2.eq(mv.rd_ready2)] if mv.two else [])]
        return [self.rd.ready.eq(mv.rd_ready), self.rd_wait.eq(mv.rd_wait),
                *([self.rd2.ready.eq(mv.rd_ready2)] if mv.two else [])]

    def _weights_drained(self):
        """The weight stream has nothing requested or held (FLUSH's condition)."""
        wb = self.wbursts
        return (wb.remaining == 0) & (wb.outstanding == 0) & ~self.wrd.valid & ~wb.queued

    def _drained(self, u):
        """DRAIN's condition: every accepted write sent, ATTN's outputs summed and written, and
        KVWRITE's FIFO (four scratchpad ports) empty."""
        done = (self.wr_pending == 0) & ~u.attention.od_active & ~u.attention.v_busy
        if self.wrd:
            done = done & self._weights_drained()
        if self.params.act_read_ports == 4:
            done = done & u.kvwrite.idle
        return done

    def do_finalize(self):
        fsm = self.sequencer.fsm
        self.comb += [self.fsm_state.eq(fsm.state), self.attn_state.eq(self.attention.fsm.state)]
        # One-hot on the FPGA (timing): each state's decode is one flip-flop instead of a
        # 7-bit compare fanned out over the chip. Yosys re-encodes a state register only when
        # asked, since Migen gives every register an initial value.
        fsm.state.attr.add(("fsm_encoding", "one-hot"))
