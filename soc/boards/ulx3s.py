"""ULX3S (ECP5 LFE5U-85F, 32 MiB SDR SDRAM): the SoC with UARTBone on the board's FTDI UART.
Built with Yosys + nextpnr-ecp5 + ecppack from PyPI (YoWASP, soc/boards/ecp5.py), loaded with
openFPGALoader."""

from migen import *

from litex.gen import LiteXModule
from litex.build.io import DDROutput
from litex.soc.cores.clock import ECP5PLL
from litex.soc.cores.uart import UARTPHY

from litedram import modules as litedram_modules
from litedram.core.controller import ControllerSettings
from litedram.phy import GENSDRPHY

from gateware.dfistage import DFIRegisterStage
from spec import isa
from soc.core import LiteTransformerSoC

# ULX3S --------------------------------------------------------------------------------------------

class _ULX3SCRG(LiteXModule):
    def __init__(self, platform, sys_clk_freq):
        self.rst       = Signal()
        self.cd_sys    = ClockDomain()
        self.cd_sys_ps = ClockDomain()

        # # #

        clk25 = platform.request("clk25")
        rst   = platform.request("rst")
        self.pll = pll = ECP5PLL()
        self.comb += pll.reset.eq(rst | self.rst)
        pll.register_clkin(clk25, 25e6)
        pll.create_clkout(self.cd_sys,    sys_clk_freq)
        pll.create_clkout(self.cd_sys_ps, sys_clk_freq, phase=90)   # SDRAM clock, centred on data
        self.specials += DDROutput(1, 0, platform.request("sdram_clock"), ClockSignal("sys_ps"))
        self.comb += platform.request("wifi_gpio0").eq(1)          # keep the ESP32 from resetting us


class ULX3SSoC(LiteTransformerSoC):
    """LiteTransformerSoC on a ULX3S: SDR SDRAM through GENSDRPHY, UARTBone on the FTDI UART."""

    def __init__(self, device="LFE5U-85F", revision="2.0", sys_clk_freq=50e6, baudrate=1_000_000,
                 sdram_module="MT48LC16M16", with_accelerator=True, **kwargs):
        from litex_boards.platforms import radiona_ulx3s
        if device not in ("LFE5U-12F", "LFE5U-25F", "LFE5U-45F", "LFE5U-85F"):
            raise ValueError(f"ULX3S: unknown device {device}")
        platform = radiona_ulx3s.Platform(device=device, revision=revision, toolchain="trellis")
        self.crg = _ULX3SCRG(platform, sys_clk_freq)
        LiteTransformerSoC.__init__(self, platform, sys_clk_freq, ident="LiteTransformer on ULX3S", **kwargs)

        # The DFI register stage lets the controller's write data and commands reach the I/O
        # flip-flops from anywhere on the chip (2 cycles more read latency).
        self.sdrphy = DFIRegisterStage(GENSDRPHY(platform.request("sdram"), sys_clk_freq))
        # Buffered command FIFOs in the bank machines (timing: the FIFO's read mux stays off the
        # path to the command's address register).
        self.add_sdram("sdram", phy=self.sdrphy,
            module=getattr(litedram_modules, sdram_module)(sys_clk_freq, "1:1"),
            controller_settings=ControllerSettings(cmd_buffer_buffered=True))

        link_phy = UARTPHY(platform.request("serial"), sys_clk_freq, baudrate)
        self.add_host_link(link_phy, timeout_cycles=int(100e-3 * sys_clk_freq))
        # In csr.csv: serial:// without ?baud= takes the rate the bitstream was built for.
        self.add_constant("LINK_BAUDRATE", int(baudrate))

        if with_accelerator:
            self.add_accelerator(isa.TARGET_PARAMS["ulx3s"])
