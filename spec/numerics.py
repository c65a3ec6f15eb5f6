"""Integer numerics of the transformer core: formats, rounding, and every non-linear function.

This module is the arithmetic half of the spec: the golden model calls these functions and the
gateware must reproduce them bit for bit. Everything here is integer numpy (int64 working
precision) except the host-side quantisers, which turn float weights into the integer formats.

Formats (see docs/numerics.md for the measured errors):
- residual stream, matvec outputs, q/k/v before the cache: int32, ``ACT_FRAC`` fraction bits;
- matvec inputs: ``QIN_BITS``-bit mantissas with one power-of-two exponent per vector, or per
  column tile of ``TILE_COLS`` for wider matrices (see ``matvec_tiled``);
- weights: int8, one scale per (row, group of ``WEIGHT_GROUP`` columns): an 8-bit mantissa per
  group and one shift per row;
- K/V cache: int16 with ``KV_FRAC`` fraction bits (Params.kv_format "int16"), or int8 with one
  scale per head row (``to_kv8``, "int8": 1.25 bytes an element at head size 8, less above);
- probabilities: Q15; sigmoid and exp2 tables: Q15.
"""

import math

import numpy as np

ACT_FRAC = 16            # int32 activations: value = v / 2**16
QIN_BITS = 16           # matvec input mantissa bits (signed): int8 lost 1.6 points teacher-forced on aidreams260K
WEIGHT_BITS = 8
WEIGHT_GROUP = 8         # columns per weight scale; rows are zero-padded to a multiple
TILE_COLS = 1024        # widest MATVEC input: wider matrices run as column tiles, each with its own exponent
SCALE_MANT_BITS = 8      # group scale mantissas: the row's largest in [2**7, 2**8)
KV_FRAC = 8              # int16 K/V cache entries: value = v / 2**8
ROPE_FRAC = 14           # cos/sin table entries
PROB_FRAC = 15           # softmax exponentials (the max score's is 1.0)
RMS_PRE_SHIFT = 6        # x >> 6 before squaring keeps sum(x^2) inside int64
RMS_EPS = 1e-5

EXP2_TABLE_BITS = 10     # 2**(-f) for f in [0, 1): 1024 entries, Q15
SIGMOID_RANGE = 8        # sigmoid table covers [-8, 8)
SIGMOID_TABLE_BITS = 10  # 1024 intervals, linear interpolation, Q15
RSQRT_TABLE_BITS = 8     # 1/sqrt seed table indexed by the top 8 bits of the normalised input

# Rounding -----------------------------------------------------------------------------------------

def round_shift(x, s):
    """x / 2**s rounded half away from zero; s may be an array, negative s shifts left."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    left = np.left_shift(x, np.maximum(-s, 0))
    s = np.maximum(s, 0)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    mag = np.right_shift(np.abs(left) + half, s)
    return np.where(left < 0, -mag, mag)


def saturate(x, bits):
    lim = (1 << (bits - 1)) - 1
    return np.clip(x, -lim, lim)


def round_shift_sat(x, s, bits):
    """saturate(round_shift(x, s), bits), exact for every int64 ``x`` and ``s``: a left shift
    whose result would not fit saturates, so it is never computed (int64 would wrap)."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    lim = (1 << (bits - 1)) - 1
    over = (s < 0) & (np.abs(x) > np.right_shift(np.int64(lim), np.clip(-s, 0, 63)))
    r = saturate(round_shift(np.where(over, 0, x), s), bits)
    return np.where(over, np.sign(x) * lim, r)

# Tables -------------------------------------------------------------------------------------------

EXP2_TABLE = np.array([round((2.0 ** (-i / (1 << EXP2_TABLE_BITS))) * (1 << 15))
                       for i in range(1 << EXP2_TABLE_BITS)], dtype=np.int64)

_SIG_STEP = 2 * SIGMOID_RANGE / (1 << SIGMOID_TABLE_BITS)
SIGMOID_TABLE = np.array([round((1 << 15) / (1 + math.exp(-(-SIGMOID_RANGE + i * _SIG_STEP))))
                          for i in range((1 << SIGMOID_TABLE_BITS) + 1)], dtype=np.int64)

# Seed for 1/sqrt(m), m in [1, 4) sampled at the top RSQRT_TABLE_BITS bits of a Q30 input in
# [2**30, 2**32): entry = 1/sqrt(m) in Q15 at the interval's midpoint.
RSQRT_TABLE = np.array([round((1 << 15) / math.sqrt((i + (1 << (RSQRT_TABLE_BITS - 2)) + 0.5)
                                                    / (1 << (RSQRT_TABLE_BITS - 2))))
                        for i in range(3 << (RSQRT_TABLE_BITS - 2))], dtype=np.int64)

# Non-linear functions -----------------------------------------------------------------------------

def rsqrt_q(m_q, frac):
    """1/sqrt(m) for m = m_q / 2**frac (m_q a positive int, frac even): returns (y, e) with
    1/sqrt(m) ~= y * 2**(e - 15).

    Normalise m_q by an even shift into t in [2**30, 2**32) (t / 2**30 in [1, 4)), seed y from
    RSQRT_TABLE on t's top bits, then two Newton steps y <- y (3 - t y^2) / 2 in Q15 with
    truncating shifts.
    """
    m_q = int(m_q)
    if m_q <= 0 or frac % 2:
        raise ValueError("rsqrt_q: input must be positive and frac even")
    sh = 31 - m_q.bit_length()
    sh += sh & 1
    t = m_q << sh if sh >= 0 else m_q >> -sh
    y = int(RSQRT_TABLE[(t >> (32 - RSQRT_TABLE_BITS)) - (1 << (RSQRT_TABLE_BITS - 2))])
    for _ in range(2):
        ty2 = ((t >> 15) * ((y * y) >> 15)) >> 15
        y = (y * ((3 << 15) - ty2)) >> 16
    return y, (sh + frac - 30) // 2


def exp2_neg_q(u):
    """2**(-u / 2**ACT_FRAC) for u >= 0 (int, Q16), in Q15. Table on the fraction, shift on the
    integer part."""
    u = np.asarray(u, dtype=np.int64)
    n = np.right_shift(u, ACT_FRAC)
    f = np.right_shift(u & ((1 << ACT_FRAC) - 1), ACT_FRAC - EXP2_TABLE_BITS)
    return np.right_shift(EXP2_TABLE[f], np.minimum(n, 31))


def sigmoid_q(x):
    """sigmoid(x / 2**ACT_FRAC) in Q15: table over [-8, 8) with linear interpolation; clamped."""
    x = np.asarray(x, dtype=np.int64)
    pos = np.clip(x + (SIGMOID_RANGE << ACT_FRAC), 0, (2 * SIGMOID_RANGE << ACT_FRAC) - 1)
    step_bits = ACT_FRAC + (2 * SIGMOID_RANGE).bit_length() - 1 - SIGMOID_TABLE_BITS   # Q16 units per interval
    i = np.right_shift(pos, step_bits)
    frac = pos & ((1 << step_bits) - 1)
    a, b = SIGMOID_TABLE[i], SIGMOID_TABLE[i + 1]
    return a + np.right_shift((b - a) * frac, step_bits)

# Host-side quantisers -----------------------------------------------------------------------------

def padded(n, multiple=WEIGHT_GROUP):
    return -(-n // multiple) * multiple


def quantize_weights(w):
    """Float (rows, cols) -> int8 (rows, cols_padded), int64 mantissas (rows, groups), int64
    row shifts (rows,): w[r, c] ~= q[r, c] * mant[r, c // G] * 2**-shift[r]."""
    w = np.asarray(w, dtype=np.float64)
    rows, cols = w.shape
    cp = padded(cols)
    wp = np.zeros((rows, cp))
    wp[:, :cols] = w
    groups = wp.reshape(rows, cp // WEIGHT_GROUP, WEIGHT_GROUP)
    gmax = np.abs(groups).max(axis=2)                                # (rows, groups)
    lim = (1 << (WEIGHT_BITS - 1)) - 1
    scale = np.where(gmax > 0, gmax / lim, 1.0)                      # float scale per group
    row_max = scale.max(axis=1)
    # one shift per row so the largest group scale has a full 15-bit mantissa
    shift = (SCALE_MANT_BITS - np.ceil(np.log2(row_max))).astype(np.int64)
    # Rounded up, so no weight of the group exceeds the int8 range after division; a row whose
    # largest mantissa rounds up to 2**SCALE_MANT_BITS takes one shift less.
    mant_of = lambda sh: np.maximum(np.ceil(scale * np.exp2(sh)[:, None] - 1e-9), 1).astype(np.int64)
    shift = shift - (mant_of(shift).max(axis=1) >= (1 << SCALE_MANT_BITS))
    mant = _best_mantissas(groups, mant_of(shift), shift, lim)
    eff = mant * np.exp2(-shift)[:, None]                            # the scale the hardware uses
    q = np.clip(np.round(groups / eff[:, :, None]), -lim, lim).astype(np.int8).reshape(rows, cp)
    return q, mant, shift


# Group mantissas tried below the one that clips nothing: a smaller scale clips the group's
# largest weight a little and rounds the others more finely.
MANT_SEARCH = 8


def _best_mantissas(groups, ceiling, shift, lim):
    """Per group, the mantissa in [ceiling - MANT_SEARCH, ceiling] (at least 1) whose int8 form
    has the least squared error. The ceiling (nothing clips) is one choice; smaller ones win
    where the group's largest weight stands alone."""
    best, best_err = ceiling, None
    unit = np.exp2(-shift.astype(np.float64))[:, None, None]
    for d in range(MANT_SEARCH + 1):
        mant = np.maximum(ceiling - d, 1)
        eff = mant[:, :, None] * unit
        err = ((np.clip(np.round(groups / eff), -lim, lim) * eff - groups) ** 2).sum(axis=2)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best = np.where(better, mant, best)
        best_err = np.where(better, err, best_err)
    return best


def quantize_fixed16(v):
    """Float array -> (int16 values, shift per row): v ~= q * 2**-shift, the largest |q| of each
    row (last axis) in [2**14, 2**15). For RMSNorm gains."""
    v = np.asarray(v, dtype=np.float64)
    amax = np.abs(v).max(axis=-1, keepdims=True)
    amax[amax == 0] = 1.0
    shift = (14 - np.floor(np.log2(amax))).astype(np.int64)
    q = np.clip(np.round(v * np.exp2(shift)), -32767, 32767).astype(np.int64)
    return q, shift[..., 0]


def to_fixed(x, frac):
    return np.round(np.asarray(x, dtype=np.float64) * (1 << frac)).astype(np.int64)

# Integer kernels (what the instructions compute) --------------------------------------------------

def quantize_input(x):
    """int32 Q16 vector -> (int8 mantissas, exponent e): x ~= m * 2**e (in Q16 units)."""
    x = np.asarray(x, dtype=np.int64)
    lim = (1 << (QIN_BITS - 1)) - 1
    amax = int(np.abs(x).max()) if x.size else 0
    e = 0
    while round_shift(amax, e) > lim:
        e += 1
    return saturate(round_shift(x, e), QIN_BITS), e


def matvec(q, mant, shift, xm, e):
    """y (int32 Q16) = W @ x with W in (q, mant, shift) form and x = xm * 2**e."""
    rows, cp = q.shape
    xp = np.zeros(cp, dtype=np.int64)
    xp[:xm.shape[0]] = xm
    acc = (q.astype(np.int64).reshape(rows, -1, WEIGHT_GROUP) * xp.reshape(-1, WEIGHT_GROUP)).sum(axis=2)
    total = (acc * mant).sum(axis=1)                                  # int64
    return round_shift_sat(total, shift - e, 32)          # shift - e < 0 shifts left


def tiles(cols):
    """A matrix's column tiles [(first column, columns)]: TILE_COLS each, the last the rest.
    A fixed width (a multiple of WEIGHT_GROUP), not the core's Params.max_cols, so that a model
    computes the same integers on every board."""
    return [(c0, min(TILE_COLS, cols - c0)) for c0 in range(0, cols, TILE_COLS)]


def tile_weights(q, mant, shift, cols):
    """The (q, mant, shift) matrix of ``cols`` columns as one (q, mant, shift) per column tile;
    a tile keeps its rows' shifts and its groups' mantissas, so it holds the same weights."""
    out = []
    for c0, w in tiles(cols):
        wp = padded(w)
        out.append((q[:, c0:c0 + wp], mant[:, c0 // WEIGHT_GROUP:(c0 + wp) // WEIGHT_GROUP], shift))
    return out


def matvec_tiled(wqms, x, acc=None):
    """y = W @ x as a program computes it: one MATVEC per column tile (tiles), each quantising
    its slice of ``x`` on its own, the first writing y (or adding to ``acc``, FLAG_ACC) and the
    rest adding to it, each addition saturating to int32. ``wqms``: quantize_weights's result."""
    x = np.asarray(x, dtype=np.int64)
    y = None if acc is None else np.asarray(acc, dtype=np.int64)
    for (c0, w), (q, mant, shift) in zip(tiles(x.shape[0]), tile_weights(*wqms, x.shape[0])):
        xm, e = quantize_input(x[c0:c0 + w])
        t = matvec(q, mant, shift, xm, e)
        y = t if y is None else saturate(y + t, 32)
    return y


def rmsnorm(x, gain_q, gain_shift):
    """gain * x / rms(x), int32 Q16 in and out; gain = gain_q * 2**-gain_shift (int16).

    The gain is applied here, not folded into the next matrix: folding it before quantising
    cost 2.3 points of teacher-forced agreement on stories260K-gqa (docs/numerics.md)."""
    x = np.asarray(x, dtype=np.int64)
    xs = round_shift(x, RMS_PRE_SHIFT)                                # Q10
    frac = 2 * (ACT_FRAC - RMS_PRE_SHIFT)                             # Q20 mean square
    ms = (xs * xs).sum() // x.shape[0] + int(round(RMS_EPS * (1 << frac)))
    y, e = rsqrt_q(ms, frac)                                          # 1/rms ~= y * 2**(e-15)
    xn = saturate(round_shift(x * y, 15 - e), 32)
    return saturate(round_shift(xn * np.asarray(gain_q, dtype=np.int64), gain_shift), 32)


def embed(row_q, row_mant, row_shift):
    """One row of a matrix in quantize_weights's form (int8 ``row_q``, a mantissa per group of
    WEIGHT_GROUP, the row's shift) as int32 Q16: q * mant * 2**-shift. EMBED reads its table in
    this form, so a model whose classifier shares the embedding stores it once (int16 rows
    cost twice the bytes for 0.4 points of teacher-forced agreement, docs/numerics.md)."""
    q = np.asarray(row_q, dtype=np.int64)
    w = q * np.repeat(np.asarray(row_mant, dtype=np.int64), WEIGHT_GROUP)[:q.shape[-1]]   # |w| < 2**15
    return saturate(round_shift(w, int(row_shift) - ACT_FRAC), 32)


def rope_pairs(v, cos_q, sin_q):
    """Rotate each pair (v[2i], v[2i+1]) of int32 Q16 ``v`` by Q14 (cos_q[i], sin_q[i])."""
    v = np.asarray(v, dtype=np.int64).reshape(-1, 2)
    v0, v1 = v[:, 0], v[:, 1]
    out = np.empty_like(v)
    out[:, 0] = saturate(round_shift(v0 * cos_q - v1 * sin_q, ROPE_FRAC), 32)
    out[:, 1] = saturate(round_shift(v0 * sin_q + v1 * cos_q, ROPE_FRAC), 32)
    return out.reshape(-1)


def rope(v, cos_q, sin_q, head_size):
    """Rotate pairs of int32 Q16 ``v`` by Q14 cos/sin (head_size/2 per head, shared by heads)."""
    pair = np.arange(np.size(v) // 2) % (head_size // 2)
    return rope_pairs(v, np.asarray(cos_q)[pair], np.asarray(sin_q)[pair])


def to_kv(x):
    """int32 Q16 -> int16 Q8 cache entry (saturating)."""
    return saturate(round_shift(x, ACT_FRAC - KV_FRAC), 16)


def scores(q_kv, keys, inv_sqrt_hs_q15):
    """q (int16 KV format, hs) . keys (int16, (n, hs)) / sqrt(hs) -> int32 Q16."""
    dot = (keys.astype(np.int64) * q_kv.astype(np.int64)).sum(axis=1)     # Q(2*KV_FRAC)
    return saturate(round_shift(dot * inv_sqrt_hs_q15, 15 + 2 * KV_FRAC - ACT_FRAC), 32)


# K/V cache, int8 rows: one position's row of one KV head (head_size elements) is stored as
# int8 ``q`` and one u16 scale word, ``mant | shift << 8``: x = q * mant * 2**(shift - 7) in Q16,
# mant in [128, 255] and shift in [0, KV8_MAX_SHIFT] as written; a word read is taken as its low
# 12 bits, mant and shift, whatever they hold (ATTN reads rows KVWRITE never wrote, too). The
# scale follows the row's largest |x| (kv8_scale), so every row keeps 7 bits of its own range,
# small rows too (a row below 128 / 2**16 is stored exactly); rows saturate where int16 Q8 did
# (|x| near 128).
# floor(n / 127) for n < 2**39 as a multiply and a shift (exact: m * 127 - 2**47 < 2**7 and
# n < 2**39, so the error stays below 1 / 254): the hardware's division in kv8_scale.
KV8_DIV127_SHIFT = 47
KV8_DIV127_MUL = -(-(1 << KV8_DIV127_SHIFT) // 127)
KV8_MAX_SHIFT = 15
KV8_RECIP_FRAC = 22
# 2**22 / mant for mant in [128, 255]: q = x * 2**7 / (mant * 2**shift) without a divider.
KV8_RECIP = np.array([round((1 << KV8_RECIP_FRAC) / m) for m in range(128, 256)], dtype=np.int64)


def kv8_scale(amax):
    """(mant, shift) of the int8 K/V row whose largest |x| (int32 Q16) is ``amax``: the row's
    step amax / 127 (so t = ceil(amax * 128 / 127) = mant * 2**shift), its mantissa rounded to 8
    bits (half up), mant in [128, 255], capped at 255 * 2**15. Rounding the mantissa to the
    nearest rather than up may put the row's peak a hair past 127, where it saturates: the
    rule the K/V study measured best (docs/numerics.md)."""
    amax = int(amax)
    t = (amax * 128 + 126) // 127
    if t < 256:
        return max(t, 128), 0
    shift = t.bit_length() - 8
    mant = (t + (1 << (shift - 1))) >> shift                     # in [128, 256]
    if mant == 256:
        mant, shift = 128, shift + 1
    if shift > KV8_MAX_SHIFT:
        mant, shift = 255, KV8_MAX_SHIFT
    return mant, shift


def to_kv8(x):
    """One int32 Q16 row -> (int8 q, u16 scale word), the row's int8 K/V cache entry."""
    x = np.asarray(x, dtype=np.int64)
    mant, shift = kv8_scale(np.abs(x).max() if x.size else 0)
    q = saturate(round_shift(x * KV8_RECIP[mant - 128], KV8_RECIP_FRAC - 7 + shift), 8)
    return q, mant | shift << 8


def kv8_value(q, scale):
    """int8 rows ``q`` (n, hs) and their scale words (n,) -> the Q16 values they stand for,
    as floats of Q16 units (for error measurements; the kernels below use q and scale)."""
    scale = np.asarray(scale, dtype=np.int64)
    return np.asarray(q, np.float64) * ((scale & 0xff) * 2.0 ** (((scale >> 8) & 15) - 7))[:, None]


def scores8(q_kv, keys, kscale, inv_sqrt_hs_q15):
    """q (int16 KV format, hs) . int8 keys (n, hs) with their scale words (n,) / sqrt(hs) ->
    int32 Q16: a key is Q(16 + 7 - shift) in q * mant, so sum(q * k) * mant * scale is
    Q(KV_FRAC + 23 - shift + 15), exact in int64 (< 2**56)."""
    kscale = np.asarray(kscale, dtype=np.int64)
    dot = (np.asarray(keys, np.int64) * np.asarray(q_kv, np.int64)).sum(axis=1)
    p = dot * (kscale & 0xff) * int(inv_sqrt_hs_q15)
    return saturate(round_shift(p, KV_FRAC + 7 + 15 - ((kscale >> 8) & 15)), 32)


ATTN8_ACC_DROP = 15     # the int8 V sums, rounded by this before the reciprocal: < 2**61 with it


def attend8(e, recip, values, vscale):
    """softmax . V for int8 values (n, hs) with their scale words (n,): each position's
    exponential times its mant weights its int8 row, shifted left by its shift, and the sums
    are exact (|acc| <= sum(e) * 2**30 < 2**56); they are rounded by ATTN8_ACC_DROP and
    normalised once, x 2**46 / sum(e), to int32 Q16 (acc is Q(15 + 16 + 7))."""
    vscale = np.asarray(vscale, dtype=np.int64)
    w = np.asarray(e, np.int64) * (vscale & 0xff)                                 # < 2**23
    acc = np.left_shift(w[:, None] * np.asarray(values, np.int64), ((vscale >> 8) & 15)[:, None]).sum(axis=0)
    acc = round_shift(acc, ATTN8_ACC_DROP)
    return saturate(round_shift(acc * recip, 46 + 7 - ATTN8_ACC_DROP), 32)


LOG2E_Q15 = round(math.log2(math.e) * (1 << 15))


def softmax_terms(s):
    """int32 Q16 scores -> the softmax's terms: Q15 exponentials e (1.0 at the max score) and
    2**46 // sum(e) (the sum is at least 2**15, so that fits 32 bits)."""
    s = np.asarray(s, dtype=np.int64)
    u = round_shift((s.max() - s) * LOG2E_Q15, 15)                  # Q16, >= 0
    e = exp2_neg_q(u)                                                # Q15
    return e, (1 << 46) // int(e.sum())


ATTN_OUT_SHIFT = 46 + KV_FRAC - ACT_FRAC   # acc * recip: e / sum(e) is a ratio, so Q(46 + KV_FRAC) -> Q16


def attend(e, recip, values):
    """softmax(scores) . values from softmax_terms: the exponentials weight the int16 Q8 values
    (Q23; |acc| <= 2**15 * sum(e)), and the sum is normalised once, x 2**46 / sum(e) (so
    |acc * recip| <= 2**61) rounded to int32 Q16. The hardware sums the values as the
    exponentials are made, in one pass over V, and multiplies as the outputs leave."""
    acc = (np.asarray(e, np.int64)[:, None] * values.astype(np.int64)).sum(axis=0)
    return saturate(round_shift(acc * recip, ATTN_OUT_SHIFT), 32)


def silu_mul(a, b):
    """silu(a) * b, int32 Q16 in and out."""
    a = np.asarray(a, dtype=np.int64)
    s = round_shift(a * sigmoid_q(a), 15)                            # Q16
    return saturate(round_shift(s * np.asarray(b, dtype=np.int64), ACT_FRAC), 32)
