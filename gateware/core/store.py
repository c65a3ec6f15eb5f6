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

        n = self.n
        i, i1, i2 = Signal(17), Signal(17), Signal(17)     # the element read, and 1, 2 cycles on
        v1, v2 = Signal(), Signal()
        word, full = Signal(128), Signal()
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        push, issue = Signal(), Signal()
        last_lane1, last_lane2 = Signal(), Signal()
        packed = Signal(128)
        self.comb += [
            push.eq(fsm.ongoing("RUN") & full & self.wr_ready),
            last_lane1.eq(v1 & ((i1[0:2] == 3) | (i1 == n - 1))),
            last_lane2.eq(v2 & ((i2[0:2] == 3) | (i2 == n - 1))),
            issue.eq((i < n) & (~full | push) & ~last_lane1 & ~last_lane2),
            packed.eq(word),
        ]
        for lane in range(4):
            self.comb += If(i2[0:2] == lane, packed[32 * lane:32 * (lane + 1)].eq(self.x))
        fsm.act("IDLE",
            If(self.start,
                NextValue(i, 0), NextValue(word, 0), NextValue(full, 0), NextValue(v1, 0), NextValue(v2, 0),
                NextState("WAIT")
            )
        )
        fsm.act("WAIT", If(self.granted, NextState("RUN")))
        fsm.act("RUN",
            self.radr.eq(self.src + i),
            If(issue, NextValue(i, i + 1)),
            NextValue(v1, issue), NextValue(i1, i),
            NextValue(v2, v1), NextValue(i2, i1),
            self.wr_valid.eq(full), self.wr_data.eq(word),
            If(push, NextValue(full, 0), NextValue(word, 0)),
            If(v2, NextValue(word, packed), If(last_lane2, NextValue(full, 1))),
            If((i == n) & ~v1 & ~v2 & (~full | push), self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)
