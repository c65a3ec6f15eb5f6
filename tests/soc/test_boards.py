"""Board SoCs elaborate to Verilog with the project's blocks in them (the bitstream build itself
is `litetransformer build --board ulx3s`, minutes long, not run in CI)."""

import re

import pytest

from soc.boards import elaborate_verilog, parse_nextpnr_log


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


def test_a_build_under_tmp_is_refused_before_any_work(tmp_path, monkeypatch):
    # YoWASP's sandbox has its own /tmp: Yosys would fail minutes in, not finding files there.
    from soc import boards
    monkeypatch.setattr(boards, "_check_fpga_tools", lambda: None)
    monkeypatch.setattr(boards, "Builder", lambda *a, **k: pytest.fail("elaborated despite the /tmp folder"))
    with pytest.raises(ValueError, match="cannot see"):
        boards.build("ulx3s", output_dir=str(tmp_path / "ulx3s"))
