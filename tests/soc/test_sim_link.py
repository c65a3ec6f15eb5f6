"""The simulated SoC end to end over the real link path (UARTBone over TCP): boot, identify,
bulk upload with device CRC, read-back, and every fault the driver must name."""

import os
import random
import socket
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

import spec
from driver import bulk
from driver.cache import manifest_problem
from driver.device import Device
from driver.errors import (ChecksumMismatch, DeviceError, LinkError, SimulatorDied,
                           SpecMismatch)
from tests.soc.tcp_proxy import FaultyProxy

pytestmark = pytest.mark.sim
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_info_matches_spec_and_build(device):
    # The device reports the spec this driver was built from and the simulated DDR3 geometry.
    info = device.info()
    assert info["spec_hash"] == f"{spec.spec_hash():08x}"
    assert info["dram_bytes"] == device.csr.regions["main_ram"][1]
    assert info["port_bytes"] == 16          # 16-bit DDR3 at 1:4 -> 128-bit native port
    assert "LiteTransformer" in info["ident"]
    c0 = device.cycles()
    assert device.cycles() > c0


def test_what_the_cli_knows_before_opening_is_what_the_simulator_reports(device, sim_build):
    # The CLI checks prompts, batches and models against the simulated SoC's core before it
    # starts one (driver.inputs.known_target); that must be what the simulator then reports,
    # also when read from the build's CSR map as for a board.
    import argparse
    from driver import inputs
    for csr in (None, sim_build.csr_csv):
        params, dram = inputs.known_target(argparse.Namespace(target="sim", csr=csr))
        assert params == device.accel_params() and dram == device.dram_size


def test_upload_256k_crc_readback_and_no_stray_writes(device):
    # 256 KiB land intact (device CRC == zlib), a sample reads back, and the beats just outside
    # the range are untouched.
    rng = random.Random(11)
    payload = rng.randbytes(256 * 1024)
    offset = 1 << 20
    device.write_dram(offset - 16, b"\xa5" * 16)
    device.write_dram(offset + len(payload), b"\x5a" * 16)
    stats = device.upload(offset, payload)
    assert stats["device_crc"] == stats["host_crc"] == zlib.crc32(payload)
    assert stats["bytes_per_cycle"] > 0.3
    at = rng.randrange(0, len(payload) - 1024) & ~3
    assert device.read_dram(offset + at, 1024) == payload[at:at + 1024]
    assert device.read_dram(offset - 16, 16) == b"\xa5" * 16
    assert device.read_dram(offset + len(payload), 16) == b"\x5a" * 16


def test_upload_sends_only_what_the_device_does_not_hold(device):
    # skip_present: the same image again sends nothing; with two chunks changed on the device
    # (as a run rewrites the logits and a stray write could), only those chunks are sent.
    from driver.bulk import PRESENT_CHUNK
    payload = random.Random(5).randbytes(3 * PRESENT_CHUNK + 4096)
    offset = 4 << 20
    first = device.upload(offset, payload, skip_present=True)
    assert first["bytes_sent"] == len(payload)
    again = device.upload(offset, payload, skip_present=True)
    assert again["bytes_sent"] == 0 and again["device_crc"] == zlib.crc32(payload)
    device.write_dram(offset + 16, b"\x00" * 16)
    device.write_dram(offset + 3 * PRESENT_CHUNK + 32, b"\x00" * 16)
    seen = []
    stats = device.upload(offset, payload, skip_present=True, progress=lambda done, total: seen.append((done, total)))
    assert stats["bytes_sent"] == PRESENT_CHUNK + 4096
    assert stats["device_crc"] == zlib.crc32(payload)
    assert seen[-1] == (PRESENT_CHUNK + 4096, PRESENT_CHUNK + 4096)
    assert device.read_dram(offset, 64) == payload[:64]
    # without skip_present everything is sent, as a link's throughput measurement needs
    assert device.upload(offset, payload)["bytes_sent"] == len(payload)


def test_unaligned_length_is_padded_and_verified(device):
    # A length that is not a whole beat is zero-padded; the CRC covers the padded range.
    payload = random.Random(3).randbytes(1000)
    stats = device.upload(0, payload)
    assert stats["bytes"] == 1008
    assert stats["device_crc"] == zlib.crc32(payload + bytes(8))


def test_upload_larger_than_dram_is_refused_before_sending(device):
    # A range past the end of DRAM: a clear error naming the sizes; nothing is sent.
    sent = device.link.bytes_sent
    with pytest.raises(DeviceError, match="need .* bytes of DRAM"):
        device.upload(device.dram_size - 16, bytes(64))
    assert device.link.bytes_sent == sent


def test_device_refuses_window_it_was_not_asked_for(device):
    # Even if a host bypasses the driver's check, the gateware refuses the range.
    device.write_reg("checksum_base", device.dram_size - 16)
    device.write_reg("checksum_length", 64)
    device.write_reg("checksum_start", 1)
    assert device.read_reg("checksum_status") & bulk.CHECKSUM_WINDOW


def test_wrong_spec_hash_is_refused(device, monkeypatch):
    # A driver built from another spec refuses the device, naming both versions.
    monkeypatch.setattr(spec, "spec_hash", lambda: 0x12345678)
    with pytest.raises(SpecMismatch, match="12345678"):
        device.check_spec()


def test_unreachable_target(sim_build):
    # Nothing listens on the port: LinkError at once, naming the target.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=f"127.0.0.1:{port}"):
        Device.open(f"sim://127.0.0.1:{port}", csr=sim_build.csr_csv, timeout=2)
    assert time.monotonic() - t0 < 5


def test_garbled_byte_is_caught_by_crc(sim_build):
    # A bit flipped on the wire inside the payload: ChecksumMismatch; a clean retry succeeds.
    from soc.sim import SimProcess
    sim = SimProcess(sim_build)
    proxy = FaultyProxy(sim.port)
    try:
        dev = Device.open(f"sim://127.0.0.1:{proxy.port}", csr=sim_build.csr_csv)
        payload = random.Random(5).randbytes(16 * 1024)
        proxy.corrupt = np.frombuffer(payload[4096:4112], "<u4").astype(">u4").tobytes()
        with pytest.raises(ChecksumMismatch, match="CRC"):
            dev.upload(0, payload)
        assert proxy.corrupt is None
        assert dev.upload(0, payload)["device_crc"] == zlib.crc32(payload)
        dev.close()
    finally:
        proxy.close()
        sim.stop()


def test_link_stops_mid_upload_then_retry(sim_build):
    # The link goes silent mid-upload: a LinkError within the timeout, no hang; after the link
    # is back, the same Device retries the upload and it verifies.
    from soc.sim import SimProcess
    sim = SimProcess(sim_build)
    proxy = FaultyProxy(sim.port)
    try:
        dev = Device.open(f"sim://127.0.0.1:{proxy.port}", csr=sim_build.csr_csv, timeout=3)
        payload = random.Random(9).randbytes(512 * 1024)
        proxy.stall_after = proxy.forwarded + 100_000
        t0 = time.monotonic()
        with pytest.raises(LinkError):
            dev.upload(0, payload)
        assert time.monotonic() - t0 < 30
        proxy.stall_after = None
        proxy.release.set()
        stats = dev.upload(0, payload)
        assert stats["device_crc"] == zlib.crc32(payload)
        dev.close()
    finally:
        proxy.close()
        sim.stop()


def test_the_first_command_after_a_client_killed_mid_upload_works(sim_build):
    # A client is killed in the middle of an upload (its socket closes with megabytes still
    # owed to the bulk path); the next client to attach gets its first exchange through, and its
    # upload verifies.
    from soc.sim import SimProcess
    sim = SimProcess(sim_build)
    try:
        client = subprocess.Popen([sys.executable, "-m", "driver.cli", "selftest", "--target",
                                   f"sim://127.0.0.1:{sim.port}", "--csr", sim_build.csr_csv, "--bytes",
                                   str(4 << 20)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        seen = ""
        while "[upload]" not in seen:             # the progress line (tqdm: no newline until done)
            ch = client.stderr.read(1)
            assert ch, f"selftest ended before its upload began: {seen[-500:]}"
            seen += ch
        time.sleep(0.5)
        client.kill()
        client.wait()
        dev = Device.open(f"sim://127.0.0.1:{sim.port}", csr=sim_build.csr_csv, timeout=3)
        assert dev.info()["spec_hash"] == f"{spec.spec_hash():08x}"
        payload = random.Random(13).randbytes(64 * 1024)
        assert dev.upload(0, payload)["device_crc"] == zlib.crc32(payload)
        dev.close()
    finally:
        sim.stop()


def test_the_build_carries_its_hashes_and_a_stopped_simulator_leaves_no_log(sim_build):
    from soc.sim import SimProcess
    assert manifest_problem(sim_build.directory) is None
    sim = SimProcess(sim_build)
    assert os.path.exists(sim.log_path)
    sim.stop()
    assert not os.path.exists(sim.log_path)


def test_simulator_dies_mid_transfer(sim_build):
    # The simulator is killed during an upload: SimulatorDied naming the exit, within the timeout.
    dev = Device.open("sim", timeout=3)
    try:
        def kill_after_first_chunk(done, total):
            if done >= 128 * 1024 and dev.sim.alive():
                dev.sim.proc.kill()

        t0 = time.monotonic()
        with pytest.raises(SimulatorDied, match="exited with code -9"):
            dev.upload(0, bytes(2 * 1024 * 1024), progress=kill_after_first_chunk)
        assert time.monotonic() - t0 < 30
    finally:
        dev.close()


def test_no_bios_prompt_in_time_is_named_and_the_simulator_stopped(sim_build):
    import soc.sim
    started = []
    real = soc.sim.SimProcess

    class Recorded(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            started.append(self)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(soc.sim, "SimProcess", Recorded)
        with pytest.raises(DeviceError, match="BIOS prompt not seen within 0 s"):
            Device.open("sim", ready_timeout=0.0)
    assert started and not started[0].alive()


def test_a_firmware_that_does_not_start_is_named(sim_build, tmp_path, monkeypatch):
    # The CPU boots an image that is not our firmware and prints nothing more: a DeviceError
    # within the boot timeout, not a hang.
    from driver import firmware
    junk = tmp_path / "firmware.bin"
    junk.write_bytes(bytes(4096))
    monkeypatch.setattr(firmware, "build", lambda build_dir, progress=None: (str(junk), "0" * 16))
    dev = Device.open("sim")
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="the firmware did not start: .*no console output for 3 s"):
            firmware.Firmware.start(dev, boot_timeout=3.0)
        assert time.monotonic() - t0 < 30
        # A client that attaches now meets a LiteX SoC whose CPU answers nothing: named within
        # --timeout of console silence, not after the 180 s boot wait.
        dev.link.close()
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="has written nothing on its console for 2 s"):
            Device.open(f"sim://127.0.0.1:{dev.sim.port}", csr=sim_build.csr_csv, timeout=2.0)
        assert time.monotonic() - t0 < 15
    finally:
        dev.close()


@pytest.mark.slow      # a whole-SoC Verilator build of its own (~2.5 min of CI's ~25): scripts/test.sh -m slow
def test_a_dram_that_fails_its_memtest_is_named(tmp_path, monkeypatch):
    # A simulator build with a broken DRAM data line (soc.sim.StuckReadBit) and the BIOS's
    # memtest on: DRAM initialisation fails as on a board with a bad memory, and opening the
    # device says so with the BIOS's own report instead of waiting for a prompt.
    from soc import sim
    monkeypatch.setenv("LITETRANSFORMER_SIM_PGO", "0")        # built once, run for seconds
    broken = sim.build({**sim.SIM_PARAMS, "dram_fault": "stuck_read_bit"})
    process = sim.SimProcess(broken)
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="(?s)DRAM initialisation failed.*Memtest KO"):
            Device.open(f"sim://127.0.0.1:{process.port}", csr=broken.csr_csv, timeout=5.0, check_spec=False)
        assert time.monotonic() - t0 < 60
    finally:
        process.stop()
