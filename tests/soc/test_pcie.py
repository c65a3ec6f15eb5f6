"""PCIe through LitePCIe on the simulated SoC: LitePCIe's endpoint, DMA and MSI and its
UltraScale+ PHY (TLP adapters included) in Verilator, driven at the TLP level by
cocotbext-pcie's root complex and its model of the UltraScale+ hard block (soc/pcie/). The
driver's pcie:// target enumerates nothing itself (the simulator plays the host's kernel),
reaches the CSRs through BAR0, uploads by the DMA reader into the host writer (CRC-checked),
reads DRAM back by the DMA writer, waits for the core's MSI, and generates the tokens of the
golden model."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.sim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _why_not():
    try:
        import cocotb, cocotbext.pcie  # noqa: F401
    except ImportError:
        return "needs cocotb and cocotbext-pcie (pip install '.[pcie]')"
    if shutil.which("verilator") is None:
        return "needs Verilator"
    return None


@pytest.fixture(scope="module")
def pciesim():
    why = _why_not()
    if why:
        pytest.skip(why)
    from soc.pcie import sim
    build = sim.build()
    proc = sim.PCIeSimProcess(build)
    try:
        yield {"build": build, "proc": proc, "url": proc.url, "csr": build.csr_csv}
    finally:
        proc.stop()


def _cli(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "driver.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_pcie_upload_by_dma_verifies_and_reads_back(pciesim):
    # BAR0 reaches the CSRs (the spec check, the BIOS console), the DMA reader carries the
    # bytes into the host writer and the device's CRC matches; the DMA writer brings them back.
    r = _cli("selftest", "--target", pciesim["url"], "--csr", pciesim["csr"], "--bytes", str(128 * 1024),
             "--json", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["readback_ok"] and out["host_crc"] == out["device_crc"], out
    # Bytes per cycle of the whole upload, the Device's polling included (the UART's: 0.66).
    assert out["bytes_per_cycle"] > 1.0, out
    print(f"PCIe upload: {out['bytes_per_cycle']:.2f} bytes/cycle")


def test_pcie_generates_the_tokens_of_golden(pciesim):
    gen = ["generate", "-i", "Once upon a time", "-n", "16", "-t", "0", "--json", "--quiet"]
    over_pcie = _cli(*gen, "--target", pciesim["url"], "--csr", pciesim["csr"])
    golden = _cli(*gen, "--target", "golden")
    for r in (over_pcie, golden):
        assert r.returncode == 0, r.stderr[-3000:]
    tokens = [json.loads(r.stdout.strip().splitlines()[-1])["tokens"] for r in (over_pcie, golden)]
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 12, tokens     # (prompt and generated tokens)


def test_pcie_bad_requests_are_named(pciesim):
    # An address BAR0 does not reach, a DMA of part of a beat, an MSI source the build lacks,
    # an MSI that never comes: each a clear error, and the link still works after them.
    from driver.csr import CSRMap
    from driver.errors import LinkError
    from driver.pcie import PCIeLink
    csr = CSRMap(pciesim["csr"])
    link = PCIeLink("127.0.0.1", pciesim["proc"].port, csr)
    try:
        with pytest.raises(LinkError, match="BAR0 reaches the CSR window"):
            link.read(0x4000_0000)
        with pytest.raises(LinkError, match="whole number of 16-byte beats"):
            link.write_stream(link.hostdma_origin, b"\0" * 20)
        with pytest.raises(LinkError, match="no MSI source 'nonesuch'"):
            link.take_irqs(["nonesuch"])
        with pytest.raises(LinkError, match="no MSI from accel_done within 1 s"):   # no run was started
            link.wait_irq("accel_done", 1.0)
        scratch, _ = csr.register("ctrl_scratch")
        link.write(scratch, [0x5a5a1234])
        assert link.read(scratch) == [0x5a5a1234]
    finally:
        link.close()


def test_pcie_lost_simulator_is_named(pciesim):
    # (last in the module: it stops the simulator) A pcie:// target whose host server is gone
    # is named with what to check, before anything is sent.
    pciesim["proc"].stop()
    r = _cli("info", "--target", pciesim["url"], "--csr", pciesim["csr"], "--json", timeout=300)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    err = json.loads(r.stdout.strip().splitlines()[-1])["error"]
    assert pciesim["url"] in err and "litetransformer sim --pcie" in err, err
