"""Board targets: the same LiteTransformerSoC on real FPGAs, each reusing litex-boards' platform.

ULX3S (ECP5): the whole flow is open (Yosys + nextpnr-ecp5 + ecppack from PyPI), so ``build``
ends with a bitstream and nextpnr's routed Fmax (soc/boards/ecp5.py). Arty A7-100T (Artix-7):
only Vivado routes a 7-series part, so ``build`` writes the Vivado project LiteX's targets
write with ``--no-compile`` (a user with Vivado runs its script for the bitstream), lints the
Verilog with Verilator and counts the resources with Yosys's ``synth_xilinx`` (soc/boards/vivado.py).
Each board's core is ``spec.isa.TARGET_PARAMS[board]``.
"""

import os
import shutil
import subprocess
import sys

from spec import isa
from soc.boards import acorn, arty, ecp5, ulx3s, vivado

BOARDS = {
    "ulx3s": {
        "soc": ulx3s.ULX3SSoC,
        "flow": ecp5,
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
            "device": ("LFE5U-85F",),
            "sdram_module": ("MT48LC16M16", "AS4C32M16", "AS4C16M16"),
            "sys_clk_freq": (25e6, 50e6),    # Hz, a range
            "baudrate": (115_200, 3_000_000),
        },
        "option_notes": {"device": "LFE5U-12F/25F/45F hold fewer than the core's ~46,000 LUT4"},
    },
    "arty": {
        "soc": arty.ArtySoC,
        "flow": vivado,
        "kwargs": {"variant": "a7-100", "sys_clk_freq": 100e6},
        "part": "XC7A100T",
        "loader_board": "arty",
        "options": {
            "device": ("a7-100",),
            "sys_clk_freq": (50e6, 100e6),
            "baudrate": (115_200, 3_000_000),
        },
        "option_notes": {"device": "the A7-35's XC7A35T holds a third of the core's DSPs and block RAM"},
    },
    "acorn": {
        "soc": acorn.AcornSoC,
        "flow": vivado,
        "kwargs": {"variant": "cle-215+", "sys_clk_freq": 100e6},
        "part": "XC7A200T",
        # Xilinx's pcie_7x wrapper comes from Vivado's IP catalogue (the project's Tcl makes it):
        # a black box of its ports stands in for it in the lint and the counts.
        "hard_ip_stubs": acorn.hard_ip_stubs,
        "driver": acorn.write_driver,
        "loader_board": "acornCle215",
        "options": {
            "device": ("cle-215+", "cle-215"),
            "sys_clk_freq": (50e6, 100e6),
            "baudrate": (115_200, 3_000_000),
        },
        "option_notes": {"device": "the CLE-101's XC7A100T holds a third of the Acorn core's DSPs"},
    },
}

# `build --device` names the FPGA; each board's SoC takes it as its litex-boards argument.
_DEVICE_ARG = {"ulx3s": "device", "arty": "variant", "acorn": "variant"}


def board_options(board, options):
    """``options`` ({name: value}, None values ignored) checked against ``board``'s, before any
    build: the kwargs for its SoC. Raises ValueError naming the option and what it takes."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
    cfg = BOARDS[board]
    allowed = cfg.get("options", {})
    kwargs = dict(cfg["kwargs"])
    for name, value in (options or {}).items():
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        if name not in allowed:
            raise ValueError(f"{flag}: {board} has no such option (it takes "
                             f"{', '.join('--' + n.replace('_', '-') for n in allowed)})")
        spec_ = allowed[name]
        if isinstance(spec_[0], str):
            if value not in spec_:
                note = cfg.get("option_notes", {}).get(name)
                raise ValueError(f"{flag} {value}: {board} takes {', '.join(spec_)}" + (f"; {note}" if note else ""))
        elif not spec_[0] <= value <= spec_[1]:
            raise ValueError(f"{flag} {value:,.0f}: {board} takes {spec_[0]:,.0f} to {spec_[1]:,.0f}")
        kwargs[_DEVICE_ARG[board] if name == "device" else name] = value
    return kwargs


def build(board, output_dir=None, progress=None, options=None, seed=None, driver=False):
    """Build ``board``: its bitstream (ECP5) or its Vivado project and resource counts (Artix-7).
    Returns the JSON-able report. ``options``: board_options's; ``seed``: the placer's seed
    (ECP5 only; default: the board's); ``driver``: also write LitePCIe's kernel driver and user
    library for the build (PCIe boards)."""
    kwargs = board_options(board, options)
    cfg = BOARDS[board]
    if seed is not None and cfg["flow"] is not ecp5:
        raise ValueError(f"--seed: {board} is placed by Vivado, which this build does not run")
    if driver and "driver" not in cfg:
        raise ValueError(f"--driver: {board} has no PCIe link (the boards with one: "
                         f"{', '.join(b for b, c in BOARDS.items() if 'driver' in c)})")
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    output_dir = os.path.abspath(output_dir or os.path.join(ecp5.PROJECT_DIR, "build", board))
    report = cfg["flow"].build(board, cfg, kwargs, output_dir, progress, seed, driver=driver)
    report["accelerator"] = isa.params_dict(isa.TARGET_PARAMS[board]) if report.pop("has_core") else None
    report["options"] = {k: kwargs[_DEVICE_ARG[board] if k == "device" else k]
                         for k in cfg.get("options", {}) if (_DEVICE_ARG[board] if k == "device" else k) in kwargs}
    return report


def load(board, bitstream, flash=False):
    """Program (or, with ``flash``, write to SPI flash) with openFPGALoader."""
    if shutil.which("openFPGALoader") is None:
        raise RuntimeError("openFPGALoader not found: apt-get install openfpgaloader")
    cmd = ["openFPGALoader", "--board", BOARDS[board]["loader_board"]]
    if flash:
        cmd.append("--write-flash")
    subprocess.run(cmd + [bitstream], check=True)


def elaborate(board, output_dir):
    """The board's SoC and its generated Verilog, without synthesis (for fast tests):
    (soc, path of the top-level file)."""
    from litex.soc.integration.builder import Builder
    cfg = BOARDS[board]
    soc = cfg["soc"](**cfg["kwargs"])
    builder = Builder(soc, output_dir=output_dir, compile_software=False)
    builder.build(build_name=board, run=False)
    return soc, os.path.join(output_dir, "gateware", board + ".v")


def elaborate_verilog(board, output_dir):
    return elaborate(board, output_dir)[1]
