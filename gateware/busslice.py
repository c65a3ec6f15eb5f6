"""A register slice for a Wishbone (classic) bus: every signal between its two sides goes
through a flip-flop, so no combinational path crosses it.

Placed between the host bridge and the SoC bus: there the arbiter's grant decided, in one
cycle, the bus acknowledge that enabled the bridge's word counter, and on the ULX3S that
path ran across the chip (the worst path of two placer seeds). An access through the slice
takes two cycles more; the bridge waits a byte time (~1,000 cycles at 1 Mbaud) between
accesses anyway.

Rules: the master's cycle is taken (its address, data, select and direction registered) when
the slice is idle; the slave side then holds ``cyc``/``stb`` until its ``ack`` or ``err``,
whose cycle's ``dat_r`` is registered and answered to the master one cycle later. A master
that drops ``cyc`` before its answer (the bridge's timeout) still has its access finished
on the slave side and the answer dropped, so the slave never sees a cycle cut short.
"""

from migen import *

from litex.gen import LiteXModule


class WishboneSlice(LiteXModule):
    """``master``: the interface a bus master drives (the slice is its slave); ``slave``: the
    interface the slice drives as a master. Both Wishbone classic, the same widths."""

    def __init__(self, master, slave):
        if (master.data_width, master.adr_width) != (slave.data_width, slave.adr_width):
            raise ValueError("WishboneSlice: both sides need the same data and address widths, got "
                             f"{master.data_width}/{master.adr_width} and {slave.data_width}/{slave.adr_width}")
        self.busy = busy = Signal()       # an access is out on the slave side
        answer = Signal()                 # the answer goes to the master this cycle
        taken = Signal()                  # the master's access is taken and not yet answered
        err = Signal()                    # the slave answered with err

        # # #

        request = master.cyc & master.stb
        self.sync += [
            answer.eq(0),
            If(~busy & ~taken & request,
                busy.eq(1), taken.eq(1),
                slave.adr.eq(master.adr), slave.dat_w.eq(master.dat_w), slave.sel.eq(master.sel),
                slave.we.eq(master.we), slave.cti.eq(0), slave.bte.eq(0),
            ).Elif(busy & (slave.ack | slave.err),
                busy.eq(0),
                master.dat_r.eq(slave.dat_r), err.eq(slave.err),
                answer.eq(taken & master.cyc),
            ),
            # The answer's cycle ends the master's access; a master that left drops it.
            If(answer | ~master.cyc, taken.eq(busy & ~(slave.ack | slave.err) & master.cyc)),
        ]
        self.comb += [
            slave.cyc.eq(busy), slave.stb.eq(busy),
            master.ack.eq(answer & ~err), master.err.eq(answer & err),
        ]
