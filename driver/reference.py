"""The float reference: llama2.c's forward pass in numpy fp32, the fidelity yardstick.

One small function per kernel and ``forward()`` in the order of the maths, as in run.c.
"""

import numpy as np


def rmsnorm(x, weight):
    # x: (dim,), weight: (dim,)
    ss = np.float32(np.mean(x * x, dtype=np.float32) + np.float32(1e-5))
    return (weight * (x / np.sqrt(ss))).astype(np.float32)


def softmax(x):
    e = np.exp(x - np.max(x))
    return (e / np.sum(e)).astype(np.float32)


def rope(vec, pos, head_size):
    # vec: (n * head_size,), rotated pairwise within each head, llama2.c's frequencies.
    out = vec.copy()
    i = np.arange(0, vec.shape[0], 2)
    head_dim = i % head_size
    freq = 1.0 / np.power(10000.0, head_dim / head_size).astype(np.float32)
    val = pos * freq
    fcr, fci = np.cos(val).astype(np.float32), np.sin(val).astype(np.float32)
    v0, v1 = vec[i], vec[i + 1]
    out[i], out[i + 1] = v0 * fcr - v1 * fci, v0 * fci + v1 * fcr
    return out


def silu(x):
    return (x / (1.0 + np.exp(-x))).astype(np.float32)


class FloatTransformer:
    """fp32 forward with a KV cache; ``forward(token, pos)`` returns the logits."""

    def __init__(self, model, observe=None, positions=None):
        self.m = model
        self.observe = observe or (lambda name, layer, values: None)   # each intermediate vector
        c = model.config
        n = min(c.seq_len, positions or c.seq_len)                          # the positions it will run
        self.key_cache = np.zeros((c.n_layers, n, c.kv_dim), np.float32)    # (layer, pos, kv_dim)
        self.value_cache = np.zeros((c.n_layers, n, c.kv_dim), np.float32)  # (layer, pos, kv_dim)

    def forward(self, token, pos):
        c, w = self.m.config, self.m.weights
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        see = self.observe
        x = w["token_embedding"][token].copy()                     # (dim,)
        see("residual", None, x)
        for l in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][l])
            q = w["wq"][l] @ xb                                    # (dim,)
            k = w["wk"][l] @ xb                                    # (kv_dim,)
            v = w["wv"][l] @ xb                                    # (kv_dim,)
            q, k = rope(q, pos, hs), rope(k, pos, hs)
            see("queries", l, q), see("keys", l, k), see("values", l, v)
            self.key_cache[l, pos], self.value_cache[l, pos] = k, v
            att_out = np.zeros(c.dim, np.float32)                  # (dim,)
            for h in range(c.n_heads):
                kvh = h // kv_mul
                qh = q[h * hs:(h + 1) * hs]
                keys = self.key_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]      # (pos+1, hs)
                att = softmax(keys @ qh / np.sqrt(np.float32(hs)))               # (pos+1,)
                vals = self.value_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]    # (pos+1, hs)
                att_out[h * hs:(h + 1) * hs] = att @ vals
            x = x + w["wo"][l] @ att_out                           # residual
            see("residual", l, x)
            xb = rmsnorm(x, w["rms_ffn"][l])
            h1, h3 = w["w1"][l] @ xb, w["w3"][l] @ xb
            hb = silu(h1) * h3                                     # (hidden,)
            see("w1|w3 outputs", l, np.maximum(np.abs(h1), np.abs(h3))), see("silu(w1) * w3", l, hb)
            x = x + w["w2"][l] @ hb                                # residual
            see("residual", l, x)
        x = rmsnorm(x, w["rms_final"])
        logits = (w["wcls"] @ x).astype(np.float32)                # (vocab,)
        see("logits", None, logits)
        return logits
