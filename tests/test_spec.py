"""The spec package is the one source of truth and must import no HDL."""

import subprocess
import sys
import zlib

import spec


def test_spec_imports_no_hdl():
    # A fresh interpreter importing spec must not pull in migen or litex.
    code = "import sys, spec, spec.isa, spec.numerics; spec.spec_hash(); bad = [m for m in sys.modules if m.split('.')[0] in ('migen', 'litex', 'litedram')]; print(bad)"
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


def test_hash_covers_isa_and_numerics(monkeypatch):
    # The device refuses a driver whose opcodes or numerics differ, not only its link constants.
    from spec import isa, numerics
    h = spec.spec_hash()
    monkeypatch.setitem(isa.OPCODES, "MATVEC", 0x7f)
    assert spec.spec_hash() != h
    monkeypatch.undo()
    monkeypatch.setattr(numerics, "KV_FRAC", 9)
    assert spec.spec_hash() != h


def test_encode_decode_round_trip_and_field_limits():
    import pytest
    from spec import isa
    word = isa.encode("ATTN", flags=isa.FLAG_LAYER, dst=1, src=2, src2=3, n=4, m=16, addr=0xdeadbeef)
    assert isa.decode(word) == dict(op=isa.OPCODES["ATTN"], flags=1, dst=1, src=2, src2=3, n=4, m=16, addr=0xdeadbeef)
    assert isa.program_words(isa.program_bytes([word, 7])) == [word, 7]
    with pytest.raises(ValueError, match="field n"):
        isa.encode("MATVEC", n=1 << 16)
    with pytest.raises(ValueError, match="slots"):
        isa.Params(slots=3).validate()
    with pytest.raises(ValueError, match="read_ports = 3"):
        isa.Params(read_ports=3).validate()
    with pytest.raises(ValueError, match="read_fifo_depth"):
        isa.Params(read_fifo_depth=100).validate()
    with pytest.raises(ValueError, match="element_units = 8: must be a power of two that divides slots"):
        isa.Params(slots=4, element_units=8).validate()
    with pytest.raises(ValueError, match="element_units = 3"):
        isa.Params(slots=4, element_units=3).validate()
    assert isa.Params(slots=4).element_units == 4      # 0, the default, means one copy per slot
    with pytest.raises(ValueError, match="fetch_beats = 24"):
        isa.Params(fetch_beats=24).validate()
    with pytest.raises(ValueError, match="fetch_beats = 1:"):
        isa.Params(fetch_beats=1).validate()
    with pytest.raises(ValueError, match="act_read_ports = 3"):
        isa.Params(act_read_ports=3).validate()
    with pytest.raises(ValueError, match="divider_steps = 3"):
        isa.Params(divider_steps=3).validate()


def test_matrix_format_round_trips():
    # pack_matrix is what MATVEC streams; the golden model's unpacker inverts it exactly.
    import numpy as np
    from spec import isa
    from driver.golden import unpack_matrix
    rng = np.random.default_rng(0)
    for rows, cols in ((1, 1), (16, 16), (17, 172), (40, 64)):
        cp = isa.matvec_cols_padded(cols)
        q = rng.integers(-127, 128, (rows, cp)); q[:, cols:] = 0
        mant = rng.integers(1, 256, (rows, cp // 8))
        shift = rng.integers(0, 64, rows)
        blob = isa.pack_matrix(q[:, :cols], mant, shift)
        assert len(blob) == isa.matrix_bytes(rows, cols)
        q2, m2, s2 = unpack_matrix(blob, rows, cols)
        assert (q2 == q).all() and (m2 == mant).all() and (s2 == shift).all()


def test_c_header_lists_every_opcode_register_and_error():
    # Each name is defined once, to its value (the header is parsed, not searched).
    import re
    from spec import isa
    defines = {}
    for name, value in re.findall(r"^#define (LT_\w+) (\S+)$", isa.c_header(), re.M):
        assert name not in defines, f"{name} defined twice"
        defines[name] = int(value, 0)
    for prefix, table in (("LT_OP_", isa.OPCODES), ("LT_REG_", isa.REGS), ("LT_ERROR_", isa.ERRORS)):
        assert {k[len(prefix):]: v for k, v in defines.items() if k.startswith(prefix)} == dict(table), prefix
