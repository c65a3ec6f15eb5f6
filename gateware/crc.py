"""CRC-32 over DRAM: a parallel CRC engine and a checksum unit that streams a DRAM range through
its own LiteDRAM native port.

The host uploads weights once and must know they landed intact without reading megabytes back
over a slow link: the device checksums the range at port speed and the host compares it with
``zlib.crc32`` of what it sent.
"""

from migen import *

from litex.gen import LiteXModule
from litex.gen.reduce import Reduce
from litex.soc.interconnect import stream
from litex.soc.interconnect.csr import CSRStorage, CSRStatus, CSR, CSRField
from litedram.frontend.dma import LiteDRAMDMAReader

from spec import CRC32_POLY_REFLECTED, CHECKSUM_STATUS_DONE, CHECKSUM_STATUS_WINDOW


def crc32_xor_masks(data_width):
    """For each next-state bit, the bitmask of (state bits | data bits << 32) it XORs together.

    Built by running the bitwise reflected CRC symbolically: each bit is a set of variables held
    as an int bitmask, XOR is symmetric difference. Data bits are consumed LSB first, byte 0 of the
    beat first, which is zlib's order for a little-endian beat.
    """
    state = [1 << i for i in range(32)]
    for j in range(data_width):
        feedback = state[0] ^ (1 << (32 + j))
        state = state[1:] + [0]
        for i in range(32):
            if (CRC32_POLY_REFLECTED >> i) & 1:
                state[i] ^= feedback
    return state

# CRC32 Engine -------------------------------------------------------------------------------------

class CRC32Engine(LiteXModule):
    """zlib CRC-32 of ``data_width`` bits per cycle (one DRAM beat per cycle).

    ``clear`` restarts the CRC, ``ce`` folds ``data`` in; ``value`` is the finished CRC of
    everything folded in since the last clear.
    """
    def __init__(self, data_width):
        if data_width % 8:
            raise ValueError(f"CRC32Engine: data_width must be a multiple of 8, got {data_width}")
        self.data  = Signal(data_width)
        self.ce    = Signal()
        self.clear = Signal()
        self.value = Signal(32)

        # # #

        state = Signal(32, reset=0xFFFFFFFF)
        bits  = Cat(state, self.data)
        next_state = Signal(32)
        for i, mask in enumerate(crc32_xor_masks(data_width)):
            terms = [bits[k] for k in range(32 + data_width) if (mask >> k) & 1]
            self.comb += next_state[i].eq(Reduce("XOR", terms))
        self.sync += [
            If(self.clear,
                state.eq(0xFFFFFFFF)
            ).Elif(self.ce,
                state.eq(next_state)
            )
        ]
        self.comb += self.value.eq(~state)

# DRAM Checksum ------------------------------------------------------------------------------------

class DRAMChecksum(LiteXModule):
    """CRC-32 of a DRAM range, read through its own native port at full port width.

    ``base`` and ``length`` are byte offsets into DRAM and must be multiples of the port's beat
    size; a range outside ``dram_size`` or misaligned sets the window error and reads nothing.
    """
    def __init__(self, port, dram_size, fifo_depth=16):
        beat_bytes = port.data_width // 8
        self.base   = CSRStorage(32, description="First byte of the range (DRAM offset, beat aligned).")
        self.length = CSRStorage(32, description="Range length in bytes (multiple of the beat size).")
        self.start  = CSR()  # Write to start; clears the status and the CRC.
        self.status = CSRStatus(fields=[
            CSRField("done",   offset=CHECKSUM_STATUS_DONE,   description="CRC of the whole range is ready."),
            CSRField("window", offset=CHECKSUM_STATUS_WINDOW, description="Range outside DRAM or misaligned."),
        ])
        self.crc    = CSRStatus(32, description="zlib CRC-32 of the range, valid when done.")
        self.cycles = CSRStatus(32, description="Cycles from start to done.")

        # # #

        shift = log2_int(beat_bytes)
        self.reader = reader = LiteDRAMDMAReader(port, fifo_depth=fifo_depth)
        # Registered addresses (timing): the 32-bit ``issued != beats`` compare would otherwise
        # feed LiteDRAM's crossbar arbitration combinationally.
        self.addr_pipe = addr_pipe = stream.PipeValid([("address", len(reader.sink.address))])
        self.comb += addr_pipe.source.connect(reader.sink)
        self.engine = engine = CRC32Engine(port.data_width)

        beats     = Signal(32)
        issued    = Signal(32)
        received  = Signal(32)
        base_beat = Signal(32)
        done      = Signal()
        window    = Signal()
        cycles    = Signal(32)
        end       = Signal(33)
        aligned   = Signal()
        self.comb += [
            end.eq(self.base.storage + self.length.storage),
            aligned.eq((self.base.storage[:shift] == 0) & (self.length.storage[:shift] == 0)),
            self.status.fields.done.eq(done),
            self.status.fields.window.eq(window),
            self.crc.status.eq(engine.value),
            self.cycles.status.eq(cycles),
        ]

        # Control ----------------------------------------------------------------------------------
        self.fsm = fsm = FSM(reset_state="IDLE")
        fsm.act("IDLE",
            If(self.start.re,
                engine.clear.eq(1),
                NextValue(done, 0),
                NextValue(window, 0),
                NextValue(cycles, 0),
                NextValue(issued, 0),
                NextValue(received, 0),
                NextValue(beats, self.length.storage[shift:]),
                NextValue(base_beat, self.base.storage[shift:]),
                If(~aligned | (end > dram_size),
                    NextValue(window, 1)
                ).Else(
                    NextState("RUN")
                )
            )
        )
        # Addresses go out as fast as the port takes them; data comes back in order.
        fsm.act("RUN",
            NextValue(cycles, cycles + 1),
            addr_pipe.sink.valid.eq(issued != beats),
            addr_pipe.sink.address.eq(base_beat + issued),
            If(addr_pipe.sink.valid & addr_pipe.sink.ready,
                NextValue(issued, issued + 1)
            ),
            If(reader.source.valid,
                NextValue(received, received + 1)
            ),
            If(received == beats,
                NextValue(done, 1),
                NextState("IDLE")
            )
        )
        self.comb += [
            reader.source.ready.eq(1),
            engine.data.eq(reader.source.data),
            engine.ce.eq(reader.source.valid),
        ]
