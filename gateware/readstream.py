"""The core's DRAM read stream over two LiteDRAM read ports, one per bank parity, and its write
stream over two write ports.

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


def _port_shape(ports, who):
    """The (address width, data width) of one or two ports of the same shape."""
    if not 1 <= len(ports) <= 2:
        raise ValueError(f"{who}: one or two ports")
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


class BankInterleavedWriter(LiteXModule):
    """``sink`` takes (beat address, data) (``LiteDRAMDMAWriter``'s sink). Of its two write
    ports, each beat goes to the port given by the XOR of its bank number's three low bits (from
    ``bank_shift``), so writes to two banks are in flight at once: the crossbar holds a port
    while its bank still has the port's command, and KVWRITE's one-beat heads each open a row.
    (By parity alone, heads whose rows are four banks apart, as stories260K's are, would all
    share a port.) A beat address always maps to the same port, so two writes to one address
    land in order; writes to different addresses have no order, as with any two ports.
    ``wdata_beats``: how many beats the ports hand to the controller this cycle."""

    def __init__(self, ports, bank_shift, fifo_depth=16):
        aw, dw = _port_shape(ports, "BankInterleavedWriter")
        if len(ports) != 2:       # (one port: the core uses LiteDRAM's writer as it is)
            raise ValueError("BankInterleavedWriter: two ports")
        self.sink = sink = stream.Endpoint([("address", aw), ("data", dw)])
        self.wdata_beats = Signal(2)

        # # #

        self.writers = writers = [LiteDRAMDMAWriter(port, fifo_depth=fifo_depth) for port in ports]
        for i, writer in enumerate(writers):
            self.add_module(f"writer{i}", writer)
        self.comb += self.wdata_beats.eq(sum(port.wdata.valid & port.wdata.ready for port in ports))
        sel = Signal()
        self.comb += [
            sel.eq(reduce(xor, [sink.address[bank_shift + k] for k in range(3)])),
            sink.ready.eq(Array(w.sink.ready for w in writers)[sel]),
        ]
        for i, writer in enumerate(writers):
            self.comb += [
                writer.sink.valid.eq(sink.valid & (sel == i)),
                writer.sink.address.eq(sink.address),
                writer.sink.data.eq(sink.data),
            ]
