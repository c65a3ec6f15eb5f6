"""A LiteTransformer device behind a host link: the simulator or a board.

    dev = Device.open("sim")                       # build if needed, start, connect
    dev = Device.open("sim://127.0.0.1:1234")      # attach to a running simulator
    dev = Device.open("serial:///dev/ttyUSB1?baud=1000000", csr="build/ulx3s/csr.csv")

Weights go up once with ``upload`` (device-side CRC compared with the host's); registers are
read by their LiteX names.
"""

import os
import re
import time
import urllib.parse

import spec
from spec import isa, registers
from driver.bulk import BulkTransfers
from driver.csr import CSRMap
from driver.errors import (AcceleratorError, DeviceError, LinkError, LinkTimeout,
                           SimulatorDied, SpecMismatch)
from driver.etherbone import EtherboneLink
from driver.link import Link

_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def parse_target(target):
    """'sim' | 'sim://HOST:PORT' | 'serial:///dev/ttyX?baud=N' | 'etherbone://IP[:PORT]' |
    'pcie://HOST:PORT' -> (kind, link url or (host, port), baud)."""
    if target == "sim":
        return "sim", None, None
    try:
        u = urllib.parse.urlparse(target)
        port = u.port
    except ValueError as e:
        raise ValueError(f"--target {target!r}: {e}; expected sim://HOST:PORT or serial:///dev/ttyX?baud=N") from None
    if u.scheme == "sim":
        if not u.hostname or not port or u.path not in ("", "/") or u.query:
            raise ValueError(f"--target {target!r}: expected sim://HOST:PORT (nothing after the port)")
        return "sim-attach", f"socket://{u.hostname}:{port}", None
    if u.scheme == "pcie":
        if not u.hostname or not port or u.path not in ("", "/") or u.query:
            raise ValueError(f"--target {target!r}: expected pcie://HOST:PORT (the PCIe simulator's host server)")
        return "pcie", (u.hostname, port), None
    if u.scheme == "etherbone":
        if not u.hostname or u.path not in ("", "/") or u.query:
            raise ValueError(f"--target {target!r}: expected etherbone://IP or etherbone://IP:PORT (UDP, default 1234)")
        return "etherbone", (u.hostname, port or 1234), None
    if u.scheme == "serial":
        if not u.path:
            raise ValueError(f"--target {target!r}: expected serial:///dev/ttyUSB0?baud=N")
        query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"baud"})
        if unknown or len(query.get("baud", [])) > 1:
            raise ValueError(f"--target {target!r}: the only query is one baud=N (got {u.query!r})")
        if "baud" not in query:
            return "serial", u.path, None          # the build's rate, from its CSR map (Device.open)
        try:
            baud = int(query["baud"][0])
        except ValueError:
            baud = 0
        if baud <= 0:
            raise ValueError(f"--target {target!r}: baud {query['baud'][0]!r} is not a positive integer")
        return "serial", u.path, baud
    raise ValueError(f"unknown target {target!r}: use golden, sim, sim://HOST:PORT, serial:///dev/ttyX?baud=N, "
                     f"etherbone://IP[:PORT] or pcie://HOST:PORT")


class Device(BulkTransfers):
    """One connected device. Use ``Device.open(target)``; close it (or use ``with``)."""

    def __init__(self, link_factory, csr_map, sim_process=None, name="device"):
        self._link_factory = link_factory
        self.csr = csr_map
        self.sim = sim_process
        self.name = name
        self.console_log = bytearray()
        self.console_prompt = None      # "litex" (the BIOS) or "ltfw" (driver.firmware), once seen
        self.firmware = None            # driver.firmware.Firmware once booted
        self._broken = False
        self.link = None
        try:
            self.link = link_factory()
        except BaseException:
            self._stop_sim()
            raise

    # Opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, target="sim", csr=None, timeout=5.0, ready_timeout=180.0, check_spec=True, progress=None):
        """Connect to ``target``, wait for the BIOS to finish DRAM init, check the spec.
        ``"golden"`` gives the ISA interpreter (driver.runtime.GoldenTarget) instead: the same
        ``load``/``generate``/``eval`` with the simulated core's parameters, no hardware."""
        if target == "golden":
            from driver.runtime import GoldenTarget
            return GoldenTarget()
        kind, url, baud = parse_target(target)
        sim_process = None
        if kind == "sim":
            from soc import sim as simsoc
            build = simsoc.build(progress=progress)
            csr = csr or build.csr_csv
            sim_process = simsoc.SimProcess(build)
            url = f"socket://127.0.0.1:{sim_process.port}"
        elif kind == "sim-attach" and csr is None:
            from soc import sim as simsoc
            csr = simsoc.build(progress=progress).csr_csv
        elif kind == "pcie" and csr is None:
            from soc.pcie import sim as pciesim
            csr = pciesim.build(progress=progress).csr_csv
        elif kind in ("serial", "etherbone") and csr is None:
            raise ValueError("a board needs its CSR map: pass csr=PATH (build/<board>/csr.csv from "
                             "`litetransformer build --board B`; for the Etherbone simulator, "
                             "`litetransformer sim --etherbone` prints it)")
        try:
            csr_map = CSRMap(csr)
        except BaseException:
            if sim_process:
                sim_process.stop()
            raise
        # In simulation bytes arrive one per cycle: the bridge's command timeout is short in
        # cycles but the simulator is ~200x slower than hardware, so wait longer when resyncing.
        is_sim = kind != "serial"
        resync = 1.5 if is_sim else 0.3
        if kind == "serial" and baud is None:
            # The rate the bitstream was built for (its csr.csv), never a silent default.
            baud = csr_map.constants.get("link_baudrate")
            if not baud:
                raise ValueError(f"--target {target!r}: no ?baud=N, and the CSR map {csr} does not record the "
                                 f"link's rate (a build from before it did): add ?baud=N (the ULX3S: 1000000)")
        if kind == "pcie":
            from driver.pcie import PCIeLink
            factory = lambda: PCIeLink(url[0], url[1], csr_map, timeout=timeout)  # noqa: E731
        elif kind == "etherbone":
            fence, _ = csr_map.register("ctrl_scratch")
            factory = lambda: EtherboneLink(url[0], url[1], timeout=timeout, fence_addr=fence)  # noqa: E731
        else:
            factory = lambda: Link(url, baudrate=baud or 115200, timeout=timeout, resync_wait=resync)  # noqa: E731
        dev = cls(factory, csr_map, sim_process, name=target if kind != "sim" else f"sim (127.0.0.1:{sim_process.port})")
        try:
            if kind != "sim":
                # Another client may have left a command half-sent (killed mid-upload): drop it
                # before the first exchange, then make sure a LiteX SoC answers at all.
                dev.link.resync()
            dev.probe()
            dev.wait_ready(ready_timeout)
            if check_spec:
                dev.check_spec()
        except BaseException:
            dev.close()
            raise
        return dev

    def __enter__(self):
        return self

    def load(self, model, tokenizer=None, seq_len=None, progress=None, allow_lossy=False, compiled=None):
        """Compile ``model`` (a checkpoint path or driver.model.Model) for this device's core,
        upload it (CRC-verified) and return a driver.runtime.LoadedModel with ``generate``
        and ``eval`` (driver.runtime.load)."""
        from driver.runtime import load
        return load(self, model, tokenizer, seq_len, progress, allow_lossy, compiled)

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.link:
            self.link.close()
        self._stop_sim()

    def _stop_sim(self):
        if self.sim:
            self.sim.stop()

    # Fault handling -------------------------------------------------------------------------------
    def _on_link(self, method, *args, **kwargs):
        """Call ``Link.<method>``; turn a dead simulator into SimulatorDied and remember that the
        link needs a resync before the next operation."""
        if self.sim and not self.sim.alive():
            raise SimulatorDied(self._sim_death_message())
        if self._broken:
            self._recover()
        try:
            return getattr(self.link, method)(*args, **kwargs)
        except LinkError as e:
            self._broken = True
            if self.sim:
                # Give a dying simulator a moment to be reaped so the cause is reported right.
                for _ in range(20):
                    if not self.sim.alive():
                        raise SimulatorDied(self._sim_death_message()) from e
                    time.sleep(0.05)
            raise

    def _sim_death_message(self):
        return (f"simulator exited with code {self.sim.proc.returncode}; log {self.sim.log_path}:\n"
                f"{self.sim.log_tail(8)}")

    def _recover(self, attempts=5):
        """Reopen the link and drop whatever a failed exchange left half-done on the bridge: wait
        out its command timeout, drain, and probe (scratch write and read-back) until the probe
        passes; a simulator slower than usual needs more than one wait."""
        for attempt in range(attempts):
            if self.link:
                self.link.close()
            self.link = self._link_factory()
            self.link.resync()
            try:
                self.probe()
                self._broken = False
                return
            except LinkError as e:
                problem = e
        raise LinkError(f"{self.name}: the link did not resynchronise after {attempts} attempts: {problem}")

    # Registers ------------------------------------------------------------------------------------
    def read_reg(self, name, timeout=None):
        addr, nwords = self.csr.register(name)
        if nwords == 1:
            return self._on_link("read", addr, 1, timeout=timeout)[0]
        for _ in range(4):     # multi-word counters: re-read until the high word is stable
            words = self._on_link("read", addr, nwords, timeout=timeout)
            again = self._on_link("read", addr, 1, timeout=timeout)[0]
            if again == words[0]:
                break
        value = 0
        for w in words:
            value = (value << 32) | w
        return value

    def write_reg(self, name, value):
        addr, nwords = self.csr.register(name)
        words = [(value >> (32 * (nwords - 1 - i))) & 0xFFFFFFFF for i in range(nwords)]
        self._on_link("write", addr, words)

    def set_regs(self, values):
        """Write the one-word registers of ``values`` ({name: value}) and read them all back in
        one exchange. UARTBone has no checksum: a garbled byte on the line could have set
        another value (or written elsewhere), and a DMA, a CRC or a run started on it would
        act on that silently. These are the registers that say what the next start does."""
        for name, value in values.items():
            self.write_reg(name, value)
        addrs = [self.csr.register(name)[0] for name in values]
        back = self._on_link("read_each", addrs)
        wrong = [f"{name} = 0x{got:x} (wrote 0x{value:x})" for (name, value), got in zip(values.items(), back)
                 if got != value & 0xFFFFFFFF]
        if wrong:
            self._broken = True
            raise LinkError(f"{self.name}: registers read back otherwise than written: {', '.join(wrong)} "
                            f"(the link garbled a command)")

    # Bring-up -------------------------------------------------------------------------------------
    def probe(self):
        """Make sure the peer is a LiteX SoC's UARTBone bridge, within the link's timeout: write
        a random word to LiteX's scratch register, read it back, put the old value back. A peer
        that is something else answers nothing, or not that word."""
        addr, _ = self.csr.register("ctrl_scratch")
        value = int.from_bytes(os.urandom(4), "little")
        try:
            old = self.link.read(addr, 1)[0]
            self.link.write(addr, [value])
            back = self.link.read(addr, 1)[0]
        except LinkTimeout as e:
            raise LinkError(f"{self.name} is not answering as a LiteX SoC: {e} (is this the port of "
                            f"`litetransformer sim`, or a board running our bitstream?)") from None
        if back != value:
            self.link.resync()
            raise LinkError(f"{self.name} is not a LiteX SoC's UARTBone bridge: LiteX's scratch register "
                            f"(0x{addr:08x}) read back 0x{back:08x} after 0x{value:08x} was written")
        self.link.write(addr, [old])

    def wait_ready(self, timeout=180.0, silence=None):
        """Drain the CPU console (the BIOS blocks when nobody reads it) until the BIOS prompt
        shows that DRAM init has finished (or the prompt of the decode-loop firmware that an
        earlier session booted); fail if the BIOS reports a DRAM failure. ``silence`` (default:
        the link's timeout): seconds the console may say nothing, newlines asking for a prompt
        included. A booting BIOS is never quiet that long (at most ~1 s in simulation, where
        DRAM init is slowest); a CPU that is hung, or busy in another client's firmware run, is."""
        rxempty, _ = self.csr.register("uart_xover_rxempty")
        rxtx, _ = self.csr.register("uart_xover_rxtx")
        silence = self.link.timeout if silence is None else silence
        deadline = time.monotonic() + timeout
        last_char = heard = time.monotonic()
        poked, empty = 0, True
        while time.monotonic() < deadline:
            # The data register is read only when a character is known to be there (a read
            # after an "empty" status would pop, and lose, one that arrived in between).
            if empty:
                empty = self._on_link("read", rxempty, 1)[0]
            if not empty:
                char, empty = self._on_link("read_each", [rxtx, rxempty])
                self.console_log.append(char & 0xFF)
                last_char = heard = time.monotonic()
                continue
            if time.monotonic() - heard > silence:
                tail = _ANSI.sub(b"", bytes(self.console_log))[-200:].decode(errors="replace")
                raise DeviceError(f"{self.name}: the CPU has written nothing on its console for {silence:g} s "
                                  f"(--timeout), {poked} newlines asking for a prompt included: it is not running "
                                  f"the BIOS or our firmware, or it is busy (another client's firmware run?); "
                                  f"console so far: {tail!r}")
            text = _ANSI.sub(b"", bytes(self.console_log))
            if b"Memory initialization failed" in text:
                raise DeviceError(f"{self.name}: the BIOS reports that DRAM initialisation failed:\n"
                                  f"{text[-400:].decode(errors='replace')}")
            prompt = re.search(rb"(litex|ltfw)> $", text.rstrip(b"\r\n ") + b" ")
            if prompt:
                self.console_prompt = prompt.group(1).decode()
                return
            if time.monotonic() - last_char > 1.0:
                # Quiet console: the BIOS may have booted long ago; ask it for a fresh prompt.
                self.write_reg("uart_xover_rxtx", ord("\n"))
                poked += 1
                last_char = time.monotonic()
            else:
                time.sleep(0.01)
        tail = _ANSI.sub(b"", bytes(self.console_log))[-400:].decode(errors="replace")
        raise DeviceError(f"{self.name}: BIOS prompt not seen within {timeout:.0f} s "
                          f"({poked} prompts asked); console so far:\n{tail}")

    def console_write(self, text, timeout=5.0):
        """Type ``text`` on the CPU console. The crossover UART holds one character towards the
        CPU and drops a write while it is full, so wait for room before each."""
        for char in text.encode():
            deadline = time.monotonic() + timeout
            while self.read_reg("uart_xover_txfull"):
                if time.monotonic() > deadline:
                    raise DeviceError(f"{self.name}: the CPU has not read its console for {timeout:.0f} s")
                time.sleep(0.001)
            self.write_reg("uart_xover_rxtx", char)

    def console_read(self, until, timeout=60.0):
        """Read the CPU console up to and including ``until`` (bytes, e.g. b"\\n" or a prompt);
        return the text read, ANSI codes removed. ``timeout``: seconds without a character."""
        rxempty, _ = self.csr.register("uart_xover_rxempty")
        rxtx, _ = self.csr.register("uart_xover_rxtx")
        text = bytearray()
        empty, last_char, delay = True, time.monotonic(), 0.0005
        while True:
            if empty:
                empty = self._on_link("read", rxempty, 1)[0]
            if empty:
                if time.monotonic() - last_char > timeout:
                    raise DeviceError(f"{self.name}: no console output for {timeout:.0f} s while waiting for "
                                      f"{until!r}; console so far:\n{bytes(text[-400:]).decode(errors='replace')}")
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
                continue
            # Read the data register only when a character is known to be there: a read after an
            # "empty" status would pop, and lose, a character that arrived in between. The status
            # read after it says whether another one waits.
            char, empty = self._on_link("read_each", [rxtx, rxempty])
            text.append(char & 0xFF)
            self.console_log.append(char & 0xFF)
            last_char, delay = time.monotonic(), 0.0005
            if text.endswith(until):
                return _ANSI.sub(b"", bytes(text))

    def check_spec(self):
        version = self.read_reg("info_spec_version")
        digest = self.read_reg("info_spec_hash")
        if version != spec.spec_version_word() or digest != spec.spec_hash():
            raise SpecMismatch(
                f"{self.name} implements spec {version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF} "
                f"hash {digest:08x}; this driver is spec {'.'.join(map(str, spec.SPEC_VERSION))} "
                f"hash {spec.spec_hash():08x}: rebuild the gateware or update the driver")

    def ident(self):
        base = self.csr.bases["identifier_mem"]
        words = self._on_link("read", base, 64)
        chars = bytes(w & 0xFF for w in words)
        return chars.split(b"\0")[0].decode(errors="replace")

    def info(self):
        version = self.read_reg("info_spec_version")
        return {
            "target": self.name,
            "ident": self.ident(),
            "spec_version": f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}",
            "spec_hash": f"{self.read_reg('info_spec_hash'):08x}",
            "dram_bytes": self.read_reg("info_dram_size"),
            "port_bytes": self.read_reg("info_port_bytes"),
            "clock_hz": self.csr.constants.get("config_clock_frequency"),
            "cycles": self.cycles(),
        }

    def cycles(self):
        return self.read_reg("info_cycles")

    # DRAM -----------------------------------------------------------------------------------------
    @property
    def dram_size(self):
        return self._geometry()[0]

    @property
    def port_bytes(self):
        return self._geometry()[1]

    def _geometry(self):
        """(DRAM bytes, bytes per native-port beat), read once from the device."""
        if not hasattr(self, "_geometry_cache"):
            self._geometry_cache = (self.read_reg("info_dram_size"), self.read_reg("info_port_bytes"))
        return self._geometry_cache

    def _check_range(self, offset, length, what):
        align = max(self.port_bytes, 4)
        if offset % align:
            raise ValueError(f"{what}: DRAM offset 0x{offset:x} is not a multiple of {align} bytes")
        if offset < 0 or offset + length > self.dram_size:
            raise DeviceError(f"{what}: {length} bytes at 0x{offset:x} need {offset + length} bytes of "
                              f"DRAM; {self.name} has {self.dram_size}")

    # Transformer core -----------------------------------------------------------------------------
    def accel_params(self):
        """The core's spec.isa.Params, read from its config registers."""
        if not hasattr(self, "_accel_params"):
            if "accel_config" not in self.csr.registers:
                raise DeviceError(f"{self.name} has no transformer core (no accel registers in its CSR map)")
            words = (self.read_reg(f"accel_config{k}") for k in ("", "2", "3"))
            self._accel_params = registers.params_from_config(*words)
        return self._accel_params

    def run_program(self, prog, slots, nslots, watchdog=0, timeout=120.0):
        """Run the program at DRAM byte address ``prog`` on ``nslots`` slots of the table at
        ``slots``; wait for it; return the core's counters. A core error raises
        AcceleratorError naming the code and the address; the next run starts clean."""
        self.accel_params()
        # A run that an earlier call gave up on (its timeout passed) may still be going: its end
        # would read as this run's. Wait for it first, within this call's timeout.
        deadline = time.monotonic() + timeout
        while registers.unpack(registers.STATUS, self.read_reg("accel_status"))["busy"]:
            if time.monotonic() > deadline:
                raise DeviceError(f"{self.name}: the transformer core is still busy with an earlier run after "
                                  f"{timeout:.0f} s; set a watchdog to bound a run in cycles")
            time.sleep(0.01)
        self.set_regs({"accel_prog": prog, "accel_slots": slots, "accel_nslots": nslots,
                       "accel_watchdog": watchdog})
        msi = hasattr(self.link, "wait_irq")       # PCIe: the end of a run raises an MSI
        if msi:
            self._on_link("take_irqs", ["accel_done"])          # one left by an earlier run
        self.write_reg("accel_control", 1)
        deadline = time.monotonic() + timeout
        if msi:
            self._on_link("wait_irq", "accel_done", timeout)     # then the status says how it ended
        delay = 0.0005
        while True:
            status = self.read_reg("accel_status")
            state = registers.unpack(registers.STATUS, status)
            # The end of a run is believed when a second read says the same (a garbled reply
            # must not make the results of a run still going look final).
            if state["done"] and not state["busy"] and self.read_reg("accel_status") == status:
                break
            if time.monotonic() > deadline:
                raise DeviceError(f"{self.name}: the transformer core is still busy after {timeout:.0f} s "
                                  f"(status 0x{status:x}); set a watchdog to bound a run in cycles")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        code = state["error"]
        if code:
            addr = self.read_reg("accel_err_addr")
            name = isa.ERROR_NAMES.get(code, f"code {code}")
            raise AcceleratorError(f"{self.name}: transformer core stopped with {name} at 0x{addr:08x}",
                                   code=code, addr=addr)
        return self.accel_counters()

    def accel_counters(self, per_class=False):
        """Counters of the last run (cycles, MAC-busy, DRAM stalls, bytes, instructions); with
        ``per_class`` also the cycles per instruction class."""
        out = {name: self.read_reg("accel_" + name) for name in
               ("cycles", "mac_busy", "dram_stall", "bytes_read", "bytes_written", "retired")}
        if per_class:
            out["class_cycles"] = {}
            for index, name in enumerate(isa.CLASSES):
                self.write_reg("accel_class_sel", index)
                cycles = self.read_reg("accel_class_cycles")
                if cycles:
                    out["class_cycles"][name] = cycles
        return out
