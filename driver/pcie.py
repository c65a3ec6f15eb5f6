"""The PCIe link: the same bus the UART link reaches, over BAR0 and LitePCIe's DMA.

BAR0 maps the SoC's CSR window (LiteX's ``add_pcie``), so a register's BAR0 offset is its
csr.csv address less the window's base. The two bulk paths the Device uses become DMA: a
write stream to the HostDMAWriter's window is the DMA reader carrying host memory into it
(the writer's own range, window and overrun checks still apply, and the Device still checks
the CRC after), and a read of the DRAM window is the HostDMAReader streaming that range into
the DMA writer. A finished run raises an MSI (``wait_irq("accel_done")``).

The host's side of the link (enumeration, DMA descriptor tables, MSI) is what LitePCIe's
kernel driver does on a machine with a board; in simulation the simulator does it
(soc/pcie/host.py) and this module talks to it over a local socket: ``pcie://HOST:PORT``.
"""

import json
import socket
import time

from driver.errors import LinkError

DMA_ALIGN = 16          # the HostDMAWriter/Reader move whole 128-bit beats


class _SimHost:
    """The simulator's host server (soc/pcie/host.py): one JSON line per request."""

    def __init__(self, host, port, timeout):
        self.where = f"pcie://{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise LinkError(f"{self.where}: cannot reach the PCIe simulator's host server ({e}); is "
                            f"`litetransformer sim --pcie` running and is this its port?") from None
        self.stream = self.sock.makefile("rwb")

    def call(self, request, payload=b"", timeout=None):
        self.sock.settimeout(timeout)
        try:
            self.stream.write(json.dumps(request).encode() + b"\n" + payload)
            self.stream.flush()
            line = self.stream.readline()
            if not line:
                raise LinkError(f"{self.where}: the simulator closed the link")
            reply = json.loads(line)
            data = self.stream.read(reply["n"]) if reply.get("ok") and "n" in reply else b""
        except (OSError, ValueError) as e:
            raise LinkError(f"{self.where}: {request['op']} failed: {e}") from None
        if not reply.get("ok"):
            raise LinkError(f"{self.where}: {request['op']}: {reply.get('error')}")
        return reply, data

    def close(self):
        try:
            self.stream.close()
            self.sock.close()
        except OSError:
            pass


class PCIeLink:
    """Device's link over PCIe (see the module's docstring); ``csr``: the build's CSRMap."""

    dram_words = False      # DRAM by DMA only, in whole beats (Device.write_dram patches them)

    # The simulator runs ~10,000 cycles a second, ~10,000 times slower than a board: the BIOS's
    # DRAM initialisation alone is tens of seconds of silence on its console.
    SIM_MIN_TIMEOUT = 120.0

    def __init__(self, host, port, csr, timeout=5.0):
        self.timeout = max(timeout, self.SIM_MIN_TIMEOUT)
        self.csr = csr
        self.transport = _SimHost(host, port, timeout)
        self.csr_base, self.csr_size = self._region(("csr",), 0x10000)
        self.hostdma_origin = self._region(("hostdma",))[0]
        self.window_origin, self.window_size = self._region(("dram_window",))
        self.dma_cycles = 0              # simulated cycles the DMA reader has taken, in all

    def _region(self, names, default_size=None):
        for name in names:
            if name in self.csr.regions:
                return self.csr.regions[name]
        if names == ("csr",) and self.csr.bases:
            return min(self.csr.bases.values()), default_size
        raise LinkError(f"the CSR map {self.csr.path} has no {names[0]} region: not a PCIe build of this SoC")

    def close(self):
        self.transport.close()

    def _bar0(self, addr):
        off = addr - self.csr_base
        if not 0 <= off < self.csr_size or addr % 4:
            raise LinkError(f"address {addr:#x} is not a CSR: over PCIe, BAR0 reaches the CSR window "
                            f"{self.csr_base:#x}..{self.csr_base + self.csr_size:#x} only (DRAM goes by DMA)")
        return off

    # Words ---------------------------------------------------------------------------------------
    def write(self, addr, words, incr=True):
        pairs = [[self._bar0(addr + (4 * i if incr else 0)), int(w) & 0xffffffff] for i, w in enumerate(words)]
        self.transport.call({"op": "write", "pairs": pairs}, timeout=self.timeout)

    def read(self, addr, nwords=1, incr=True, timeout=None):
        return self.read_each([addr + (4 * i if incr else 0) for i in range(nwords)], timeout)

    def read_each(self, addrs, timeout=None):
        """One word from each address, read back to back in the simulator."""
        offs = [self._bar0(a) for a in addrs]
        return self.transport.call({"op": "read", "offs": offs}, timeout=timeout or self.timeout)[0]["values"]

    # Bulk ----------------------------------------------------------------------------------------
    def write_stream(self, addr, payload):
        """``payload`` into the HostDMAWriter (armed by the Device) by the DMA reader."""
        if addr != self.hostdma_origin:
            raise LinkError(f"write_stream to {addr:#x}: over PCIe only the host writer's window "
                            f"{self.hostdma_origin:#x} takes a stream")
        if len(payload) % DMA_ALIGN:
            raise LinkError(f"write_stream: {len(payload)} bytes is not a whole number of {DMA_ALIGN}-byte beats")
        reply, _ = self.transport.call({"op": "dma_to_device", "n": len(payload)}, bytes(payload),
                                       timeout=max(60.0, self.timeout))
        self.dma_cycles += reply["cycles"]

    def read_bytes(self, addr, nbytes, timeout=None):
        """DRAM bytes through the DRAM window's addresses: the HostDMAReader and the DMA writer."""
        off = addr - self.window_origin
        if not 0 <= off < self.window_size:
            if addr >= self.csr_base and addr + nbytes <= self.csr_base + self.csr_size:
                words = self.read(addr, nbytes // 4, timeout=timeout)
                return b"".join(w.to_bytes(4, "little") for w in words)
            raise LinkError(f"read_bytes at {addr:#x}: neither DRAM (the window {self.window_origin:#x}) nor a CSR")
        start = off - off % DMA_ALIGN
        span = -(-(off + nbytes - start) // DMA_ALIGN) * DMA_ALIGN
        self.write(self.csr.register("hostread_base")[0], [start])
        self.write(self.csr.register("hostread_length")[0], [span])
        self.write(self.csr.register("hostread_start")[0], [1])
        reply, data = self.transport.call({"op": "dma_from_device", "n": span}, timeout=max(60.0, timeout or self.timeout))
        return data[off - start:off - start + nbytes]

    def take_irqs(self, names):
        """The MSI sources among ``names`` (the ``*_INTERRUPT`` constants' names less the suffix, e.g.
        "accel_done") that have fired since they were last taken."""
        return self.transport.call({"op": "take_irqs", "names": list(names)}, timeout=self.timeout)[0]["fired"]

    def wait_irq(self, name, timeout):
        """Block until the MSI from ``name`` comes (the host takes it; the device is not polled);
        LinkError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.take_irqs([name]):
            if time.monotonic() > deadline:
                raise LinkError(f"{self.transport.where}: no MSI from {name} within {timeout:.0f} s")
            time.sleep(0.002)

    def resync(self):
        """Nothing to resynchronise: every request is answered or fails whole."""
