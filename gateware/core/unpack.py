"""Read beats into elements, one a cycle: RMSNORM's gains (fixed16: a header
beat, then eight int16 a beat) and LOAD's vector (four int32 a beat).

While ``run`` is high an element issues every cycle a beat is held; with none held, the next
beat is taken from the read stream (one cycle a beat on top of one a element, as DRAM's 16
bytes a cycle outrun the element units anyway).
"""

from migen import *


def add_unpacker_port(unit):
    """Give ``unit`` the signals it reads through a BeatUnpacker with: it drives ``f16_header``
    and ``f16_run``; ``f16_taken``, ``f16_issue``, ``f16_i``, ``f16_element`` and ``f16_shift``
    come back (BeatUnpacker.feed and .lend_to connect them)."""
    unit.f16_header, unit.f16_run = Signal(), Signal()
    unit.f16_taken, unit.f16_issue, unit.f16_i = Signal(), Signal(), Signal(17)
    unit.f16_element, unit.f16_shift = Signal((32, True)), Signal(6)


class BeatUnpacker(Module):
    """Read-stream side: ``rd_valid``/``rd_data`` in, ``rd_ready`` and ``rd_wait`` (a beat is
    wanted: the stall counter's) out. Control: ``clear`` (the next element is 0, no beat held),
    ``header`` (take the next beat as a fixed16 header: its shift into ``shift``; also clears),
    ``run`` (elements may issue), ``wide`` (0: eight int16 a beat; 1: four int32), ``n`` (the
    elements). Out: ``header_taken``, ``issue`` (element ``i`` is ``element`` this cycle),
    ``last`` (element ``i`` is the last, n − 1)."""

    def __init__(self):
        self.rd_valid, self.rd_data = Signal(), Signal(128)
        self.rd_ready, self.rd_wait = Signal(), Signal()
        self.clear, self.header, self.run, self.wide = Signal(), Signal(), Signal(), Signal()
        self.n = Signal(16)
        self.shift = Signal(6)
        self.header_taken, self.issue = Signal(), Signal()
        self.i = Signal(17)
        self.last = Signal()
        self.element = Signal((32, True))

        # # #

        beat, j, held = Signal(128), Signal(3), Signal()
        i, n = self.i, self.n
        q16 = Array(beat[16 * k:16 * (k + 1)] for k in range(8))[j]
        q32 = Array(beat[32 * k:32 * (k + 1)] for k in range(4))[j[0:2]]
        last_lane = Mux(self.wide, j[0:2] == 3, j == 7)
        # Elements left (``more``; ``last``: one) are registers, so no comparison against n
        # sits on the issue path (timing: LOAD's end goes to the sequencer).
        left, more = Signal(17), Signal()
        take = ~held & more & self.run
        self.comb += [
            self.element.eq(Mux(self.wide, q32, Cat(q16, Replicate(q16[15], 16)))),
            self.issue.eq(self.run & held & more),
            self.header_taken.eq(self.header & self.rd_valid),
            self.rd_ready.eq(self.header | take), self.rd_wait.eq(self.header | take),
        ]
        self.sync += [
            If(self.issue,
                i.eq(i + 1), j.eq(j + 1),
                left.eq(left - 1), more.eq(~self.last), self.last.eq(left == 2),
                If(last_lane | self.last, held.eq(0))
            ).Elif(take & self.rd_valid,
                beat.eq(self.rd_data), j.eq(0), held.eq(1)
            ),
            If(self.header_taken, self.shift.eq(self.rd_data[0:6])),
            If(self.clear | self.header_taken,
                i.eq(0), held.eq(0), left.eq(n), more.eq(n != 0), self.last.eq(n == 1)
            ),
        ]

    def feed(self, unit):
        """What goes back to a unit with an unpacker port (combinational statements)."""
        return [unit.f16_taken.eq(self.header_taken), unit.f16_issue.eq(self.issue), unit.f16_i.eq(self.i),
                unit.f16_element.eq(self.element), unit.f16_shift.eq(self.shift)]

    def lend_to(self, unit):
        """The unpacker's control taken from a unit with an unpacker port (statements for
        whoever lends it the unpacker)."""
        return [self.header.eq(unit.f16_header), self.run.eq(unit.f16_run)]
