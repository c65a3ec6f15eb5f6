"""The integer forward pass: llama2.c's order of operations on spec.numerics kernels.

This is the arithmetic the transformer core implements. The ISA-level golden model (issue 3)
sequences the same kernels from a program; this module measures their fidelity against the
float reference before any hardware exists.
"""

import math

import numpy as np

from spec import isa, numerics as N


# A tensor whose int8 form is off by more than this (RMS of the error over RMS of the values) is
# not run without the user's consent: real llama2.c checkpoints measure 0.42-0.50 % per matrix,
# so 5 % means values the format cannot follow (groups 256x below their row's largest, say).
LOSSY_ERROR = 0.05
RESIDUAL_LIMIT = 1 << (31 - N.ACT_FRAC)      # int32 with ACT_FRAC fraction bits: |x| < 32768
# K/V (and queries, int16 Q8): |x| < 128 in int16 with KV_FRAC fraction bits, and below int8
# rows' largest scale (127 * 255 * 2**(15 - 7) / 2**16 = 126.5): the lower of the two.
KV_LIMIT = min(1 << (15 - N.KV_FRAC), 127 * 255 * 2 ** (N.KV8_MAX_SHIFT - 7) / (1 << N.ACT_FRAC))
PROBE_POSITIONS = 8


class QuantRangeError(ValueError):
    """A tensor holds values that the core's integer formats cannot hold at all."""


class QuantizedModel:
    """Weights in the core's formats: int8 grouped matrices (the embedding table too), int16
    RMSNorm gains. Each tensor is checked as it is converted: values outside what the formats
    can hold raise QuantRangeError naming the tensor; ``lossy`` lists, one sentence each, the
    tensors whose int8 form is off by more than LOSSY_ERROR and the activations that the float
    reference drives past their integer formats (which saturate silently)."""

    def __init__(self, model, positions=None):
        c, w = model.config, model.weights
        self.config = c
        self.lossy = []
        L = c.n_layers
        mats = lambda name: [self._matrix(f"{name}[{l}]", w[name][l]) for l in range(L)]
        self.wq, self.wk, self.wv, self.wo = mats("wq"), mats("wk"), mats("wv"), mats("wo")
        self.w1, self.w2, self.w3 = mats("w1"), mats("w2"), mats("w3")
        self.wcls = self._matrix("wcls", w["wcls"])
        self.shared_classifier = c.shared_classifier
        self.embedding = self.wcls if self.shared_classifier else self._matrix("token_embedding", w["token_embedding"])
        # An embedding row is the residual stream's first value: it must fit its int32 format.
        table = w["wcls"] if self.shared_classifier else w["token_embedding"]
        if np.abs(table).max(initial=0) >= RESIDUAL_LIMIT:
            raise QuantRangeError(f"tensor token_embedding: values span [{table.min():.4g}, {table.max():.4g}]; the "
                                  f"residual stream holds |x| < {RESIDUAL_LIMIT} (int32, {N.ACT_FRAC} fraction bits)")
        self.rms_att = [self._gains(f"rms_att[{l}]", w["rms_att"][l]) for l in range(L)]
        self.rms_ffn = [self._gains(f"rms_ffn[{l}]", w["rms_ffn"][l]) for l in range(L)]
        self.rms_final = self._gains("rms_final", w["rms_final"])
        self._probe_activations(model)
        hs = c.head_size
        freq = 1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)
        rows = min(c.seq_len, positions or c.seq_len)                    # the positions that will run
        angles = np.arange(rows)[:, None] * freq[None, :]                 # (rows, hs/2)
        self.rope_cos = N.to_fixed(np.cos(angles), N.ROPE_FRAC)
        self.rope_sin = N.to_fixed(np.sin(angles), N.ROPE_FRAC)
        self.inv_sqrt_hs = round((1 << 15) / math.sqrt(hs))


    def _matrix(self, name, w):
        q, mant, shift = qms = N.quantize_weights(w)
        lo, hi = isa.SHIFT_RANGE
        if len(shift) and (shift.min() < lo or shift.max() > hi):
            raise QuantRangeError(
                f"tensor {name}: values span [{w.min():.4g}, {w.max():.4g}]; int8 weights with 8-bit group "
                f"scales and row shifts in {isa.SHIFT_RANGE} hold a row whose largest |w| is in "
                f"[{127 * 2.0 ** (N.SCALE_MANT_BITS - 1 - hi):.3g}, {127 * 2.0 ** (N.SCALE_MANT_BITS - lo):.0f}]")
        rows, cols = w.shape
        deq = (q.reshape(rows, -1, N.WEIGHT_GROUP) * mant[:, :, None].astype(np.float32)).reshape(rows, -1)
        deq = deq[:, :cols] * np.exp2(-shift.astype(np.float32))[:, None]
        norm = float(np.linalg.norm(w))
        error = float(np.linalg.norm(deq - w)) / norm if norm > 0 else 0.0
        if error > LOSSY_ERROR:
            self.lossy.append(f"tensor {name}: its int8 form is off by {100 * error:.1f} % of its RMS (limit "
                              f"{100 * LOSSY_ERROR:.0f} %; values in [{w.min():.4g}, {w.max():.4g}])")
        return qms

    def _probe_activations(self, model, positions=PROBE_POSITIONS):
        """Run the float reference over a few positions (BOS, then tokens from a fixed seed) and
        list, in ``lossy``, every vector that reaches past its integer format: the formats
        saturate there, silently. Real checkpoints stay far inside (stories260K: keys 7.1 of 128,
        residual 7.2 of 32768)."""
        from driver.reference import FloatTransformer
        c = model.config
        worst = {}

        def observe(name, layer, values):
            peak = float(np.abs(values).max(initial=0))
            key = (name, layer)
            if not np.isfinite(peak) or peak > worst.get(key, 0.0):
                worst[key] = peak if np.isfinite(peak) else float("inf")
        ft = FloatTransformer(model, observe, positions)
        tokens = [1] + list(np.random.default_rng(0).integers(0, c.vocab_size, positions - 1))
        with np.errstate(all="ignore"):
            for pos, token in enumerate(tokens[:c.seq_len]):
                ft.forward(int(token), pos)
        for (name, layer), peak in worst.items():
            limit = KV_LIMIT if name in ("queries", "keys", "values") else RESIDUAL_LIMIT
            if not peak < limit:
                where = f"layer {layer}'s {name}" if layer is not None else f"the {name}"
                self.lossy.append(f"{where} reach {peak:.4g} in the float reference's first {len(tokens)} "
                                  f"positions; their integer format holds |x| < {limit:g} and would saturate")

    @staticmethod
    def _gains(name, v):
        q, shift = N.quantize_fixed16(v)
        lo, hi = isa.SHIFT_RANGE
        if not lo <= int(shift) <= hi:
            raise QuantRangeError(f"tensor {name}: RMSNorm gains span [{v.min():.4g}, {v.max():.4g}]; the int16 "
                                  f"format with a shift in {isa.SHIFT_RANGE} holds a largest |gain| in "
                                  f"[2^{14 - hi}, 2^15)")
        return q, shift


def _mv(wqms, x, acc=None):
    return N.matvec_tiled(wqms, x, acc)


class IntTransformer:
    """Integer forward with the K/V cache in ``kv_format`` (spec.isa.KV_FORMATS; by default the
    simulated core's); ``forward(token, pos)`` returns Q16 logits."""

    def __init__(self, qmodel, kv_format=None):
        kv_format = kv_format or isa.TARGET_PARAMS["sim"].kv_format
        if kv_format not in isa.KV_FORMATS:
            raise ValueError(f"kv_format {kv_format!r}: must be one of {', '.join(isa.KV_FORMATS)}")
        self.qm, self.kv_format = qmodel, kv_format
        c = qmodel.config
        n = len(qmodel.rope_cos)                      # the positions QuantizedModel made RoPE rows for
        hs = c.head_size
        # int16: Q8 values; int8: rows and, per row (layer, position, KV head), the scale word.
        self.key_cache = np.zeros((c.n_layers, n, c.kv_dim), np.int64)
        self.value_cache = np.zeros((c.n_layers, n, c.kv_dim), np.int64)
        self.key_scale = np.zeros((c.n_layers, n, c.kv_dim // hs), np.int64)
        self.value_scale = np.zeros((c.n_layers, n, c.kv_dim // hs), np.int64)

    def _store(self, l, pos, k, v):
        if self.kv_format == "int16":
            self.key_cache[l, pos], self.value_cache[l, pos] = N.to_kv(k), N.to_kv(v)
            return
        hs = self.qm.config.head_size
        for cache, scales, x in ((self.key_cache, self.key_scale, k), (self.value_cache, self.value_scale, v)):
            for kvh in range(len(x) // hs):
                cache[l, pos, kvh * hs:(kvh + 1) * hs], scales[l, pos, kvh] = N.to_kv8(x[kvh * hs:(kvh + 1) * hs])

    def _head(self, l, pos, kvh, q):
        """One query head's attention output over the cached rows of KV head ``kvh``."""
        hs = self.qm.config.head_size
        keys = self.key_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
        vals = self.value_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
        if self.kv_format == "int16":
            e, recip = N.softmax_terms(N.scores(q, keys, self.qm.inv_sqrt_hs))
            return N.attend(e, recip, vals)
        e, recip = N.softmax_terms(N.scores8(q, keys, self.key_scale[l, :pos + 1, kvh], self.qm.inv_sqrt_hs))
        return N.attend8(e, recip, vals, self.value_scale[l, :pos + 1, kvh])

    def forward(self, token, pos):
        qm, c = self.qm, self.qm.config
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        q, mant, shift = qm.embedding
        x = N.embed(q[token], mant[token], shift[token])[:c.dim]                                        # (dim,) Q16
        for l in range(c.n_layers):
            xb = N.rmsnorm(x, *qm.rms_att[l])
            q = _mv(qm.wq[l], xb)
            k = _mv(qm.wk[l], xb)
            v = _mv(qm.wv[l], xb)
            q = N.rope(q, qm.rope_cos[pos], qm.rope_sin[pos], hs)
            k = N.rope(k, qm.rope_cos[pos], qm.rope_sin[pos], hs)
            self._store(l, pos, k, v)
            qkv = N.to_kv(q)
            att_out = np.zeros(c.dim, np.int64)
            for h in range(c.n_heads):
                att_out[h * hs:(h + 1) * hs] = self._head(l, pos, h // kv_mul, qkv[h * hs:(h + 1) * hs])
            x = _mv(qm.wo[l], att_out, acc=x)
            xb = N.rmsnorm(x, *qm.rms_ffn[l])
            hb = N.silu_mul(_mv(qm.w1[l], xb), _mv(qm.w3[l], xb))
            x = _mv(qm.w2[l], hb, acc=x)
        return _mv(qm.wcls, N.rmsnorm(x, *qm.rms_final))
