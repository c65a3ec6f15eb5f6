"""The integer forward pass: llama2.c's order of operations on spec.numerics kernels.

This is the arithmetic the transformer core implements. The ISA-level golden model (issue 3)
sequences the same kernels from a program; this module measures their fidelity against the
float reference before any hardware exists.
"""

import math

import numpy as np

from spec import numerics as N


class QuantizedModel:
    """Weights in the core's formats: int8 grouped matrices (the embedding table too), int16
    RMSNorm gains."""

    def __init__(self, model):
        c, w = model.config, model.weights
        self.config = c
        L = c.n_layers
        mats = lambda name: [N.quantize_weights(w[name][l]) for l in range(L)]
        self.wq, self.wk, self.wv, self.wo = mats("wq"), mats("wk"), mats("wv"), mats("wo")
        self.w1, self.w2, self.w3 = mats("w1"), mats("w2"), mats("w3")
        self.wcls = N.quantize_weights(w["wcls"])
        self.shared_classifier = c.shared_classifier
        self.embedding = self.wcls if self.shared_classifier else N.quantize_weights(w["token_embedding"])
        self.rms_att = [N.quantize_fixed16(w["rms_att"][l]) for l in range(L)]
        self.rms_ffn = [N.quantize_fixed16(w["rms_ffn"][l]) for l in range(L)]
        self.rms_final = N.quantize_fixed16(w["rms_final"])
        hs = c.head_size
        freq = 1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)
        angles = np.arange(c.seq_len)[:, None] * freq[None, :]            # (seq_len, hs/2)
        self.rope_cos = N.to_fixed(np.cos(angles), N.ROPE_FRAC)
        self.rope_sin = N.to_fixed(np.sin(angles), N.ROPE_FRAC)
        self.inv_sqrt_hs = round((1 << 15) / math.sqrt(hs))


def _mv(wqms, x, acc=None):
    return N.matvec_tiled(wqms, x, acc)


class IntTransformer:
    """Integer forward with an int16 KV cache; ``forward(token, pos)`` returns Q16 logits."""

    def __init__(self, qmodel):
        self.qm = qmodel
        c = qmodel.config
        self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), np.int64)    # int16 Q8 values
        self.value_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), np.int64)

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
            self.key_cache[l, pos] = N.to_kv(k)
            self.value_cache[l, pos] = N.to_kv(v)
            qkv = N.to_kv(q)
            att_out = np.zeros(c.dim, np.int64)
            for h in range(c.n_heads):
                kvh = h // kv_mul
                keys = self.key_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                e, recip = N.softmax_terms(N.scores(qkv[h * hs:(h + 1) * hs], keys, qm.inv_sqrt_hs))
                vals = self.value_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                att_out[h * hs:(h + 1) * hs] = N.attend(e, recip, vals)
            x = _mv(qm.wo[l], att_out, acc=x)
            xb = N.rmsnorm(x, *qm.rms_ffn[l])
            hb = N.silu_mul(_mv(qm.w1[l], xb), _mv(qm.w3[l], xb))
            x = _mv(qm.w2[l], hb, acc=x)
        return _mv(qm.wcls, N.rmsnorm(x, *qm.rms_final))
