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
from litedram.frontend.dma import LiteDRAMDMAWriter

from spec import HOSTDMA_STATUS_DONE, HOSTDMA_STATUS_WINDOW, HOSTDMA_STATUS_OVERRUN

# Host DMA Writer ----------------------------------------------------------------------------------

class HostDMAWriter(LiteXModule):
    """Writes the words the host sends to its data port into DRAM[base : base + length].

    ``base``/``length`` are DRAM byte offsets, multiples of the port beat. ``start`` arms the
    writer (and drops any half-packed beat left by an aborted upload). Words beyond ``length``
    are acknowledged and dropped (overrun), a range outside ``dram_size`` writes nothing
    (window): the core never writes outside what it was told.
    """
    def __init__(self, port, dram_size, fifo_depth=16):
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
        self.sync += If(~self.start.re & buffer.sink.valid & buffer.sink.ready, beats.eq(beats + 1))

        # Status -----------------------------------------------------------------------------------
        self.comb += [
            self.status.fields.done.eq(armed & (beats == beats_expected) & ~buffer.source.valid & ~writer.fifo.source.valid),
            self.status.fields.window.eq(window),
            self.status.fields.overrun.eq(overrun),
            self.words.status.eq(words),
        ]
