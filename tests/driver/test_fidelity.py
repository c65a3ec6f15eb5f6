"""The integer path against fp32, with llama2.c's runq semantics as the bar (docs/numerics.md)."""

from driver.fidelity import measure
from driver.model import Config, load_legacy, random_model
from tests.shared import shared_path


def _shared(*parts):
    return load_legacy(shared_path(*parts))


def _prompts(model, steps=128):
    from driver.fidelity import PROMPTS, measure_prompts
    from driver.tokenizer import Tokenizer
    tok = Tokenizer.load(shared_path("aidreams260K", "tok512.bin"), model.config.vocab_size)
    three = measure_prompts(model, tok, steps, PROMPTS)
    eight = measure_prompts(model, tok, steps)
    return three["total"], eight["total"]


def test_aidreams_teacher_forced():
    # Issue 4's target, >= 99 % teacher-forced top-1 from BOS, and issue 23's: at least runq
    # over the three prompts and over eight, each prompt's fp32 greedy sequence.
    model = _shared("aidreams260K", "aidreams260K.bin")
    r = measure(model, 128)
    assert r["integer"] >= 0.99 and r["integer"] >= r["runq"]
    for total in _prompts(model):
        assert total["fp32"] == total["predictions"]
        assert total["integer"] >= total["runq"], total


def test_stories260k_gqa_teacher_forced():
    # Grouped-query attention (issue 23): at least runq over the three prompts and over eight.
    for total in _prompts(_shared("stories260K-gqa", "model.bin")):
        assert total["fp32"] == total["predictions"]
        assert total["integer"] >= total["runq"], total
        assert total["integer"] >= 0.9 * total["predictions"], total


def test_random_model_tracks_fp32():
    # Without ../shared: a random model of the aidreams shape still follows fp32 closely.
    c = Config(dim=64, hidden_dim=172, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=512, seq_len=64,
               shared_classifier=True)
    r = measure(random_model(c, seed=3), 64)
    assert r["integer"] >= 0.9


def test_aidreams_greedy_prefixes_at_least_runq():
    # Free-running greedy from the three prompts of issue 4: the integer path keeps at least as
    # many of fp32's tokens as runq does.
    from driver.fidelity import greedy_prefixes
    from driver.tokenizer import Tokenizer
    model = _shared("aidreams260K", "aidreams260K.bin")
    tok = Tokenizer.load(shared_path("aidreams260K", "tok512.bin"), model.config.vocab_size)
    for g in greedy_prefixes(model, tok, 64):
        assert g["integer_prefix"] >= g["runq_prefix"], g


def test_default_model_teacher_forced_and_greedy():
    # The bundled model (no ../shared needed): the integer path follows fp32 at least as well
    # as runq, teacher-forced and in free-running greedy text.
    from driver.fidelity import greedy_prefixes
    from driver.model import load
    from driver.runtime import DEFAULT_MODEL, DEFAULT_TOKENIZER
    from driver.tokenizer import Tokenizer
    from driver.fidelity import measure_prompts
    model = load(DEFAULT_MODEL)
    r = measure(model, 128)
    assert r["integer"] >= 0.99 and r["integer"] >= r["runq"]
    tok = Tokenizer.load(DEFAULT_TOKENIZER, model.config.vocab_size)
    total = measure_prompts(model, tok, 128)["total"]
    assert total["integer"] >= total["runq"] and total["integer"] >= 0.99 * total["predictions"], total
    for g in greedy_prefixes(model, tok, 48):
        assert g["integer_prefix"] >= g["runq_prefix"], g


def test_the_paired_comparison_counts_and_tests_the_differences():
    from math import comb
    from driver.fidelity import paired_comparison
    a = [True] * 50 + [True] * 7 + [False] * 2 + [False] * 10
    b = [True] * 50 + [False] * 7 + [True] * 2 + [False] * 10
    r = paired_comparison(a, b)
    assert r["only_first"] == 7 and r["only_second"] == 2
    # Exact two-sided binomial test of 2 out of 9 at p = 1/2, written out.
    assert abs(r["p_value"] - 2 * sum(comb(9, i) for i in range(3)) / 2 ** 9) < 1e-12
    assert paired_comparison(a, a)["p_value"] == 1.0
