"""KVWRITE: one slot's K or V vector, n heads of m elements from act[src], into the KV cache
as int16 (spec.numerics.to_kv), each head's row at ``base`` + head * ``stride`` (its KV head's
rows at the slot's position). The sequencer walks the slots: it checks each slot's position,
lets the slot's row address settle, and starts the unit; the unit asks the sequencer for each
head's write burst (``req``, ``req_addr``; the sequencer's BURST checks it against the DRAM
window and says ``granted``), reads the head's elements through the int16 packer
(gateware/core/pack16.py, lent to it) and hands the beats to the write stream.

Two variants behind one interface, as the scratchpads have two or four read ports:
``Kvwrite`` packs one element a cycle and sends each beat itself (12 cycles a beat);
``Kvwrite4`` packs four a cycle into a FIFO that sends the beats while the next are read.
"""

from migen import *

from litex.soc.interconnect import stream

from gateware.core.pipeline import stop_on_abort

ADDR_W = 50
FIFO_BEATS = 4


class _Interface:
    """The interface both variants share. Start/done: ``start`` begins the slot (``src``,
    ``n``, ``m``, ``stride`` hold still until done; ``base``, the slot's first row, is read the
    cycle after start), ``done`` is high in the last cycle, ``abort`` stops the unit at once.
    Bursts: ``req`` with ``req_addr`` and ``req_bytes`` (m << 1, a write), answered by ``granted``.
    Scratchpad: ``radr[p]``. Packer: ``pk_read`` and ``pk_idx`` (the element index in the
    head). Write stream: ``wr_valid``, ``wr_data``, ``wr_ready`` (and ``wr_address`` where the
    unit addresses its beats itself, else None)."""

    def _interface(self, ports):
        self.start, self.abort, self.done = Signal(), Signal(), Signal()
        self.owed = Signal()              # (a slot's bursts are all granted by its done)
        self.src, self.n, self.m = Signal(16), Signal(16), Signal(16)
        self.base, self.stride = Signal(ADDR_W), Signal(32)
        self.req, self.req_addr, self.granted = Signal(), Signal(ADDR_W), Signal()
        self.req_bytes = Signal(16)
        self.comb += self.req_bytes.eq(self.m << 1)
        self.radr = [Signal(17, name=f"kvw_radr{p}") for p in range(ports)]
        self.pk_read, self.pk_idx = Signal(), Signal(8)
        self.wr_valid, self.wr_data, self.wr_ready = Signal(), Signal(128), Signal()
        self.wr_address = None


class Kvwrite(Module, _Interface):
    """One element a cycle (two scratchpad ports): a beat's eight reads, a wait for the packer
    to finish it (``pk_v``: its stage valids; ``pk_word``: the beat), then the beat to the
    write stream."""

    def __init__(self):
        self._interface(1)
        self.pk_v = [Signal() for _ in range(3)]
        self.pk_word = Signal(128)

        # # #

        ii = Signal(17)                   # the next element's scratchpad address
        j = Signal(8)                     # its index in the head
        head = Signal(16)
        row = Signal(ADDR_W)              # the head's row
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        self.comb += self.pk_idx.eq(j)
        fsm.act("IDLE",
            If(self.start, NextValue(ii, self.src), NextValue(j, 0), NextValue(head, 0), NextState("GO")))
        fsm.act("GO",
            self.req.eq(1), self.req_addr.eq(self.base), NextValue(row, self.base), NextState("WAIT"))
        fsm.act("WAIT", If(self.granted, NextState("RD")))
        fsm.act("RD",
            self.radr[0].eq(ii), self.pk_read.eq(~self.abort),
            NextValue(ii, ii + 1), NextValue(j, j + 1),
            If(j[0:3] == 7, NextState("DRAIN"))
        )
        # The beat's last element is packed when it has left the first two stages.
        fsm.act("DRAIN", If(~self.pk_v[0] & ~self.pk_v[1], NextState("WR")))
        fsm.act("WR",
            self.wr_valid.eq(~self.abort), self.wr_data.eq(self.pk_word),
            If(self.wr_ready,
                If(j == self.m,
                    NextValue(head, head + 1), NextValue(j, 0),
                    If(head == self.n - 1,
                        self.done.eq(1), NextState("IDLE")
                    ).Else(
                        self.req.eq(1), self.req_addr.eq(row + self.stride),
                        NextValue(row, row + self.stride), NextState("WAIT")
                    )
                ).Else(
                    NextState("RD")
                )
            )
        )
        stop_on_abort(fsm, self.abort)


class Kvwrite4(Module, _Interface):
    """Four elements a cycle (four scratchpad ports), two cycles a beat. The beats go out
    through a FIFO while the next ones are read: a beat's reads start only when a FIFO entry
    is free for it (credits: entries neither full nor reserved; ``clear`` restores them, at
    each run's start, since a fault can leave a beat's first half reserved). The FIFO owns the
    write stream while it holds beats; the slot's last head ends only once it is empty
    (``last``: this is the last slot), and ``idle`` says nothing is left to write. Packer side:
    ``pk_hi`` (the reads are a beat's second half), ``pk_tag`` (the beat's DRAM address);
    its complete beats come back in ``beat_valid``, ``beat_data``, ``beat_addr`` and
    ``pk_idle`` says it is empty."""

    def __init__(self, addr_width):
        self._interface(4)
        self.clear, self.last, self.idle = Signal(), Signal(), Signal()
        self.pk_hi, self.pk_tag = Signal(), Signal(addr_width)
        self.beat_valid, self.beat_data, self.beat_addr = Signal(), Signal(128), Signal(addr_width)
        self.pk_idle = Signal()
        self.wr_address = Signal(addr_width)

        # # #

        self.submodules.fifo = fifo = stream.SyncFIFO([("address", addr_width), ("data", 128)], FIFO_BEATS)
        credit = Signal(max=FIFO_BEATS + 1, reset=FIFO_BEATS)
        ii = Signal(17)
        j = Signal(8)
        head = Signal(16)
        row = Signal(ADDR_W)              # the head's row (bytes)
        row_beat = Signal(addr_width)     # and its first beat
        # A head may take three cycles: the next head's row is this one's plus the stride.
        next_row = row + self.stride
        go, pop = Signal(), Signal()
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        self.comb += [
            go.eq(fsm.ongoing("RD") & (j[2] | (credit != 0)) & ~self.abort),
            self.pk_read.eq(go), self.pk_idx.eq(j), self.pk_hi.eq(j[2]), self.pk_tag.eq(row_beat + (j >> 3)),
            fifo.sink.valid.eq(self.beat_valid), fifo.sink.address.eq(self.beat_addr),
            fifo.sink.data.eq(self.beat_data),
            pop.eq(fifo.source.valid & fifo.source.ready),
            self.idle.eq(~fifo.source.valid & self.pk_idle),
            self.wr_valid.eq(fifo.source.valid), self.wr_data.eq(fifo.source.data),
            self.wr_address.eq(fifo.source.address), fifo.source.ready.eq(self.wr_ready),
        ]
        self.sync += [
            credit.eq(credit - (go & ~j[2]) + pop),
            If(self.clear, credit.eq(FIFO_BEATS)),
        ]
        fsm.act("IDLE",
            If(self.start, NextValue(ii, self.src), NextValue(j, 0), NextValue(head, 0), NextState("GO")))
        fsm.act("GO",
            self.req.eq(1), self.req_addr.eq(self.base),
            NextValue(row, self.base), NextValue(row_beat, self.base >> 4), NextState("WAIT"))
        fsm.act("WAIT", If(self.granted, NextState("RD")))
        fsm.act("RD",
            *[adr.eq(ii + e) for e, adr in enumerate(self.radr)],
            If(go,
                NextValue(ii, ii + 4), NextValue(j, j + 4),
                If(j[2] & (j + 4 == self.m),
                    NextValue(head, head + 1), NextValue(j, 0),
                    If(head == self.n - 1,
                        If(self.last, NextState("END")).Else(self.done.eq(1), NextState("IDLE"))
                    ).Else(
                        NextValue(row, next_row), NextValue(row_beat, next_row >> 4),
                        self.req.eq(1), self.req_addr.eq(next_row), NextState("WAIT")
                    )
                )
            )
        )
        fsm.act("END", If(self.idle, self.done.eq(1), NextState("IDLE")))
        stop_on_abort(fsm, self.abort)
