"""Where the integer path's error enters: llama2.c's forward pass with each kernel in its float
form (driver/reference.py) or its integer form (spec.numerics, on its float inputs converted to
the kernel's input format), chosen kernel by kernel.

With no kernel integer, MixedTransformer computes exactly the fp32 reference; with every kernel
integer, exactly the integer path (driver/intforward.py, what the golden model and the hardware
compute): tests/driver/test_kernel_error.py checks both. In between, three measures per kernel,
teacher-forced on fp32 greedy sequences:

- local error: the integer kernel on fp32's own inputs against the float kernel, relative RMS;
- alone: top-1 agreement with fp32 when only that kernel is integer;
- all but: top-1 agreement when every kernel but that one is integer (the points it costs the
  integer path).
"""

import numpy as np

from driver import reference as R
from driver.fidelity import teacher_forced_hits
from driver.intforward import QuantizedModel
from spec import numerics as N

# Kernel -> what its integer form is (the formats and roundings it brings).
KERNELS = {
    "embedding":  "EMBED: the table row in the int8 matrix format",
    "rmsnorm":    "RMSNORM: 1/sqrt seed table + Newton steps, int16 gains",
    "qkv":        "MATVEC wq, wk, wv: int8 weights in groups of 8, int16-mantissa inputs",
    "rope":       "ROPE: Q14 cos/sin table",
    "kv_cache":   "K/V cache entries: int16 with 8 fraction bits",
    "attention":  "q in the K/V format, scores x 1/sqrt(hs) in Q15, exp2 table, one reciprocal per row",
    "wo":         "MATVEC wo (and the residual add)",
    "ffn":        "MATVEC w1, w3, w2 (and the residual add)",
    "silu":       "SILU: the sigmoid table, silu(a) * b",
    "classifier": "MATVEC wcls",
}

_Q = float(1 << N.ACT_FRAC)


def _fx(x):
    return N.to_fixed(x, N.ACT_FRAC)


def _fl(v):
    """An int32 Q16 vector as float64 (exact)."""
    return np.asarray(v, np.int64) / _Q


class MixedTransformer:
    """``forward(token, pos)`` with the kernels in ``integer`` (names of KERNELS) in their
    integer form. ``observe(kernel, layer, value)`` sees each kernel's output, as float64."""

    def __init__(self, model, integer=(), qmodel=None, positions=None, observe=None):
        unknown = set(integer) - set(KERNELS)
        if unknown:
            raise ValueError(f"MixedTransformer: unknown kernels {sorted(unknown)}; known: {', '.join(KERNELS)}")
        self.m, self.int = model, frozenset(integer)
        c = model.config
        n = min(c.seq_len, positions or c.seq_len)
        self.qm = qmodel or QuantizedModel(model, positions=n)
        self.see = observe or (lambda kernel, layer, value: None)
        self.key_cache = np.zeros((c.n_layers, n, c.kv_dim))       # float64: fp32 values or Q8 grid
        self.value_cache = np.zeros((c.n_layers, n, c.kv_dim))

    # Kernels, each in both forms --------------------------------------------------------------
    def embedding(self, token):
        if "embedding" in self.int:
            q, mant, shift = self.qm.embedding
            return _fl(N.embed(q[token], mant[token], shift[token])[:self.m.config.dim])
        return self.m.weights["token_embedding"][token].astype(np.float64)

    def rmsnorm(self, x, name, layer):
        if "rmsnorm" in self.int:
            gains = self.qm.rms_final if layer is None else getattr(self.qm, name)[layer]
            return _fl(N.rmsnorm(_fx(x), *gains))
        w = self.m.weights[name] if layer is None else self.m.weights[name][layer]
        return R.rmsnorm(x.astype(np.float32), w).astype(np.float64)

    def matvec(self, kernel, name, layer, x, residual=None):
        """W @ x (+ residual): int8 weights on the input's int16 mantissas, the add saturating
        in int32, or fp32 as llama2.c."""
        if kernel in self.int:
            wqms = self.qm.wcls if name == "wcls" else getattr(self.qm, name)[layer]
            acc = None if residual is None else _fx(residual)
            return _fl(N.matvec_tiled(wqms, _fx(x), acc))
        w = self.m.weights[name] if layer is None else self.m.weights[name][layer]
        y = w @ x.astype(np.float32)
        return (y if residual is None else residual.astype(np.float32) + y).astype(np.float64)

    def rope(self, v, pos):
        if "rope" in self.int:
            return _fl(N.rope(_fx(v), self.qm.rope_cos[pos], self.qm.rope_sin[pos], self.m.config.head_size))
        return R.rope(v.astype(np.float32), pos, self.m.config.head_size).astype(np.float64)

    def kv_entry(self, v):
        if "kv_cache" in self.int:
            return N.to_kv(_fx(v)) / float(1 << N.KV_FRAC)
        return v.astype(np.float32).astype(np.float64)

    def attention(self, qh, keys, vals):
        """softmax(keys . q / sqrt(hs)) . vals. The integer form takes its inputs in the K/V
        format (float cache entries are rounded to it here)."""
        if "attention" in self.int:
            kv = lambda a: N.to_kv(_fx(a))
            e, recip = N.softmax_terms(N.scores(kv(qh), kv(keys), self.qm.inv_sqrt_hs))
            return _fl(N.attend(e, recip, kv(vals)))
        hs = qh.shape[0]
        att = R.softmax(keys.astype(np.float32) @ qh.astype(np.float32) / np.sqrt(np.float32(hs)))
        return (att @ vals.astype(np.float32)).astype(np.float64)

    def silu_mul(self, h1, h3):
        if "silu" in self.int:
            return _fl(N.silu_mul(_fx(h1), _fx(h3)))
        return (R.silu(h1.astype(np.float32)) * h3.astype(np.float32)).astype(np.float64)

    # The forward pass, in run.c's order --------------------------------------------------------
    def forward(self, token, pos):
        c, see = self.m.config, self.see
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        x = self.embedding(token)
        see("embedding", None, x)
        for l in range(c.n_layers):
            xb = self.rmsnorm(x, "rms_att", l)
            see("rmsnorm", l, xb)
            q, k, v = (self.matvec("qkv", name, l, xb) for name in ("wq", "wk", "wv"))
            see("qkv", l, np.concatenate([q, k, v]))
            q, k = self.rope(q, pos), self.rope(k, pos)
            see("rope", l, np.concatenate([q, k]))
            self.key_cache[l, pos], self.value_cache[l, pos] = self.kv_entry(k), self.kv_entry(v)
            see("kv_cache", l, np.concatenate([self.key_cache[l, pos], self.value_cache[l, pos]]))
            att = np.zeros(c.dim)
            for h in range(c.n_heads):
                kvh = slice(h // kv_mul * hs, (h // kv_mul + 1) * hs)
                att[h * hs:(h + 1) * hs] = self.attention(q[h * hs:(h + 1) * hs], self.key_cache[l, :pos + 1, kvh],
                                                          self.value_cache[l, :pos + 1, kvh])
            see("attention", l, att)
            x = self.matvec("wo", "wo", l, att, residual=x)
            see("wo", l, x)
            xb = self.rmsnorm(x, "rms_ffn", l)
            h1, h3 = self.matvec("ffn", "w1", l, xb), self.matvec("ffn", "w3", l, xb)
            hb = self.silu_mul(h1, h3)
            see("silu", l, hb)
            x = self.matvec("ffn", "w2", l, hb, residual=x)
            see("ffn", l, x)
        logits = self.matvec("classifier", "wcls", None, self.rmsnorm(x, "rms_final", None))
        see("classifier", None, logits)
        return logits


# Measures ---------------------------------------------------------------------------------------

def agreement(model, sequences, integer, qmodel, kv_format=None):
    """(hits, positions): top-1 agreement, teacher-forced (driver.fidelity.teacher_forced_hits),
    of MixedTransformer(integer) with each of ``sequences`` (prompt length, tokens);
    ``kv_format(v)``, if given, stands for the K/V cache's entries."""
    def forward(positions):
        t = MixedTransformer(model, integer, qmodel, positions=positions)
        if kv_format is not None:
            t.kv_entry = kv_format
        return t.forward
    return teacher_forced_hits(forward, sequences)


def local_errors(model, sequences, qmodel):
    """Per kernel, the relative RMS error of its integer form given fp32's own inputs, over every
    call on the sequences: sqrt(sum |int - float|^2 / sum |float|^2)."""
    err = {k: [0.0, 0.0] for k in KERNELS}
    for _, seq in sequences:
        fp = MixedTransformer(model, (), qmodel, positions=len(seq))
        probe = MixedTransformer(model, tuple(KERNELS), qmodel, positions=len(seq))
        probe.key_cache, probe.value_cache = fp.key_cache, fp.value_cache
        _instrument(fp, probe, err)
        for pos in range(len(seq) - 1):
            fp.forward(seq[pos], pos)
    return {k: (float(np.sqrt(d / n)) if n else 0.0) for k, (d, n) in err.items()}


def _instrument(fp, probe, err):
    """Wrap fp's kernels so that each call also runs probe's integer form on the same inputs."""
    def wrap(method, kernel_of):
        real, twin = getattr(fp, method), getattr(probe, method)

        def both(*args, **kwargs):
            out = real(*args, **kwargs)
            kernel = kernel_of(*args)
            if method == "matvec" and kwargs.get("residual") is not None:
                # The integer form's own error: the product, not the residual it is added to.
                ref, got = out - kwargs["residual"], twin(*args, residual=kwargs["residual"]) - kwargs["residual"]
            else:
                ref, got = out, twin(*args, **kwargs)
            err[kernel][0] += float(np.sum((got - ref) ** 2))
            err[kernel][1] += float(np.sum(ref ** 2))
            return out
        setattr(fp, method, both)
    wrap("embedding", lambda *a: "embedding")
    wrap("rmsnorm", lambda *a: "rmsnorm")
    wrap("matvec", lambda kernel, *a: kernel)
    wrap("rope", lambda *a: "rope")
    wrap("kv_entry", lambda *a: "kv_cache")
    wrap("attention", lambda *a: "attention")
    wrap("silu_mul", lambda *a: "silu")


def table(model, sequences, progress=None):
    """Every measure for every kernel: {"kernels": [{name, what, local, alone, all_but}], "integer",
    "positions"}; agreements as fractions of the predicted positions."""
    n = max(len(s) for _, s in sequences)
    qmodel = QuantizedModel(model, positions=n)
    local = local_errors(model, sequences, qmodel)
    every = tuple(KERNELS)
    hits, total = agreement(model, sequences, every, qmodel)
    rows = []
    for kernel, what in KERNELS.items():
        if progress:
            progress(f"[kernels] {kernel}")
        alone = agreement(model, sequences, (kernel,), qmodel)[0]
        all_but = agreement(model, sequences, tuple(k for k in every if k != kernel), qmodel)[0]
        rows.append({"kernel": kernel, "what": what, "local_error": local[kernel],
                     "alone": alone / total, "all_but": all_but / total})
    return {"positions": total, "integer": hits / total, "kernels": rows}


# K/V cache formats, compared -----------------------------------------------------------------------

def _rows(v, hs):
    return np.asarray(v, np.float64).reshape(-1, hs)


def _kv_int16_q8(v, hs):
    return N.to_kv(_fx(v)) / float(1 << N.KV_FRAC)


def _kv_int8_pow2(v, hs):
    """int8 per element, one power-of-two scale per head row (the smallest that holds its max)."""
    out = []
    for row in _fx(v).reshape(-1, hs):
        e, amax = 0, int(np.abs(row).max())
        while N.round_shift(amax, e) > 127:
            e += 1
        out.append(N.round_shift(row, e) * float(1 << e))
    return np.concatenate(out) / _Q


def _kv_int8_mantissa(v, hs):
    """int8 per element, one scale per head row: an 8-bit mantissa (the row's largest |x| / 127,
    rounded: a rule the hardware can apply as the row is written) and an exponent."""
    out = []
    for row in _rows(v, hs):
        amax = np.abs(row).max()
        if amax == 0:
            out.append(row)
            continue
        e = np.floor(np.log2(amax / 127)) - 7                  # the mantissa in [128, 256]
        scale = np.round(amax / 127 / 2.0 ** e) * 2.0 ** e
        out.append(np.clip(np.round(row / scale), -127, 127) * scale)
    return np.concatenate(out)


def _kv_int8_rows(v, hs):
    """spec.numerics.to_kv8, the cache's int8 format (Params.kv_format "int8")."""
    rows = [N.to_kv8(row) for row in _fx(v).reshape(-1, hs)]
    return N.kv8_value([q for q, _ in rows], [s for _, s in rows]).reshape(-1) / _Q


def _kv_fp8_e4m3(v, hs):
    """FP8 E4M3 per element, no scale (saturating at 448, subnormals below 2**-6)."""
    x = np.asarray(v, np.float64)
    e = np.maximum(np.floor(np.log2(np.maximum(np.abs(x), 1e-30))), -6)
    step = 2.0 ** (e - 3)
    return np.sign(x) * np.minimum(np.round(np.abs(x) / step) * step, 448.0)


# name -> (bytes per element for head size hs, quantise-dequantise one position's K or V)
KV_FORMATS = {
    "int16, 8 fraction bits (now)":              (lambda hs: 2.0, _kv_int16_q8),
    "int8, power-of-two scale per head row":     (lambda hs: 1 + 1 / hs, _kv_int8_pow2),
    "int8, 8-bit mantissa + exponent per row":   (lambda hs: 1 + 2 / hs, _kv_int8_mantissa),
    "int8 rows, u16 scale (spec to_kv8)":       (lambda hs: 1 + 2 / hs, _kv_int8_rows),
    "FP8 E4M3 per element":                      (lambda hs: 1.0, _kv_fp8_e4m3),
}


def kv_formats(model, sequences):
    """Top-1 agreement (hits, positions) with every kernel integer but the attention arithmetic
    (float, so that the K/V format's own effect shows) and the K/V cache in each KV_FORMATS
    format, and fp32 K/V for the baseline: [{format, bytes_per_element, hits, positions}]."""
    n = max(len(s) for _, s in sequences)
    qmodel = QuantizedModel(model, positions=n)
    hs = model.config.head_size
    others = tuple(k for k in KERNELS if k not in ("attention", "kv_cache"))
    rows = []
    for name, (size, fmt) in [("fp32", (lambda hs: 4.0, None)), *KV_FORMATS.items()]:
        hits, total = agreement(model, sequences, others, qmodel,
                                None if fmt is None else (lambda v, fmt=fmt: fmt(v, hs)))
        rows.append({"format": name, "bytes_per_element": size(hs), "hits": hits, "positions": total})
    return rows
