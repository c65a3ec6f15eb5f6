"""Each integer kernel of spec.numerics against float64 maths written here, independently of
the spec's own helpers, over its whole input range, with the bound docs/numerics.md states.

The golden model, the integer forward pass and the gateware's tables all take their arithmetic
from spec/numerics.py, so a mistake there would pass every bit-exact test: these are the checks
that it computes what it claims."""

import math

import numpy as np
import pytest

from spec import numerics as N

Q16, Q15 = 2.0 ** 16, 2.0 ** 15
KV = 2.0 ** N.KV_FRAC
rng = np.random.default_rng(2026)


def test_exp2_is_within_7e_4_relative_plus_one_lsb_over_its_whole_range():
    # Every table fraction at every integer part the shifter takes (0..31), and random points.
    n = np.arange(32)[:, None] << N.ACT_FRAC
    u = (n + (np.arange(1 << N.EXP2_TABLE_BITS) << (N.ACT_FRAC - N.EXP2_TABLE_BITS))[None, :]).ravel()
    u = np.concatenate([u, rng.integers(0, 40 << N.ACT_FRAC, 20000)])
    ref = np.exp2(-u / Q16) * Q15
    err = np.abs(N.exp2_neg_q(u) - ref)
    assert np.all(err <= 7e-4 * ref + 1.0), float(np.max(err - 7e-4 * ref))


def test_sigmoid_is_within_5e_4_absolute_everywhere():
    x = np.concatenate([np.arange(-20 << 16, 20 << 16, 997), [-(1 << 31) + 1, (1 << 31) - 1]])
    ref = 0.5 * (1.0 + np.tanh(x / Q16 / 2))             # the logistic function, without overflow
    assert np.max(np.abs(N.sigmoid_q(x) / Q15 - ref)) < 5e-4


def test_rsqrt_is_within_1e_4_relative_over_every_input_scale():
    # Inputs from 1 (the smallest mean square) to 2**62, a few per binary scale.
    for bits in range(1, 63):
        for m in {1 << (bits - 1), (1 << bits) - 1, int(rng.integers(1 << (bits - 1), 1 << bits))}:
            y, e = N.rsqrt_q(m, 20)
            got = y * 2.0 ** (e - 15)
            ref = 1.0 / math.sqrt(m / 2.0 ** 20)
            assert abs(got / ref - 1) < 1e-4, (m, got, ref)


def test_to_kv_rounds_to_the_nearest_step_and_saturates():
    x = np.concatenate([rng.integers(-(1 << 31) + 1, 1 << 31, 20000), rng.integers(-(128 << 16), 128 << 16, 20000),
                        [0, 127, 128, -128, (128 << 16) - 1, -(128 << 16)]])
    got = N.to_kv(x) / KV
    ref = np.clip(x / Q16, -32767 / KV, 32767 / KV)
    assert np.all(np.abs(got - ref) <= 0.5 / KV + 1e-12)


def test_quantize_input_keeps_every_value_within_half_a_step_of_the_vectors_scale():
    for scale in (1e-4, 1.0, 300.0, 32000.0):
        x = np.round(rng.standard_normal(300) * scale * Q16).clip(-(1 << 31) + 1, (1 << 31) - 1).astype(np.int64)
        m, e = N.quantize_input(x)
        assert np.abs(m).max() <= 32767
        assert np.all(np.abs(m * 2.0 ** e - x) <= 2.0 ** e / 2)
        # The exponent is the smallest that fits: one less would overflow int16.
        assert e == 0 or np.abs(np.round(np.abs(x) / 2.0 ** (e - 1))).max() > 32767


def test_embed_is_the_rows_weights_in_q16():
    w = rng.standard_normal((6, 64)) * np.array([1e-3, 0.05, 0.5, 3.0, 40.0, 300.0])[:, None]
    q, mant, shift = N.quantize_weights(w)
    for r in range(6):
        exact = q[r].astype(np.float64) * np.repeat(mant[r], N.WEIGHT_GROUP) * 2.0 ** -float(shift[r])
        got = N.embed(q[r], mant[r], shift[r]) / Q16
        assert np.all(np.abs(got - exact) <= 0.5 / Q16 + 1e-12)
        # and the weights themselves, to the quantiser's step (its groups' scales)
        step = np.repeat(mant[r], N.WEIGHT_GROUP) * 2.0 ** -float(shift[r])
        assert np.all(np.abs(got - w[r]) <= step + 1.0 / Q16)


def test_weight_groups_take_the_scale_with_the_least_squared_error():
    # The quantiser may clip a group's largest weight when that rounds the rest better; never
    # worse than the scale that clips nothing (the bound every weight had before).
    w = rng.standard_normal((40, 176)) * 0.1
    w[::3, ::8] *= 6                                     # groups with one outstanding weight
    q, mant, shift = N.quantize_weights(w)
    eff = mant * np.exp2(-shift.astype(np.float64))[:, None]
    deq = (q.reshape(40, -1, 8) * eff[:, :, None])
    groups = w.reshape(40, -1, 8)
    err = ((deq - groups) ** 2).sum(axis=2)
    ceiling = np.ceil(np.abs(groups).max(axis=2) / 127 * np.exp2(shift.astype(np.float64))[:, None] - 1e-9)
    ceil_eff = ceiling * np.exp2(-shift.astype(np.float64))[:, None]
    ceil_err = ((np.clip(np.round(groups / ceil_eff[:, :, None]), -127, 127) * ceil_eff[:, :, None] - groups) ** 2).sum(axis=2)
    assert np.all(err <= ceil_err + 1e-18)
    assert (err < ceil_err).mean() > 0.1                 # and it does choose otherwise, often
    assert mant.min() >= 1 and mant.max() < 1 << N.SCALE_MANT_BITS


def test_matvec_is_exact_on_its_quantised_operands():
    # What MATVEC rounds is the result alone: against float64 of the dequantised weights and
    # the int16-mantissa input, within half a Q16 step (and saturating at int32).
    for cols in (8, 172, 1024):
        w = rng.standard_normal((30, cols)) * 0.05
        x = np.round(rng.standard_normal(cols) * 5 * Q16).astype(np.int64)
        q, mant, shift = N.quantize_weights(w)
        m, e = N.quantize_input(x)
        deq = (q.reshape(30, -1, 8) * mant[:, :, None]).reshape(30, -1)[:, :cols] * np.exp2(-shift.astype(np.float64))[:, None]
        ref = deq @ (m * 2.0 ** e / Q16)
        got = N.matvec(q, mant, shift, m, e) / Q16
        assert np.all(np.abs(got - ref) <= 0.5 / Q16 + 1e-9 * np.abs(ref)), cols


@pytest.mark.parametrize("hs", [8, 48, 64])
def test_scores_are_the_scaled_dot_product(hs):
    qv = rng.integers(-32767, 32768, hs)
    keys = rng.integers(-32767, 32768, (50, hs))
    keys[0] = 32767                                       # the largest dot a head can make
    qv[:] = np.where(np.arange(hs) % 2, qv, 32767)
    inv = round(Q15 / math.sqrt(hs))
    ref = keys.astype(np.float64) @ qv.astype(np.float64) / KV ** 2 / math.sqrt(hs)
    got = N.scores(qv, keys, inv) / Q16
    lim = (2 ** 31 - 1) / Q16
    want = np.clip(ref, -lim, lim)
    # 1/sqrt(hs) in Q15 is off by at most half a step: relative 0.5 sqrt(hs) / 2**15.
    assert np.all(np.abs(got - want) <= 0.5 * math.sqrt(hs) / Q15 * np.abs(ref) + 0.5 / Q16 + 1e-9)


def _softmax_case(n, spread):
    """n random scores of the given spread: the kernel's (exponentials, reciprocal) and float64's
    probabilities of the same Q16 scores."""
    s = rng.standard_normal(n) * spread
    e, recip = N.softmax_terms(N.to_fixed(s, N.ACT_FRAC))
    sq = np.round(s * Q16) / Q16
    p = np.exp(sq - sq.max())
    return e, recip, p / p.sum(), sq


@pytest.mark.parametrize("spread", [0.1, 4.0, 40.0])
def test_softmax_and_weighted_sum_follow_float64(spread):
    # Each exponential is within 7e-4 relative and one Q15 step below (the shift truncates), so
    # the sum S of n of them within 7e-4 relative and n steps: a probability is within
    # (2e-3 + n / S) relative plus 1 / S; the weighted sum within that of sum(p |v|). From one
    # position to the longest context.
    for n in (1, 7, 300, 4096):
        e, recip, p, sq = _softmax_case(n, spread)
        ref_e = np.exp2((sq - sq.max()) * math.log2(math.e)) * Q15
        assert np.all(np.abs(e - ref_e) <= 7e-4 * ref_e + 1.0 + 1e-9 * Q15), (n, spread)
        got = e * recip / 2.0 ** 46
        rel = 2e-3 + n / e.sum()
        assert np.all(np.abs(got - p) <= rel * p + 1 / e.sum()), (n, spread)
        v = rng.integers(-32767, 32768, (n, 8))
        out = N.attend(e, recip, v) / Q16
        ref = p @ (v / KV)
        bound = rel * (p @ np.abs(v / KV)) + np.abs(v / KV).max() / e.sum() + 1 / Q16
        assert np.all(np.abs(out - ref) <= bound), (n, spread)


def test_rope_rotates_within_its_table_steps():
    hs = 16
    for pos in (0, 1, 37, 511, 4095):
        freq = 1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)
        c, s = np.cos(pos * freq), np.sin(pos * freq)
        cq, sq = N.to_fixed(c, N.ROPE_FRAC), N.to_fixed(s, N.ROPE_FRAC)
        v = np.round(rng.standard_normal(4 * hs) * 20 * Q16).astype(np.int64)
        out = N.rope(v, cq, sq, hs) / Q16
        x = v.reshape(-1, 2) / Q16
        cc, ss = np.tile(c, 4), np.tile(s, 4)
        ref = np.stack([x[:, 0] * cc - x[:, 1] * ss, x[:, 0] * ss + x[:, 1] * cc], axis=1).ravel()
        mag = np.repeat(np.abs(x).sum(axis=1), 2)
        assert np.all(np.abs(out - ref) <= mag * 0.5 / 2 ** N.ROPE_FRAC + 0.5 / Q16 + 1e-12), pos


@pytest.mark.parametrize("scale, bound", [(0.03, 2e-3), (0.1, 4e-4), (1.0, 2e-4), (100.0, 2e-4), (20000.0, 2e-4)])
def test_rmsnorm_is_within_its_bound_of_the_largest_output(scale, bound):
    # The squares are summed from x >> 6 (Q10): an input whose RMS is below ~0.1 loses bits there
    # (docs/numerics.md states the bound per input scale).
    n = 288
    x = np.round(rng.standard_normal(n) * scale * Q16).clip(-(2 ** 31) + 1, 2 ** 31 - 1)
    g = rng.uniform(0.2, 3.0, n)
    gq, gs = N.quantize_fixed16(g)
    got = N.rmsnorm(x.astype(np.int64), gq, gs) / Q16
    xf = x / Q16
    ref = (gq * 2.0 ** -float(gs)) * xf / np.sqrt(np.mean(xf * xf) + N.RMS_EPS)
    assert np.max(np.abs(got - ref)) <= bound * np.max(np.abs(ref)) + 1 / Q16


def test_silu_mul_is_within_its_sigmoids_bound():
    a = np.round(rng.uniform(-30, 30, 20000) * Q16).astype(np.int64)
    b = np.round(rng.standard_normal(20000) * 5 * Q16).astype(np.int64)
    af, bf = a / Q16, b / Q16
    ref = af / (1 + np.exp(-af)) * bf
    got = N.silu_mul(a, b) / Q16
    assert np.all(np.abs(got - ref) <= 5e-4 * np.abs(af * bf) + 2 / Q16 * (1 + np.abs(bf)))


def _kv8_rows(n, hs):
    """Rows of every magnitude the int8 K/V format takes: below one step, tiny, typical, near
    its largest scale, and beyond it (saturating)."""
    mags = 2.0 ** rng.uniform(-18, 7.2, n)
    mags[:4] = [0.0, 2 ** -17, 126.0, 300.0][:n]
    return np.round(rng.standard_normal((n, hs)) * mags[:, None] * Q16).astype(np.int64)


def _kv8_float(q, word):
    """A stored row's value in float64: q * mant * 2**(shift - 7) Q16 units (the format's definition)."""
    return q * (word & 0xff) * 2.0 ** ((word >> 8) - 7) / Q16


@pytest.mark.parametrize("hs", [8, 48])
def test_to_kv8_keeps_each_row_within_half_of_its_own_step(hs):
    # Each row is within half its step of the float, plus 2**-8 of a step (2**22 / mant rounded
    # to an integer is within 2**-15 relative: up to 128 * 2**-15 of a step at q = 127), the step is at most its largest |x| / 127 (x 1.016: the scale's 8-bit mantissa),
    # a row below 128 Q16 steps is exact, and a row beyond 126.5 saturates at the largest scale.
    x = _kv8_rows(3000, hs)
    lim = 127 * 255 * 2.0 ** (N.KV8_MAX_SHIFT - 7) / Q16
    for row in x:
        q, word = N.to_kv8(row)
        step = (word & 0xff) * 2.0 ** ((word >> 8) - 7) / Q16
        got, ref, amax = _kv8_float(q, word), row / Q16, np.abs(row).max() / Q16
        assert 128 <= word & 0xff <= 255 and word >> 8 <= N.KV8_MAX_SHIFT
        want = np.clip(ref, -lim, lim)
        assert np.all(np.abs(got - want) <= (0.5 + 2 ** -8) * step + 1e-15), row
        if amax * Q16 < 128:
            assert np.array_equal(got, ref)
        elif amax < lim:
            assert step <= amax / 127 * 1.016


@pytest.mark.parametrize("hs", [8, 64])
def test_scores8_are_the_scaled_dot_product_of_the_stored_keys(hs):
    qv = rng.integers(-32767, 32768, hs)
    rows = [N.to_kv8(r) for r in _kv8_rows(200, hs)]
    keys, words = np.array([q for q, _ in rows]), np.array([w for _, w in rows])
    inv = round(Q15 / math.sqrt(hs))
    ref = np.array([_kv8_float(q, w) for q, w in rows]) @ (qv / KV) / math.sqrt(hs)
    got = N.scores8(qv, keys, words, inv) / Q16
    lim = (2 ** 31 - 1) / Q16
    assert np.all(np.abs(got - np.clip(ref, -lim, lim)) <= 0.5 * math.sqrt(hs) / Q15 * np.abs(ref) + 0.5 / Q16 + 1e-9)


@pytest.mark.parametrize("spread", [0.1, 4.0, 40.0])
def test_attend8_weights_the_stored_values_as_softmax_does(spread):
    # The bound of attend's test (the exponentials' and the reciprocal's), plus the sums'
    # rounding by 2**15 before the reciprocal: 2**7 / sum(e) Q16 steps at most.
    for n in (1, 9, 300, 1024):
        e, recip, p, _ = _softmax_case(n, spread)
        rows = [N.to_kv8(r) for r in _kv8_rows(n, 16)]
        v = np.array([_kv8_float(q, w) for q, w in rows])
        out = N.attend8(e, recip, np.array([q for q, _ in rows]), np.array([w for _, w in rows])) / Q16
        rel = 2e-3 + n / e.sum()
        bound = rel * (p @ np.abs(v)) + np.abs(v).max() / e.sum() + 1 / Q16 + 2 ** 7 / e.sum() / Q16
        assert np.all(np.abs(out - p @ v) <= bound), (n, spread)
