"""The C baseline (driver/cpu/forward.c) against the numpy fp32 reference, position by position."""

import dataclasses

import numpy as np
import pytest

from driver import cpu_baseline
from driver.model import Config, random_model
from driver.reference import FloatTransformer

# GQA, a hidden width that is not a multiple of the matmul's eight partial sums, an unshared
# classifier: every path of the kernel.
CONFIG = Config(dim=64, hidden_dim=172, n_layers=3, n_heads=8, n_kv_heads=4, vocab_size=96, seq_len=24,
                shared_classifier=False)


@pytest.mark.parametrize("shared", [False, True])
def test_c_forward_matches_float_reference(shared):
    # Teacher-forced logits of every position agree with driver.reference to 1e-4.
    model = random_model(dataclasses.replace(CONFIG, shared_classifier=shared), seed=11)
    tokens = np.random.default_rng(3).integers(0, CONFIG.vocab_size, CONFIG.seq_len)
    out = cpu_baseline.run(model, tokens, repeats=1, logits=True)
    ref = FloatTransformer(model)
    expected = np.stack([ref.forward(int(t), pos) for pos, t in enumerate(tokens)])
    assert out["positions"] == len(tokens) and out["threads"] == 1 and out["tokens_per_s"] > 0
    np.testing.assert_allclose(out["logits"], expected, rtol=0, atol=1e-4)


def test_missing_compiler_is_named(monkeypatch, tmp_path):
    # No C compiler: a clear error naming it, not a traceback from subprocess.
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setenv("LITETRANSFORMER_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="needs a C compiler.*no-such-cc"):
        cpu_baseline.build()
