"""The CPU yardstick users would pick: llama.cpp, through llama-cpp-python (the optional, pinned
``bench`` extra: ``scripts/setup.sh --bench``; it compiles llama.cpp on install).

A driver.model.Model (the bench's random weights, or a checkpoint) is written as GGUF with
llama.cpp's ``llama`` architecture (llama2.c's RoPE pairs adjacent elements, as llama.cpp's
does, so the matrices go in as they are), in F32 or Q8_0 (the matrices whose rows are a whole
number of 32-element blocks; the rest, and the norms, stay F32). Then it decodes: ``batch``
independent sequences, each fed its own argmax, one llama_decode per step over all of them,
at positions 0 .. positions - 1, on ``threads`` threads; the best of ``repeats`` passes counts.
``logits`` returns the first sequence's logits per position and ``tokens`` feeds given tokens
instead (teacher forcing), to compare with driver.reference.
"""

import os
import tempfile
import time

import numpy as np

from driver.cpu_baseline import cpu_name

LLAMA_CPP_PYTHON = "0.3.36"       # the version pinned in pyproject.toml's bench extra
QTYPES = ("F32", "Q8_0")
_NAMES = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
          "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up", "rms_att": "attn_norm", "rms_ffn": "ffn_norm"}


def available():
    """None if llama-cpp-python and gguf import, else why not (the message to print)."""
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as e:
        return (f"llama.cpp yardstick skipped: {e.name} is not installed "
                f"(scripts/setup.sh --bench installs llama-cpp-python=={LLAMA_CPP_PYTHON} and gguf)")
    return None


def _vocab(n):
    """A SentencePiece-style vocabulary llama.cpp accepts: <unk>, <s>, </s>, the 256 byte tokens,
    then placeholder pieces (the bench feeds token ids, never text)."""
    if n < 259:
        raise ValueError(f"llama.cpp needs a vocabulary of at least 259 tokens (its byte tokens), got {n}")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    tokens += [f"piece{i}" for i in range(n - len(tokens))]
    types += [1] * (n - len(types))
    return tokens, [0.0] * n, types


def write_gguf(model, path, qtype="Q8_0"):
    """``model`` as a GGUF file at ``path``: llama architecture, ``qtype`` F32 or Q8_0."""
    import gguf
    if qtype not in QTYPES:
        raise ValueError(f"qtype {qtype!r}: expected one of {', '.join(QTYPES)}")
    c = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("litetransformer-bench")
    w.add_context_length(c.seq_len)
    w.add_embedding_length(c.dim)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_dimension_count(c.head_size)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype == "F32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    tokens, scores, types = _vocab(c.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def tensor(name, data, matrix):
        data = np.ascontiguousarray(data, dtype=np.float32)
        if matrix and qtype == "Q8_0" and data.shape[-1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data)

    W = model.weights
    tensor("token_embd.weight", W["token_embedding"], True)
    for l in range(c.n_layers):
        for ours, theirs in _NAMES.items():
            tensor(f"blk.{l}.{theirs}.weight", W[ours][l], not ours.startswith("rms"))
    tensor("output_norm.weight", W["rms_final"], False)
    if not c.shared_classifier:
        tensor("output.weight", W["wcls"], True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


_QUIET = None


def _silence(llama_cpp):
    """llama.cpp logs every load and graph to stderr; only its errors are kept."""
    global _QUIET
    if _QUIET is None:
        def log(level, text, _):
            if level >= 4:            # GGML_LOG_LEVEL_ERROR
                os.write(2, text)
        _QUIET = llama_cpp.llama_log_callback(log)
        llama_cpp.llama_log_set(_QUIET, None)


def _decode(llama_cpp, ctx, vocab, batch, positions, first, logits, forced):
    """One pass: ``batch`` sequences, ``positions`` steps. Returns (seconds, logits of seq 0)."""
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    b = llama_cpp.llama_batch_init(batch, 0, batch)
    out = []
    try:
        toks = list(first)
        t0 = time.perf_counter()
        for pos in range(positions):
            b.n_tokens = batch
            for i in range(batch):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = toks[i], pos, 1, True
                b.seq_id[i][0] = i
            if llama_cpp.llama_decode(ctx, b) != 0:
                raise RuntimeError(f"llama_decode failed at position {pos}")
            for i in range(batch):
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(vocab,))
                toks[i] = int(row.argmax()) if forced is None else int(forced[min(pos + 1, positions - 1)])
                if logits and i == 0:
                    out.append(row.copy())
        seconds = time.perf_counter() - t0
    finally:
        llama_cpp.llama_batch_free(b)
    return seconds, (np.stack(out) if logits else None)


def run(model, qtype="Q8_0", threads=1, batch=1, positions=32, repeats=3, logits=False, seed=0, tokens=None):
    """Decode ``model`` with llama.cpp (see the module docstring). Returns {qtype, threads,
    batch, positions, seconds (best pass), tokens_per_s (all sequences), cpu, version} and with
    ``logits`` the first sequence's logits (positions, vocab)."""
    why = available()
    if why:
        raise RuntimeError(why)
    import llama_cpp
    c = model.config
    if positions > c.seq_len:
        raise ValueError(f"positions {positions} > the model's seq_len {c.seq_len}")
    first = np.random.default_rng(seed).integers(3, c.vocab_size, batch)
    if tokens is not None:
        if len(tokens) != positions:
            raise ValueError(f"tokens: {len(tokens)} given for {positions} positions")
        first = [int(tokens[0])] * batch
    with tempfile.TemporaryDirectory(prefix="lt-llamacpp-") as tmp:
        path = os.path.join(tmp, "model.gguf")
        write_gguf(model, path, qtype)
        _silence(llama_cpp)
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        lm = llama_cpp.llama_model_load_from_file(path.encode(), mp)
        if not lm:
            raise RuntimeError(f"llama.cpp could not load the GGUF written for {c}")
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = max(256, batch * positions)
        cp.n_batch = cp.n_ubatch = max(batch, 32)
        cp.n_seq_max = batch
        cp.n_threads = cp.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(lm, cp)
        try:
            best, lg = None, None
            for _ in range(repeats):
                seconds, lg1 = _decode(llama_cpp, ctx, c.vocab_size, batch, positions, first, logits, tokens)
                if best is None or seconds < best:
                    best, lg = seconds, lg1
        finally:
            llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(lm)
    out = dict(engine="llama.cpp", qtype=qtype, threads=threads, batch=batch, positions=positions,
               seconds=best, tokens_per_s=batch * positions / best, cpu=cpu_name(),
               version=llama_cpp.__version__)
    if logits:
        out["logits"] = lg
    return out
