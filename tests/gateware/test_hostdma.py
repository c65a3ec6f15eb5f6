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


def _finish(dut, out, timeout):
    """Wait for the writer's done (at most ``timeout`` cycles); its status and word count into ``out``."""
    for _ in range(timeout):
        yield
        if (yield dut.status.status) & (1 << spec.HOSTDMA_STATUS_DONE):
            break
    out["status"] = (yield dut.status.status)
    out["words"] = (yield dut.words.status)


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
        yield from _finish(dut, out, timeout)

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


def _run_stream(dram_size, base, length, payload, stall=0.3, timeout=4000):
    # Beats from a stream (a PCIe DMA engine's) into the writer's sink, valid dropping at random.
    port = LiteDRAMNativePort("write", address_width=24, data_width=128)
    dut = include_csrs(HostDMAWriter(port, dram_size=dram_size, with_stream=True))
    mem = NativePortMemory(port, seed=7, stall_probability=0.4)
    rng = random.Random(len(payload))
    out = {}

    def gen():
        yield dut.base.storage.eq(base)
        yield dut.length.storage.eq(length)
        yield dut.start.re.eq(1)
        yield
        yield dut.start.re.eq(0)
        yield
        for i in range(0, len(payload), 16):
            while rng.random() < stall:
                yield dut.sink.valid.eq(0)
                yield
            yield dut.sink.valid.eq(1)
            yield dut.sink.data.eq(int.from_bytes(payload[i:i + 16], "little"))
            yield
            while not (yield dut.sink.ready):
                yield
        yield dut.sink.valid.eq(0)
        yield from _finish(dut, out, timeout)

    run_simulation(dut, [gen(), mem.generator()], vcd_name=VCD)
    return out, mem


def test_stream_upload_lands_in_dram():
    # The stream way in: the same bytes at the same beats as the Wishbone way, words counted.
    payload = random.Random(3).randbytes(64 * 16)
    out, mem = _run_stream(1 << 20, 5 * 16, len(payload), payload)
    assert out["status"] == 1 << spec.HOSTDMA_STATUS_DONE
    assert out["words"] == len(payload) // 4
    assert mem.dump(16, 5, 64) == payload
    assert sorted(set(mem.writes)) == list(range(5, 5 + 64))


def test_stream_overrun_and_window():
    # Beats past the length are taken, flagged and dropped; a bad window takes every beat and
    # writes none (the DMA engine never stalls on a refused upload).
    payload = random.Random(4).randbytes(12 * 16)
    out, mem = _run_stream(1 << 20, 0, 8 * 16, payload)
    assert out["status"] == (1 << spec.HOSTDMA_STATUS_DONE) | (1 << spec.HOSTDMA_STATUS_OVERRUN)
    assert mem.dump(16, 0, 8) == payload[:128] and max(mem.writes) == 7
    out, mem = _run_stream(1 << 20, (1 << 20) - 16, 32, bytes(32))
    assert out["status"] & (1 << spec.HOSTDMA_STATUS_WINDOW) and mem.writes == []


def _run_reader(mem_bytes, base, length, ready_probability=0.7, timeout=4000):
    from gateware.hostdma import HostDMAReader
    port = LiteDRAMNativePort("read", address_width=24, data_width=128)
    dut = include_csrs(HostDMAReader(port, dram_size=1 << 20))
    mem = NativePortMemory(port, seed=9, stall_probability=0.4)
    for i in range(0, len(mem_bytes), 16):
        mem.beats[i // 16] = int.from_bytes(mem_bytes[i:i + 16], "little")
    rng = random.Random(length)
    out = {"beats": [], "lasts": []}

    def gen():
        yield dut.base.storage.eq(base)
        yield dut.length.storage.eq(length)
        yield dut.start.re.eq(1)
        yield
        yield dut.start.re.eq(0)
        for _ in range(timeout):
            ready = rng.random() < ready_probability
            yield dut.source.ready.eq(ready)
            yield
            if ready and (yield dut.source.valid):
                out["beats"].append((yield dut.source.data))
                out["lasts"].append((yield dut.source.last))
            if (yield dut.status.status) & (1 << spec.HOSTDMA_STATUS_DONE):
                break
        out["status"] = (yield dut.status.status)

    run_simulation(dut, [gen(), mem.generator()], vcd_name=VCD)
    return out


def test_reader_streams_the_range():
    # DRAM[base:base+length] leaves in order, last on the final beat, with a consumer that stalls.
    data = random.Random(8).randbytes(64 * 16)
    out = _run_reader(data, 3 * 16, 20 * 16)
    assert out["status"] == 1 << spec.HOSTDMA_STATUS_DONE
    got = b"".join(b.to_bytes(16, "little") for b in out["beats"])
    assert got == data[3 * 16:23 * 16]
    assert out["lasts"] == [0] * 19 + [1]


@pytest.mark.parametrize("base,length", [((1 << 20) - 16, 32), (8, 16), (0, 20)])
def test_reader_bad_window_reads_nothing(base, length):
    out = _run_reader(bytes(64), base, length, timeout=200)
    assert out["status"] == 1 << spec.HOSTDMA_STATUS_WINDOW and out["beats"] == []
