"""The simulated SoC: LiteTransformerSoC on LiteX's Verilator simulator, with a DDR3 model shaped
like an Arty A7's (16-bit MT41K128M16 at 1:4, a 128-bit native port) and the host link on TCP.

``build()`` verilates once per distinct set of inputs and caches the result; ``SimProcess``
starts a cached build as a child process and reports the TCP port its link listens on.
"""

import atexit
import ctypes
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from migen import *
from migen.genlib.io import CRG

from litex.build.generic_platform import Pins, Subsignal
from litex.build.sim import SimPlatform
from litex.build.sim.config import SimConfig
from litex.soc.integration.builder import Builder
from litex.soc.cores.uart import RS232PHYModel

from litedram import modules as litedram_modules
from litedram.core.controller import ControllerSettings
from litedram.phy.dfi import Interface
from litedram.phy.model import SDRAMPHYModel, sdram_module_nphases

import spec
from spec import isa
from driver.cache import cache_root, hash_files, manifest_problem, write_manifest
from soc.core import LiteTransformerSoC

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(PACKAGE_DIR)

# The simulated target, declared once. DRAM timings are a real DDR3 part's at 100 MHz, so
# refresh, bank changes and cycle counts look like an Arty A7's.
SIM_PARAMS = {
    "sys_clk_freq":     int(100e6),
    "sdram_module":     "MT41K128M16",
    "sdram_data_width": 16,
    "link_timeout_cycles": spec.LINK_TIMEOUT_SIM_CYCLES,
}

# The same SoC with Etherbone beside the UART link (soc/core.py's add_etherbone_link).
ETHERBONE_PARAMS = dict(SIM_PARAMS, etherbone=True)
# ... and with PCIe (soc/core.py's add_pcie_link) through the UltraScale+ PHY whose hard block
# is a root-complex model's (soc/pcie/): built and run under cocotb, not LiteX's sim harness.
PCIE_PARAMS = dict(SIM_PARAMS, pcie=True)

# IOs ----------------------------------------------------------------------------------------------

def _byte_stream(name):
    """A byte stream's pads, both ways, for a sim module to bridge."""
    return (name, 0,
        Subsignal("source_valid", Pins(1)),
        Subsignal("source_ready", Pins(1)),
        Subsignal("source_data",  Pins(8)),
        Subsignal("sink_valid",   Pins(1)),
        Subsignal("sink_ready",   Pins(1)),
        Subsignal("sink_data",    Pins(8)),
    )


_io = [
    ("sys_clk", 0, Pins(1)),
    # Host link as a byte stream: the ltlink sim module bridges it to a TCP socket.
    _byte_stream("hostlink"),
    # The Etherbone variant (ETHERBONE_PARAMS): LiteEth's PHY model as a byte stream that LiteX's
    # "ethernet" sim module bridges to a TAP interface (created by the simulator, so it needs root
    # or CAP_NET_ADMIN; tests run it inside a network namespace of their own).
    _byte_stream("eth"),
    # The PCIe variant (PCIE_PARAMS): the x4 link's pads, which only the hard block's socket sees.
    ("pcie", 0,
        Subsignal("clk_p", Pins(1)), Subsignal("clk_n", Pins(1)), Subsignal("rst_n", Pins(1)),
        Subsignal("tx_p", Pins(4)), Subsignal("tx_n", Pins(4)), Subsignal("rx_p", Pins(4)), Subsignal("rx_n", Pins(4))),
]
ETH_TAP = "ltsim0"                  # the TAP interface the simulator opens
ETH_HOST_IP = "192.168.1.100"       # the host's address on it (/24)
ETH_DEVICE_IP = "192.168.1.50"      # the SoC's (LiteX's default Etherbone address)
ETH_DEVICE_MAC = 0x10e2d5000001


class SimPlatformLT(SimPlatform):
    def __init__(self):
        SimPlatform.__init__(self, "SIM", _io)

    # A simulation has no timing to constrain (LitePCIe's PHY and add_pcie ask for it).
    def add_period_constraint(self, *args, **kwargs):
        pass

    def add_false_path_constraints(self, *args, **kwargs):
        pass


# Sim SoC ------------------------------------------------------------------------------------------

class StuckReadBit(Module):
    """A DRAM fault for the failure-path tests: between the controller and the PHY model, data
    bit ``bit`` of every read phase reads 0, as a broken DQ line would. It has the PHY's
    ``settings`` and a DFI interface of the same shape, so the controller takes it for the PHY."""

    def __init__(self, phy, bit=0):
        self.settings = phy.settings
        dfi = phy.dfi
        self.dfi = Interface(len(dfi.p0.address), len(dfi.p0.bank), len(dfi.p0.cs_n), len(dfi.p0.rddata),
                             len(dfi.phases))
        for ours, theirs in zip(self.dfi.phases, dfi.phases):
            for name, _, direction in ours.layout:
                mine, phys = getattr(ours, name), getattr(theirs, name)
                if direction == DIR_M_TO_S:
                    self.comb += phys.eq(mine)
                elif name == "rddata":
                    self.comb += mine.eq(phys & ~(1 << bit))
                else:
                    self.comb += mine.eq(phys)


class SimSoC(LiteTransformerSoC):
    """LiteTransformerSoC with a DDR3 model and the host link on the ``hostlink`` stream pads.
    ``dram_fault="stuck_read_bit"`` (tests only) breaks a data line and lets the BIOS's memtest
    find it: DRAM initialisation fails as on a board with a bad memory."""

    def __init__(self, sys_clk_freq, sdram_module, sdram_data_width, link_timeout_cycles, dram_fault=None,
                 etherbone=False, pcie=False, **kwargs):
        platform = SimPlatformLT()
        sys_clk = platform.request("sys_clk")
        if pcie:
            # One clock for the whole SoC, the PCIe block's user clock, which the model drives:
            # every edge is a call into Python, so a second clock would halve the speed. The
            # PHY's clock crossings stay in (sys and pcie are separate domains).
            sys_clk = Signal()
        self.crg = CRG(sys_clk)  # with a power-on reset: VexRiscv needs one
        LiteTransformerSoC.__init__(self, platform, sys_clk_freq, ident="LiteTransformer simulation", **kwargs)

        # DDR3 model ---------------------------------------------------------------------------------
        module_cls = getattr(litedram_modules, sdram_module)
        nphases    = sdram_module_nphases[module_cls.memtype]
        rate       = "1:{}".format(nphases)
        # The part's timings from the speed-grade column of the rate it runs at (sys clock x
        # phases x 2 transfers: DDR3-800 here). LiteDRAM gives some of them (tRFC) in DRAM clocks
        # of the speed grade, so another column scales them by its clock against this one.
        speedgrade = str(int(sys_clk_freq * nphases * 2 / 1e6))
        module     = module_cls(sys_clk_freq, rate, speedgrade=speedgrade)
        self.sdrphy = SDRAMPHYModel(module=module, data_width=sdram_data_width, clk_freq=sys_clk_freq)
        phy = self.sdrphy
        if dram_fault == "stuck_read_bit":
            self.dram_fault = phy = StuckReadBit(self.sdrphy)
        elif dram_fault is not None:
            raise ValueError(f"SimSoC: dram_fault {dram_fault!r}: the one fault is 'stuck_read_bit'")
        # Commands queue 16 deep per bank (LiteDRAM's default: 8) and refreshes go out in groups
        # of 4: a long stream loses less to each group's precharge than to one per tREFI, and a
        # short read that meets a group waits no longer than for four.
        self.add_sdram("sdram", phy=phy, module=module,
            controller_settings=ControllerSettings(cmd_buffer_depth=16, refresh_postponing=4))
        if dram_fault is None:
            # The model needs no calibration and memtest only costs boot time.
            self.add_constant("SDRAM_TEST_DISABLE")
        else:
            # A short memtest: a stuck bit shows in its first words.
            self.add_constant("MEMTEST_DATA_SIZE", 4096)

        # Host link + bulk path ----------------------------------------------------------------------
        self.add_host_link(RS232PHYModel(platform.request("hostlink")), timeout_cycles=link_timeout_cycles,
                           more_bridges=etherbone, **({"with_pcie": True} if pcie else {}))
        if etherbone:
            from liteeth.phy.model import LiteEthPHYModel
            self.ethphy = LiteEthPHYModel(platform.request("eth"))
            self.add_etherbone_link(self.ethphy, ip_address=ETH_DEVICE_IP, mac_address=ETH_DEVICE_MAC)

        # Transformer core ---------------------------------------------------------------------------
        self.add_accelerator(isa.TARGET_PARAMS["sim"])

        if pcie:
            from soc.pcie.phy import SimUSPPCIEPHY
            phy = SimUSPPCIEPHY(platform, platform.request("pcie"), speed="gen3", data_width=128,
                                bar0_size=0x20000)
            self.add_pcie_link(phy, bar0_size=0x20000)
            self.comb += sys_clk.eq(ClockSignal("pcie"))
            # Under cocotb the SoC runs ~5,000 cycles/s and the host drains the console one CSR
            # read (a TLP round trip) at a time: the BIOS's banner (~600 characters), its CRC of
            # its own ROM and the DRAM initialisation's delay loops (which the model does not
            # need) made a ~80 s boot. The UART simulator keeps them (its boot is seconds).
            for option in ("BIOS_NO_CRC", "BIOS_NO_PROMPT", "BIOS_NO_DELAYS"):
                self.add_config(option)

# Build (cached) -----------------------------------------------------------------------------------

_VERSIONED_PACKAGES = ["litex", "litedram", "migen", "pythondata-cpu-vexriscv",
                       "pythondata-software-picolibc", "pythondata-software-compiler-rt"]


# Project sources the simulator binary is made from (board files are not among them).
_HASHED_SOURCES = ["spec", "gateware", "soc/core.py", "soc/sim.py", "soc/sim_modules", "soc/sim_core"]


def write_isa_header(generated_dir):
    """spec.isa as C, beside LiteX's csr.h/soc.h, for firmware."""
    with open(os.path.join(generated_dir, "litetransformer_isa.h"), "w") as f:
        f.write(isa.c_header())


def _tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def hash_inputs(h, sources):
    """Feed ``h`` the package and tool versions a Verilator build depends on and the project
    ``sources`` (files or folders under the project)."""
    for pkg in _VERSIONED_PACKAGES:
        try:
            h.update(f"{pkg}={importlib.metadata.version(pkg)}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{pkg}=none".encode())
    h.update(_tool_version(["verilator", "--version"]).encode())
    h.update(_tool_version(["riscv64-unknown-elf-gcc", "--version"]).encode())
    hash_files(h, sources)


def pgo_enabled():
    """Profile-guided compile of the simulator (soc/sim_core/Makefile): on unless
    LITETRANSFORMER_SIM_PGO=0, which builds about a minute sooner and runs ~25 % slower."""
    return os.environ.get("LITETRANSFORMER_SIM_PGO", "1") != "0"


def _host_cpu():
    """The model is compiled with -march=native: a cached binary is only good on this CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown"
    keep = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def input_hash(params=None):
    """Hash of everything the simulator binary depends on: parameters, project sources that
    reach the gateware or the sim build, package and tool versions, the host CPU and the
    compile mode."""
    params = dict(SIM_PARAMS if params is None else params)
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(f"pgo={int(pgo_enabled())}".encode())
    h.update(_host_cpu().encode())
    hash_inputs(h, _HASHED_SOURCES)
    return h.hexdigest()[:16]


@dataclass
class SimBuild:
    """A finished simulator build: the directory to run it in and LiteX's exports."""
    directory: str

    @property
    def gateware_dir(self):
        return os.path.join(self.directory, "gateware")

    @property
    def binary(self):
        return os.path.join(self.gateware_dir, "obj_dir", "Vsim")

    @property
    def csr_csv(self):
        return os.path.join(self.directory, "csr.csv")

    @property
    def csr_json(self):
        return os.path.join(self.directory, "csr.json")

    def ok(self):
        return all(os.path.exists(p) for p in (self.binary, self.csr_csv, self.csr_json))


def _check_tools():
    missing = [tool for tool in ("verilator", "riscv64-unknown-elf-gcc", "meson", "ninja", "make")
               if shutil.which(tool) is None]
    if missing:
        raise RuntimeError("cannot build the simulator: missing " + ", ".join(missing) +
                           " (run scripts/setup.sh, which installs them)")


def build(params=None, progress=None, force=False):
    """Return the cached SimBuild for ``params``, building it first if needed."""
    params = dict(SIM_PARAMS if params is None else params)
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    key = input_hash(params)
    target = SimBuild(os.path.join(cache_root(), "sim-" + key))
    if os.path.isdir(target.directory) and not force:
        problem = manifest_problem(target.directory)
        if problem is None:
            return target
        progress(f"[sim] the cached simulator {target.directory} is damaged ({problem}): rebuilding")
    _check_tools()
    # LiteX's BIOS Makefile runs `python3 -m litex...`: it must find this interpreter's packages.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.makedirs(cache_root(), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="sim-" + key + "-", dir=cache_root())
    t0 = time.monotonic()
    progress(f"[sim] building simulator {key} in {workdir} (first run only, ~2-3 min)")
    log_path = os.path.join(workdir, "build.log")
    cwd = os.getcwd()
    try:
        mods_dir = os.path.join(workdir, "sim_modules")
        shutil.copytree(os.path.join(PACKAGE_DIR, "sim_modules"), mods_dir)
        sim_config = SimConfig()
        sim_config.add_clocker("sys_clk", freq_hz=params["sys_clk_freq"])
        sim_config.add_module("ltlink", "hostlink", args={"port": 0})
        if params.get("etherbone"):
            sim_config.add_module("ethernet", "eth", args={"interface": ETH_TAP, "ip": ETH_HOST_IP})
        progress("[sim] elaborating the SoC and compiling the BIOS")
        with open(log_path, "a") as log, _redirect_fds(log):
            soc = SimSoC(**params)
            builder = Builder(soc, output_dir=workdir,
                              csr_csv=os.path.join(workdir, "csr.csv"),
                              csr_json=os.path.join(workdir, "csr.json"))
            builder.build(sim_config=sim_config, run=False, extra_mods=["ltlink"], extra_mods_path=mods_dir)
            write_isa_header(builder.generated_dir)
        progress(f"[sim] verilating and compiling ({time.monotonic() - t0:.0f} s so far)")
        gw = os.path.join(workdir, "gateware")
        with open(os.path.join(gw, "build_sim.sh")) as f:
            cc_srcs = re.search(r'CC_SRCS="([^"]*)"', f.read()).group(1)
        cmd = ["make", "-C", gw, "-f", os.path.join(PACKAGE_DIR, "sim_core", "Makefile"),
               f"CC_SRCS={cc_srcs}", f"PROJECT_CORE={os.path.join(PACKAGE_DIR, 'sim_core')}",
               "SIM_MODULES=clocker" + (" ethernet" if params.get("etherbone") else ""), "JOBS=2",
               # (no profile run for Etherbone: the simulator would open its TAP on the build host)
               f"PGO={int(pgo_enabled() and not params.get('etherbone'))}"]
        with open(log_path, "a") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"simulator compile failed (exit {r.returncode}); see {log_path}")
        # The binary runs from the cache; the project module sources are not needed any more.
        os.chdir(cwd)
        write_manifest(workdir, [os.path.relpath(p, workdir) for p in
                                 (SimBuild(workdir).binary, SimBuild(workdir).csr_csv, SimBuild(workdir).csr_json)])
        if os.path.exists(target.directory):
            shutil.rmtree(target.directory)
        os.rename(workdir, target.directory)
    except BaseException:
        os.chdir(cwd)
        progress(f"[sim] build failed; log kept in {log_path}")
        raise
    progress(f"[sim] simulator ready in {time.monotonic() - t0:.0f} s: {target.directory}")
    return target


class _redirect_fds:
    """Send this process's stdout/stderr (fd level: LiteX and the compilers print) to a log."""
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        sys.stdout.flush(); sys.stderr.flush()
        self.saved = os.dup(1), os.dup(2)
        os.dup2(self.log.fileno(), 1)
        os.dup2(self.log.fileno(), 2)

    def __exit__(self, *exc):
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0]); os.close(self.saved[1])

# Run ----------------------------------------------------------------------------------------------

def _die_with_parent():
    """In the child: ask Linux to SIGTERM the simulator when the driver process dies, however it
    dies, so no orphan simulator keeps a core busy."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class SimProcess:
    """A running simulator: a child process whose link listens on 127.0.0.1:``port``."""

    LISTEN_RE = re.compile(rb"ltlink: listening on 127\.0\.0\.1:(\d+)")

    def __init__(self, sim_build, log_path=None, start_timeout=60.0, netns=None, env=None):
        self.build = sim_build
        fd, default_log = tempfile.mkstemp(prefix="litetransformer-sim-", suffix=".log")
        os.close(fd)
        if log_path:
            os.remove(default_log)
        self.log_path = log_path or default_log
        self._own_log = log_path is None
        self._log = open(self.log_path, "wb")
        # ``netns``: run inside that network namespace (the Etherbone build's TAP appears there).
        cmd = ["ip", "netns", "exec", netns, sim_build.binary] if netns else [sim_build.binary]
        self.proc = subprocess.Popen(cmd, cwd=sim_build.gateware_dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        atexit.register(self.stop)
        self.port = None
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                m = self.LISTEN_RE.search(f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with code {self.proc.returncode} before its link "
                                   f"came up; log: {self.log_path}\n{self.log_tail()}")
            time.sleep(0.05)
        else:
            self.stop()
            raise TimeoutError(f"simulator link did not come up within {start_timeout:.0f} s; log: {self.log_path}")

    SCHEME = "sim"

    @property
    def url(self):
        return f"{self.SCHEME}://127.0.0.1:{self.port}"

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=5.0):
        """Stop the simulator. Its temporary log goes too, unless the simulator had exited on its
        own: then the log is what tells why, and the error that reported it names the file."""
        atexit.unregister(self.stop)
        died = self.proc.poll() is not None
        if not died:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self._own_log and not died:
            try:
                os.remove(self.log_path)
            except OSError:
                pass
