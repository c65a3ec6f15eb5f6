"""spec.numerics: every integer function against its float definition, with the error bounds
written in docs/numerics.md."""

import math

import numpy as np
import pytest

from spec import numerics as N

rng = np.random.default_rng(0)
Q = 1 << N.ACT_FRAC


def test_round_shift_sat_is_exact_where_int64_would_wrap():
    x = [(1 << 55) - 1, -(1 << 55), 1, -1, 0, 5, (1 << 30)]
    for s in (-31, -32, -40, -1, 0, 1, 63):
        got = N.round_shift_sat(x, s, 32).tolist()
        lim = (1 << 31) - 1
        want = []
        for v in x:                      # Python's unbounded ints are the reference
            r = v << -s if s <= 0 else (abs(v) + (1 << (s - 1))) >> s
            r = -r if (v < 0 and s > 0) else r
            want.append(max(-lim, min(lim, r)))
        assert got == want, s


def test_round_shift_is_half_away_from_zero():
    assert N.round_shift([5, -5, 6, -6, 7], 1).tolist() == [3, -3, 3, -3, 4]
    assert N.round_shift([3], -2).tolist() == [12]
    assert N.round_shift([3], 0).tolist() == [3]


def test_rsqrt_relative_error():
    worst = 0.0
    for m in np.exp(rng.uniform(np.log(1e-5), np.log(1e5), 2000)):
        mq = max(1, int(round(m * 2 ** 20)))
        y, e = N.rsqrt_q(mq, 20)
        worst = max(worst, abs(y * 2.0 ** (e - 15) * math.sqrt(mq / 2 ** 20) - 1))
    assert worst < 1e-4


def test_exp2_and_sigmoid_errors():
    u = rng.integers(0, 24 * Q, 5000)
    assert np.max(np.abs(N.exp2_neg_q(u) / 32768 - 2.0 ** (-u / Q))) < 1e-3
    x = rng.integers(-12 * Q, 12 * Q, 5000)
    assert np.max(np.abs(N.sigmoid_q(x) / 32768 - 1 / (1 + np.exp(-x / Q)))) < 5e-4


def test_weight_quantisation_error_bound():
    # Each weight the int8 range holds is within half a quantisation step of the scale its
    # group actually uses; one that the group's scale clips (tests/test_kernels_vs_float64.py:
    # only where that lowers the group's squared error) sits at the end of the range.
    w = rng.standard_normal((37, 172)) * 0.1
    q, mant, shift = N.quantize_weights(w)
    scale = mant * np.exp2(-shift)[:, None]                               # (rows, groups)
    deq = (q.reshape(37, -1, N.WEIGHT_GROUP) * scale[:, :, None]).reshape(37, -1)[:, :172]
    step = np.repeat(scale, N.WEIGHT_GROUP, axis=1)[:, :172]
    inside = np.abs(w) <= 127.5 * step
    assert np.all(np.abs(deq - w)[inside] <= 0.5 * step[inside] + 1e-12)
    assert np.all(np.abs(q[:, :172][~inside]) == 127)
    assert mant.max() < 1 << N.SCALE_MANT_BITS and mant.min() >= 1
    # A row whose largest group scale is an exact power of two still fits the mantissa width.
    q, mant, shift = N.quantize_weights(np.full((1, 8), 127.0 * 2.0 ** -3))
    assert mant.max() < 1 << N.SCALE_MANT_BITS


def test_matvec_matches_float():
    w = rng.standard_normal((50, 172)) * 0.08
    x = rng.standard_normal(172) * 2
    q, mant, shift = N.quantize_weights(w)
    xm, e = N.quantize_input(N.to_fixed(x, N.ACT_FRAC))
    y = N.matvec(q, mant, shift, xm, e) / Q
    ref = w @ x
    assert np.max(np.abs(y - ref)) < 0.02 * np.max(np.abs(ref))


@pytest.mark.parametrize("cols", [172, N.TILE_COLS, N.TILE_COLS + 8, 2 * N.TILE_COLS + 352])
def test_tiled_matvec_matches_float_and_each_tiles_own_matvec(cols):
    # Wider than a tile: the tiles cover the columns once, hold the very weights of the whole
    # matrix, and their saturating sum is W @ x to the same relative bound as one MATVEC.
    r = np.random.default_rng(cols)                  # the module's rng stays the other tests'
    w = r.standard_normal((24, cols)) * 0.04
    x = r.standard_normal(cols) * 2
    x[-5:] *= 40                                    # the last tile's exponent is not the first's
    wq = N.quantize_weights(w)
    spans = N.tiles(cols)
    assert spans[0][0] == 0 and sum(n for _, n in spans) == cols
    assert all(n == N.TILE_COLS for _, n in spans[:-1]) and 0 < spans[-1][1] <= N.TILE_COLS
    parts = N.tile_weights(*wq, cols)
    assert np.array_equal(np.concatenate([q for q, _, _ in parts], axis=1), wq[0])
    assert np.array_equal(np.concatenate([m for _, m, _ in parts], axis=1), wq[1])
    xq = N.to_fixed(x, N.ACT_FRAC)
    acc = N.to_fixed(r.standard_normal(24), N.ACT_FRAC)
    y = N.matvec_tiled(wq, xq, acc)
    want = acc
    for (c0, n), (q, mant, shift) in zip(spans, parts):
        xm, e = N.quantize_input(xq[c0:c0 + n])
        want = N.saturate(want + N.matvec(q, mant, shift, xm, e), 32)
    assert np.array_equal(y, want)
    ref = w @ x
    assert np.max(np.abs((y - acc) / Q - ref)) < 0.02 * np.max(np.abs(ref))
    if cols <= N.TILE_COLS:
        xm, e = N.quantize_input(xq)
        assert np.array_equal(N.matvec_tiled(wq, xq), N.matvec(*wq, xm, e))


def test_rmsnorm_softmax_silu_match_float():
    x = rng.standard_normal(288) * 3
    g = rng.uniform(0.5, 2.0, 288)
    gq, gs = N.quantize_fixed16(g)
    y = N.rmsnorm(N.to_fixed(x, N.ACT_FRAC), gq, gs) / Q
    ref = g * x / np.sqrt(np.mean(x * x) + 1e-5)
    assert np.max(np.abs(y - ref)) < 1e-3 * np.max(np.abs(ref))
    s = rng.standard_normal(100) * 4
    e, recip = N.softmax_terms(N.to_fixed(s, N.ACT_FRAC))
    ref = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    assert np.max(np.abs(e * recip / 2.0 ** 46 - ref)) < 2e-3
    v = np.random.default_rng(23).integers(-1 << 12, 1 << 12, (100, 16))     # (rng left as it was)
    out = N.attend(e, recip, v) / Q
    want = ref @ (v / 2.0 ** N.KV_FRAC)
    assert np.max(np.abs(out - want)) < 1e-2 * np.max(np.abs(want))
    a, b = rng.standard_normal(500) * 4, rng.standard_normal(500)
    out = N.silu_mul(N.to_fixed(a, N.ACT_FRAC), N.to_fixed(b, N.ACT_FRAC)) / Q
    assert np.max(np.abs(out - a / (1 + np.exp(-a)) * b)) < 5e-3


@pytest.mark.parametrize("pos", [0, 7, 100])
def test_rope_matches_float(pos):
    hs = 16
    v = rng.standard_normal(3 * hs)
    freq = 1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)
    c, s = N.to_fixed(np.cos(pos * freq), N.ROPE_FRAC), N.to_fixed(np.sin(pos * freq), N.ROPE_FRAC)
    out = N.rope(N.to_fixed(v, N.ACT_FRAC), c, s, hs) / Q
    from driver.reference import rope
    assert np.max(np.abs(out - rope(v.astype(np.float32), pos, hs))) < 1e-3
