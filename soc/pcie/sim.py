"""The simulated SoC with its PCIe link: the same SimSoC (soc/sim.py) with ``pcie=True``,
verilated with the VPI on and run under cocotb, whose test (soc/pcie/host.py) is the host: a
root complex and the hard block's model on one side, a TCP server for the driver's ``pcie://``
target on the other. The UART link's pads are there but idle (no LiteX sim module here).

``build()`` verilates once per distinct set of inputs, cached like the UART simulator;
``PCIeSimProcess`` runs a build and reports the host server's port.
"""

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from driver.cache import cache_root, hash_files, manifest_problem, write_manifest
from soc import sim

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Verilator's warnings that LiteX's, LitePCIe's and VexRiscv's Verilog raise and that say
# nothing about this design's behaviour.
_QUIET = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-TIMESCALEMOD", "-Wno-MULTIDRIVEN", "-Wno-COMBDLY",
          "-Wno-UNOPTFLAT", "-Wno-INITIALDLY", "-Wno-LATCH", "-Wno-PINMISSING"]


def input_hash():
    h = hashlib.sha256()
    h.update(sim.input_hash(sim.PCIE_PARAMS).encode())
    for pkg in ("cocotb", "cocotbext-pcie", "cocotbext-axi", "litepcie"):
        h.update(f"{pkg}={importlib.metadata.version(pkg)}".encode())
    hash_files(h, ["soc/pcie/usp_hard_ip.v", "soc/pcie/phy.py"])   # (host.py runs in Python, not in the binary)
    return h.hexdigest()[:16]


class PCIeSimBuild(sim.SimBuild):
    @property
    def binary(self):
        return os.path.join(self.gateware_dir, "obj_dir", "Vtop")


def _cocotb(*args):
    return subprocess.run([sys.executable, "-m", "cocotb.config", *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def _check_tools():
    missing = [t for t in ("verilator", "riscv64-unknown-elf-gcc", "make") if shutil.which(t) is None]
    try:
        import cocotb, cocotbext.pcie  # noqa: F401
    except ImportError:
        missing.append("cocotb and cocotbext-pcie (pip install 'litetransformer[pcie]')")
    if missing:
        raise RuntimeError("cannot build the PCIe simulator: missing " + ", ".join(missing))


def build(progress=None, force=False):
    """The cached PCIeSimBuild, built first if needed (~1.5 min here)."""
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    key = input_hash()
    target = PCIeSimBuild(os.path.join(cache_root(), "pcie-" + key))
    if os.path.isdir(target.directory) and not force:
        problem = manifest_problem(target.directory)
        if problem is None:
            return target
        progress(f"[pcie] the cached simulator {target.directory} is damaged ({problem}): rebuilding")
    _check_tools()
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.makedirs(cache_root(), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="pcie-" + key + "-", dir=cache_root())
    log_path = os.path.join(workdir, "build.log")
    t0 = time.monotonic()
    progress(f"[pcie] building the PCIe simulator {key} in {workdir} (first run only, ~1.5 min)")
    try:
        from litex.build.sim.config import SimConfig
        from litex.soc.integration.builder import Builder
        with open(log_path, "a") as log, sim._redirect_fds(log):
            soc = sim.SimSoC(**sim.PCIE_PARAMS)
            builder = Builder(soc, output_dir=workdir, csr_csv=os.path.join(workdir, "csr.csv"),
                              csr_json=os.path.join(workdir, "csr.json"))
            config = SimConfig()
            config.add_clocker("sys_clk", freq_hz=sim.PCIE_PARAMS["sys_clk_freq"])
            builder.build(sim_config=config, run=False)
            sim.write_isa_header(builder.generated_dir)
        gw = os.path.join(workdir, "gateware")
        sources = [p for p, lang, _ in soc.platform.sources if lang in ("verilog", "systemverilog")]
        sources.append(os.path.join(gw, "sim.v"))
        libdir = _cocotb("--lib-dir")
        share = _cocotb("--share")
        progress(f"[pcie] verilating and compiling ({time.monotonic() - t0:.0f} s so far)")
        cmd = ["verilator", "-cc", "--exe", "-Mdir", "obj_dir", "-DCOCOTB_SIM=1", "--top-module", "sim",
               "--vpi", "--prefix", "Vtop", "-o", "Vtop", "--timescale", "1ns/1ps", "-O3",
               "--x-assign", "fast", "--x-initial", "fast", "--output-split", "20000",
               "-LDFLAGS", f"-Wl,-rpath,{libdir} -L{libdir} -lcocotbvpi_verilator", *_QUIET,
               *sources, os.path.join(share, "lib", "verilator", "verilator.cpp")]
        with open(log_path, "a") as log:
            for step in (cmd, ["make", "-C", "obj_dir", "-f", "Vtop.mk", "-j2", "OPT_FAST=-O2", "OPT_SLOW=-O1"]):
                r = subprocess.run(step, cwd=gw, stdout=log, stderr=subprocess.STDOUT)
                if r.returncode:
                    raise RuntimeError(f"PCIe simulator build failed ({step[0]}, exit {r.returncode}); see {log_path}")
        built = PCIeSimBuild(workdir)
        write_manifest(workdir, [os.path.relpath(p, workdir) for p in (built.binary, built.csr_csv, built.csr_json)])
        if os.path.exists(target.directory):
            shutil.rmtree(target.directory)
        os.rename(workdir, target.directory)
    except BaseException:
        progress(f"[pcie] build failed; log kept in {log_path}")
        raise
    progress(f"[pcie] simulator ready in {time.monotonic() - t0:.0f} s: {target.directory}")
    return target


class PCIeSimProcess(sim.SimProcess):
    """A running PCIe simulator: the host server (soc/pcie/host.py) on 127.0.0.1:``port``,
    reachable as ``pcie://127.0.0.1:port`` once the link is trained and the device enumerated."""

    LISTEN_RE = re.compile(rb"host server on 127\.0\.0\.1:(\d+)")
    SCHEME = "pcie"

    def __init__(self, build, log_path=None, start_timeout=300.0):
        project = os.path.dirname(os.path.dirname(PACKAGE_DIR))
        env = dict(os.environ, MODULE="soc.pcie.host", TOPLEVEL="sim", TOPLEVEL_LANG="verilog",
                   LT_PCIE_CSR=build.csr_csv, PYTHONPATH=project + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   LIBPYTHON_LOC=_cocotb("--libpython"), PYGPI_PYTHON_BIN=sys.executable,
                   COCOTB_RESULTS_FILE=os.devnull, COCOTB_REDUCED_LOG_FMT="1")
        if sys.prefix != sys.base_prefix:
            # cocotb's embedded Python takes this interpreter's packages from the venv it names.
            env["VIRTUAL_ENV"] = sys.prefix
        sim.SimProcess.__init__(self, build, log_path=log_path, start_timeout=start_timeout, env=env)
