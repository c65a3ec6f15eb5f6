"""The instruction buffer (Params.fetch_beats): up to FB instructions read from DRAM in one burst,
so a loop's body comes from DRAM once per run instead of once per instruction and layer.

It holds ``count`` beats from DRAM beat ``base``. A fill starts at the current instruction's
beat (``pc_beat``) and takes ``fill_beats`` beats (FB, fewer where DRAM ends, so a fill faults
only where a one-beat fetch would); the sequencer sends the burst and hands its beats in
(``fill_we``, ``fill_data``) in order. A write burst over buffered beats empties it, so a
program that writes its own instructions refetches them; so does ``clear`` (a run starts:
the host may have rewritten DRAM).
"""

from migen import *


class InstructionBuffer(Module):
    """In: ``pc_beat`` (the current instruction's DRAM beat), ``clear``, ``fill`` (begin a fill
    at pc_beat), ``fill_we``/``fill_data`` (its beats), ``write``/``write_beat``/``write_beats``
    (a write burst is sent). Out: ``hit`` (pc is buffered), ``word`` (its instruction, a cycle
    after pc settles), ``next_hit``/``next_word`` (the same for pc + 1, registered),
    ``off`` (pc's offset in the buffer), ``count``, ``fill_beats`` and ``fill_last`` (the
    fill's last beat is being written). ``scan_port()`` adds a read port for the weight
    prefetch: (address, data a cycle later)."""

    def __init__(self, depth, dram_beats):
        FB = depth
        self.pc_beat = Signal(32)
        self.clear, self.fill, self.fill_we, self.fill_data = Signal(), Signal(), Signal(), Signal(128)
        self.write, self.write_beat, self.write_beats = Signal(), Signal(50), Signal(50)
        self.hit, self.word = Signal(), Signal(128)
        self.next_hit, self.next_word = Signal(), Signal(128)
        self.off, self.count = Signal(32), Signal(max=FB + 1)
        self.fill_beats, self.fill_last = Signal(max=FB + 1), Signal()

        # # #

        self.mem = mem = Memory(128, FB)
        rp, wp, rp_next = mem.get_port(), mem.get_port(write_capable=True), mem.get_port()
        self.specials += mem, rp, wp, rp_next
        base = Signal(32)
        filling = Signal(max=FB + 1)          # the fill's beats
        i = Signal(32)                        # the fill's next beat
        self.comb += [
            self.off.eq(self.pc_beat - base), self.hit.eq(self.off < self.count),
            self.fill_beats.eq(Mux(self.pc_beat + FB <= dram_beats, FB,
                                   Mux(self.pc_beat < dram_beats, dram_beats - self.pc_beat, 1))),
            rp.adr.eq(self.off), self.word.eq(rp.dat_r),
            rp_next.adr.eq(self.off + 1), self.next_word.eq(rp_next.dat_r),
            wp.adr.eq(i), wp.dat_w.eq(self.fill_data), wp.we.eq(self.fill_we),
            self.fill_last.eq(self.fill_we & (i == filling - 1)),
        ]
        overlap = (self.write_beat < base + self.count) & (self.write_beat + self.write_beats > base)
        self.sync += [
            self.next_hit.eq(self.off + 1 < self.count),
            If(self.fill,
                self.count.eq(0), base.eq(self.pc_beat), filling.eq(self.fill_beats), i.eq(0)
            ).Elif(self.fill_we,
                i.eq(i + 1), If(self.fill_last, self.count.eq(filling))
            ),
            If(self.clear | self.write & overlap, self.count.eq(0)),
        ]

    def scan_port(self):
        port = self.mem.get_port()
        self.specials += port
        return port.adr, port.dat_r
