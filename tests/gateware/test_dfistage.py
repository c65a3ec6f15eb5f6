"""DFIRegisterStage: LiteDRAM's own controller and crossbar, in front of LiteDRAM's SDR PHY model
(the ULX3S's memory type, 1:1), still write and read back every byte with the stage between them
— and would not if the stage forgot to tell the controller about its read latency."""

import random

import pytest
from migen import run_simulation

from litedram.core import LiteDRAMCore
from litedram.modules import MT48LC16M16, SDRModule
from litedram.phy.model import SDRAMPHYModel

from gateware.dfistage import DFIRegisterStage

CLK = 50e6


class _SmallSDR(SDRModule):
    """MT48LC16M16 (the ULX3S chip) with 8-column rows and 2 banks: a small memory for Python, and a row
    switch on nearly every access."""
    nbanks, nrows, ncols = 2, 2048, 8     # 11 row bits (A10 is the precharge flag), short rows
    technology_timings = MT48LC16M16.technology_timings
    speedgrade_timings = MT48LC16M16.speedgrade_timings


def _run(stage, latency_fix=2, n=24, seed=1):
    module = _SmallSDR(CLK, "1:1")
    phy = SDRAMPHYModel(module, data_width=16, clk_freq=CLK)
    if stage:
        phy = DFIRegisterStage(phy)
        phy.settings.read_latency += latency_fix - 2
    dut = LiteDRAMCore(phy, module.geom_settings, module.timing_settings, CLK)
    dut.submodules.phy = phy
    port = dut.crossbar.get_port(data_width=128)
    rng = random.Random(seed)
    # Scattered beats across banks and rows, so row switches and bank conflicts both happen.
    addrs = rng.sample(range(2 * 2048 * 8 * 2 // 16), n)
    data = {a: rng.getrandbits(128) for a in addrs}
    got = {}

    def cmd(addr, we):
        yield port.cmd.valid.eq(1)
        yield port.cmd.we.eq(we)
        yield port.cmd.addr.eq(addr)
        yield
        while not (yield port.cmd.ready):
            yield
        yield port.cmd.valid.eq(0)

    def gen():
        for _ in range(20):                      # the DFI injector starts in hardware control
            yield
        for a in addrs:
            yield from cmd(a, 1)
            yield port.wdata.valid.eq(1)
            yield port.wdata.data.eq(data[a])
            yield port.wdata.we.eq(2**16 - 1)
            yield
            while not (yield port.wdata.ready):
                yield
            yield port.wdata.valid.eq(0)
        for a in addrs:
            yield from cmd(a, 0)
            yield port.rdata.ready.eq(1)
            yield
            for _ in range(200):
                if (yield port.rdata.valid):
                    got[a] = (yield port.rdata.data)
                    break
                yield
            yield port.rdata.ready.eq(0)

    run_simulation(dut, gen())
    return data, got


def test_dram_round_trip_through_the_stage():
    data, got = _run(stage=True)
    assert got == data


def test_round_trip_without_the_stage_is_the_same_reference():
    data, got = _run(stage=False)
    assert got == data


@pytest.mark.parametrize("latency_fix", [0, 1])
def test_an_unreported_latency_loses_the_data(latency_fix):
    # The control: had the stage not added its two cycles to read_latency, reads come back wrong
    # (or not at all) — so the round trip above does test the stage.
    data, got = _run(stage=True, latency_fix=latency_fix)
    assert got != data
