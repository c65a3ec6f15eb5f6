"""STORE's packer: one slot's act[src:+n] as int32, four a beat, into the write stream.

One element a cycle into a beat: read (S0, S1), packed (S2). No element is read while a
beat's last one is on its way, so a beat leaves while the next one's first is read. The
sequencer issues the slot's write burst (the beats' addresses) as it starts the unit.
"""

from migen import *

from gateware.core.pipeline import stop_on_abort


class Store(Module):
    """Start/granted/done/abort as Rmsnorm's. ``src`` and ``n`` hold still until ``done``.
    Scratchpad side: ``radr``, and ``x``, the slot's element two cycles later. Write stream:
    ``wr_valid``, ``wr_data`` out, ``wr_ready`` in."""

    def __init__(self):
        self.start, self.granted, self.abort, self.done = Signal(), Signal(), Signal(), Signal()
        self.src, self.n = Signal(16), Signal(16)
        self.x = Signal((32, True))
        self.radr = Signal(17)
        self.wr_valid, self.wr_ready, self.wr_data = Signal(), Signal(), Signal(128)

        # # #

        # Everything the FSM decides on is a register: how many elements are left to read
        # (``more``, ``last``: one left), the address, and the element's lane. No comparison
        # against ``n`` or address adder sits between a register and ``done`` or ``radr``
        # (timing: ``done`` goes to the sequencer across the chip).
        left, ptr = Signal(17), Signal(17)
        more, last = Signal(), Signal()
        i, i1, i2 = Signal(2), Signal(2), Signal(2)      # the element's lane, and 1, 2 cycles on
        v1, v2 = Signal(), Signal()
        end1, end2 = Signal(), Signal()                   # the run's last element, 1, 2 cycles on
        word, full = Signal(128), Signal()
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        push, issue = Signal(), Signal()
        last_lane1, last_lane2 = Signal(), Signal()
        packed = Signal(128)
        self.comb += [
            push.eq(fsm.ongoing("RUN") & full & self.wr_ready),
            last_lane1.eq(v1 & ((i1 == 3) | end1)),
            last_lane2.eq(v2 & ((i2 == 3) | end2)),
            issue.eq(more & (~full | push) & ~last_lane1 & ~last_lane2),
            packed.eq(word),
        ]
        for lane in range(4):
            self.comb += If(i2 == lane, packed[32 * lane:32 * (lane + 1)].eq(self.x))
        fsm.act("IDLE",
            If(self.start,
                NextValue(i, 0), NextValue(word, 0), NextValue(full, 0), NextValue(v1, 0), NextValue(v2, 0),
                NextValue(left, self.n), NextValue(more, self.n != 0), NextValue(last, self.n == 1),
                NextValue(ptr, self.src),
                NextState("WAIT")
            )
        )
        fsm.act("WAIT", If(self.granted, NextState("RUN")))
        fsm.act("RUN",
            self.radr.eq(ptr),
            If(issue,
                NextValue(i, i + 1), NextValue(ptr, ptr + 1), NextValue(left, left - 1),
                NextValue(more, ~last), NextValue(last, left == 2)
            ),
            NextValue(v1, issue), NextValue(i1, i), NextValue(end1, last),
            NextValue(v2, v1), NextValue(i2, i1), NextValue(end2, end1),
            self.wr_valid.eq(full), self.wr_data.eq(word),
            If(push, NextValue(full, 0), NextValue(word, 0)),
            If(v2, NextValue(word, packed), If(last_lane2, NextValue(full, 1))),
            If(~more & ~v1 & ~v2 & (~full | push), self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)
