"""driver/kernel_error.py: its two ends are the fp32 reference and the integer path exactly, so
what it attributes to a kernel is that kernel's."""

import numpy as np
import pytest

from driver import reference as R
from driver.fidelity import greedy_sequence
from driver.intforward import IntTransformer, QuantizedModel
from driver.kernel_error import KERNELS, MixedTransformer, table
from driver.model import Config, load, random_model
from driver.runtime import DEFAULT_MODEL


@pytest.fixture(scope="module")
def model():
    return load(DEFAULT_MODEL)


def test_no_kernel_integer_is_the_fp32_reference(model):
    seq = greedy_sequence(model, 24)
    ref, mixed = R.FloatTransformer(model, positions=25), MixedTransformer(model, (), positions=25)
    for pos in range(24):
        assert np.array_equal(ref.forward(seq[pos], pos), mixed.forward(seq[pos], pos).astype(np.float32)), pos


def test_every_kernel_integer_is_the_integer_path(model):
    seq = greedy_sequence(model, 24)
    qm = QuantizedModel(model, positions=25)
    # (the table measures the int16 K/V cache: its kernels are int16 rows)
    ints, mixed = IntTransformer(qm, "int16"), MixedTransformer(model, tuple(KERNELS), qm, positions=25)
    for pos in range(24):
        assert np.array_equal(ints.forward(seq[pos], pos) / 65536.0, mixed.forward(seq[pos], pos)), pos


def test_the_table_attributes_errors_kernel_by_kernel():
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32,
               shared_classifier=True)
    m = random_model(c, seed=5)
    seqs = [(1, greedy_sequence(m, 12)), (1, greedy_sequence(m, 12, bos=5))]
    r = table(m, seqs)
    assert r["positions"] == 24 and [row["kernel"] for row in r["kernels"]] == list(KERNELS)
    for row in r["kernels"]:
        assert 0 <= row["alone"] <= 1 and 0 <= row["all_but"] <= 1
        # A table or fixed-point kernel errs by less than 1 %; none is exact.
        assert 0 < row["local_error"] < 0.01, row


def test_unknown_kernels_are_named():
    with pytest.raises(ValueError, match="unknown kernels \\['softmax'\\]"):
        MixedTransformer(load(DEFAULT_MODEL), ("softmax",))


def test_the_kv_formats_hold_their_values_to_their_steps():
    from driver.kernel_error import KV_FORMATS
    rng = np.random.default_rng(4)
    hs = 8
    v = (rng.standard_normal(64) * np.repeat(10.0 ** rng.uniform(-2, 0.8, 8), hs))   # rows of many sizes
    rows = v.reshape(-1, hs)
    peak = np.repeat(np.abs(rows).max(axis=1), hs)
    got = {name: f(v, hs) for name, (_, f) in KV_FORMATS.items()}
    names = list(KV_FORMATS)
    assert np.all(np.abs(got[names[0]] - v) <= 0.5 / 256 + 1e-12)            # int16 Q8
    assert np.all(np.abs(got[names[1]] - v) <= peak / 127 + 1e-12)           # int8, power of two per row
    assert np.all(np.abs(got[names[2]] - v) <= peak / 127 * 1.2 + 1e-12)     # int8, mantissa per row
    normal = np.abs(v) >= 2.0 ** -6
    assert np.all(np.abs(got[names[3]] - v)[normal] <= np.abs(v)[normal] / 16 + 1e-12)   # FP8 E4M3
    assert all(np.sum((got[n] - v) ** 2) > 0 for n in names)


def test_kv_formats_reports_every_format():
    from driver.kernel_error import KV_FORMATS, kv_formats
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32,
               shared_classifier=True)
    m = random_model(c, seed=6)
    rows = kv_formats(m, [(1, greedy_sequence(m, 10))])
    assert [r["format"] for r in rows] == ["fp32", *KV_FORMATS]
    assert rows[1]["bytes_per_element"] == 2.0 and rows[2]["bytes_per_element"] == 1 + 1 / c.head_size
    assert all(r["positions"] == 10 and 0 <= r["hits"] <= 10 for r in rows)
