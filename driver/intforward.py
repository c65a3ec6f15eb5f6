"""The integer forward pass: llama2.c's order of operations on spec.numerics kernels.

This is the arithmetic the transformer core implements. The ISA-level golden model (issue 3)
sequences the same kernels from a program; this module measures their fidelity against the
float reference before any hardware exists.
"""

import math

import numpy as np

from spec import numerics as N


class QuantizedModel:
    """Weights in the core's formats. RMSNorm gains are folded into the matrices that read the
    normalised vector (W @ diag(g)), so the hardware's RMSNorm has no gain multiply."""

    def __init__(self, model):
        c, w = model.config, model.weights
        self.config = c
        fold = lambda mat, g: mat * g[None, :]
        L = c.n_layers
        self.wq = [N.quantize_weights(fold(w["wq"][l], w["rms_att"][l])) for l in range(L)]
        self.wk = [N.quantize_weights(fold(w["wk"][l], w["rms_att"][l])) for l in range(L)]
        self.wv = [N.quantize_weights(fold(w["wv"][l], w["rms_att"][l])) for l in range(L)]
        self.wo = [N.quantize_weights(w["wo"][l]) for l in range(L)]
        self.w1 = [N.quantize_weights(fold(w["w1"][l], w["rms_ffn"][l])) for l in range(L)]
        self.w3 = [N.quantize_weights(fold(w["w3"][l], w["rms_ffn"][l])) for l in range(L)]
        self.w2 = [N.quantize_weights(w["w2"][l]) for l in range(L)]
        self.wcls = N.quantize_weights(fold(w["wcls"], w["rms_final"]))
        # Embedding rows: one matvec-format row per token (a one-hot input selects it).
        self.embed = N.quantize_weights(w["token_embedding"])
        hs = c.head_size
        freq = 1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)
        angles = np.arange(c.seq_len)[:, None] * freq[None, :]            # (seq_len, hs/2)
        self.rope_cos = N.to_fixed(np.cos(angles), N.ROPE_FRAC)
        self.rope_sin = N.to_fixed(np.sin(angles), N.ROPE_FRAC)
        self.inv_sqrt_hs = round((1 << 15) / math.sqrt(hs))


def _mv(wqms, x):
    q, mant, shift = wqms
    xm, e = N.quantize_input(x)
    return N.matvec(q, mant, shift, xm, e)


class IntTransformer:
    """Integer forward with an int16 KV cache; ``forward(token, pos)`` returns Q16 logits."""

    def __init__(self, qmodel):
        self.qm = qmodel
        c = qmodel.config
        self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), np.int64)    # int16 Q8 values
        self.value_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), np.int64)

    def embed(self, token):
        q, mant, shift = self.qm.embed
        g = N.WEIGHT_GROUP
        row = q[token].astype(np.int64).reshape(-1, g) * mant[token][:, None]
        return N.saturate(N.round_shift(row.reshape(-1), shift[token] - N.ACT_FRAC), 32)[:self.qm.config.dim]

    def forward(self, token, pos):
        qm, c = self.qm, self.qm.config
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        x = self.embed(token)                                              # (dim,) Q16
        for l in range(c.n_layers):
            xb = N.rmsnorm(x)
            q = _mv(qm.wq[l], xb)
            k = _mv(qm.wk[l], xb)
            v = _mv(qm.wv[l], xb)
            q = N.rope(q, qm.rope_cos[pos], qm.rope_sin[pos], hs)
            k = N.rope(k, qm.rope_cos[pos], qm.rope_sin[pos], hs)
            self.key_cache[l, pos] = N.to_kv(k)
            self.value_cache[l, pos] = N.to_kv(v)
            qkv = N.to_kv(q)
            att_out = np.zeros(c.dim, np.int64)
            for h in range(c.n_heads):
                kvh = h // kv_mul
                keys = self.key_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                p = N.softmax(N.scores(qkv[h * hs:(h + 1) * hs], keys, qm.inv_sqrt_hs))
                vals = self.value_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                att_out[h * hs:(h + 1) * hs] = N.weighted_sum(p, vals)
            x = N.saturate(x + _mv(qm.wo[l], att_out), 32)
            xb = N.rmsnorm(x)
            hb = N.silu_mul(_mv(qm.w1[l], xb), _mv(qm.w3[l], xb))
            x = N.saturate(x + _mv(qm.w2[l], hb), 32)
        return _mv(qm.wcls, N.rmsnorm(x))
