"""A register stage on the DFI between LiteDRAM's controller and its PHY.

LiteDRAM drives the PHY's DFI inputs partly combinationally: the write data comes straight from
the crossbar's master multiplexer (``multiplexer.py``: ``Cat(wrdata).eq(interface.wdata)``) and
the DFI injector muxes the controller's commands with the BIOS's. On a board whose PHY puts the
DFI signals into I/O-cell flip-flops (GENSDRPHY on the ULX3S), those paths end at the pins, so
every master's write-data FIFO, wherever the placer puts it, is one combinational hop from a pad.
The placed ULX3S design had its worst endpoints there (issue 3). One flip-flop per DFI bit, free
to sit next to the pins, cuts them; the read data gets a stage on the way back too.

Cost: the read latency the controller sees grows by 2 cycles (one out, one back). Commands and
write data are delayed together, so the write latency is unchanged.
"""

from migen import *

from litedram.phy import dfi


class DFIRegisterStage(Module):
    """Wraps ``phy`` (any LiteDRAM PHY with ``settings`` and ``dfi``) as a PHY whose DFI is one
    register away from ``phy``'s in each direction. Pass the wrapper to ``add_sdram``."""

    def __init__(self, phy):
        self.submodules.phy = phy
        s = phy.settings
        self.settings = s.__class__.__new__(s.__class__)
        self.settings.__dict__.update(s.__dict__)
        self.settings.read_latency = s.read_latency + 2

        inner = phy.dfi
        first = inner.phases[0]
        self.dfi = outer = dfi.Interface(len(first.address), len(first.bank), len(first.cs_n),
                                         len(first.wrdata), len(inner.phases))
        for o, i in zip(outer.phases, inner.phases):
            for name, _, direction in o.layout:
                if direction == DIR_M_TO_S:
                    self.sync += getattr(i, name).eq(getattr(o, name))
                else:
                    self.sync += getattr(o, name).eq(getattr(i, name))
