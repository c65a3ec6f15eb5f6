"""Driver pieces that need no device: target parsing, the CSR map, the wire format."""

import pytest

import spec
from driver.csr import CSRMap
from driver.device import parse_target
from driver.errors import CSRMapError, LinkError
from driver.link import Link


def test_parse_targets():
    assert parse_target("sim") == ("sim", None, None)
    assert parse_target("sim://127.0.0.1:4321") == ("sim-attach", "socket://127.0.0.1:4321", None)
    assert parse_target("serial:///dev/ttyUSB1?baud=1000000") == ("serial", "/dev/ttyUSB1", 1000000)
    assert parse_target("serial:///dev/ttyUSB1") == ("serial", "/dev/ttyUSB1", None)      # the build's rate
    assert parse_target("etherbone://192.168.1.50") == ("etherbone", ("192.168.1.50", 1234), None)
    assert parse_target("etherbone://10.0.0.2:4321") == ("etherbone", ("10.0.0.2", 4321), None)
    assert parse_target("pcie://127.0.0.1:4000") == ("pcie", ("127.0.0.1", 4000), None)
    for bad in ("tcp://x", "sim://127.0.0.1", "serial://", "etherbone://", "etherbone://1.2.3.4/x",
                "etherbone://1.2.3.4?baud=1", "pcie://127.0.0.1", "pcie://h:1/x"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_csr_map_parses_litex_csv(tmp_path):
    path = tmp_path / "csr.csv"
    path.write_text("#--\ncsr_base,info,0xf0002000,,\n"
                    "csr_register,info_cycles,0xf0002010,2,ro\n"
                    "constant,config_clock_frequency,100000000,,\n"
                    "memory_region,main_ram,0x40000000,268435456,cached\n")
    m = CSRMap(str(path))
    assert m.register("info_cycles") == (0xf0002010, 2)
    assert m.constants["config_clock_frequency"] == 100_000_000
    assert m.region("main_ram") == (0x40000000, 268435456)
    with pytest.raises(CSRMapError, match="nope"):
        m.register("nope")


def test_csr_map_errors(tmp_path):
    with pytest.raises(CSRMapError, match="cannot read"):
        CSRMap(str(tmp_path / "missing.csv"))
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n")
    with pytest.raises(CSRMapError, match="no CSR registers"):
        CSRMap(str(junk))


def test_uartbone_header_layout():
    # cmd, length, then the word address big-endian (LiteX Stream2Wishbone).
    assert Link._header(spec.LINK_CMD_WRITE_FIXED, 255, 0xa0000000) == bytes([3, 255, 0x28, 0, 0, 0])
    with pytest.raises(ValueError):
        Link._header(spec.LINK_CMD_READ_INCR, 1, 0x2)


def test_unreachable_serial_device():
    with pytest.raises(LinkError, match="/dev/does-not-exist"):
        Link("/dev/does-not-exist", timeout=0.5)


def test_verify_refuses_an_unknown_core_configuration():
    # Before anything is built: the configurations are spec.isa.TARGET_PARAMS's.
    from driver.verify import verify
    with pytest.raises(ValueError, match="unknown configuration 'nope' .one of sim, ulx3s"):
        verify("core", 1, 1, config="nope")


def test_serial_without_baud_takes_the_builds_rate_or_is_refused(tmp_path):
    # A board's csr.csv records its link rate (LINK_BAUDRATE); without it and without ?baud=N
    # the target is refused before anything is opened, never a silent 115200.
    from driver.device import Device
    path = tmp_path / "csr.csv"
    path.write_text("csr_register,ctrl_scratch,0xf0001004,1,rw\n")
    with pytest.raises(ValueError, match=r"does not record the link's rate.*\?baud=N"):
        Device.open("serial:///dev/null-no-such-port", csr=str(path))
    path.write_text("csr_register,ctrl_scratch,0xf0001004,1,rw\nconstant,link_baudrate,1000000,,\n")
    with pytest.raises(LinkError, match="null-no-such-port"):          # got as far as opening the port
        Device.open("serial:///dev/null-no-such-port", csr=str(path))


def test_board_options_are_checked_before_any_build():
    from soc.boards import board_options
    kw = board_options("ulx3s", {"sdram_module": "AS4C32M16", "sys_clk_freq": 40e6, "device": None})
    assert kw["sdram_module"] == "AS4C32M16" and kw["sys_clk_freq"] == 40e6 and kw["device"] == "LFE5U-85F"
    for bad, msg in (({"device": "LFE5U-45F"}, "46,000 LUT4"), ({"sdram_module": "X"}, "MT48LC16M16"),
                     ({"sys_clk_freq": 80e6}, "25,000,000 to 50,000,000"), ({"baudrate": 50}, "115,200"),
                     ({"color": 1}, "no such option")):
        with pytest.raises(ValueError, match=msg):
            board_options("ulx3s", bad)
    assert board_options("arty", {"device": "a7-100", "baudrate": 2_000_000})["variant"] == "a7-100"
    for bad, msg in (({"device": "a7-35"}, "a third of the core"), ({"sdram_module": "X"}, "no such option"),
                     ({"sys_clk_freq": 150e6}, "50,000,000 to 100,000,000")):
        with pytest.raises(ValueError, match=msg):
            board_options("arty", bad)
    assert board_options("acorn", {"device": "cle-215"})["variant"] == "cle-215"
    with pytest.raises(ValueError, match="a third of the Acorn core"):
        board_options("acorn", {"device": "cle-101"})
    with pytest.raises(ValueError, match="unknown board"):
        board_options("de10nano", {})


def test_a_driver_is_asked_only_of_a_board_with_pcie(monkeypatch):
    # `build --driver` writes LitePCIe's kernel driver: refused before any work where there is no PCIe.
    import litex.soc.integration.builder
    from soc import boards
    monkeypatch.setattr(litex.soc.integration.builder, "Builder", lambda *a, **k: pytest.fail("built"))
    for board in ("ulx3s", "arty"):
        with pytest.raises(ValueError, match="--driver: .* no PCIe link .*acorn"):
            boards.build(board, output_dir="build/never", driver=True)
