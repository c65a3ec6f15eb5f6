"""Board SoCs elaborate to Verilog with the project's blocks in them (the bitstream build itself
is `litetransformer build --board ulx3s`, minutes long, not run in CI)."""

import os
import re

import pytest

from soc.boards import elaborate_verilog
from soc.boards.ecp5 import parse_nextpnr_log


def test_ulx3s_elaborates(tmp_path):
    verilog = elaborate_verilog("ulx3s", str(tmp_path))
    text = open(verilog).read()
    assert "module ulx3s" in text
    for block in ("hostdma", "checksum", "info", "link"):
        assert re.search(rf"{block}_\w+", text), f"{block} missing from the ULX3S SoC"


def test_nextpnr_log_parser():
    log = ("Info:          TRELLIS_COMB:  8391/83640    10%\nInfo:            TRELLIS_FF:  3744/83640     4%\n"
           "Info:            MULT18X18D:     4/  156     2%\nInfo:                DP16KD:    43/  208    20%\n"
           "Info: Max frequency for clock '$glbnet$crg_clkout': 60.82 MHz (PASS at 50.00 MHz)\n")
    r = parse_nextpnr_log(log)
    assert (r["luts"], r["luts_available"], r["brams"], r["dsps"], r["fmax_mhz"], r["timing_met"]) == \
        (8391, 83640, 43, 4, 60.82, True)


def test_nextpnr_log_parser_reports_an_unrouted_design():
    # router2 stopped (timeout) before converging: the Fmax is placement's estimate.
    log = ("Info: Max frequency for clock '$glbnet$sys_clk': 40.53 MHz (FAIL at 50.00 MHz)\n"
           "Info:     iter=1 wires=734294 overused=54155 overuse=36483 archfail=NA\n"
           "Info:     iter=2 wires=734294 overused=632 overuse=700 archfail=NA\n"
           "Info:     iter=3 wires=734294 overused=1951 overuse=1958 archfail=NA\n")
    r = parse_nextpnr_log(log)
    assert (r["routed"], r["fmax_stage"], r["router_iterations"], r["router_overused_last"],
            r["router_overused_min"], r["timing_met"]) == (False, "placement estimate", 3, 1951, 632, False)


@pytest.mark.parametrize("board", ["ulx3s", "arty", "acorn"])
def test_a_build_under_tmp_is_refused_before_any_work(tmp_path, monkeypatch, board):
    # YoWASP's sandbox has its own /tmp: Yosys would fail minutes in, not finding files there.
    import litex.soc.integration.builder
    from soc import boards
    from soc.boards import ecp5
    monkeypatch.setattr(ecp5, "_check_fpga_tools", lambda: None)
    monkeypatch.setattr(litex.soc.integration.builder, "Builder",
                        lambda *a, **k: pytest.fail("elaborated despite the /tmp folder"))
    with pytest.raises(ValueError, match="cannot see"):
        boards.build(board, output_dir=str(tmp_path / board))


def test_arty_elaborates_with_both_links_and_lints_clean(tmp_path):
    # The Vivado project's Verilog: the core, UARTBone and Etherbone on the MII PHY, the DDR3
    # PHY's primitives; Verilator's lint (Xilinx's primitives as Yosys declares them) finds no
    # error in it. Yosys's counts are `litetransformer build --board arty` (tens of minutes).
    import shutil
    from soc.boards import vivado
    from soc.boards import elaborate
    soc, verilog = elaborate("arty", str(tmp_path))
    text = open(verilog).read()
    assert "module arty" in text
    for block in ("hostdma", "checksum", "etherbone", "accel", "OSERDESE2", "PLLE2_ADV"):
        assert block in text, f"{block} missing from the Arty SoC"
    assert re.search(r"ethphy\w*rx", text) and re.search(r"create_clock -name eth_rx_clk", open(
        verilog[:-2] + ".xdc").read()), "the MII PHY's clocks are not constrained"
    if shutil.which("verilator") is None:
        pytest.skip("no verilator: lint not run")
    # The files the build hands to the lint and to Yosys: each once, VexRiscv's among them.
    sources = vivado.project_sources(soc, verilog)
    assert len(sources) == len(set(sources)) and any(p.endswith("VexRiscv.v") for p in sources), sources
    result = vivado.lint(sources, "arty", os.path.dirname(verilog))
    assert result["errors"] == 0, result["first_error"]


def test_acorn_elaborates_with_pcie_lints_clean_and_writes_its_driver(tmp_path):
    # The Acorn's project: the core, LitePCIe's 7-series PHY, endpoint, DMA and MSI, the DDR3 PHY
    # and 1 GiB of DRAM (the host writer's port moves above the larger DRAM window); the Tcl makes
    # Xilinx's pcie_7x wrapper, a black box of its ports stands in for it in the lint. `--driver`'s
    # LitePCIe kernel driver and user library carry this build's CSR map, and the user library
    # compiles against it.
    import shutil
    import subprocess
    from soc.boards import BOARDS, acorn, vivado
    from soc.boards import elaborate
    soc, verilog = elaborate("acorn", str(tmp_path))
    text = open(verilog).read()
    for block in ("hostdma", "hostread", "pcie_dma0", "pcie_msi", "accel", "pcie_s7 pcie_s7", "PLLE2_ADV"):
        assert block in text, f"{block} missing from the Acorn SoC"
    assert "create_ip -vendor xilinx.com -name pcie_7x" in open(verilog[:-2] + ".tcl").read()
    assert soc.bus.regions["main_ram"].size == 1 << 30
    hostdma, window = soc.bus.regions["hostdma"], soc.bus.regions["dram_window"]
    assert hostdma.origin >= window.origin + window.size, (hex(hostdma.origin), hex(window.origin))
    stubs = acorn.hard_ip_stubs(soc, os.path.dirname(verilog))
    assert len(stubs) == 1 and "module pcie_s7(" in open(stubs[0]).read()
    driver = BOARDS["acorn"]["driver"](soc, str(tmp_path / "driver"))
    csr_h = open(os.path.join(driver, "kernel", "csr.h")).read()
    soc_h = open(os.path.join(driver, "kernel", "soc.h")).read()
    assert "CSR_PCIE_DMA0_BASE" in csr_h and "CSR_PCIE_MSI_ENABLE_ADDR" in csr_h
    assert "PCIE_DMA0_READER_INTERRUPT" in soc_h and "ACCEL_DONE_INTERRUPT" in soc_h
    if shutil.which("gcc") and shutil.which("make"):
        r = subprocess.run(["make", "-C", os.path.join(driver, "user")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    if shutil.which("verilator") is None:
        pytest.skip("no verilator: lint not run")
    result = vivado.lint(vivado.project_sources(soc, verilog) + stubs, "acorn", os.path.dirname(verilog))
    assert result["errors"] == 0, result["first_error"]


def test_verilator_lint_reports_an_error(tmp_path):
    # The lint is not a formality: a wrong port on a Xilinx primitive is an error.
    import shutil
    from soc.boards import vivado
    if shutil.which("verilator") is None:
        pytest.skip("no verilator")
    (tmp_path / "top.v").write_text("module top(input clk, output q);\n"
                                    "  BUFG b(.I(clk), .O(q), .NOPE(clk));\nendmodule\n")
    result = vivado.lint([str(tmp_path / "top.v")], "top", str(tmp_path))
    assert result["errors"] >= 1 and "NOPE" in result["first_error"]


def test_yosys_cell_counts():
    from soc.boards.vivado import count
    stat = ("   Number of cells:              12\n     DSP48E1                         3\n     FDRE                          100\n"
            "     FDSE                            4\n     LUT6                           50\n     LUT2                            7\n"
            "     RAM64M                          2\n     RAMB18E1                        3\n     RAMB36E1                        2\n")
    assert count(stat) == {"LUT": 57, "LUTRAM": 2, "FF": 104, "DSP48E1": 3, "RAMB36": 3.5}


@pytest.mark.slow          # (YoWASP's Yosys compiles itself at its first call on a machine)
def test_yosys_synth_counts_a_small_design(tmp_path):
    # synth_xilinx through the same call the Vivado flow makes: a registered 16 x 16 product is
    # one DSP48E1 and its registers; a duplicate module is named from Yosys's error.
    from soc.boards import vivado
    try:
        vivado.yosys_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    (tmp_path / "top.v").write_text(
        "module top(input clk, input [15:0] a, b, output reg [31:0] p);\n"
        "  always @(posedge clk) p <= a * b;\nendmodule\n")
    cells = vivado.synth_counts([str(tmp_path / "top.v")], "top", str(tmp_path))
    assert cells["DSP48E1"] == 1 and cells["RAMB36"] == 0, cells
    with pytest.raises(RuntimeError, match="ERROR.*top"):
        vivado.synth_counts([str(tmp_path / "top.v")] * 2, "top", str(tmp_path))


def test_the_host_writer_sits_past_the_dram_window():
    # 256 MiB and less (the simulator, the Arty, the ULX3S): at 0xa000_0000 as always; the
    # Acorn's 1 GiB window reaches 0xc000_0000, so the port moves up; 2 GiB would reach the CSRs.
    from soc.core import DRAM_WINDOW_ORIGIN, hostdma_origin
    assert hostdma_origin(32 << 20) == hostdma_origin(256 << 20) == 0xa000_0000
    assert hostdma_origin(512 << 20) == 0xa000_0000
    assert hostdma_origin(1 << 30) == 0xe000_0000 >= DRAM_WINDOW_ORIGIN + (1 << 30)
    with pytest.raises(ValueError, match="reach the CSRs"):
        hostdma_origin(2 << 30)
