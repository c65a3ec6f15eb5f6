"""The host side of the simulated PCIe link, run by cocotb inside the simulator: a root complex
(cocotbext-pcie's RootComplex) and the UltraScale+ hard block's model (UltraScalePlusPcieDevice)
on the socket of soc/pcie/usp_hard_ip.v, plus what the host's kernel driver does on a real
machine — enumerate, enable MSI and bus mastering, program LitePCIe's DMA descriptor tables,
take the MSIs — served over a local TCP socket to the project's driver (driver/pcie.py).

Requests are one JSON line each (raw bytes follow where "n" says so); replies likewise:
    {"op": "read", "offs": [o, …]}            -> {"ok": true, "values": [v, …]}  (BAR0, back to back)
    {"op": "write", "pairs": [[o, v], …]}     -> {"ok": true}
    {"op": "dma_to_device", "n": n} + n bytes -> {"ok": true, "cycles": c}   (DMA reader)
    {"op": "dma_from_device", "n": n}         -> {"ok": true, "n": n, "cycles": c} + n bytes (DMA writer)
    {"op": "take_irqs", "names": [s, …]}      -> {"ok": true, "fired": [s, …]} (MSIs since last taken)
    {"op": "info"}                            -> {"ok": true, "bar0_size": …, "cycles": …, …}
Failures: {"ok": false, "error": "..."} (the connection stays usable).

Environment: LT_PCIE_CSR (the build's csr.csv), LT_PCIE_PORT (the server's port; 0, the default,
picks a free one). The log line "host server on 127.0.0.1:PORT" says when the link is up.
"""

import json
import logging
import os
import select
import socket
import sys

import cocotb
from cocotb.triggers import Event, First, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiStreamBus, MemoryRegion
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.xilinx.us import UltraScalePlusPcieDevice

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from driver.csr import CSRMap                                 # noqa: E402

USER_CLK_NS = 4               # gen3 x4 on a 128-bit interface: a 250 MHz user clock, sys's too
DESCRIPTOR_BYTES = 4096       # one DMA descriptor per host page, as LitePCIe's kernel driver
DESCRIPTOR_IRQ_DISABLE = 1 << 24      # in the descriptor's upper word, above its 24-bit length
DMA_TIMEOUT_CYCLES = 50_000_000
DMA_BUFFER_BYTES = 1 << 20    # each direction's buffer in host memory, reused (a kernel driver's)


class _Socket:
    """The hard block's ports as the model sees them: where the model drives an output it
    drives the socket's ``<port>_m`` variable."""
    def __init__(self, handle):
        self._h, self._name, self._log = handle, "pcie_usp", handle._log

    def __dir__(self):
        return sorted({n[:-2] if n.endswith("_m") else n for n in dir(self._h)})

    def __getattr__(self, name):
        try:
            return getattr(self._h, name + "_m")
        except AttributeError:
            return getattr(self._h, name)


class _HostBuffer(MemoryRegion):
    """A DMA buffer in host memory that counts the bytes the device writes into it: the DMA
    writer's MSI comes when its last write request leaves, not when the root complex has
    taken the data, so the host waits for the count too."""
    def __init__(self, size, **kwargs):
        super().__init__(size, **kwargs)
        self.written = 0

    async def _write(self, address, data, **kwargs):
        await super()._write(address, data, **kwargs)
        self.written += len(data)


class Host:
    def __init__(self, dut, csr_path):
        self.dut = dut
        self.csr = CSRMap(csr_path)
        self.csr_base = min(self.csr.bases.values())
        hip = _Socket(dut.pcie_support.pcie_usp_i)     # LitePCIe's wrapper, then the hard block
        self.rc = RootComplex()
        self.dev = UltraScalePlusPcieDevice(
            pcie_generation=3, pcie_link_width=4, user_clk_frequency=1e9 / USER_CLK_NS, alignment="dword",
            cq_straddle=False, cc_straddle=False, rq_straddle=False, rc_straddle=False, rc_4tlp_straddle=False,
            pf_count=1, max_payload_size=256, enable_client_tag=True, enable_extended_tag=False,
            enable_parity=False, enable_rx_msg_interface=False, enable_sriov=False,
            enable_extended_configuration=False, pf0_msi_enable=True, pf0_msi_count=1,
            user_clk=hip.user_clk, user_reset=hip.user_reset, user_lnk_up=hip.user_lnk_up,
            rq_bus=AxiStreamBus.from_prefix(hip, "s_axis_rq"), pcie_rq_tag_av=hip.pcie_rq_tag_av,
            rc_bus=AxiStreamBus.from_prefix(hip, "m_axis_rc"),
            cq_bus=AxiStreamBus.from_prefix(hip, "m_axis_cq"),
            pcie_cq_np_req=hip.pcie_cq_np_req, pcie_cq_np_req_count=hip.pcie_cq_np_req_count,
            cc_bus=AxiStreamBus.from_prefix(hip, "s_axis_cc"),
            cfg_phy_link_down=hip.cfg_phy_link_down, cfg_phy_link_status=hip.cfg_phy_link_status,
            cfg_negotiated_width=hip.cfg_negotiated_width, cfg_current_speed=hip.cfg_current_speed,
            cfg_max_payload=hip.cfg_max_payload, cfg_max_read_req=hip.cfg_max_read_req,
            cfg_function_status=hip.cfg_function_status, cfg_ltssm_state=hip.cfg_ltssm_state,
            cfg_interrupt_msi_enable=hip.cfg_interrupt_msi_enable, cfg_interrupt_msi_int=hip.cfg_interrupt_msi_int,
            cfg_interrupt_msi_sent=hip.cfg_interrupt_msi_sent, cfg_interrupt_msi_fail=hip.cfg_interrupt_msi_fail,
            cfg_interrupt_msi_mmenable=hip.cfg_interrupt_msi_mmenable,
            cfg_interrupt_msi_mask_update=hip.cfg_interrupt_msi_mask_update,
            cfg_interrupt_msi_data=hip.cfg_interrupt_msi_data)
        self.bar0_size = int(self.csr.constants.get("pcie_bar0_size", 0x20000))
        self.dev.functions[0].configure_bar(0, self.bar0_size)
        self.rc.make_port().connect(self.dev)
        for log in (self.rc.log, self.dev.log, logging.getLogger("cocotb.pcie_usp")):
            log.setLevel(logging.WARNING)
        for name in ("s_axis_rq", "m_axis_rc", "m_axis_cq", "s_axis_cc"):
            logging.getLogger(f"cocotb.pcie_usp.{name}").setLevel(logging.WARNING)
        self.buffers, self.reader_turn = {}, 0
        self.pending = 0                 # MSI source bits taken and not yet waited for
        self.irq_event = Event()
        self.irq_bits = {k: 1 << int(self.csr.constants[k + "_interrupt"])
                         for k in str(self.csr.constants["pcie_msi_sources"]).split()}

    @staticmethod
    def cycles():
        return int(get_sim_time("ns")) // USER_CLK_NS

    def _off(self, name):
        return self.csr.register(name)[0] - self.csr_base

    async def start(self):
        """Power-on: the model's reset, then enumeration, MSI and bus mastering (the kernel's
        probe), the MSI sources enabled on the device."""
        await self.rc.enumerate()
        self.fn = self.rc.find_device(self.dev.functions[0].pcie_id)
        await self.fn.enable_device()
        await self.fn.set_master()
        await self.fn.alloc_irq_vectors(1, 1)
        self.fn.request_irq(0, self._on_msi)
        self.bar0 = self.fn.bar_window[0]
        await self.write32(self._off("pcie_msi_enable"), 0xffffffff)
        for table in ("reader", "writer"):
            prefix = f"pcie_dma0_{table}"
            await self.write32(self._off(prefix + "_table_loop_prog_n"), 0)
            await self.write32(self._off(prefix + "_table_reset"), 1)
            await self.write32(self._off(prefix + "_enable"), 1)

    async def _on_msi(self):
        vector = await self.read32(self._off("pcie_msi_vector"))
        await self.write32(self._off("pcie_msi_clear"), vector)
        self.pending |= vector
        self.irq_event.set()

    async def read32(self, off):
        return await self.bar0.read_dword(off)

    async def write32(self, off, value):
        await self.bar0.write_dword(off, value)

    async def read_many(self, offs):
        """Back to back, as one bridge command reads them on the UART link (a console's status
        and data register: nothing may slip in between)."""
        return [await self.bar0.read_dword(off) for off in offs]

    async def write_many(self, pairs):
        for off, value in pairs:
            await self.bar0.write_dword(off, value)

    async def wait_irq(self, name, timeout_cycles):
        bit = self.irq_bits.get(name.lower())
        if bit is None:
            raise ValueError(f"no MSI source {name!r} (the build has {', '.join(sorted(self.irq_bits))})")
        deadline = self.cycles() + timeout_cycles
        while not self.pending & bit:
            left = deadline - self.cycles()
            if left <= 0:
                raise TimeoutError(f"no MSI from {name} within {timeout_cycles} cycles")
            self.irq_event.clear()
            await First(self.irq_event.wait(), Timer(left * USER_CLK_NS, "ns"))
        self.pending &= ~bit

    def take_irqs(self, names):
        """Which of the MSI sources ``names`` have fired since last taken (and take them): what a
        kernel driver's interrupt handler leaves for a process that polls the device file."""
        fired = []
        for name in names:
            bit = self.irq_bits.get(name.lower())
            if bit is None:
                raise ValueError(f"no MSI source {name!r} (the build has {', '.join(sorted(self.irq_bits))})")
            if self.pending & bit:
                fired.append(name)
                self.pending &= ~bit
        return fired

    async def _program(self, table, addr, n):
        """Queue host bytes [addr, addr + n) on LitePCIe's descriptor table ``table``
        ("reader"/"writer"), one descriptor per page, an MSI on the last only. The engine is
        set up and enabled once, at start(), and left running: disabled, the reader drops
        completions still arriving and the writer drops the data it is given."""
        prefix = f"pcie_dma0_{table}"
        value = self._off(prefix + "_table_value")
        for at in range(0, n, DESCRIPTOR_BYTES):
            length = min(DESCRIPTOR_BYTES, n - at)
            flags = 0 if at + length == n else DESCRIPTOR_IRQ_DISABLE
            await self.write32(value, flags | length)              # upper word first (LiteX CSR order)
            await self.write32(value + 4, (addr + at) & 0xffffffff)
            await self.write32(self._off(prefix + "_table_we"), (addr + at) >> 32)

    def _buffer(self, direction):
        if direction not in self.buffers:
            region = self.rc.mem_pool.alloc_region(DMA_BUFFER_BYTES, region_type=_HostBuffer)
            self.buffers[direction] = (region.get_absolute_address(0), region)
        return self.buffers[direction]

    async def dma_to_device(self, data):
        """``data`` to the device's DMA reader, a buffer at a time. Its MSI comes once the last
        read request is out; the data is then still on its way (the device's writer says when
        it is in DRAM). Returns the cycles taken."""
        t0 = self.cycles()
        for at in range(0, len(data), DMA_BUFFER_BYTES):
            # Two buffers in turn: the reader's MSI comes when its last request is out, and up
            # to max_pending_requests of them are still being served from the buffer then. The
            # next buffer's requests cannot all leave before those are done.
            self.reader_turn ^= 1
            addr, region = self._buffer(f"to_device{self.reader_turn}")
            chunk = data[at:at + DMA_BUFFER_BYTES]
            region.mem[:len(chunk)] = chunk
            await self._program("reader", addr, len(chunk))
            await self.wait_irq("pcie_dma0_reader", DMA_TIMEOUT_CYCLES)
        return self.cycles() - t0

    async def dma_from_device(self, n):
        """``n`` bytes from the device's DMA writer: its MSI, then every byte in host memory."""
        if n > DMA_BUFFER_BYTES:
            raise ValueError(f"dma_from_device: {n} bytes is more than the {DMA_BUFFER_BYTES}-byte buffer")
        t0 = self.cycles()
        addr, region = self._buffer("from_device")
        region.written = 0
        await self._program("writer", addr, n)
        await self.wait_irq("pcie_dma0_writer", DMA_TIMEOUT_CYCLES)
        deadline = self.cycles() + DMA_TIMEOUT_CYCLES
        while region.written < n:
            if self.cycles() > deadline:
                raise TimeoutError(f"DMA writer: {region.written} of {n} bytes reached host memory")
            await Timer(16 * USER_CLK_NS, "ns")
        return bytes(region.mem[:n]), self.cycles() - t0


# The simulator runs freely and looks for a request every POLL_MIN cycles after one, backing off
# to every POLL_MAX while none comes: the driver's requests come in bursts (a console read
# character by character, a run's registers), and each look costs the simulator little.
POLL_MIN, POLL_MAX = 4, 256


async def _handle(host, request, stream):
    """One request: (reply, payload)."""
    op = request.get("op")
    if op == "read":
        return {"values": await host.read_many([int(o) for o in request["offs"]])}, b""
    if op == "write":
        await host.write_many([(int(o), int(v) & 0xffffffff) for o, v in request["pairs"]])
        return {}, b""
    if op == "take_irqs":
        return {"fired": host.take_irqs(request["names"])}, b""
    if op == "dma_to_device":
        return {"cycles": await host.dma_to_device(stream.read(int(request["n"])))}, b""
    if op == "dma_from_device":
        payload, cycles = await host.dma_from_device(int(request["n"]))
        return {"n": len(payload), "cycles": cycles}, payload
    if op == "info":
        return {"bar0_size": host.bar0_size, "cycles": host.cycles(), "irq_sources": sorted(host.irq_bits)}, b""
    raise ValueError(f"unknown request {op!r}")


async def _serve(host, listener):
    """The driver's requests, one connection at a time. Between them the simulation runs on
    (the CPU boots, the core computes) and the socket is looked at between POLL_MIN and
    POLL_MAX cycles apart."""
    listener.setblocking(False)
    conn = stream = None
    wait = POLL_MAX
    while True:
        await Timer(wait * USER_CLK_NS, "ns")
        wait = min(2 * wait, POLL_MAX)
        if conn is None:
            if not select.select([listener], [], [], 0)[0]:
                continue
            conn, _ = listener.accept()
            conn.setblocking(True)
            stream = conn.makefile("rwb")
        if not select.select([conn], [], [], 0)[0]:
            continue
        wait = POLL_MIN
        line = stream.readline()
        if not line:                       # the driver closed the link: wait for the next
            stream.close(); conn.close()
            conn = stream = None
            continue
        try:
            reply, payload = await _handle(host, json.loads(line), stream)
            reply["ok"] = True
        except (ValueError, KeyError, TimeoutError) as e:
            reply, payload = {"ok": False, "error": str(e)}, b""
        try:
            stream.write(json.dumps(reply).encode() + b"\n" + payload)
            stream.flush()
        except OSError:
            stream.close(); conn.close()
            conn = stream = None


@cocotb.test(timeout_time=None)
async def serve(dut):
    host = Host(dut, os.environ["LT_PCIE_CSR"])
    await host.start()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(os.environ.get("LT_PCIE_PORT", "0"))))
    listener.listen(1)
    port = listener.getsockname()[1]
    dut._log.info("PCIe link up after %d cycles; host server on 127.0.0.1:%d", host.cycles(), port)
    await _serve(host, listener)
