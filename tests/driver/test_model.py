"""llama2.c checkpoint loading and the float reference."""

import os
import struct
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from driver.model import Config, ModelFormatError, _layout, load, load_legacy, random_model, save
from driver.reference import FloatTransformer, rmsnorm, softmax
from tests.shared import shared_path

TINY = Config(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, seq_len=8,
              shared_classifier=False)


def _write(path, model):
    """A legacy checkpoint, written here from the format's description (not by driver.model)."""
    c = model.config
    header = struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                         c.vocab_size if c.shared_classifier else -c.vocab_size, c.seq_len)
    body = b"".join(model.weights[name].astype("<f4").tobytes() for name, _ in _layout(c))
    path.write_bytes(header + body)


def test_round_trip(tmp_path):
    # A written checkpoint loads back bit for bit, the unshared classifier included.
    m = random_model(TINY, seed=1)
    _write(tmp_path / "m.bin", m)
    back = load_legacy(str(tmp_path / "m.bin"))
    assert back.config == TINY
    for name, w in m.weights.items():
        assert np.array_equal(back.weights[name], w), name


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:20], "shorter than the 28-byte"),
    (lambda b: b[:-4], "truncated"),
    (lambda b: b + b"\0" * 8, "8 trailing bytes"),
    (lambda b: struct.pack("<i", 15) + b[4:], "multiple of n_heads"),
    (lambda b: b[:8] + struct.pack("<i", 0) + b[12:], "n_layers = 0"),
])
def test_bad_files(tmp_path, damage, match):
    m = random_model(TINY, seed=2)
    _write(tmp_path / "m.bin", m)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage((tmp_path / "m.bin").read_bytes()))
    with pytest.raises(ModelFormatError, match=match):
        load_legacy(str(bad))


# Versions 1 and 2 ("ak42"), written here from llama2.c's export.py layout, not by driver.model.
MAGIC = struct.pack("<I", 0x616B3432)
V1_ORDER = ["rms_att", "rms_ffn", "rms_final", "token_embedding", "wq", "wk", "wv", "wo", "w1", "w2", "w3"]


def _header(c, version, *extra):
    h = MAGIC + struct.pack("<i7iB", version, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                            c.vocab_size, c.seq_len, c.shared_classifier)
    h += b"".join(struct.pack("<i", e) for e in extra)
    return h + b"\0" * (256 - len(h))


def _v1_bytes(model):
    c = model.config
    names = V1_ORDER + ([] if c.shared_classifier else ["wcls"])
    return _header(c, 1) + b"".join(model.weights[n].astype("<f4").tobytes() for n in names)


def _matrices(w):
    """Version 2 quantises each layer's matrix on its own: (matrices, values each)."""
    return w.reshape(-1, w.shape[-2] * w.shape[-1])


def _v2_bytes(config, quantized, norms, gs):
    """``quantized``: name -> (int8 q, fp32 scales), one row per matrix."""
    out = _header(config, 2, gs) + b"".join(norms[n].astype("<f4").tobytes() for n in V1_ORDER[:3])
    for name in V1_ORDER[3:] + ([] if config.shared_classifier else ["wcls"]):
        q, s = quantized[name]
        out += b"".join(qm.astype("i1").tobytes() + sm.astype("<f4").tobytes() for qm, sm in zip(q, s))
    return out


def _v2_size(c, gs):
    L, d, h, kv, v = c.n_layers, c.dim, c.hidden_dim, c.kv_dim, c.vocab_size
    values = v * d + L * (2 * d * d + 2 * kv * d + 3 * h * d) + (0 if c.shared_classifier else v * d)
    return 256 + 4 * (2 * L * d + d) + values + 4 * values // gs


def _assert_same(back, model, skip=("freq_cis_real", "freq_cis_imag")):
    assert back.config == model.config
    for name, w in model.weights.items():
        if name not in skip:
            assert np.array_equal(back.weights[name], w), name


@pytest.mark.parametrize("shared", [True, False])
def test_legacy_save_load(tmp_path, shared):
    # save(version=0) writes what the format describes, and load reads it back bit for bit.
    m = random_model(replace(TINY, shared_classifier=shared), seed=4)
    _write(tmp_path / "ref.bin", m)
    save(m, tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == (tmp_path / "ref.bin").read_bytes()
    _assert_same(load(tmp_path / "m.bin"), m, skip=())


@pytest.mark.parametrize("shared", [True, False])
def test_v1_save_load(tmp_path, shared):
    # Version 1: 256-byte header, norms first; the RoPE tables are rebuilt (cos/sin of
    # pos * 10000^(-2i/head_size)), since only legacy files store them.
    m = random_model(replace(TINY, shared_classifier=shared), seed=5)
    (tmp_path / "ref.bin").write_bytes(_v1_bytes(m))
    save(m, tmp_path / "m.bin", version=1)
    assert (tmp_path / "m.bin").read_bytes() == (tmp_path / "ref.bin").read_bytes()
    back = load(tmp_path / "m.bin")
    _assert_same(back, m)
    save(back, tmp_path / "legacy.bin")
    legacy = load(tmp_path / "legacy.bin")
    hs = TINY.head_size
    angle = np.arange(TINY.seq_len)[:, None] * 10000.0 ** (-np.arange(0, hs, 2) / hs)
    assert np.allclose(legacy.weights["freq_cis_real"], np.cos(angle), atol=1e-6)
    assert np.allclose(legacy.weights["freq_cis_imag"], np.sin(angle), atol=1e-6)


def test_v1_header_with_a_huge_context_loads_without_building_its_tables(tmp_path):
    # The RoPE tables' size follows the header's seq_len, which a v1 file does not pay for in
    # bytes: at the largest context accepted they would be 256 MiB behind a file of kilobytes.
    # A larger context (2**30: 4 GiB of tables, 2.5 TiB of K/V cache in a reference forward) is
    # refused by name.
    from driver.model import MAX_CONTEXT
    m = random_model(TINY, seed=5)
    blob = bytearray(_v1_bytes(m))
    struct.pack_into("<i", blob, 8 + 6 * 4, MAX_CONTEXT)
    (tmp_path / "huge.bin").write_bytes(bytes(blob))
    tracemalloc.start()
    back = load(tmp_path / "huge.bin")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert back.config.seq_len == MAX_CONTEXT and "freq_cis_real" not in back.weights
    assert peak < 16 * len(blob) + (1 << 20)
    struct.pack_into("<i", blob, 8 + 6 * 4, 1 << 30)
    (tmp_path / "huger.bin").write_bytes(bytes(blob))
    with pytest.raises(ModelFormatError, match="seq_len = 1073741824 is beyond the 1,048,576 positions"):
        load(tmp_path / "huger.bin")


def test_v2_layout_dequantises(tmp_path):
    # A hand-made Q8_0 file: every weight must load as its int8 value times its group's scale.
    c, gs = TINY, 8
    rng = np.random.default_rng(6)
    m = random_model(c, seed=6)
    quantized, want = {}, {}
    for name in V1_ORDER[3:] + ["wcls"]:
        mats = _matrices(m.weights[name])
        q = rng.integers(-127, 128, size=mats.shape).astype(np.int8)
        s = rng.uniform(0.001, 0.01, size=(mats.shape[0], mats.shape[1] // gs)).astype(np.float32)
        quantized[name] = (q, s)
        want[name] = (q.astype(np.float32) * np.repeat(s, gs, axis=1)).reshape(m.weights[name].shape)
    (tmp_path / "m.bin").write_bytes(_v2_bytes(c, quantized, m.weights, gs))
    assert (tmp_path / "m.bin").stat().st_size == _v2_size(c, gs)
    back = load(tmp_path / "m.bin")
    for name in V1_ORDER[:3]:
        assert np.array_equal(back.weights[name], m.weights[name]), name
    for name, w in want.items():
        assert np.array_equal(back.weights[name], w), name


@pytest.mark.parametrize("shared,gs", [(True, None), (False, 8), (True, 32)])
def test_v2_save_load(tmp_path, shared, gs):
    # Q8_0 round trip: each weight within half its group's step, scale = max|w| / 127 per
    # group of gs consecutive values of one matrix (gs defaults to 64 halved until it divides
    # dim = 16, so 16; a group of 32 spans rows). Norms stay exact.
    c = replace(TINY, shared_classifier=shared)
    m = random_model(c, seed=7)
    save(m, tmp_path / "m.bin", version=2, group_size=gs)
    gs = gs or 16
    assert (tmp_path / "m.bin").stat().st_size == _v2_size(c, gs)
    back = load(tmp_path / "m.bin")
    assert back.config == c
    for name in V1_ORDER[:3]:
        assert np.array_equal(back.weights[name], m.weights[name]), name
    for name in V1_ORDER[3:] + ["wcls"]:
        w = _matrices(m.weights[name]).reshape(-1, gs).astype(np.float64)
        err = np.abs(_matrices(back.weights[name]).reshape(-1, gs) - w)
        half_step = np.abs(w).max(axis=1, keepdims=True) / 127 / 2
        assert np.all(err <= half_step * (1 + 1e-5)), name     # slack: float32 rounding only
    if shared:
        assert back.weights["wcls"] is back.weights["token_embedding"]


def test_v2_header_group_size_and_default(tmp_path):
    # The header carries the group size right after the shared flag (offset 37).
    save(random_model(TINY), tmp_path / "m.bin", version=2)
    assert struct.unpack_from("<i", (tmp_path / "m.bin").read_bytes(), 37)[0] == 16
    with pytest.raises(ValueError, match="group_size 5 does not divide tensor token_embedding"):
        save(random_model(TINY), tmp_path / "m.bin", version=2, group_size=5)
    with pytest.raises(ValueError, match="version 2 only"):
        save(random_model(TINY), tmp_path / "m.bin", version=1, group_size=16)


def _poke(fmt, offset, value):
    return lambda b: b[:offset] + struct.pack(fmt, value) + b[offset + struct.calcsize(fmt):]


N_V1 = 256 + 4 * sum(int(np.prod(s)) for n, s in _layout(TINY) if not n.startswith("freq"))
FIRST_SCALE = 256 + 4 * (2 * TINY.n_layers * TINY.dim + TINY.dim) + TINY.vocab_size * TINY.dim


@pytest.mark.parametrize("version,damage,match", [
    (1, lambda b: b"ak42" + b[4:], r"bad magic b'ak42'"),
    (1, _poke("<i", 4, 3), "unknown 'ak42' checkpoint version 3"),
    (1, lambda b: b[:200], "200 bytes is shorter than the 256-byte"),
    (1, lambda b: b[:-4], f"truncated: the version 1 header promises {N_V1} bytes, the file has {N_V1 - 4}"),
    (1, lambda b: b + b"\0" * 8, f"8 trailing bytes after the {N_V1} bytes"),
    (1, _poke("<i", 8, 18), "dim 18 is not a multiple of n_heads 4"),
    (1, _poke("<i", 24, -2), "n_kv_heads = -2 must be positive"),
    (1, _poke("<i", 32, 0), "seq_len = 0 must be positive"),
    (1, _poke("<B", 36, 7), "shared_classifier flag is 7"),
    (1, _poke("<f", 256, float("nan")), "tensor rms_att holds NaN"),
    (2, _poke("<i", 37, 0), "group_size = 0 must be positive"),
    (2, _poke("<i", 37, -16), "group_size = -16 must be positive"),
    (2, _poke("<i", 37, 5), r"group_size 5 does not divide tensor token_embedding \(32 x 16"),
    (2, lambda b: b[:-1], "truncated: the version 2 header promises"),
    (2, _poke("<f", FIRST_SCALE, float("inf")), "tensor token_embedding holds NaN or infinity"),
    (0, _poke("<f", 28, float("-inf")), "tensor token_embedding holds NaN or infinity"),
    (0, lambda b: b[:27], "27 bytes is shorter than the 28-byte"),
])
def test_bad_versioned_files(tmp_path, version, damage, match):
    # Each malformed file is named, with its problem; the file itself is left as it was.
    save(random_model(TINY, seed=8), tmp_path / "m.bin", version=version)
    bad = tmp_path / "bad.bin"
    blob = damage((tmp_path / "m.bin").read_bytes())
    bad.write_bytes(blob)
    with pytest.raises(ModelFormatError, match=match) as e:
        load(bad)
    assert str(bad) in str(e.value)
    assert bad.read_bytes() == blob


def test_unreadable_and_misrouted_files(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read model"):
        load(tmp_path / "missing.bin")
    save(random_model(TINY), tmp_path / "v1.bin", version=1)
    with pytest.raises(ModelFormatError, match="use load"):
        load_legacy(tmp_path / "v1.bin")


def test_failed_save_keeps_the_old_file(tmp_path):
    # A model whose tensors do not fit its config is refused before anything is written.
    save(random_model(TINY), tmp_path / "m.bin")
    before = (tmp_path / "m.bin").read_bytes()
    broken = random_model(TINY)
    broken.weights["wq"] = broken.weights["wq"][:1]
    for version in (0, 1, 2):
        with pytest.raises(ValueError, match="tensor wq has shape"):
            save(broken, tmp_path / "m.bin", version=version)
    assert (tmp_path / "m.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_kernels():
    x = np.array([3.0, -4.0], np.float32)
    assert np.allclose(rmsnorm(x, np.ones(2, np.float32)), x / np.sqrt(12.5 + 1e-5))
    assert np.isclose(softmax(np.array([0.0, np.log(3.0)], np.float32))[1], 0.75)


def test_aidreams_greedy_starts_like_its_readme():
    # The shared model's README quotes its greedy text; the first tokens must reproduce it.
    m = load_legacy(shared_path("aidreams260K", "aidreams260K.bin"))
    t, tok, out = FloatTransformer(m), 1, []
    for pos in range(10):
        tok = int(np.argmax(t.forward(tok, pos)))
        out.append(tok)
    tokfile = shared_path("aidreams260K", "tok512.bin")
    blob, off, pieces = open(tokfile, "rb").read(), 4, []
    for _ in range(512):
        _, n = struct.unpack("<fi", blob[off:off + 8])
        pieces.append(blob[off + 8:off + 8 + n])
        off += 8 + n
    assert b"".join(pieces[i] for i in out).strip().startswith(b'"Echoes of vectors')


def test_missing_shared_models_fail_under_ci_and_skip_elsewhere(monkeypatch, tmp_path):
    import tests.shared
    monkeypatch.setattr(tests.shared, "SHARED_MODELS", str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have ../shared/models"):
        tests.shared.shared_path("aidreams260K", "aidreams260K.bin")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        tests.shared.shared_path("aidreams260K", "aidreams260K.bin")
