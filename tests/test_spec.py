"""The spec package is the one source of truth and must import no HDL."""

import subprocess
import sys
import zlib

import spec


def test_spec_imports_no_hdl():
    # A fresh interpreter importing spec must not pull in migen or litex.
    code = "import sys, spec; bad = [m for m in sys.modules if m.split('.')[0] in ('migen', 'litex', 'litedram')]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0]).stdout.strip()
    assert out == "[]"


def test_hash_depends_on_contents(monkeypatch):
    # Changing any spec constant changes the hash the device and driver compare.
    h = spec.spec_hash()
    monkeypatch.setattr(spec, "HOSTDMA_STATUS_OVERRUN", 7)
    assert spec.spec_hash() != h


def test_crc_reference_is_zlib():
    for data in (b"", b"a", bytes(range(256)) * 3):
        assert spec.crc32_reference(data) == zlib.crc32(data)
