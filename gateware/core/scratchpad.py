"""The activation scratchpads: one int32 RAM per batch slot.

Every slot's RAM has ``read_ports`` read ports whose addresses all slots share (an instruction
reads the same elements of every slot), and one write port per slot. A read's data arrive two
cycles after its address; a write lands one cycle after it is given. On an FPGA each pair of
read ports is one block-RAM copy.
"""

from migen import *


class Scratchpads(Module):
    """``radr[p]``: read port p's address (every slot); ``rdat[p][s]``: slot s's element at it,
    two cycles later (signed). ``wadr``: the write address (every slot); ``wdat[s]`` and
    ``we[s]``: slot s's write. With ``write_taps``, ``wq_dat[s]`` and ``wq_we[s]`` show each
    write as it reaches the RAM (the write statistics gather from them)."""

    def __init__(self, slots, depth, read_ports, write_taps=False):
        self.radr = [Signal(max=depth, name=f"act_radr{p}") for p in range(read_ports)]
        self.rdat = [[Signal((32, True), name=f"act{s}_rdat{p}") for s in range(slots)] for p in range(read_ports)]
        self.wadr = Signal(max=depth)
        self.wdat = [Signal(32, name=f"act{s}_wdat") for s in range(slots)]
        self.we = [Signal(name=f"act{s}_we") for s in range(slots)]
        self.wq_dat = [Signal((32, True), name=f"act{s}_wq_dat") for s in range(slots)] if write_taps else []
        self.wq_we = [Signal(name=f"act{s}_wq_we") for s in range(slots)] if write_taps else []

        # # #

        self.mems = []                    # for simulations that load or read a RAM directly
        for s in range(slots):
            mem = Memory(32, depth)
            self.mems.append(mem)
            wp = mem.get_port(write_capable=True)
            self.specials += mem, wp
            # Each read goes through two registers: the block RAM's own (Yosys merges the first
            # into it) and one next to it, so an element is in rdat two cycles after its
            # address (timing: a DP16KD's clock-to-out is 5.8 ns, too much to also cross the chip
            # into a unit's logic in one cycle). With a synchronous Migen port, Yosys would merge
            # the data register and leave the address register in the fabric instead.
            for p in range(read_ports):
                rp = mem.get_port(async_read=True)
                self.specials += rp
                q = [Signal(32) for _ in range(2)]
                self.comb += rp.adr.eq(self.radr[p])
                self.sync += [q[0].eq(rp.dat_r), q[1].eq(q[0])]
                self.comb += self.rdat[p][s].eq(q[1])
            # Writes are registered on their way to the RAM (timing: the units' rounding and the
            # sequencer's write mux end in a register, not at a block RAM far away). A write
            # lands one cycle later; the ISA only lets an instruction write a range it does not
            # read, or the very element it has already read, so no read can tell.
            wadr_q, wdat_q, we_q = Signal(max=depth), Signal(32), Signal()
            self.sync += [wadr_q.eq(self.wadr), wdat_q.eq(self.wdat[s]), we_q.eq(self.we[s])]
            self.comb += [wp.adr.eq(wadr_q), wp.dat_w.eq(wdat_q), wp.we.eq(we_q)]
            if write_taps:
                self.comb += [self.wq_dat[s].eq(wdat_q), self.wq_we[s].eq(we_q)]
