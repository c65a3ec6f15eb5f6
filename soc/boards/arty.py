"""Arty A7-100T (Artix-7 XC7A100T, 256 MiB DDR3 16-bit, 100 Mbit/s Ethernet): the SoC with
UARTBone on the board's FTDI UART and Etherbone on its MII PHY. Vivado routes it (the project
comes from soc/boards/vivado.py); openFPGALoader loads it."""

from migen import *

from litex.soc.cores.uart import UARTPHY

from litedram.modules import MT41K128M16
from litedram.phy import s7ddrphy

from spec import isa
from soc.boards.vivado import S7DDR3CRG
from soc.core import LiteTransformerSoC


class _ArtyCRG(S7DDR3CRG):
    """S7DDR3CRG on the 100 MHz oscillator, reset by the board's button, plus the Ethernet PHY's
    25 MHz reference."""

    def __init__(self, platform, sys_clk_freq):
        S7DDR3CRG.__init__(self, platform, sys_clk_freq, platform.request("clk100"), 100e6, speedgrade=-1,
                           reset=~platform.request("cpu_reset"))
        self.cd_eth = ClockDomain()
        self.pll.create_clkout(self.cd_eth, 25e6)
        self.comb += platform.request("eth_ref_clk").eq(self.cd_eth.clk)


class ArtySoC(LiteTransformerSoC):
    """LiteTransformerSoC on an Arty A7-100T: DDR3 through LiteDRAM's A7DDRPHY (1:4, so a
    128-bit native port at sys_clk_freq: 16 bytes a cycle, the simulator's memory system),
    UARTBone on the FTDI UART, Etherbone on the MII PHY at ``eth_ip``."""

    def __init__(self, variant="a7-100", sys_clk_freq=100e6, baudrate=1_000_000, with_etherbone=True,
                 eth_ip="192.168.1.50", eth_mac=0x10e2d5000000, with_accelerator=True, **kwargs):
        from litex_boards.platforms import digilent_arty
        from liteeth.phy.mii import LiteEthPHYMII
        if variant != "a7-100":
            raise ValueError(f"Arty: variant {variant} does not hold the core (a7-100 only)")
        platform = digilent_arty.Platform(variant=variant, toolchain="vivado")
        self.crg = _ArtyCRG(platform, sys_clk_freq)
        LiteTransformerSoC.__init__(self, platform, sys_clk_freq, ident="LiteTransformer on Arty A7", **kwargs)

        self.ddrphy = s7ddrphy.A7DDRPHY(platform.request("ddram"), memtype="DDR3", nphases=4,
                                        sys_clk_freq=sys_clk_freq)
        self.add_sdram("sdram", phy=self.ddrphy, module=MT41K128M16(sys_clk_freq, "1:4"))

        link_phy = UARTPHY(platform.request("serial"), sys_clk_freq, baudrate)
        self.add_host_link(link_phy, timeout_cycles=int(100e-3 * sys_clk_freq), more_bridges=with_etherbone)
        self.add_constant("LINK_BAUDRATE", int(baudrate))
        if with_etherbone:
            self.ethphy = LiteEthPHYMII(clock_pads=platform.request("eth_clocks"), pads=platform.request("eth"))
            self.add_etherbone_link(self.ethphy, ip_address=eth_ip, mac_address=eth_mac)

        if with_accelerator:
            self.add_accelerator(isa.TARGET_PARAMS["arty"])
