"""Generation and teacher forcing on the golden target, against the integer forward pass
(driver.intforward, one position at a time) and llama2.c's sampling rules."""

import os
import shutil
import subprocess

import numpy as np
import pytest

from driver import runtime
from driver.device import Device
from driver.intforward import IntTransformer, QuantizedModel
from driver.model import Config, random_model
from driver.runtime import LOGIT_SCALE, compile_cached
from driver.sampling import Sampler, XorShiftRng, sample_topp, softmax
from spec import isa

CONFIG = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=48,
                shared_classifier=False)


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG, seed=7, scale=0.4)


@pytest.fixture(scope="module")
def loaded(model, tmp_path_factory):
    # The compiled image goes to a private cache; the environment is restored afterwards (the
    # simulator tests that follow look for their build in the real cache).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITETRANSFORMER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield Device.open("golden").load(model)


def int_greedy(model, prompt, steps):
    """llama2.c's loop on the integer forward pass, one position per call."""
    t, tokens = IntTransformer(QuantizedModel(model)), list(prompt)
    for pos in range(steps):
        logits = t.forward(tokens[pos], pos)
        if pos >= len(prompt) - 1:
            nxt = int(np.argmax(logits))
            if nxt in (1, 2):
                break
            tokens.append(nxt)
    return tokens


def test_greedy_matches_the_integer_forward(model, loaded):
    # This prompt runs to -n: 20 positions, every output a token (llama2.c's -n).
    prompt = [1, 9, 12]
    out = loaded.generate([prompt], steps=20, temperature=0.0)["sequences"][0]
    assert out["tokens"] == int_greedy(model, prompt, 20)
    assert out["stop"] == "steps" and out["generated_tokens"] == 20 - len(prompt) + 1


def test_greedy_stops_where_the_model_says_bos_or_eos(model, loaded):
    # This prompt's fourth output is a BOS or EOS: the sequence ends there, without printing it.
    prompt = [1, 17, 40, 5, 33]
    out = loaded.generate([prompt], steps=20, temperature=0.0)["sequences"][0]
    assert out["tokens"] == int_greedy(model, prompt, 20) and len(out["tokens"]) == 6
    assert out["stop"] in ("bos", "eos")


def test_batched_sequences_equal_each_alone(loaded):
    prompts = [[1, 3], [1, 9, 12, 30, 41, 7, 8, 50, 22, 11, 19], [1], [1, 60, 61]]
    together = loaded.generate(prompts, steps=24, temperature=0.0)
    alone = [loaded.generate([p], steps=24, temperature=0.0)["sequences"][0]["tokens"] for p in prompts]
    assert [s["tokens"] for s in together["sequences"]] == alone
    # The long prompt was prefilled several positions per pass.
    assert together["stats"]["prefill"]["passes"] + together["stats"]["decode"]["passes"] < 24 + 11


def test_eval_matches_the_integer_forward(model, loaded):
    rng = np.random.default_rng(3)
    tokens = [1] + rng.integers(3, CONFIG.vocab_size, 20).tolist()
    out = loaded.eval(tokens, logits=True)
    t = IntTransformer(QuantizedModel(model))
    expect = [t.forward(tok, pos) for pos, tok in enumerate(tokens)]
    assert out["argmax"] == [int(np.argmax(e)) for e in expect]
    np.testing.assert_array_equal(np.array(out["logits"], np.float32),
                                  (np.array(expect) * LOGIT_SCALE).astype(np.float32))
    assert out["stats"]["passes"] == -(-len(tokens) // loaded.slots)


def test_sampling_is_seeded_and_follows_the_logits(loaded):
    a = loaded.generate([[1, 5]], steps=16, temperature=0.8, topp=0.9, seed=42)["sequences"][0]["tokens"]
    b = loaded.generate([[1, 5]], steps=16, temperature=0.8, topp=0.9, seed=42)["sequences"][0]["tokens"]
    assert a == b


def test_bad_requests_are_refused(loaded):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        loaded.generate([[1, CONFIG.vocab_size]], steps=8, temperature=0.0)
    with pytest.raises(ValueError, match="5 tokens exceed -n, capped by the context, of 3 positions"):
        loaded.generate([[1, 2, 3, 4, 5]], steps=3, temperature=0.0)
    with pytest.raises(ValueError, match="KV regions"):
        loaded.generate([[1]] * (loaded.kv_regions + 1), steps=4, temperature=0.0)
    with pytest.raises(ValueError, match="exceed the context"):
        loaded.eval([1] * (CONFIG.seq_len + 1))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        loaded.generate(["hello"], steps=4)
    # Nothing broke: the next request works.
    assert loaded.eval([1, 2, 3])["positions"] == 3


def test_compile_cache_hits(model, tmp_path, monkeypatch):
    params = isa.TARGET_PARAMS["sim"]
    a = compile_cached(model, params, 64 << 20, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
    # A hit reads the entry: the compiler must not run again.
    with monkeypatch.context() as mp:
        mp.setattr(runtime, "compile_model", lambda *a, **k: pytest.fail("compiled again on a cache hit"))
        b = compile_cached(model, params, 64 << 20, cache_dir=str(tmp_path))
    assert a.image == b.image and a.program == b.program
    compile_cached(model, params, 64 << 20, seq_len=16, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2


def test_a_damaged_compile_cache_entry_is_rebuilt_with_a_notice(model, tmp_path, capsys):
    # A byte changed inside the image: the pickle still loads, so only the entry's own SHA-256
    # can tell (the upload's CRC is computed from the same damaged bytes).
    params = isa.TARGET_PARAMS["sim"]
    good = compile_cached(model, params, 64 << 20, cache_dir=str(tmp_path))
    (path,) = tmp_path.iterdir()
    blob = bytearray(path.read_bytes())
    at = blob.index(bytes(good.image[4096:4112]))
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))
    again = compile_cached(model, params, 64 << 20, cache_dir=str(tmp_path))
    assert again.image == good.image
    assert "differ from their recorded SHA-256; discarded, rebuilding" in capsys.readouterr().err


# Sampling --------------------------------------------------------------------------------------------
XORSHIFT_C = r"""
#include <stdio.h>
static unsigned int u32(unsigned long long *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return (*s * 0x2545F4914F6CDD1Dull) >> 32;
}
int main(void) {
    unsigned long long s = 1234567;
    for (int i = 0; i < 8; i++) printf("%u\n", u32(&s));
    for (int i = 0; i < 4; i++) printf("%.9g\n", (u32(&s) >> 8) / 16777216.0f);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_xorshift_matches_c(tmp_path):
    src = tmp_path / "x.c"
    src.write_text(XORSHIFT_C)
    subprocess.run(["cc", "-O1", "-o", str(tmp_path / "x"), str(src)], check=True)
    lines = subprocess.run([str(tmp_path / "x")], check=True, capture_output=True, text=True).stdout.split()
    rng = XorShiftRng(1234567)
    assert [rng.random_u32() for _ in range(8)] == [int(v) for v in lines[:8]]
    # %.9g round-trips a float32 exactly.
    assert [rng.random_f32() for _ in range(4)] == [np.float32(v) for v in lines[8:]]


def test_topp_picks_from_the_nucleus():
    rng = np.random.default_rng(0)
    for _ in range(200):
        probs = softmax(rng.standard_normal(20) * 2)
        topp, coin = rng.uniform(0.2, 0.95), rng.uniform(0, 1)
        order = np.argsort(-probs, kind="stable")
        k = int(np.searchsorted(np.cumsum(probs[order]), topp, side="right")) + 1   # nucleus size
        nucleus = order[:k]
        chosen = sample_topp(probs, topp, np.float32(coin))
        assert chosen in nucleus
        # The inverse CDF over the renormalised nucleus.
        cdf = np.cumsum(probs[nucleus]) / probs[nucleus].sum()
        assert chosen == nucleus[min(int(np.searchsorted(cdf, coin, side="right")), k - 1)]


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError):
        Sampler(temperature=-1)
    with pytest.raises(ValueError):
        Sampler(topp=1.5)
    assert Sampler(temperature=0).sample([0.1, 3.0, 2.0]) == 1
