"""Fidelity of the integer path against fp32, with llama2.c's own int8 path (runq) as the bar.

runq semantics, emulated in numpy: Q8_0 weights and matmul inputs (symmetric int8, one fp32
scale per group of GS values, GS dividing every matrix width), fp32 norms, softmax, RoPE and
KV cache. The embedding table is Q8_0 too (runq dequantises it).
"""

import numpy as np

from driver import reference as R
from driver.intforward import IntTransformer, QuantizedModel


def runq_group_size(config):
    """The largest power of two up to 64 dividing dim and hidden_dim (runq's export rule)."""
    gs = 64
    while config.dim % gs or config.hidden_dim % gs:
        gs //= 2
    return gs


def q80(x, gs):
    """Quantise-dequantise in Q8_0 groups along the last axis."""
    g = x.reshape(*x.shape[:-1], -1, gs)
    s = np.abs(g).max(axis=-1, keepdims=True) / 127.0
    s[s == 0] = 1.0
    return (np.round(g / s) * s).reshape(x.shape).astype(np.float32)


class RunQTransformer(R.FloatTransformer):
    """llama2.c runq's arithmetic: Q8_0 weights and matmul inputs, fp32 elsewhere."""

    def __init__(self, model, gs=None):
        gs = gs or runq_group_size(model.config)
        w = dict(model.weights)
        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "wcls", "token_embedding"):
            w[name] = q80(w[name], gs)
        super().__init__(type(model)(model.config, w))
        self.gs = gs

    def forward(self, token, pos):
        # Matmul inputs are quantised where runq quantises them: rmsnorm outputs, the attention
        # output before wo and the FFN hidden before w2.
        saved = (R.rmsnorm, R.silu)
        gs = self.gs
        R.rmsnorm = lambda x, weight: q80(saved[0](x, weight), gs)
        w = self.m.weights
        wo, w2 = w["wo"], w["w2"]
        w["wo"] = [_QuantizedInput(a, gs) for a in wo]
        w["w2"] = [_QuantizedInput(a, gs) for a in w2]
        try:
            return super().forward(token, pos)
        finally:
            R.rmsnorm = saved[0]
            w["wo"], w["w2"] = wo, w2


class _QuantizedInput:
    def __init__(self, matrix, gs):
        self.matrix, self.gs = matrix, gs

    def __matmul__(self, x):
        return self.matrix @ q80(np.asarray(x, np.float32), self.gs)


def greedy_sequence(model, n, bos=1):
    """fp32 greedy tokens after BOS: the teacher sequence (n + 1 tokens, BOS first)."""
    t, tok, seq = R.FloatTransformer(model, positions=n), bos, [bos]
    for pos in range(n):
        tok = int(np.argmax(t.forward(tok, pos)))
        seq.append(tok)
    return seq


def greedy_tokens(forward, prompt, steps):
    """llama2.c's greedy loop on ``forward``: the prompt (BOS first) is fed, then argmax is fed
    back, for ``steps`` positions in all; stops at BOS or EOS. Returns the generated tokens."""
    tokens = list(prompt)
    for pos in range(steps):
        nxt = int(np.argmax(forward(tokens[pos], pos)))
        if pos < len(prompt) - 1:
            continue
        if nxt in (1, 2):
            break
        tokens.append(nxt)
    return tokens[len(prompt):]


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def teacher_forced_agreement(forward, seq):
    """Fraction of positions where argmax(forward(seq[p], p)) == seq[p + 1]."""
    hits = sum(int(np.argmax(forward(seq[p], p))) == seq[p + 1] for p in range(len(seq) - 1))
    return hits / (len(seq) - 1)


PROMPTS = ("", "Once upon a time", "The little dog")


def greedy_prefixes(model, tokenizer, steps, prompts=PROMPTS):
    """Per prompt: the fp32 greedy continuation and how many of its first tokens the integer
    path and runq reproduce (their common prefix with fp32)."""
    out = []
    for text in prompts:
        prompt = tokenizer.encode(text, bos=True)
        ref = greedy_tokens(R.FloatTransformer(model, positions=steps).forward, prompt, steps)
        ints = greedy_tokens(IntTransformer(QuantizedModel(model, positions=steps)).forward, prompt, steps)
        runq = greedy_tokens(RunQTransformer(model).forward, prompt, steps)
        out.append({"prompt": text, "prompt_tokens": len(prompt), "fp32_tokens": len(ref),
                    "integer_prefix": common_prefix(ref, ints), "runq_prefix": common_prefix(ref, runq),
                    "fp32_text": tokenizer.decode_all(ref, prev=prompt[-1])})
    return out


def measure(model, n):
    """Teacher-forced top-1 agreement with fp32 of the integer path and of runq, side by side."""
    seq = greedy_sequence(model, n)
    return {
        "positions": n,
        "integer": teacher_forced_agreement(IntTransformer(QuantizedModel(model, positions=n + 1)).forward, seq),
        "runq": teacher_forced_agreement(RunQTransformer(model).forward, seq),
        "runq_group_size": runq_group_size(model.config),
    }
