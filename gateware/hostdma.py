"""The bulk path from the host link into DRAM.

The host bridge (UARTBone in simulation and on UART boards) writes 32-bit words with
fixed-address bursts into this block's Wishbone data port; the words are packed to the port
width and written through the block's own LiteDRAM native port at consecutive addresses.
The CPU and the SoC's L2 cache are not on this path.

Why UARTBone bursts rather than a private framed protocol: the bridge is already the board's
link, it has a resynchronising timeout, and a fixed-address burst costs 6 header bytes per
1020 data bytes (0.6 % overhead), so one protocol carries registers and bulk data alike.
"""

from migen import *

from litex.gen import LiteXModule
from litex.soc.interconnect import stream, wishbone
from litex.soc.interconnect.csr import CSRStorage, CSRStatus, CSR, CSRField
from litedram.frontend.dma import LiteDRAMDMAReader, LiteDRAMDMAWriter

from spec import HOSTDMA_STATUS_DONE, HOSTDMA_STATUS_WINDOW, HOSTDMA_STATUS_OVERRUN

# Host DMA Writer ----------------------------------------------------------------------------------

class HostDMAWriter(LiteXModule):
    """Writes the words the host sends to its data port into DRAM[base : base + length].

    ``base``/``length`` are DRAM byte offsets, multiples of the port beat. ``start`` arms the
    writer (and drops any half-packed beat left by an aborted upload). Words beyond ``length``
    are acknowledged and dropped (overrun), a range outside ``dram_size`` writes nothing
    (window): the core never writes outside what it was told.

    ``with_stream``: a second way in, ``sink``, whole port-width beats from a stream (a PCIe
    DMA engine's), with the same range, window and overrun rules; ``words`` counts each beat as
    its 32-bit words. The host uses one way per upload.
    """
    def __init__(self, port, dram_size, fifo_depth=16, with_stream=False):
        if port.data_width % 32 and 32 % port.data_width:
            raise ValueError(f"HostDMAWriter: port width {port.data_width} does not pack 32-bit words")
        beat_bytes = port.data_width // 8
        self.bus    = bus = wishbone.Interface(data_width=32, address_width=32, addressing="word")
        self.base   = CSRStorage(32, description="First byte to write (DRAM offset, beat aligned).")
        self.length = CSRStorage(32, description="Bytes to write (multiple of the beat size).")
        self.start  = CSR()  # Write to arm the writer for base/length; clears the status.
        self.status = CSRStatus(fields=[
            CSRField("done",    offset=HOSTDMA_STATUS_DONE,    description="All words written to DRAM."),
            CSRField("window",  offset=HOSTDMA_STATUS_WINDOW,  description="Range outside DRAM or misaligned."),
            CSRField("overrun", offset=HOSTDMA_STATUS_OVERRUN, description="Words beyond length were dropped."),
        ])
        self.words  = CSRStatus(32, description="32-bit words accepted since start.")

        # # #

        shift = log2_int(beat_bytes) if beat_bytes > 1 else 0
        self.converter = converter = ResetInserter()(stream.Converter(32, port.data_width))
        self.writer    = writer    = LiteDRAMDMAWriter(port, fifo_depth=fifo_depth)

        words_expected = Signal(32)
        words          = Signal(32)
        beats_expected = Signal(32)
        beats          = Signal(32)
        base_beat      = Signal(32)
        armed          = Signal()
        window         = Signal()
        overrun        = Signal()
        end            = Signal(33)
        aligned        = Signal()

        # Arm ---------------------------------------------------------------------------------------
        self.comb += [
            end.eq(self.base.storage + self.length.storage),
            aligned.eq((self.base.storage[:max(shift, 2)] == 0) & (self.length.storage[:max(shift, 2)] == 0)),
            converter.reset.eq(self.start.re),
        ]
        self.sync += If(self.start.re,
            words.eq(0),
            beats.eq(0),
            overrun.eq(0),
            words_expected.eq(self.length.storage[2:]),
            beats_expected.eq(self.length.storage[shift:]),
            base_beat.eq(self.base.storage[shift:]),
            window.eq(~aligned | (end > dram_size)),
            armed.eq(aligned & (end <= dram_size)),
        )

        # Wishbone data port: writes push words, reads return the word count -----------------------
        accept = Signal()
        push   = Signal()
        self.comb += [
            accept.eq(armed & (words != words_expected)),
            push.eq(bus.cyc & bus.stb & bus.we & ~bus.ack & accept),
            converter.sink.valid.eq(push),
            converter.sink.data.eq(bus.dat_w),
            bus.dat_r.eq(words),
        ]
        self.sync += [
            bus.ack.eq(0),
            If(bus.cyc & bus.stb & ~bus.ack & (~bus.we | ~accept | converter.sink.ready),
                bus.ack.eq(1)
            ),
            If(~self.start.re,
                If(push & converter.sink.ready,
                    words.eq(words + 1)
                ),
                If(bus.cyc & bus.stb & bus.we & ~bus.ack & ~accept,
                    overrun.eq(1)
                ),
            )
        ]

        # Beats to DRAM at consecutive addresses, through a registered buffer (timing: the
        # writer's command valid goes straight into LiteDRAM's crossbar arbitration) -----------
        self.buffer = buffer = stream.Buffer(writer.sink.description, pipe_valid=True, pipe_ready=True)
        self.comb += [
            buffer.sink.valid.eq(converter.source.valid),
            buffer.sink.data.eq(converter.source.data),
            buffer.sink.address.eq(base_beat + beats),
            converter.source.ready.eq(buffer.sink.ready),
            buffer.source.connect(writer.sink),
        ]
        if with_stream:
            self._add_stream_sink(port, buffer, armed, beats, beats_expected, words, overrun)
        self.sync += If(~self.start.re & buffer.sink.valid & buffer.sink.ready, beats.eq(beats + 1))

        # Status -----------------------------------------------------------------------------------
        self.comb += [
            self.status.fields.done.eq(armed & (beats == beats_expected) & ~buffer.source.valid & ~writer.fifo.source.valid),
            self.status.fields.window.eq(window),
            self.status.fields.overrun.eq(overrun),
            self.words.status.eq(words),
        ]

    def _add_stream_sink(self, port, buffer, armed, beats, beats_expected, words, overrun):
        """``sink``: beats straight to the buffer while the Wishbone path has none pending;
        beats past the length (or while not armed) are taken and dropped, flagging overrun."""
        self.sink = sink = stream.Endpoint([("data", port.data_width)])
        take = Signal()
        self.comb += [
            take.eq(armed & (beats != beats_expected)),
            If(sink.valid & ~self.converter.source.valid,
                If(take,
                    buffer.sink.valid.eq(1),
                    buffer.sink.data.eq(sink.data),
                    sink.ready.eq(buffer.sink.ready),
                ).Else(
                    sink.ready.eq(1),
                )
            ),
        ]
        self.sync += If(~self.start.re & sink.valid & sink.ready,
            If(take,
                words.eq(words + port.data_width // 32)
            ).Else(
                overrun.eq(1)
            )
        )

# Host DMA Reader ----------------------------------------------------------------------------------

class HostDMAReader(LiteXModule):
    """Streams DRAM[base : base + length] out of ``source`` (port-width beats, ``last`` on the
    final one) for a link whose DMA engine carries it to the host (PCIe's). Same rules as the
    writer: ``base``/``length`` beat-aligned DRAM offsets; a range outside DRAM reads nothing
    and sets ``window``; ``done`` once every beat has left."""
    def __init__(self, port, dram_size, fifo_depth=16):
        beat_bytes = port.data_width // 8
        shift = log2_int(beat_bytes)
        self.source = source = stream.Endpoint([("data", port.data_width)])
        self.base   = CSRStorage(32, description="First byte to read (DRAM offset, beat aligned).")
        self.length = CSRStorage(32, description="Bytes to read (multiple of the beat size).")
        self.start  = CSR()  # Write to start reading base/length; clears the status.
        self.status = CSRStatus(fields=[
            CSRField("done",   offset=HOSTDMA_STATUS_DONE,   description="Every beat has left the source."),
            CSRField("window", offset=HOSTDMA_STATUS_WINDOW, description="Range outside DRAM or misaligned."),
        ])

        # # #

        self.reader = reader = ResetInserter()(LiteDRAMDMAReader(port, fifo_depth=fifo_depth))
        end, next_addr, last_addr, sent, total = Signal(33), Signal(32), Signal(32), Signal(32), Signal(32)
        running, window = Signal(), Signal()
        self.comb += [
            end.eq(self.base.storage + self.length.storage),
            reader.reset.eq(self.start.re),
        ]
        self.sync += If(self.start.re,
            window.eq((self.base.storage[:shift] != 0) | (self.length.storage[:shift] != 0) | (end > dram_size)),
            running.eq((self.base.storage[:shift] == 0) & (self.length.storage[:shift] == 0) & (end <= dram_size)
                       & (self.length.storage != 0)),
            next_addr.eq(self.base.storage[shift:]),
            last_addr.eq(end[shift:]),
            sent.eq(0),
            total.eq(self.length.storage[shift:]),
        )
        # Addresses in, one per beat; the reader's FIFO bounds what is in flight.
        self.comb += [
            reader.sink.valid.eq(running & (next_addr != last_addr)),
            reader.sink.address.eq(next_addr),
            reader.source.connect(source, omit={"last"}),
            source.last.eq(sent == total - 1),
        ]
        self.sync += If(~self.start.re,
            If(reader.sink.valid & reader.sink.ready, next_addr.eq(next_addr + 1)),
            If(source.valid & source.ready, sent.eq(sent + 1)),
        )
        self.comb += [
            self.status.fields.done.eq(running & (sent == total)),
            self.status.fields.window.eq(window),
        ]
