"""The read stream's address side: the burst in progress and one queued behind it.

A unit's read is a burst of beats from one address (already checked against the DRAM window
by the sequencer's BURST state). ``start`` replaces the burst in progress; ``push`` queues one
burst that starts once the burst in progress has sent its last address, so its beats follow
that burst's in the data stream (ATTN asks for the next head's keys this way while it reads
the current head's). ``flush`` drops whatever has not been asked for, when the core stops.
"""

from migen import *


class ReadBursts(Module):
    """``sink``: the read stream's address endpoint (valid, ready, address; the reader of
    gateware/readstream.py). ``data_taken``: a read beat left the data side this cycle, so
    ``outstanding`` counts the beats asked for and not yet taken. ``more``: an address is
    waiting to be sent (registered, timing: it feeds LiteDRAM's crossbar arbitration);
    ``remaining``: addresses of the burst in progress not yet sent; ``queued``: a burst is
    queued."""

    def __init__(self, sink, address_width, data_taken):
        self.start, self.start_addr, self.start_len = Signal(), Signal(address_width), Signal(32)
        self.push, self.push_addr, self.push_len = Signal(), Signal(address_width), Signal(32)
        self.flush = Signal()
        self.more, self.queued = Signal(), Signal()
        self.remaining, self.outstanding = Signal(32), Signal(32)

        # # #

        addr = Signal(address_width)
        q_addr, q_len = Signal(address_width), Signal(32)
        sent = sink.valid & sink.ready
        self.comb += [sink.valid.eq(self.more), sink.address.eq(addr)]
        # Later statements win: a burst taken from the queue empties it even as another is
        # pushed, and a flush drops everything.
        self.sync += [
            If(self.push, self.queued.eq(1), q_addr.eq(self.push_addr), q_len.eq(self.push_len)),
            If(self.start,
                addr.eq(self.start_addr), self.remaining.eq(self.start_len), self.more.eq(self.start_len != 0)
            ).Elif(sent,
                addr.eq(addr + 1), self.remaining.eq(self.remaining - 1), self.more.eq(self.remaining != 1)
            ).Elif(self.queued & ~self.more,
                addr.eq(q_addr), self.remaining.eq(q_len), self.more.eq(q_len != 0), self.queued.eq(0)
            ),
            self.outstanding.eq(self.outstanding + sent - data_taken),
            If(self.flush, self.remaining.eq(0), self.more.eq(0), self.queued.eq(0)),
        ]
