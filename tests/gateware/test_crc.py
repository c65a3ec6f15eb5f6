"""CRC32Engine and DRAMChecksum against zlib.crc32, in Migen simulation."""

import os
import random
import zlib

import pytest
from migen import run_simulation

from litedram.common import LiteDRAMNativePort

import spec
from gateware.crc import CRC32Engine, DRAMChecksum, crc32_xor_masks
from tests.gateware.dram_port_model import NativePortMemory, include_csrs

VCD = os.environ.get("LT_VCD")  # set to a filename to dump waveforms


def test_reference_matches_zlib():
    # The spec's bitwise CRC is the readable definition; zlib is the yardstick.
    data = bytes(random.Random(1).randrange(256) for _ in range(300))
    assert spec.crc32_reference(data) == zlib.crc32(data)


@pytest.mark.parametrize("data_width", [16, 32, 128])
def test_engine_matches_zlib(data_width):
    # Beats folded only on cycles with ce set give zlib's CRC of those beats' little-endian bytes.
    beat_bytes = data_width // 8
    rng = random.Random(data_width)
    beats = [(rng.randbytes(beat_bytes), rng.random() < 0.7) for _ in range(37)]
    dut = CRC32Engine(data_width)
    seen = {}

    def gen():
        yield dut.clear.eq(1)
        yield
        yield dut.clear.eq(0)
        for data, ce in beats:
            yield dut.data.eq(int.from_bytes(data, "little"))
            yield dut.ce.eq(ce)
            yield
        yield dut.ce.eq(0)
        yield
        seen["crc"] = (yield dut.value)

    run_simulation(dut, gen(), vcd_name=VCD)
    assert seen["crc"] == zlib.crc32(b"".join(data for data, ce in beats if ce))


def test_xor_masks_are_linear_crc():
    # Each mask row applied to a state/data vector reproduces one bitwise CRC step of 8 bits.
    masks = crc32_xor_masks(8)
    rng = random.Random(3)
    for _ in range(50):
        state, byte = rng.getrandbits(32), rng.getrandbits(8)
        vec = state | (byte << 32)
        nxt = sum(((bin(vec & m).count("1") & 1) << i) for i, m in enumerate(masks))
        ref = state ^ byte
        for _ in range(8):
            ref = (ref >> 1) ^ (spec.CRC32_POLY_REFLECTED if ref & 1 else 0)
        assert nxt == ref


def _checksum_run(data_width, dram_size, base, length, preload, timeout=3000):
    port = LiteDRAMNativePort("both", address_width=24, data_width=data_width)
    dut = include_csrs(DRAMChecksum(port, dram_size=dram_size))
    mem = NativePortMemory(port, seed=data_width)
    beat_bytes = data_width // 8
    mem.load(beat_bytes, 0, preload)
    out = {}

    def gen():
        yield dut.base.storage.eq(base)
        yield dut.length.storage.eq(length)
        yield dut.start.re.eq(1)
        yield
        yield dut.start.re.eq(0)
        for _ in range(timeout):
            yield
            status = (yield dut.status.status)
            if status:
                break
        else:
            raise AssertionError("DRAMChecksum did not finish")
        out["status"] = status
        out["crc"] = (yield dut.crc.status)

    run_simulation(dut, [gen(), mem.generator()], vcd_name=VCD)
    return out


@pytest.mark.parametrize("data_width", [32, 128])
def test_checksum_range(data_width):
    # CRC of an aligned sub-range of memory equals zlib.crc32 of the same bytes.
    rng = random.Random(7)
    image = bytes(rng.randrange(256) for _ in range(4096))
    beat = data_width // 8
    base, length = 5 * beat, 48 * beat
    out = _checksum_run(data_width, 1 << 20, base, length, image)
    assert out["status"] == 1 << spec.CHECKSUM_STATUS_DONE
    assert out["crc"] == zlib.crc32(image[base:base + length])


def test_checksum_empty_range():
    # A zero-length range is done at once with zlib's CRC of nothing.
    out = _checksum_run(128, 1 << 20, 0, 0, b"")
    assert out["status"] == 1 << spec.CHECKSUM_STATUS_DONE
    assert out["crc"] == zlib.crc32(b"")


@pytest.mark.parametrize("base,length", [(1 << 20, 16), ((1 << 20) - 16, 32), (8, 16), (0, 24)])
def test_checksum_rejects_bad_window(base, length):
    # Out of DRAM or misaligned: window error, nothing read.
    out = _checksum_run(128, 1 << 20, base, length, b"")
    assert out["status"] == 1 << spec.CHECKSUM_STATUS_WINDOW
