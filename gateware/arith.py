"""Integer arithmetic building blocks shared by the core's units, each the gateware twin of a
spec.numerics function (same rounding, same saturation)."""

from migen import *

from litex.gen import LiteXModule

from spec import numerics as N

# Combinational helpers ----------------------------------------------------------------------------

def as_signed(m, expr, width):
    """``expr`` through a signed signal of ``width`` bits of ``m``. Verilog sizes an expression
    by its widest operand, so a sum or product compared or saturated in place can wrap;
    assigning it to a wide enough signal first keeps every bit (Migen's own simulator never
    wraps)."""
    s = Signal((width, True))
    m.comb += s.eq(expr)
    return s


def as_unsigned(m, expr, width):
    """``expr`` through an unsigned signal of ``width`` bits of ``m`` (see as_signed)."""
    s = Signal(width)
    m.comb += s.eq(expr)
    return s


def round_shift(x, s, width):
    """(statements, result): spec.numerics.round_shift(x, s) for a signed ``x`` and a signed or
    constant ``s`` (negative shifts left), computed in ``width`` bits. Half away from zero, as one
    add and one arithmetic shift: (x + 2**(s-1) - [x < 0]) >> s is floor for x >= 0 and the
    mirrored ceiling for x < 0 (no negations on the path)."""
    res    = Signal((width, True))
    biased = Signal((width, True))
    up     = Signal((2, True))     # 1 when x >= 0 (and s > 0): a signed signal keeps the sum signed in Verilog
    if isinstance(s, int):
        if s <= 0:
            return [res.eq(x << -s)], res
        stmts = [
            up.eq(x >= 0),
            biased.eq(x + ((1 << (s - 1)) - 1) + up),
            res.eq(biased >> s),
        ]
        return stmts, res
    spos = Signal(7)
    sneg = Signal(7)
    half = Signal(width)
    stmts = [
        spos.eq(Mux(s > 0, s, 0)),
        sneg.eq(Mux(s < 0, -s, 0)),
        half.eq((C(1, width + 1) << spos) >> 1),     # 2**(s-1), 0 when s <= 0
        up.eq(Mux(spos == 0, 0, Mux(x >= 0, 0, -1))),
        biased.eq(x + half + up),
        If(s < 0,
            res.eq(x << sneg)
        ).Else(
            res.eq(biased >> spos)
        ),
    ]
    return stmts, res


def round_shift_split(m, x, s, width, x_bits=None, s_range=None, sat_bits=None):
    """round_shift in two pipeline stages: call once for the first stage's registers (the
    bias add), then ``finish()`` in the next stage for the shift (``s`` a signal or a constant).
    Returns ``finish``, a function giving the result expression from the registered values;
    ``m`` gets the sync statements.

    For a variable ``s`` the shifters are sized by what the caller guarantees (timing and
    area: a 72-bit, 7-level barrel shifter each way was the core's largest block):
    ``x_bits`` bounds x (signed), ``s_range`` = (smin, smax) bounds s, and ``sat_bits`` says the
    result is saturated to that many bits afterwards. A right shift beyond x_bits + 1 rounds
    to 0 like x_bits + 1 does; a left shift of x clamped to +-2**sat_bits saturates exactly
    when x's does, and every shift by sat_bits or more of a nonzero value saturates."""
    if isinstance(s, int):
        biased = Signal((width, True))
        if s <= 0:
            m.sync += biased.eq(x << -s)
            return lambda: biased
        up = Signal((2, True))
        m.comb += up.eq(x >= 0)
        m.sync += biased.eq(x + ((1 << (s - 1)) - 1) + up)
        return lambda: biased >> s
    xb = x_bits or width
    smin, smax = s_range or (-(1 << (len(s) - 1)), (1 << (len(s) - 1)) - 1)
    rmax = max(0, min(smax, xb + 1))                   # right shift amounts that differ
    lmax = max(0, min(-smin, sat_bits if sat_bits else width - xb))
    rw = xb + 2                                         # x plus a bias of up to 2**xb
    biased = Signal((rw, True))
    sp, sn = Signal(max=max(rmax + 1, 2)), Signal(max=max(lmax + 1, 2))
    spc, snc = Signal(max=max(rmax + 1, 2)), Signal(max=max(lmax + 1, 2))
    sneg = Signal((len(s) + 1, True))
    up   = Signal((2, True))
    half = Signal(rw)
    left = Signal()
    m.comb += [
        sneg.eq(-s),
        spc.eq(Mux(s > rmax, rmax, Mux(s > 0, s, 0))),
        snc.eq(Mux(sneg > lmax, lmax, Mux(sneg > 0, sneg, 0))),
        half.eq((C(1, rw + 1) << spc) >> 1),
        up.eq(Mux(spc == 0, 0, Mux(x >= 0, 0, -1))),
    ]
    m.sync += [biased.eq(x + half + up), sp.eq(spc), sn.eq(snc), left.eq(s < 0)]
    rres = Signal((rw, True))
    m.comb += rres.eq(biased >> sp)
    if lmax == 0:
        return lambda: rres
    if sat_bits:
        xc = Signal((sat_bits + 2, True))               # x clamped to +-2**sat_bits
        m.sync += xc.eq(_clip(m, x, 1 << sat_bits, sat_bits + 2))
        lw = sat_bits + 2 + lmax
    else:
        xc = Signal((xb, True))
        m.sync += xc.eq(x)
        lw = xb + lmax
    lres = Signal((lw, True))
    m.comb += lres.eq(xc << sn)
    res = Signal((max(rw, lw), True))
    m.comb += res.eq(Mux(left, lres, rres))
    return lambda: res


def _clip(m, x, lim, width):
    """x clipped to [-lim, lim]. The bounds are signals because LiteX's Verilog printer writes
    negative constants unsigned (``-32'd…``), which would turn the comparison unsigned."""
    hi, lo = Signal((width, True)), Signal((width, True))
    m.comb += [hi.eq(lim), lo.eq(-lim)]
    return Mux(x > hi, hi, Mux(x < lo, lo, x))


def saturate(m, x, bits):
    """spec.numerics.saturate: clip to +-(2**(bits-1) - 1)."""
    return _clip(m, x, (1 << (bits - 1)) - 1, bits + 1)


# Sequential divider -------------------------------------------------------------------------------

class Divider(LiteXModule):
    """Unsigned restoring division, two quotient bits per cycle (radix 4: the remainder is tried
    against 1, 2 and 3 times the divisor at once), or ``2 * steps`` with ``steps`` radix-4 steps
    chained in a cycle: ``quotient = dividend // divisor`` (the softmax reciprocal and RMSNorm's
    mean). ``start`` latches the operands; ``done`` pulses ``ceil(quotient_bits / (2 * steps))``
    cycles after that. The caller guarantees ``dividend < divisor << quotient_bits`` (the
    quotient fits ``quotient_bits``): the division then starts from the remainder ``dividend >>
    quotient_bits`` and skips the leading quotient bits, which are all zero."""

    def __init__(self, width=64, divisor_width=32, quotient_bits=None, steps=1):
        q = quotient_bits or width
        q += -q % (2 * steps)             # whole cycles of radix-4 digits
        assert q <= width and width - q <= divisor_width
        self.start    = Signal()
        self.dividend = Signal(width)
        self.divisor  = Signal(divisor_width)
        self.quotient = Signal(q)
        self.done     = Signal()

        # # #

        dw = divisor_width
        rem   = Signal(dw)                # always below the divisor
        count = Signal(max=q // (2 * steps) + 1)
        dvd   = Signal(q)                 # the dividend's low bits, still to come down
        d1, d2, d3 = Signal(dw), Signal(dw + 1), Signal(dw + 2)
        if steps > 1:
            self._chained(steps, q, dw, rem, dvd, d1, d2, d3, count)
            return
        r4 = Signal(dw + 2)               # rem * 4 + the next two dividend bits
        t1, t2, t3 = (Signal(dw + 3) for _ in range(3))     # r4 - k*divisor; top bit: negative
        busy  = Signal()
        self.comb += [r4.eq(Cat(dvd[-2:], rem)), t1.eq(r4 - d1), t2.eq(r4 - d2), t3.eq(r4 - d3)]
        self.sync += [
            self.done.eq(0),
            If(self.start,
                dvd.eq(self.dividend[:q]), rem.eq(self.dividend[q:] if q < width else 0),
                d1.eq(self.divisor), d2.eq(self.divisor << 1), d3.eq(self.divisor + (self.divisor << 1)),
                count.eq(q // 2), busy.eq(1),
            ).Elif(busy,
                If(~t3[-1],
                    rem.eq(t3), self.quotient.eq(Cat(C(3, 2), self.quotient)),
                ).Elif(~t2[-1],
                    rem.eq(t2), self.quotient.eq(Cat(C(2, 2), self.quotient)),
                ).Elif(~t1[-1],
                    rem.eq(t1), self.quotient.eq(Cat(C(1, 2), self.quotient)),
                ).Else(
                    rem.eq(r4), self.quotient.eq(Cat(C(0, 2), self.quotient)),
                ),
                dvd.eq(dvd << 2),
                count.eq(count - 1),
                If(count == 1, busy.eq(0), self.done.eq(1)),
            )
        ]

    def _chained(self, steps, q, dw, rem, dvd, d1, d2, d3, count):
        """``steps`` radix-4 steps in one cycle, most significant digit first (the simulated
        core's dividers; the single step above is the ULX3S's, whose timing it closes)."""
        r, digits = rem, []
        for k in range(steps):
            r4 = Signal(dw + 2)
            t = [Signal(dw + 3) for _ in range(3)]
            r_next, digit = Signal(dw), Signal(2)
            self.comb += [r4.eq(Cat(dvd[q - 2 * k - 2:q - 2 * k], r))] + [t[x].eq(r4 - dx) for x, dx in enumerate((d1, d2, d3))]
            self.comb += If(~t[2][-1], r_next.eq(t[2]), digit.eq(3)
                         ).Elif(~t[1][-1], r_next.eq(t[1]), digit.eq(2)
                         ).Elif(~t[0][-1], r_next.eq(t[0]), digit.eq(1)
                         ).Else(r_next.eq(r4), digit.eq(0))
            r = r_next
            digits.append(digit)
        busy = Signal()
        self.sync += [
            self.done.eq(0),
            If(self.start,
                dvd.eq(self.dividend[:q]), rem.eq(self.dividend[q:] if q < len(self.dividend) else 0),
                d1.eq(self.divisor), d2.eq(self.divisor << 1), d3.eq(self.divisor + (self.divisor << 1)),
                count.eq(q // (2 * steps)), busy.eq(1),
            ).Elif(busy,
                rem.eq(r), self.quotient.eq(Cat(*reversed(digits), self.quotient)),
                dvd.eq(dvd << (2 * steps)),
                count.eq(count - 1),
                If(count == 1, busy.eq(0), self.done.eq(1)),
            )
        ]

# 1/sqrt -------------------------------------------------------------------------------------------

class Rsqrt(LiteXModule):
    """spec.numerics.rsqrt_q for frac = 2*(ACT_FRAC - RMS_PRE_SHIFT): normalise by an even shift,
    seed from RSQRT_TABLE, two Newton steps. ``y`` (Q15) and ``e`` valid when ``done`` pulses,
    ~10 cycles after ``start``."""

    # The Newton step's operands all fit 18-bit signed (tests/gateware/test_arith.py bounds them
    # over every table interval: y <= 2**15, y*y >> 15 <= 2**15, t*y^2 in Q15 < 3 * 2**15), so each
    # product is one MULT18X18D with no partial-product adder behind it: the 20 x 40-bit products
    # were split over several DSPs and a carry chain, the routed ULX3S build's longest path.
    OPERAND_BITS = 18

    def __init__(self):
        self.start = Signal()
        self.m     = Signal(64)                 # positive
        self.y     = Signal((20, True))
        self.e     = Signal((8, True))
        self.done  = Signal()

        # # #

        frac = 2 * (N.ACT_FRAC - N.RMS_PRE_SHIFT)
        tb = N.RSQRT_TABLE_BITS
        table = Memory(16, len(N.RSQRT_TABLE), init=[int(v) for v in N.RSQRT_TABLE])
        rd = table.get_port()
        self.specials += table, rd

        # bit_length(m) as a two-level priority tree (bytes, then the top byte's bits), and
        # registered in CLZ: a 64-deep priority chain was the core's slowest path.
        bitlen, bl = Signal(7), Signal(7)
        local = [Signal(4) for _ in range(8)]
        for g in range(8):
            self.comb += local[g].eq(0)
            for b in range(8):
                self.comb += If(self.m[8 * g + b], local[g].eq(b + 1))
        self.comb += bitlen.eq(0)
        for g in range(8):
            self.comb += If(self.m[8 * g:8 * g + 8] != 0, bitlen.eq(8 * g + local[g]))
        w   = self.OPERAND_BITS
        sh  = Signal((8, True))
        t   = Signal(33)
        y   = Signal((w, True))
        ty2 = Signal((w, True))
        yy  = Signal((w, True))
        t15 = Signal((w, True))                 # t >> 15 < 2**17
        d3  = Signal((w, True))                 # 3 - t y^2, Q15
        step = Signal(4)
        self.comb += rd.adr.eq((t >> (32 - tb)) - (1 << (tb - 2)))
        fsm = FSM(reset_state="IDLE")
        self.fsm = fsm
        sh_raw = Signal((8, True))
        self.comb += sh_raw.eq(31 - bl)
        fsm.act("IDLE",
            If(self.start, NextState("CLZ"))
        )
        fsm.act("CLZ", NextValue(bl, bitlen), NextState("SHIFT"))
        fsm.act("SHIFT", NextValue(sh, sh_raw + (sh_raw & 1)), NextState("NORM"))
        # The shift and the Newton products are registered every cycle, outside the FSM, so
        # that synthesis does not share one multiplier between the states through muxes; each
        # state waits for the register it needs.
        y_next = Signal((w, True))
        # Full-width products as their own signals: Verilog sizes a product by its context, so
        # "yy <= (y * y) >> 15" would keep only the product's low 18 bits.
        p_yy, p_ty2, p_y = (Signal((2 * w, True)) for _ in range(3))
        self.comb += [t15.eq(t >> 15), d3.eq((3 << 15) - ty2),
                      p_yy.eq(y * y), p_ty2.eq(t15 * yy), p_y.eq(y * d3)]
        self.sync += [
            t.eq(Mux(sh >= 0, self.m << sh[0:7], self.m >> (-sh)[0:7])),
            yy.eq(p_yy >> 15),
            ty2.eq(p_ty2 >> 15),
            y_next.eq(p_y >> 16),
        ]
        fsm.act("NORM",
            NextValue(self.e, (sh + frac - 30) >> 1),
            NextState("SEED")
        )
        fsm.act("SEED", NextState("SEED2"))      # table read latency
        fsm.act("SEED2",
            NextValue(y, rd.dat_r), NextValue(step, 0),
            NextState("SQ")
        )
        fsm.act("SQ", NextState("TY2"))            # yy <- y*y
        fsm.act("TY2", NextState("NEWTON"))        # ty2 <- t*yy
        fsm.act("NEWTON", NextState("UPDATE"))     # y_next <- y*(3 - ty2)
        fsm.act("UPDATE",
            NextValue(y, y_next),
            NextValue(step, step + 1),
            If(step == 1,
                NextState("OUT")
            ).Else(
                NextState("SQ")
            )
        )
        fsm.act("OUT",
            self.done.eq(1),
            NextState("IDLE")
        )
        self.comb += self.y.eq(y)
