"""The llama.cpp yardstick (driver/llamacpp_baseline.py): the GGUF it writes decodes, in
llama.cpp, to driver.reference's logits (F32), close to them in Q8_0, and the same in a batch as
alone. Needs the optional bench extra (scripts/setup.sh --bench); without it the llama.cpp
tests skip and only the pure-Python checks run."""

import dataclasses

import numpy as np
import pytest

from driver import llamacpp_baseline
from driver.model import Config, random_model
from driver.reference import FloatTransformer

# GQA, an unshared classifier, a hidden width Q8_0 cannot block (172: that matrix stays F32).
CONFIG = Config(dim=64, hidden_dim=172, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=320, seq_len=32,
                shared_classifier=False)


def test_vocabulary_needs_the_byte_tokens():
    tokens, scores, types = llamacpp_baseline._vocab(300)
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types) == 300
    assert tokens[3 + 0x0A] == "<0x0A>" and types[3 + 0x0A] == 6
    with pytest.raises(ValueError, match="at least 259"):
        llamacpp_baseline._vocab(258)


def _reference(model, tokens):
    ref = FloatTransformer(model)
    return np.stack([ref.forward(int(t), pos) for pos, t in enumerate(tokens)])


@pytest.mark.parametrize("shared", [False, True])
def test_f32_gguf_decodes_to_the_reference_logits(shared):
    pytest.importorskip("llama_cpp")
    model = random_model(dataclasses.replace(CONFIG, shared_classifier=shared), seed=5)
    tokens = np.random.default_rng(1).integers(3, CONFIG.vocab_size, 12)
    out = llamacpp_baseline.run(model, "F32", positions=len(tokens), repeats=1, logits=True, tokens=tokens)
    ref = _reference(model, tokens)
    # llama.cpp keeps its K/V cache in fp16 (its default, which the yardstick keeps): a few 1e-3.
    np.testing.assert_allclose(out["logits"], ref, rtol=0, atol=1e-2)
    assert (out["logits"].argmax(axis=1) == ref.argmax(axis=1)).all()
    assert out["tokens_per_s"] > 0 and out["batch"] == 1


def test_q8_0_is_close_and_a_batch_decodes_each_sequence_alone():
    pytest.importorskip("llama_cpp")
    model = random_model(CONFIG, seed=6)
    tokens = np.random.default_rng(2).integers(3, CONFIG.vocab_size, 10)
    ref = _reference(model, tokens)
    q8 = llamacpp_baseline.run(model, "Q8_0", positions=len(tokens), repeats=1, logits=True, tokens=tokens)
    err = np.abs(q8["logits"] - ref).max() / np.abs(ref).max()
    assert 0 < err < 0.05                               # quantised, but the same model
    batched = llamacpp_baseline.run(model, "Q8_0", batch=4, positions=len(tokens), repeats=1, logits=True,
                                    tokens=tokens)
    np.testing.assert_allclose(batched["logits"], q8["logits"], rtol=0, atol=1e-3)
    assert batched["tokens_per_s"] > 0 and batched["batch"] == 4


def test_yardstick_refuses_bad_arguments_before_any_work(capsys, monkeypatch):
    from driver import cli, yardstick
    monkeypatch.setattr(yardstick, "run", lambda *a, **k: pytest.fail("measured despite bad arguments"))
    assert cli.main(["yardstick", "--shape", "stories15M,stories7B"]) == 2
    assert "--shape 'stories7B': known shapes are" in capsys.readouterr().err
    assert cli.main(["yardstick", "--batch", "0"]) == 2
    assert "argument --batch: batch 0 is out of range" in capsys.readouterr().err
