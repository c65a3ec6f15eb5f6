"""Arithmetic blocks against spec.numerics: rounding shifts, saturation, the divider, 1/sqrt."""

import random

import numpy as np
import pytest
from migen import *

from gateware.arith import Divider, Rsqrt, round_shift, round_shift_split, saturate
from spec import numerics as N


class _RoundShiftDUT(Module):
    def __init__(self):
        self.x = Signal((48, True))
        self.s = Signal((8, True))
        self.y = Signal((32, True))
        st, r = round_shift(self.x, self.s, 72)
        self.comb += st
        self.comb += self.y.eq(saturate(self, r, 32))


def test_round_shift_and_saturate_match_numerics():
    # Variable shifts both ways, half-way cases, saturation at both ends.
    dut = _RoundShiftDUT()
    rng = random.Random(1)
    cases = [(5, 1), (-5, 1), (3, 1), (-3, 1), (7, 2), (-(1 << 40), 3), (1 << 40, -5), (-1, 0), (6, 2)]
    cases += [(rng.randrange(-(1 << 47), 1 << 47), rng.randrange(-16, 63)) for _ in range(300)]
    got = []

    def gen():
        for x, s in cases:
            yield dut.x.eq(x)
            yield dut.s.eq(s)
            yield
            got.append((yield dut.y))
    run_simulation(dut, gen())
    for (x, s), y in zip(cases, got):
        assert y == int(N.saturate(N.round_shift(x, s), 32)), (x, s)


class _SplitDUT(Module):
    """round_shift_split sized by its operand ranges, then saturated (the MATVEC output path)."""
    def __init__(self, x_bits, s_range, sat_bits):
        self.x = Signal((x_bits, True))
        self.s = Signal((8, True))
        self.y = Signal((sat_bits, True))
        finish = round_shift_split(self, self.x, self.s, 72, x_bits=x_bits, s_range=s_range, sat_bits=sat_bits)
        r = Signal((len(finish()), True))
        self.sync += [r.eq(finish()), self.y.eq(saturate(self, r, sat_bits))]


def test_ranged_round_shift_split_matches_numerics():
    # Shifts at and beyond the operand width (right) and at the saturation width (left), where
    # the sized shifters clamp their amounts, against the unbounded reference.
    for x_bits, (lo, hi), sat in ((56, (-31, 63), 32), (32, (0, 31), 16), (16, (-16, 47), 32)):
        dut = _SplitDUT(x_bits, (lo, hi), sat)
        rng = random.Random(x_bits)
        xmax = 1 << (x_bits - 1)
        xs = [v for v in (0, 1, -1, xmax - 1, -xmax, 3, -3, 1 << (sat - 1), -(1 << (sat - 1))) if -xmax <= v < xmax]
        cases = [(x, s) for x in xs for s in (lo, -1, 0, 1, hi, min(hi, x_bits), min(hi, x_bits + 1)) if lo <= s]
        cases += [(rng.randrange(-xmax, xmax) >> rng.randrange(x_bits), rng.randrange(lo, hi + 1))
                  for _ in range(400)]
        got = []

        def gen():
            for x, s in cases + [(0, 0)] * 4:
                yield dut.x.eq(x)
                yield dut.s.eq(s)
                yield
                got.append((yield dut.y))
        run_simulation(dut, gen())
        got = got[3:]              # three register stages: operands, shift, saturation
        for (x, s), y in zip(cases, got):
            assert y == int(N.round_shift_sat(x, s, sat)), (x_bits, x, s, y)


def _divide(dut, cases):
    """Each case's quotient and the cycles from start to done."""
    got = []

    def gen():
        for a, b in cases:
            yield dut.dividend.eq(a)
            yield dut.divisor.eq(b)
            yield dut.start.eq(1)
            yield
            yield dut.start.eq(0)
            for cycles in range(1, 80):          # bounded wait
                yield
                if (yield dut.done):
                    break
            else:
                raise AssertionError("divider never finished")
            got.append(((yield dut.quotient), cycles))
    run_simulation(dut, gen())
    return got


def test_divider_matches_floor_division():
    rng = random.Random(2)
    cases = [(1 << 46, 32768), (1 << 46, 33554431), (12345, 1), (0, 7), (2 ** 62 - 1, 4096)]
    cases += [(rng.randrange(1 << 62), rng.randrange(1, 1 << 31)) for _ in range(20)]
    assert _divide(Divider(64, 32), cases) == [(a // b, 1 + 32) for a, b in cases]    # 1: the start cycle


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("width, quotient_bits, dividend_max, divisor_range", [
    (64, 51, None, (1, 1 << 16)),           # RMSNORM: sum of n squares of at most 2**50 each
    (47, 32, 1 << 46, (1 << 15, 1 << 25)),  # ATTN: 2**46 / a sum of exponentials >= 2**15
])
def test_divider_skips_the_quotients_leading_zero_bits(width, quotient_bits, dividend_max, divisor_range, steps):
    # The precondition dividend < divisor << quotient_bits holds at both uses (see the core);
    # the quotient is exact and takes a cycle per 2 * steps quotient bits.
    rng = random.Random(quotient_bits)
    cases = []
    for _ in range(30):
        b = rng.randrange(*divisor_range)
        a = dividend_max or rng.randrange(min(b << quotient_bits, 1 << width))
        cases.append((a, b))
    lo, hi = divisor_range
    cases += [(dividend_max or min(b << 50, (1 << width) - 1), b) for b in (lo, hi - 1)]   # the largest
    assert all(a < b << quotient_bits for a, b in cases)
    cycles = 1 + -(-quotient_bits // (2 * steps))
    assert _divide(Divider(width, 32, quotient_bits=quotient_bits, steps=steps), cases) == [(a // b, cycles) for a, b in cases]


def test_rsqrt_matches_numerics():
    dut = Rsqrt()
    frac = 2 * (N.ACT_FRAC - N.RMS_PRE_SHIFT)
    rng = np.random.default_rng(3)
    cases = [10, 11, 1 << 20, (1 << 62) - 1, 3 << 40] + [int(v) for v in rng.integers(10, 1 << 62, 40)]
    got = []

    def gen():
        for m in cases:
            yield dut.m.eq(m)
            yield dut.start.eq(1)
            yield
            yield dut.start.eq(0)
            for _ in range(40):
                yield
                if (yield dut.done):
                    break
            else:
                raise AssertionError("rsqrt never finished")
            got.append(((yield dut.y), (yield dut.e)))
    run_simulation(dut, gen())
    assert got == [N.rsqrt_q(m, frac) for m in cases]


def test_rsqrt_operands_fit_the_hardware_width():
    """Interval arithmetic over every seed-table interval of t (sound: each step's floor shifts are
    monotone and products are bounded at their corners) shows that every Newton operand fits
    Rsqrt.OPERAND_BITS signed, so narrowing them to one DSP each changes no result."""
    tb = N.RSQRT_TABLE_BITS
    lim = 1 << (Rsqrt.OPERAND_BITS - 1)
    seen = []

    def fits(lo, hi):
        seen.append((lo, hi))
        assert -lim <= lo <= hi < lim, (lo, hi)

    def prod(a, b):
        corners = [x * y for x in a for y in b]
        return min(corners), max(corners)

    for i, seed in enumerate(N.RSQRT_TABLE):
        t = ((i + (1 << (tb - 2))) << (32 - tb), ((i + (1 << (tb - 2)) + 1) << (32 - tb)) - 1)
        y = (int(seed), int(seed))
        fits(*y)
        for _ in range(2):
            t15 = (t[0] >> 15, t[1] >> 15)
            fits(*t15)
            yy = tuple(v >> 15 for v in prod(y, y))
            fits(*yy)
            ty2 = tuple(v >> 15 for v in prod(t15, yy))
            fits(*ty2)
            d3 = ((3 << 15) - ty2[1], (3 << 15) - ty2[0])
            fits(*d3)
            y = tuple(v >> 16 for v in prod(y, d3))
            fits(*y)
    assert len(seen) == len(N.RSQRT_TABLE) * 11
