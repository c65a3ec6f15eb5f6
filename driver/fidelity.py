"""Fidelity of the integer path against fp32, with llama2.c's own int8 path (runq) as the bar.

runq semantics, emulated in numpy: Q8_0 weights and matmul inputs (symmetric int8, one fp32
scale per group of GS values, GS dividing every matrix width), fp32 norms, softmax, RoPE and
KV cache. The embedding table is Q8_0 too (runq dequantises it).
"""

import math

import numpy as np

from driver import reference as R
from driver.intforward import IntTransformer, QuantizedModel
from spec import isa


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
# Five more first words of TinyStories-like text, so that agreement does not hang on where one
# sequence happens to go (issue 23): eight sequences in all.
MORE_PROMPTS = ("Lily and Tom", "One day, a little bird", "The sun was", "There was a big red", "Mom said")


def teacher_sequences(model, tokenizer, steps, prompts=PROMPTS + MORE_PROMPTS):
    """Per prompt (BOS first, encoded as llama2.c does), the prompt followed by ``steps`` fp32
    greedy tokens: [(prompt length, tokens)]. Generation goes on through BOS and EOS (the model
    starts another story): teacher forcing only needs fp32's choice at every position."""
    out = []
    for text in prompts:
        seq = tokenizer.encode(text, bos=True)
        start = len(seq)
        n = min(start + steps, model.config.seq_len + 1)
        t = R.FloatTransformer(model, positions=n)
        for pos in range(n - 1):
            logits = t.forward(seq[pos], pos)
            if pos >= start - 1:
                seq.append(int(np.argmax(logits)))
        out.append((start, seq))
    return out


def teacher_forced_outcomes(forward_factory, sequences):
    """Per prediction, whether argmax of a fresh ``forward_factory(positions)`` equals each
    sequence's next token, at the positions after the prompt's last token (a list of bools)."""
    out = []
    for start, seq in sequences:
        forward = forward_factory(len(seq))
        for pos in range(len(seq) - 1):
            top = int(np.argmax(forward(seq[pos], pos)))
            if pos >= start - 1:
                out.append(top == seq[pos + 1])
    return out


def teacher_forced_hits(forward_factory, sequences):
    """(hits, predictions) of teacher_forced_outcomes."""
    out = teacher_forced_outcomes(forward_factory, sequences)
    return sum(out), len(out)


def paired_comparison(a, b):
    """Two paths' outcomes on the same predictions: how many only ``a`` gets right, only ``b``,
    and McNemar's exact two-sided p-value that they are equally often right (the binomial
    test on the predictions where they differ). A difference of a few predictions out of a
    thousand is usually not one: p near 1."""
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n if n else 1.0
    return {"only_first": only_a, "only_second": only_b, "p_value": min(1.0, 2 * tail)}


def measure_prompts(model, tokenizer, steps, prompts=PROMPTS + MORE_PROMPTS, sequences=None, kv_format=None):
    """Teacher-forced top-1 over each prompt's fp32 greedy sequence (``steps`` predictions each;
    ``sequences``: teacher_sequences's, if already made): the integer path (its K/V cache in
    ``kv_format``), runq and fp32 itself
    (a check: 100 %), per prompt and summed, and the integer path against runq prediction by
    prediction (paired_comparison)."""
    sequences = sequences or teacher_sequences(model, tokenizer, steps, prompts)
    kv_format = kv_format or isa.TARGET_PARAMS["sim"].kv_format
    n = max(len(s) for _, s in sequences)
    qm = QuantizedModel(model, positions=n)
    paths = {"integer": lambda p: IntTransformer(qm, kv_format).forward,
             "runq": lambda p: RunQTransformer(model).forward,
             "fp32": lambda p: R.FloatTransformer(model, positions=p).forward}
    rows, outcomes = [], {name: [] for name in paths}
    for text, seq in zip(prompts, sequences):
        row = {"prompt": text, "predictions": len(seq[1]) - seq[0]}
        for name, factory in paths.items():
            got = teacher_forced_outcomes(factory, [seq])
            outcomes[name] += got
            row[name] = sum(got)
        rows.append(row)
    total = {name: sum(r[name] for r in rows) for name in ("predictions", *paths)}
    return {"steps": steps, "kv_format": kv_format, "runq_group_size": runq_group_size(model.config),
            "prompts": rows, "total": total,
            "integer_vs_runq": paired_comparison(outcomes["integer"], outcomes["runq"])}


def greedy_prefixes(model, tokenizer, steps, prompts=PROMPTS, kv_format=None):
    """Per prompt: the fp32 greedy continuation and how many of its first tokens the integer
    path and runq reproduce (their common prefix with fp32)."""
    out = []
    for text in prompts:
        prompt = tokenizer.encode(text, bos=True)
        ref = greedy_tokens(R.FloatTransformer(model, positions=steps).forward, prompt, steps)
        ints = greedy_tokens(IntTransformer(QuantizedModel(model, positions=steps), kv_format).forward, prompt, steps)
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


def report(model, tokenizer, prompts, steps, kernels=False, kv_formats=False, greedy=False, say=print,
           progress=None, kv_format=None):
    """What ``litetransformer fidelity`` measures and prints (through ``say``): measure_prompts,
    then with ``kernels`` driver.kernel_error.table, with ``kv_formats`` its K/V format study,
    with ``greedy`` greedy_prefixes; the teacher sequences are made once for all of them."""
    from driver import kernel_error
    sequences = teacher_sequences(model, tokenizer, steps, prompts)
    result = measure_prompts(model, tokenizer, steps, prompts, sequences, kv_format)
    kv_format = result["kv_format"]
    for row in result["prompts"]:
        say(f"{row['prompt']!r:28s} {row['predictions']:4d} predictions: integer {row['integer']:4d}, "
            f"runq {row['runq']:4d}, fp32 {row['fp32']:4d}")
    t = result["total"]
    say(f"teacher-forced top-1 over {len(prompts)} prompts: integer ({kv_format} K/V) {t['integer']}/{t['predictions']} "
        f"({100 * t['integer'] / t['predictions']:.1f} %), runq (Q8_0, GS={result['runq_group_size']}) "
        f"{t['runq']}/{t['predictions']} ({100 * t['runq'] / t['predictions']:.1f} %), fp32 {t['fp32']}")
    pair = result["integer_vs_runq"]
    say(f"integer against runq, prediction by prediction: {pair['only_first']} only the integer path gets right, "
        f"{pair['only_second']} only runq (McNemar p = {pair['p_value']:.2f})")
    if kernels:
        result["kernels"] = kernel_error.table(model, sequences, progress=progress)
        say("kernel      local error  alone     all but   (top-1 teacher-forced; all integer "
            f"{100 * result['kernels']['integer']:.1f} %)")
        for row in result["kernels"]["kernels"]:
            say(f"{row['kernel']:11s} {row['local_error']:10.2e}  {100 * row['alone']:6.1f} %  "
                f"{100 * row['all_but']:6.1f} %")
    if kv_formats:
        result["kv_formats"] = kernel_error.kv_formats(model, sequences)
        for row in result["kv_formats"]:
            say(f"K/V {row['format']:42s} {row['bytes_per_element']:.3f} B/element: {row['hits']}/{row['positions']}")
    if greedy:
        result["greedy"] = greedy_prefixes(model, tokenizer, min(steps, model.config.seq_len), prompts, kv_format)
        for g in result["greedy"]:
            say(f"greedy {g['prompt']!r}: fp32 gives {g['fp32_tokens']} tokens; common prefix integer "
                f"{g['integer_prefix']}, runq {g['runq_prefix']}")
    return result
