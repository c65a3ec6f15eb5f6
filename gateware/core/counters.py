"""The core's hardware counters and its watchdog.

What the benchmark reads (docs/performance.md): cycles of a run, the MAC array's work (a cycle
per weight beat multiplied, two when it multiplies two beats in one cycle), cycles a unit
waited for DRAM read data, DRAM bytes read and written, instructions retired, and cycles per
instruction class (spec.isa.CLASSES, one counter each, read through a
select). ``clear`` zeroes every counter as a run starts; they count while ``counting``.
The watchdog fires once the run's cycles reach a non-zero budget.
"""

from migen import *

from spec import isa


class Counters(Module):
    """Inputs (one cycle's events): ``clear``, ``counting``, ``mac_beats`` (weight beats the
    MAC array multiplied this cycle, 0..2), ``stall`` (a unit wanted read data and none was
    there), ``read_beats`` (read beats taken this cycle: up to two from each stream), ``write_beats`` (write beats
    handed to DRAM this cycle), ``retire``,
    ``cls`` (the current instruction class), ``class_sel`` and ``watchdog`` (the CSRs' values).
    Outputs: the counters, ``class_cycles`` (the selected class's) and ``watchdog_fired``.
    ``mac_beats``, ``read_beats``, ``write_beats``: the most of each a cycle can bring (their
    inputs' widths)."""

    def __init__(self, nclasses, mac_beats=1, read_beats=1, write_beats=1):
        self.clear, self.counting = Signal(), Signal()
        self.mac_beats, self.read_beats = Signal(bits_for(mac_beats)), Signal(bits_for(read_beats))
        self.stall, self.retire = Signal(), Signal()
        self.write_beats = Signal(bits_for(write_beats))
        self.cls = Signal(max=nclasses)
        self.class_sel = Signal(8)
        self.watchdog = Signal(32)

        self.cycles, self.mac_busy, self.dram_stall = Signal(64), Signal(64), Signal(64)
        self.bytes_read, self.bytes_written = Signal(64), Signal(64)
        self.retired = Signal(32)
        self.class_cycles = Signal(64)
        self.watchdog_fired = Signal()

        # # #

        cls_q = Signal(max=nclasses)      # registered: the class decode stays off the counters' path
        self.sync += cls_q.eq(self.cls)
        # The events are registered on their way in (timing: they are decoded from the
        # sequencer's state and the streams' handshakes across the chip), so each is counted
        # a cycle late. The last of a run (a write beat in DRAIN, a read beat in FLUSH) comes
        # two or more cycles before the run ends, so every count is complete when ``done``
        # rises. ``cycles`` takes no input: the watchdog compares it as it is.
        mac_beats, stall, read_beats = Signal(len(self.mac_beats)), Signal(), Signal(len(self.read_beats))
        write_beats = Signal(len(self.write_beats))
        self.sync += [mac_beats.eq(self.mac_beats), stall.eq(self.stall), read_beats.eq(self.read_beats),
                      write_beats.eq(self.write_beats)]
        per_class = Array(Signal(64, name=f"cycles_{c.lower()}") for c in isa.CLASSES[:nclasses])
        self.sync += [
            If(self.clear,
                self.cycles.eq(0), self.mac_busy.eq(0), self.dram_stall.eq(0),
                self.bytes_read.eq(0), self.bytes_written.eq(0), self.retired.eq(0),
                *[c.eq(0) for c in per_class],
            ).Elif(self.counting,
                self.cycles.eq(self.cycles + 1),
                self.mac_busy.eq(self.mac_busy + mac_beats) if len(mac_beats) > 1
                else If(mac_beats, self.mac_busy.eq(self.mac_busy + 1)),
                If(stall, self.dram_stall.eq(self.dram_stall + 1)),
                self.bytes_read.eq(self.bytes_read + isa.BEAT_BYTES * read_beats) if len(read_beats) > 1
                else If(read_beats, self.bytes_read.eq(self.bytes_read + isa.BEAT_BYTES)),
                self.bytes_written.eq(self.bytes_written + isa.BEAT_BYTES * write_beats),
            ),
            If(self.retire, self.retired.eq(self.retired + 1)),
        ]
        # Each class counter increments on its own (timing: no 14-way read-modify-write mux).
        for c, counter in enumerate(per_class):
            self.sync += If(~self.clear & self.counting & (cls_q == c), counter.eq(counter + 1))
        self.comb += self.class_cycles.eq(per_class[self.class_sel])
        # Registered: a 64-bit compare stays off every state's path.
        self.sync += self.watchdog_fired.eq(~self.clear & self.counting & (self.watchdog != 0)
                                            & (self.cycles >= self.watchdog))
