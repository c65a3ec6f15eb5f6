"""The core's DRAM read stream over two LiteDRAM read ports, one per bank parity, and its write
stream over two or more write ports.

Why two ports: LiteDRAM's crossbar locks a port to a bank while that bank machine still holds
any of the port's commands (``litedram/core/crossbar.py``, ``bank.lock``). A single sequential
stream therefore cannot send a command to the next bank until the last one's queue has emptied,
and each bank change costs that bank's precharge, activate and tRCD with no reads in flight:
on the simulated DDR3 (128 beats per bank run) one port sustained ~89 % of the port's rate.
Here beats whose bank number is even go through port 0 and odd ones through port 1, so the next
bank's commands queue (and its row opens) while the current bank is still being read, and the
multiplexer interleaves the two banks' reads.

Commands are accepted in address order; a one-bit FIFO records which port each one went to,
so the data leaves in the same order whichever port's data returns first.
"""

from functools import reduce
from operator import xor

from migen import *

from litex.gen import LiteXModule
from litex.soc.interconnect import stream

from litedram.frontend.dma import LiteDRAMDMAReader, LiteDRAMDMAWriter

# Bank-number bits of a beat address from ``bank_shift`` up: DDR3 has 8 banks. (On a 4-bank
# SDRAM the third bit is the row's LSB, so banks are told apart by two bits of the three.)
BANK_BITS = 3


def bank_of(address, bank_shift):
    """The bank number of a beat address (its BANK_BITS bits from ``bank_shift``)."""
    return address[bank_shift:bank_shift + BANK_BITS]


def _port_shape(ports, who, counts=(1, 2)):
    """The (address width, data width) of ``counts`` ports of the same shape."""
    if len(ports) not in counts:
        raise ValueError(f"{who}: {' or '.join(map(str, counts))} ports")
    shape = ports[0].address_width, ports[0].data_width
    if any((p.address_width, p.data_width) != shape for p in ports):
        raise ValueError(f"{who}: the ports must have the same shape")
    return shape


class BankInterleavedReader(LiteXModule):
    """``sink`` takes beat addresses (``LiteDRAMDMAReader``'s sink); ``source`` gives their data
    in the order the addresses were accepted. ``ports``: one or two native read ports on the
    same memory; ``bank_shift``: the port-address bit that holds the bank number's LSB (with
    one port it is unused). ``fifo_depth``: read data each port may hold in flight."""

    def __init__(self, ports, bank_shift, fifo_depth=64):
        aw, dw = _port_shape(ports, "BankInterleavedReader")
        self.sink   = sink   = stream.Endpoint([("address", aw)])
        self.source = source = stream.Endpoint([("data", dw)])

        # # #

        # Deep FIFOs read synchronously (block RAM on an FPGA) at one cycle's latency.
        self.readers = readers = [LiteDRAMDMAReader(port, fifo_depth=fifo_depth, fifo_buffered=fifo_depth > 64)
                                  for port in ports]
        for i, reader in enumerate(readers):
            self.add_module(f"reader{i}", reader)
        if len(ports) == 1:
            self.comb += [sink.connect(readers[0].sink), readers[0].source.connect(source)]
            return

        # Each port holds at most fifo_depth beats in flight, so the order FIFO never fills first.
        self.order = order = stream.SyncFIFO([("port", 1)], 2 * fifo_depth)
        sel, port_ready = Signal(), Signal()
        self.comb += [
            sel.eq(sink.address[bank_shift]),
            port_ready.eq(Array(r.sink.ready for r in readers)[sel]),
            order.sink.port.eq(sel),
            order.sink.valid.eq(sink.valid & port_ready),
            sink.ready.eq(port_ready & order.sink.ready),
        ]
        for i, reader in enumerate(readers):
            self.comb += [
                reader.sink.valid.eq(sink.valid & (sel == i) & order.sink.ready),
                reader.sink.address.eq(sink.address),
            ]

        # Data in command order.
        head = order.source.port
        self.comb += [
            source.valid.eq(order.source.valid & Array(r.source.valid for r in readers)[head]),
            source.data.eq(Array(r.source.data for r in readers)[head]),
            order.source.ready.eq(source.valid & source.ready),
        ]
        for i, reader in enumerate(readers):
            self.comb += reader.source.ready.eq(order.source.valid & (head == i) & source.ready)


class SkipWriter(LiteXModule):
    """A native write port's writer (LiteDRAMDMAWriter's sink and behaviour: the command goes
    out as its data enters a FIFO) whose beats carry ``skip``: the bytes not to write (the
    port's byte enables are its complement). KVWRITE's int8 rows and scale words fill parts of
    beats; every other writer leaves skip at 0."""

    def __init__(self, port, fifo_depth=16):
        aw, dw = port.address_width, port.data_width
        self.sink = sink = stream.Endpoint([("address", aw), ("data", dw), ("skip", dw // 8)])

        # # #

        self.fifo = fifo = stream.SyncFIFO([("data", dw), ("skip", dw // 8)], fifo_depth)
        cmd, wdata = port.cmd, port.wdata
        self.comb += [
            cmd.we.eq(1), cmd.addr.eq(sink.address),
            cmd.valid.eq(fifo.sink.ready & sink.valid),
            sink.ready.eq(fifo.sink.ready & cmd.ready),
            fifo.sink.valid.eq(sink.valid & cmd.ready),
            fifo.sink.data.eq(sink.data), fifo.sink.skip.eq(sink.skip),
            wdata.valid.eq(fifo.source.valid), fifo.source.ready.eq(wdata.ready),
            wdata.data.eq(fifo.source.data), wdata.we.eq(~fifo.source.skip),
        ]


class BankInterleavedWriter(LiteXModule):
    """``sink`` takes (beat address, data) (``LiteDRAMDMAWriter``'s sink). Of its 2, 4 or 8
    write ports, each beat goes to the port numbered by its bank number's three low bits (from
    ``bank_shift``) folded by XOR to as many bits as the ports need (8 ports: the bank number,
    a port per bank), so writes to that many banks are in flight at once: the crossbar holds a
    port while its bank still has the port's command, and KVWRITE's one-beat heads each open a
    row. (Two ports by bank parity alone would put heads four banks apart, as stories260K's
    packed ones are, all on one port.) A beat address always maps to the same port, so two
    writes to one address land in order; writes to different addresses have no order, as with
    any two ports. Each port has a queue of ``queue_depth`` beats in front of it, so a write to a
    bank another port holds (a weight stream's run through its row) waits
    there while the writes behind it to other banks go on. ``wdata_beats``: how many beats the
    ports hand to the controller this cycle. With ``skip``, beats carry SkipWriter's byte mask.
    """

    def __init__(self, ports, bank_shift, fifo_depth=16, queue_depth=16, skip=False):
        aw, dw = _port_shape(ports, "BankInterleavedWriter", (2, 4, 8))
        fields = [("address", aw), ("data", dw)] + ([("skip", dw // 8)] if skip else [])
        self.sink = sink = stream.Endpoint(fields)
        self.wdata_beats = Signal(bits_for(len(ports)))

        # # #

        k = log2_int(len(ports))          # port-number bits: bank bit j goes into bit j % k

        self.writers = writers = [(SkipWriter if skip else LiteDRAMDMAWriter)(port, fifo_depth=fifo_depth)
                                  for port in ports]
        for i, writer in enumerate(writers):
            self.add_module(f"writer{i}", writer)
        self.comb += self.wdata_beats.eq(sum(port.wdata.valid & port.wdata.ready for port in ports))
        sel = Signal(k)
        self.comb += sel.eq(Cat(*[reduce(xor, [sink.address[bank_shift + j] for j in range(i, BANK_BITS, k)]) for i in range(k)]))
        queues = [stream.SyncFIFO(fields, queue_depth, buffered=True) for _ in writers]
        for i, (q, writer) in enumerate(zip(queues, writers)):
            self.add_module(f"queue{i}", q)
            self.comb += [
                q.sink.valid.eq(sink.valid & (sel == i)),
                q.sink.address.eq(sink.address),
                q.sink.data.eq(sink.data),
                *([q.sink.skip.eq(sink.skip)] if skip else []),
                q.source.connect(writer.sink),
            ]
        self.comb += sink.ready.eq(Array(q.sink.ready for q in queues)[sel])


class _PortWindow(Module):
    """One native read port whose returned beats are offered two at a time: ``valid[0]``/
    ``data[0]`` is the oldest beat not yet taken, ``valid[1]``/``data[1]`` the one after it;
    ``take`` (0..2, never more than are valid) says how many leave this cycle. The beats go
    alternately into two FIFOs of ``depth // 2``, so two can leave in one cycle; a read is sent
    only while fewer than ``depth`` beats are in flight or waiting, so the FIFOs never refuse
    the port's data."""

    def __init__(self, port, depth):
        dw = port.data_width
        self.sink = sink = stream.Endpoint([("address", port.address_width)])
        self.valid = [Signal(), Signal()]
        self.data = [Signal(dw), Signal(dw)]
        self.take = Signal(2)
        self.hold = Signal()              # send no read this cycle

        # # #

        level = Signal(max=depth + 1)     # reads sent and not yet taken
        room = Signal()
        cmd, rdata = port.cmd, port.rdata
        self.comb += [
            room.eq((level < depth) & ~self.hold),
            cmd.we.eq(0), cmd.addr.eq(sink.address), cmd.last.eq(sink.last),
            cmd.valid.eq(sink.valid & room), sink.ready.eq(cmd.ready & room),
        ]
        self.sync += level.eq(level + (cmd.valid & cmd.ready) - self.take)
        fifos = [stream.SyncFIFO([("data", dw)], depth // 2, buffered=True) for _ in range(2)]
        self.submodules += fifos
        wsel, rsel = Signal(), Signal()   # the FIFO the next beat goes into / leaves from
        self.comb += rdata.ready.eq(1)
        for i, f in enumerate(fifos):
            self.comb += [f.sink.valid.eq(rdata.valid & (wsel == i)), f.sink.data.eq(rdata.data)]
        self.sync += If(rdata.valid, wsel.eq(~wsel))
        head, after = fifos
        self.comb += [
            self.valid[0].eq(Mux(rsel, after.source.valid, head.source.valid)),
            self.data[0].eq(Mux(rsel, after.source.data, head.source.data)),
            self.valid[1].eq(Mux(rsel, head.source.valid, after.source.valid)),
            self.data[1].eq(Mux(rsel, head.source.data, after.source.data)),
            head.source.ready.eq(Mux(rsel, self.take == 2, self.take != 0)),
            after.source.ready.eq(Mux(rsel, self.take != 0, self.take == 2)),
        ]
        self.sync += If(self.take[0], rsel.eq(~rsel))


class WindowReader(LiteXModule):
    """``BankInterleavedReader`` whose data side offers the next two beats at once, for a
    consumer that can take two a cycle (MATVEC with Params.mac_beats = 2: it catches up with
    weights DRAM delivered while other instructions ran). ``sink`` takes beat addresses;
    ``valid``/``data`` is the next beat in address-acceptance order and ``valid2``/``data2`` the
    one after it; ``ready`` takes the first, ``ready2`` with it the second as well; ``taken``
    (0..2) is how many left this cycle. Each port's beats alternate between two FIFOs, and the
    record of which port each read went to alternates between two FIFOs too, so the two oldest
    beats can always be read at once, from one port or from both.

    ``avoid``: an optional bit per DRAM bank (``bank_shift`` gives the bank number's place in a
    beat address); no read goes out to a bank whose bit is set. Another stream sets it for a
    bank it waits for: the crossbar gives a bank to another port only once the holder's
    commands there have drained, which a stream that never pauses does not let happen."""

    def __init__(self, ports, bank_shift, fifo_depth=64, avoid=None):
        aw, dw = _port_shape(ports, "WindowReader")
        self.sink = sink = stream.Endpoint([("address", aw)])
        self.valid, self.data, self.valid2, self.data2 = Signal(), Signal(dw), Signal(), Signal(dw)
        self.ready, self.ready2 = Signal(), Signal()
        self.taken = Signal(2)

        # # #

        self.windows = windows = [_PortWindow(port, fifo_depth) for port in ports]
        for i, w in enumerate(windows):
            self.add_module(f"window{i}", w)
        if avoid is not None:
            self.comb += [w.hold.eq(Array(avoid)[bank_of(sink.address, bank_shift)]) for w in windows]
        self.comb += self.taken.eq(Mux(self.valid & self.ready, Mux(self.valid2 & self.ready2, 2, 1), 0))
        if len(ports) == 1:
            w = windows[0]
            self.comb += [
                sink.connect(w.sink),
                self.valid.eq(w.valid[0]), self.data.eq(w.data[0]),
                self.valid2.eq(w.valid[1]), self.data2.eq(w.data[1]), w.take.eq(self.taken),
            ]
            return

        # Which port each read went to, alternately into two FIFOs (each port holds at most
        # fifo_depth reads, so neither fills first).
        orders = [stream.SyncFIFO([("port", 1)], fifo_depth) for _ in range(2)]
        self.submodules += orders
        sel, port_ready, order_ready = Signal(), Signal(), Signal()
        owsel, orsel = Signal(), Signal()
        self.comb += [
            sel.eq(sink.address[bank_shift]),
            port_ready.eq(Mux(sel, windows[1].sink.ready, windows[0].sink.ready)),
            order_ready.eq(Mux(owsel, orders[1].sink.ready, orders[0].sink.ready)),
            sink.ready.eq(port_ready & order_ready),
        ]
        for i, w in enumerate(windows):
            self.comb += [w.sink.valid.eq(sink.valid & (sel == i) & order_ready), w.sink.address.eq(sink.address)]
        for j, o in enumerate(orders):
            self.comb += [o.sink.valid.eq(sink.valid & port_ready & (owsel == j)), o.sink.port.eq(sel)]
        self.sync += If(sink.valid & sink.ready, owsel.eq(~owsel))

        # The two oldest beats: their ports from the order FIFOs' heads, their data from those
        # ports' windows (the second port's first beat, or the same port's second).
        first, second = orders
        p0, p1 = Signal(), Signal()
        o0_valid, o1_valid = Signal(), Signal()
        self.comb += [
            p0.eq(Mux(orsel, second.source.port, first.source.port)),
            p1.eq(Mux(orsel, first.source.port, second.source.port)),
            o0_valid.eq(Mux(orsel, second.source.valid, first.source.valid)),
            o1_valid.eq(Mux(orsel, first.source.valid, second.source.valid)),
        ]
        w0, w1 = windows
        same = p0 == p1

        def pick(port, k, what):
            return Mux(port, getattr(w1, what)[k], getattr(w0, what)[k])
        self.comb += [
            self.valid.eq(o0_valid & pick(p0, 0, "valid")),
            self.data.eq(pick(p0, 0, "data")),
            self.valid2.eq(self.valid & o1_valid & Mux(same, pick(p0, 1, "valid"), pick(p1, 0, "valid"))),
            self.data2.eq(Mux(same, pick(p0, 1, "data"), pick(p1, 0, "data"))),
            first.source.ready.eq(Mux(orsel, self.taken == 2, self.taken != 0)),
            second.source.ready.eq(Mux(orsel, self.taken != 0, self.taken == 2)),
        ]
        for i, w in enumerate(windows):
            self.comb += w.take.eq(((self.taken != 0) & (p0 == i)) + ((self.taken == 2) & (p1 == i)))
        self.sync += If(self.taken[0], orsel.eq(~orsel))
