"""llama2.c checkpoint loading and the float reference."""

import os
import struct

import numpy as np
import pytest

from driver.model import Config, ModelFormatError, load_legacy, random_model
from driver.reference import FloatTransformer, rmsnorm, softmax

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "models")
AIDREAMS = os.path.join(SHARED, "aidreams260K", "aidreams260K.bin")
TINY = Config(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, seq_len=8,
              shared_classifier=False)


def _write(path, model):
    c = model.config
    header = struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                         c.vocab_size if c.shared_classifier else -c.vocab_size, c.seq_len)
    from driver.model import _layout
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
    (lambda b: b + b"\0" * 8, "more than the header"),
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


def test_kernels():
    x = np.array([3.0, -4.0], np.float32)
    assert np.allclose(rmsnorm(x, np.ones(2, np.float32)), x / np.sqrt(12.5 + 1e-5))
    assert np.isclose(softmax(np.array([0.0, np.log(3.0)], np.float32))[1], 0.75)


@pytest.mark.skipif(not os.path.exists(AIDREAMS), reason="../shared/models not present")
def test_aidreams_greedy_starts_like_its_readme():
    # The shared model's README quotes its greedy text; the first tokens must reproduce it.
    m = load_legacy(AIDREAMS)
    t, tok, out = FloatTransformer(m), 1, []
    for pos in range(10):
        tok = int(np.argmax(t.forward(tok, pos)))
        out.append(tok)
    tokfile = os.path.join(SHARED, "aidreams260K", "tok512.bin")
    blob, off, pieces = open(tokfile, "rb").read(), 4, []
    for _ in range(512):
        _, n = struct.unpack("<fi", blob[off:off + 8])
        pieces.append(blob[off + 8:off + 8 + n])
        off += 8 + n
    assert b"".join(pieces[i] for i in out).strip().startswith(b'"Echoes of vectors')
