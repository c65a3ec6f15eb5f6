"""HostDMAWriter: words pushed over Wishbone land in DRAM at the right beats, and nothing is
written outside the armed range."""

import os
import random

import pytest
from migen import run_simulation

from litedram.common import LiteDRAMNativePort

import spec
from gateware.hostdma import HostDMAWriter
from tests.gateware.dram_port_model import NativePortMemory, include_csrs

VCD = os.environ.get("LT_VCD")


def _run(data_width, dram_size, base, length, payload, timeout=4000):
    port = LiteDRAMNativePort("write", address_width=24, data_width=data_width)
    dut = include_csrs(HostDMAWriter(port, dram_size=dram_size))
    mem = NativePortMemory(port, seed=data_width, stall_probability=0.4)
    out = {}

    def wb_write(word):
        yield dut.bus.cyc.eq(1)
        yield dut.bus.stb.eq(1)
        yield dut.bus.we.eq(1)
        yield dut.bus.dat_w.eq(word)
        for _ in range(100):
            yield
            if (yield dut.bus.ack):
                break
        else:
            raise AssertionError("no Wishbone ack")
        yield dut.bus.cyc.eq(0)
        yield dut.bus.stb.eq(0)
        yield

    def gen():
        yield dut.base.storage.eq(base)
        yield dut.length.storage.eq(length)
        yield dut.start.re.eq(1)
        yield
        yield dut.start.re.eq(0)
        yield
        for i in range(0, len(payload), 4):
            yield from wb_write(int.from_bytes(payload[i:i + 4], "little"))
        for _ in range(timeout):
            yield
            if (yield dut.status.status) & (1 << spec.HOSTDMA_STATUS_DONE):
                break
        out["status"] = (yield dut.status.status)
        out["words"] = (yield dut.words.status)

    run_simulation(dut, [gen(), mem.generator()], vcd_name=VCD)
    return out, mem


@pytest.mark.parametrize("data_width", [16, 32, 128])
def test_upload_lands_in_dram(data_width):
    # Every byte sent arrives at base.. in DRAM; no beat outside the range is written.
    rng = random.Random(data_width)
    beat = data_width // 8
    length = 64 * 4
    base = 3 * max(beat, 4) * 4
    payload = rng.randbytes(length)
    out, mem = _run(data_width, 1 << 20, base, length, payload)
    assert out["status"] == 1 << spec.HOSTDMA_STATUS_DONE
    assert out["words"] == length // 4
    assert mem.dump(beat, base // beat, length // beat) == payload
    assert sorted(set(mem.writes)) == list(range(base // beat, (base + length) // beat))


def test_overrun_is_dropped():
    # Words past the armed length are acknowledged, flagged and never written.
    rng = random.Random(5)
    payload = rng.randbytes(128 + 32)
    out, mem = _run(128, 1 << 20, 0, 128, payload)
    assert out["status"] == (1 << spec.HOSTDMA_STATUS_DONE) | (1 << spec.HOSTDMA_STATUS_OVERRUN)
    assert mem.dump(16, 0, 8) == payload[:128]
    assert max(mem.writes) == 7


@pytest.mark.parametrize("base,length", [(1 << 20, 16), ((1 << 20) - 16, 32), (8, 16), (0, 20)])
def test_bad_window_writes_nothing(base, length):
    # Outside DRAM or misaligned: window error and no DRAM write at all.
    out, mem = _run(128, 1 << 20, base, length, bytes(32))
    assert out["status"] & (1 << spec.HOSTDMA_STATUS_WINDOW)
    assert not out["status"] & (1 << spec.HOSTDMA_STATUS_DONE)
    assert mem.writes == []
