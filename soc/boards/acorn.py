"""Acorn CLE-215+ / NiteFury (Artix-7 XC7A200T, 1 GiB DDR3 16-bit, PCIe gen2 x4 on an M.2 card):
the SoC with LitePCIe's 7-series endpoint as its host link (BAR0 to the CSRs, DMA into and out of
DRAM, an MSI per finished run) and UARTBone on the P2 header's serial pins beside it. Vivado
routes it (soc/boards/vivado.py) and builds Xilinx's pcie_7x hard-block wrapper from the Tcl
LitePCIe adds to the project; here the wrapper is a black box of the same ports (hard_ip_stubs)
for Verilator's lint and Yosys's counts."""

import os

from migen import *

from litex.soc.cores.uart import UARTPHY

from litedram.modules import MT41K512M16
from litedram.phy import s7ddrphy

from spec import isa
from soc.boards.vivado import S7DDR3CRG
from soc.core import LiteTransformerSoC


class AcornSoC(LiteTransformerSoC):
    """LiteTransformerSoC on an Acorn CLE-215(+): DDR3 MT41K512M16 through LiteDRAM's A7DDRPHY
    (1:4, a 128-bit native port at sys_clk_freq: 16 bytes a cycle, the simulator's memory system
    with four times its capacity), PCIe gen2 x4 through LitePCIe's S7PCIEPHY (128-bit, its own
    125 MHz user clock, crossed into sys by the PHY), UARTBone on the P2 header."""

    def __init__(self, variant="cle-215+", sys_clk_freq=100e6, baudrate=1_000_000, with_pcie=True,
                 with_accelerator=True, **kwargs):
        from litex_boards.platforms import sqrl_acorn
        if variant not in ("cle-215+", "cle-215"):
            raise ValueError(f"Acorn: variant {variant} does not hold the core (cle-215+ or cle-215)")
        platform = sqrl_acorn.Platform(variant=variant, toolchain="vivado")
        # (the PCIe PHY makes its own clocks from the slot's 100 MHz reference)
        self.crg = S7DDR3CRG(platform, sys_clk_freq, platform.request("clk200"), 200e6, speedgrade=-3)
        LiteTransformerSoC.__init__(self, platform, sys_clk_freq, ident="LiteTransformer on Acorn CLE-215", **kwargs)

        self.ddrphy = s7ddrphy.A7DDRPHY(platform.request("ddram"), memtype="DDR3", nphases=4,
                                        sys_clk_freq=sys_clk_freq, iodelay_clk_freq=200e6)
        self.add_sdram("sdram", phy=self.ddrphy, module=MT41K512M16(sys_clk_freq, "1:4"))

        link_phy = UARTPHY(platform.request("serial"), sys_clk_freq, baudrate)
        self.add_host_link(link_phy, timeout_cycles=int(100e-3 * sys_clk_freq), with_pcie=with_pcie)
        self.add_constant("LINK_BAUDRATE", int(baudrate))

        if with_accelerator:
            self.add_accelerator(isa.TARGET_PARAMS["acorn"])

        if with_pcie:
            from litepcie.phy.s7pciephy import S7PCIEPHY
            # The M.2 card drives CLKREQ# itself: held low, the host keeps the reference running.
            self.comb += platform.request("pcie_clkreq_n").eq(0)
            self.pcie_phy = S7PCIEPHY(platform, platform.request("pcie_x4"), data_width=128, bar0_size=0x20000)
            self.add_pcie_link(self.pcie_phy, bar0_size=0x20000)
            platform.add_period_constraint(self.crg.cd_sys.clk, 1e9 / sys_clk_freq)


# The hard block's wrapper as a black box ---------------------------------------------------------

def _stub(instance):
    """Verilog of an empty module with ``instance``'s ports, each as wide as the signal the SoC
    connects to it (Yosys keeps it as a black box; Verilator's lint checks every connection)."""
    from migen.fhdl.specials import Instance
    ports = []
    for item in instance.items:
        if isinstance(item, Instance.Parameter):
            continue
        direction = {Instance.Input: "input", Instance.Output: "output", Instance.InOut: "inout"}[type(item)]
        width = len(item.expr)
        ports.append(f"    {direction} wire {f'[{width - 1}:0] ' if width > 1 else ''}{item.name}")
    return (f"// The ports of Xilinx's {instance.of} (pcie_7x) as LitePCIe's S7PCIEPHY connects them: a black\n"
            f"// box for the lint and the resource counts; Vivado builds the real one from the project's Tcl.\n"
            f"(* blackbox *)\nmodule {instance.of}(\n" + ",\n".join(ports) + "\n);\nendmodule\n")


def hard_ip_stubs(soc, directory):
    """Black-box Verilog of the hard IP the Vivado project generates (pcie_s7): [path], written
    into ``directory``; [] without PCIe."""
    from migen.fhdl.specials import Instance
    phy = getattr(soc, "pcie_phy", None)
    if phy is None:
        return []
    found = [s for s in phy._fragment.specials if isinstance(s, Instance) and s.of == "pcie_s7"]
    if len(found) != 1:
        raise RuntimeError(f"Acorn: expected one pcie_s7 instance in the PCIe PHY, found {len(found)}")
    path = os.path.join(directory, "pcie_s7_blackbox.v")
    with open(path, "w") as f:
        f.write(_stub(found[0]))
    return [path]


def write_driver(soc, directory):
    """LitePCIe's Linux kernel driver and user library with this build's CSR map, the way LiteX's
    targets do with ``--driver``: ``directory``/kernel (make, then ./init.sh) and /user."""
    from litepcie.software import generate_litepcie_software
    generate_litepcie_software(soc, directory)
    return directory
