"""The LiteTransformer SoC: one class for the simulator and every board.

VexRiscv + BIOS (DRAM init), LiteDRAM, a host link (UARTBone), and the project's own blocks
on their own LiteDRAM native ports: the host->DRAM writer, the DRAM checksum engine and the
transformer core (one or two read ports, one write port).
Board and simulator subclasses only supply the platform, the CRG, the DRAM PHY and the link PHY.
"""

from migen import *

from litex.soc.integration.soc_core import SoCCore
from litex.soc.integration.soc import SoCRegion
from litex.soc.interconnect import wishbone
from litex.soc.cores.uart import Stream2Wishbone

from gateware.accelerator import Accelerator
from gateware.busslice import WishboneSlice
from gateware.crc import DRAMChecksum
from gateware.hostdma import HostDMAWriter
from gateware.info import CoreInfo

# Bus addresses of the host-only windows (the CPU's L2 never sees them). In VexRiscv's IO
# region, so uncached.
DRAM_WINDOW_ORIGIN = 0x8000_0000   # DRAM read/written by the host through its own native port.
HOSTDMA_ORIGINS    = (0xa000_0000, 0xe000_0000)   # HostDMAWriter data port (fixed-address burst target).


def hostdma_origin(dram_size):
    """Where the host writer's port sits: on a 256 MiB boundary past the end of the DRAM window,
    the first of HOSTDMA_ORIGINS that is (the window reaches 0xc000_0000 with 1 GiB of DRAM;
    the CSRs are at 0xf000_0000)."""
    for origin in HOSTDMA_ORIGINS:
        if DRAM_WINDOW_ORIGIN + dram_size <= origin:
            return origin
    raise ValueError(f"{dram_size} bytes of DRAM: the host's DRAM window would reach the CSRs")


def _bank_shift(crossbar, port_width):
    """The bit of a ``port_width``-bit port's beat address that holds the bank number's LSB,
    from the crossbar's address mapping (ROW_BANK_COL: row | bank | column)."""
    ctrl = crossbar.controller
    if ctrl.settings.address_mapping != "ROW_BANK_COL":
        raise ValueError(f"unsupported LiteDRAM address mapping {ctrl.settings.address_mapping}")
    shift = ctrl.settings.geom.colbits - ctrl.address_align           # in controller words
    align = getattr(ctrl.settings, "bank_byte_alignment", 0) // (ctrl.data_width // 8)
    if align > 1:
        shift = max(shift, log2_int(align))
    ratio = log2_int(port_width // ctrl.data_width) if port_width >= ctrl.data_width \
        else -log2_int(ctrl.data_width // port_width)
    if shift < ratio:
        raise ValueError("a bank run is shorter than one core beat")
    return shift - ratio

# LiteTransformer SoC ------------------------------------------------------------------------------

class LiteTransformerSoC(SoCCore):
    """SoCCore plus the host link and the bulk DRAM path: a subclass calls ``add_sdram`` and
    then ``add_host_link``."""

    def __init__(self, platform, sys_clk_freq, ident="LiteTransformer", **kwargs):
        kwargs.setdefault("cpu_type", "vexriscv")
        kwargs.setdefault("integrated_rom_size", 0x20000)
        kwargs.setdefault("integrated_sram_size", 0x2000)
        # The CPU console is a crossover UART: the host reads it over the link (the driver
        # drains it while it waits for the BIOS), so one physical UART serves both.
        kwargs.setdefault("uart_name", "crossover")
        SoCCore.__init__(self, platform, sys_clk_freq, ident=ident, **kwargs)
        # The BIOS initialises DRAM and stops at its prompt: nothing to boot from serial or flash
        # (its serial boot attempt alone cost ~20 M cycles of simulated boot time).
        self.add_config("BIOS_NO_BOOT")

    def add_sdram(self, *args, l2_cache_size=0, **kwargs):
        """LiteX's ``add_sdram`` without its L2 cache by default. The core and the host's DMA write
        DRAM behind the CPU's back, so the firmware must flush any L2 (reading twice its size each
        time); the VexRiscv's own caches already serve the firmware's loop. On the ULX3S the L2's
        tag RAM to its bus acknowledge was also the longest routed path (21.5 ns)."""
        SoCCore.add_sdram(self, *args, l2_cache_size=l2_cache_size, **kwargs)

    # Host link + bulk path ------------------------------------------------------------------------
    def add_host_link(self, phy, timeout_cycles, more_bridges=False, with_pcie=False):
        """UARTBone on ``phy`` (a stream PHY: UART on boards, TCP in simulation), the host DRAM
        window, HostDMAWriter, DRAMChecksum and CoreInfo. Call after ``add_sdram``.
        ``more_bridges``: another bridge (``add_etherbone_link``) will share the HostDMAWriter.
        ``with_pcie``: ``add_pcie_link`` will stream into the HostDMAWriter too.

        ``timeout_cycles``: a command not finished within this many cycles is dropped and the
        bridge resynchronises (Stream2Wishbone expresses it as 100 ms of ``clk_freq``).
        """
        if timeout_cycles <= 0:
            raise ValueError(f"add_host_link: timeout_cycles must be positive, got {timeout_cycles}")
        if not hasattr(self, "sdram"):
            raise ValueError("add_host_link: call add_sdram first")
        from litedram.frontend.wishbone import LiteDRAMWishbone2Native
        dram_size = self.bus.regions["main_ram"].size
        crossbar  = self.sdram.crossbar

        # Bridge ----------------------------------------------------------------------------------
        self.link_phy = phy
        self.link = Stream2Wishbone(phy, clk_freq=timeout_cycles / 100e-3, address_width=self.bus.address_width)
        self.add_constant("LINK_TIMEOUT_CYCLES", int(timeout_cycles))

        # Host -> DRAM writer, on a private path from the bridge: on the shared SoC bus the
        # CPU's polling of its console took every other bus slot and halved the upload rate.
        self.hostdma = HostDMAWriter(crossbar.get_port(mode="write"), dram_size=dram_size,
                                     **({"with_stream": True} if with_pcie else {}))
        link_soc_bus = wishbone.Interface(data_width=32, address_width=self.bus.address_width, addressing="word")
        self.hostdma_origin = hostdma_origin(dram_size)
        hostdma_sel  = self.hostdma_origin >> 28     # top nibble of the byte address
        # (with more bridges, their paths to the writer meet in an arbiter: add_etherbone_link)
        self.hostdma_masters = [wishbone.Interface(data_width=32, address_width=self.bus.address_width,
                                                  addressing="word")] if more_bridges else []
        self.link_decoder = wishbone.Decoder(self.link.wishbone, [
            (lambda a: a[26:30] == hostdma_sel, self.hostdma_masters[0] if more_bridges else self.hostdma.bus),
            (lambda a: a[26:30] != hostdma_sel, link_soc_bus),
        ])
        # A register slice between the bridge and the SoC bus (timing: the bus arbiter's grant
        # otherwise decides the bridge's word counter within one cycle, gateware/busslice.py).
        link_master = wishbone.Interface(data_width=32, address_width=self.bus.address_width, addressing="word")
        self.link_slice = WishboneSlice(link_soc_bus, link_master)
        self.bus.add_master(name="link", master=link_master)
        self.bus.add_region("hostdma", SoCRegion(origin=self.hostdma_origin, size=0x1000, cached=False))

        # Host view of DRAM, bypassing the CPU's L2 (which would go stale under DMA writes).
        window_bus  = wishbone.Interface(data_width=32, address_width=self.bus.address_width, addressing="word")
        window_port = crossbar.get_port()
        self.dram_window = LiteDRAMWishbone2Native(window_bus, window_port, base_address=DRAM_WINDOW_ORIGIN)
        self.bus.add_slave(name="dram_window", slave=window_bus,
            region=SoCRegion(origin=DRAM_WINDOW_ORIGIN, size=dram_size, cached=False))

        # DRAM range checksum.
        read_port = crossbar.get_port(mode="read")
        self.checksum = DRAMChecksum(read_port, dram_size=dram_size)

        self.info = CoreInfo(dram_size=dram_size, port_bytes=read_port.data_width // 8)
        self.add_constant("DRAM_WINDOW_ORIGIN", DRAM_WINDOW_ORIGIN)
        self.add_constant("HOSTDMA_ORIGIN", self.hostdma_origin)

    def add_etherbone_link(self, phy, ip_address, mac_address, udp_port=1234):
        """Etherbone on ``phy`` (LiteEth's UDP/IP stack, 8-bit datapath) beside the UART link: the
        host reaches the same CSRs, DRAM window and HostDMAWriter over UDP (the driver's
        ``etherbone://IP``, or LiteX's ``litex_server --udp``). Call after ``add_host_link``
        with ``more_bridges``."""
        from liteeth.common import convert_ip
        from liteeth.core import LiteEthUDPIPCore
        from liteeth.frontend.etherbone import LiteEthEtherbone
        if not getattr(self, "hostdma_masters", None):
            raise ValueError("add_etherbone_link: call add_host_link(..., more_bridges=True) first")
        # The PHY's clock domains carry the packets (the UDP/IP core runs in eth_rx); the
        # Etherbone core and its bus run in sys. The UDP port crosses between them only if
        # its domain has a name of its own: "sys" inside the renamed core would become eth_rx.
        self.ethcore = ClockDomainsRenamer({"sys": "eth_rx"})(
            LiteEthUDPIPCore(phy, mac_address, convert_ip(ip_address), self.clk_freq, dw=8))
        self.cd_etherbone = ClockDomain()
        self.comb += [self.cd_etherbone.clk.eq(ClockSignal("sys")), self.cd_etherbone.rst.eq(ResetSignal("sys"))]
        # A record of up to 255 words fits the bridge's buffer (bulk writes in records of 255).
        self.etherbone = LiteEthEtherbone(self.ethcore.udp, udp_port, buffer_depth=256, cd="etherbone")
        if not getattr(phy, "model", False) and hasattr(phy, "rx_clk_freq"):
            # A board's PHY: its clocks come from the pads, asynchronous to sys.
            rx, tx = phy.crg.cd_eth_rx.clk, phy.crg.cd_eth_tx.clk
            self.platform.add_period_constraint(rx, 1e9 / phy.rx_clk_freq)
            self.platform.add_period_constraint(tx, 1e9 / phy.tx_clk_freq)
            self.platform.add_false_path_constraints(self.crg.cd_sys.clk, rx, tx)
        eb_soc_bus = wishbone.Interface(data_width=32, address_width=self.bus.address_width, addressing="word")
        eb_dma_bus = wishbone.Interface(data_width=32, address_width=self.bus.address_width, addressing="word")
        hostdma_sel = self.hostdma_origin >> 28
        self.etherbone_decoder = wishbone.Decoder(self.etherbone.wishbone.bus, [
            (lambda a: a[26:30] == hostdma_sel, eb_dma_bus),
            (lambda a: a[26:30] != hostdma_sel, eb_soc_bus),
        ])
        self.bus.add_master(name="etherbone", master=eb_soc_bus)
        self.hostdma_arbiter = wishbone.Arbiter(self.hostdma_masters + [eb_dma_bus], self.hostdma.bus)

    def add_pcie_link(self, phy, bar0_size=0x20000):
        """LitePCIe on ``phy`` beside the UART link: BAR0 reaches the CSRs (LiteX's CSR window,
        so the same offsets as csr.csv's), the DMA reader streams host memory into the
        HostDMAWriter (the same range, window and overrun checks as the UART's bursts, the same
        CRC check after), the DMA writer carries a HostDMAReader's DRAM range to host memory,
        and MSI signals the DMA descriptors' completions and each finished run of the core
        (``<SOURCE>_INTERRUPT`` constants name their bits in the MSI vector, as LiteX's
        ``add_pcie`` names them and LitePCIe's kernel driver expects). Call after
        ``add_host_link(..., with_pcie=True)`` and ``add_accelerator``."""
        from litepcie.core import LitePCIeEndpoint, LitePCIeMSI
        from litepcie.frontend.dma import LitePCIeDMA
        from litepcie.frontend.wishbone import LitePCIeWishboneMaster
        from gateware.hostdma import HostDMAReader
        if not hasattr(getattr(self, "hostdma", None), "sink"):
            raise ValueError("add_pcie_link: call add_host_link(..., with_pcie=True) first")
        if phy.data_width != self.hostdma.sink.data.nbits:
            raise ValueError(f"add_pcie_link: the PHY's {phy.data_width}-bit stream needs a "
                             f"{phy.data_width}-bit DRAM port (the host writer's is {self.hostdma.sink.data.nbits})")
        dram_size = self.bus.regions["main_ram"].size
        self.pcie_phy = phy
        self.pcie_endpoint = LitePCIeEndpoint(phy, max_pending_requests=8, endianness=phy.endianness,
                                              address_width=64)
        self.pcie_mmap = LitePCIeWishboneMaster(self.pcie_endpoint, base_address=self.mem_map["csr"])
        self.bus.add_master(name="pcie_mmap", master=self.pcie_mmap.wishbone)
        self.pcie_dma0 = dma = LitePCIeDMA(phy, self.pcie_endpoint, with_buffering=True, buffering_depth=1024,
                                           with_loopback=False, address_width=64)
        self.comb += [
            dma.source.connect(self.hostdma.sink, keep={"valid", "ready", "data"}),
        ]
        self.hostread = HostDMAReader(self.sdram.crossbar.get_port(mode="read", data_width=phy.data_width),
                                      dram_size=dram_size)
        self.comb += self.hostread.source.connect(dma.sink, keep={"valid", "ready", "data", "last"})

        # MSI: one vector; its CSRs say which source fired (LitePCIe's kernel driver reads them).
        run_done, done_prev = Signal(), Signal()
        if hasattr(self, "accel"):
            done = self.accel.status.fields.done
            self.sync += done_prev.eq(done)
            self.comb += run_done.eq(done & ~done_prev)
        self.pcie_msi = msi = LitePCIeMSI(width=32)
        self.comb += msi.source.connect(phy.msi)
        irqs = {"PCIE_DMA0_WRITER": dma.writer.irq, "PCIE_DMA0_READER": dma.reader.irq, "ACCEL_DONE": run_done}
        for i, (name, irq) in enumerate(sorted(irqs.items())):
            self.comb += msi.irqs[i].eq(irq)
            self.add_constant(name + "_INTERRUPT", i)
        # (the CPU's interrupts have *_INTERRUPT constants too: this says which are the MSI's)
        # (space-separated: csr.csv is comma-separated)
        self.add_constant("PCIE_MSI_SOURCES", " ".join(sorted(irqs)).lower())
        self.add_constant("DMA_CHANNELS", 1)
        self.add_constant("DMA_ADDR_WIDTH", 64)
        self.add_constant("PCIE_BAR0_SIZE", bar0_size)
        self.platform.add_false_path_constraints(self.crg.cd_sys.clk, phy.cd_pcie.clk)

    # Transformer core -----------------------------------------------------------------------------
    def add_accelerator(self, params, name="accel"):
        """The transformer core on its own 128-bit LiteDRAM ports, ``params.read_ports`` for
        reading, ``params.weight_ports`` for MATVEC's weights and ``params.write_ports`` for
        writing (up-converted on narrower DRAM). ``params``: a spec.isa.Params. Call after ``add_sdram``."""
        from spec import isa
        if not hasattr(self, "sdram"):
            raise ValueError("add_accelerator: call add_sdram first")
        if hasattr(self, name):
            raise ValueError(f"add_accelerator: {name} already exists")
        params.validate()
        crossbar  = self.sdram.crossbar
        dram_size = self.bus.regions["main_ram"].size
        width     = 8 * isa.BEAT_BYTES
        read_ports = [crossbar.get_port(mode="read", data_width=width) for _ in range(params.read_ports)]
        weight_ports = [crossbar.get_port(mode="read", data_width=width) for _ in range(params.weight_ports)]
        bank_shift = _bank_shift(crossbar, width) \
            if max(params.read_ports, params.write_ports, params.weight_ports) > 1 else None
        core = Accelerator(read_ports, [crossbar.get_port(mode="write", data_width=width) for _ in range(params.write_ports)],
                           dram_size=dram_size, params=params, bank_shift=bank_shift, weight_ports=weight_ports)
        setattr(self, name, core)
        for key, value in isa.params_constants(params).items():
            self.add_constant(f"ACCEL_PARAM_{key.upper()}", value)
