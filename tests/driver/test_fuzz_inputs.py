"""Property-based fuzzing of what users hand the driver: checkpoints, tokenizers, CSR maps, token
files and command lines. The contract: a clear error or a correct result, in bounded time and
memory, never a traceback.

CI runs a fixed number of examples from a fixed seed (tests/conftest.py: the "ci" profile);
``LT_FUZZ=long pytest tests/driver/test_fuzz_inputs.py`` runs many more from random seeds.
"""

import contextlib
import io
import json
import os
import struct
import tempfile
import time
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st

from driver import cli
from driver.csr import CSRMap
from driver.errors import CSRMapError
from driver.model import Config, ModelFormatError, load, random_model, save
from driver.runtime import DEFAULT_TOKENIZER
from driver.tokenizer import Tokenizer, TokenizerFormatError

TINY = Config(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32, seq_len=8,
              shared_classifier=False)
INT32 = st.one_of(st.integers(-2 ** 31, 2 ** 31 - 1),
                  st.sampled_from([0, 1, -1, 2, 3, 7, 8, 16, 1 << 20, 1 << 30, 2 ** 31 - 1, -2 ** 31]))
CHECKPOINTS = {}


def _checkpoint(version):
    """A valid small checkpoint of each version, made once."""
    if version not in CHECKPOINTS:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.bin")
            save(random_model(TINY, seed=3), path, version=version, **({"group_size": 8} if version == 2 else {}))
            CHECKPOINTS[version] = open(path, "rb").read()
    return CHECKPOINTS[version]


def _header_fields(version):
    """Byte offsets of the header's int32 fields (the seven config values, version 2's group size)."""
    first = 0 if version == 0 else 8
    fields = [first + 4 * k for k in range(7)]
    return fields + ([37] if version == 2 else [])


@st.composite
def damaged_checkpoints(draw):
    version = draw(st.sampled_from([0, 1, 2]))
    blob = bytearray(_checkpoint(version))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "byte", "truncate", "extend"]))
        if kind == "field":
            at = draw(st.sampled_from(_header_fields(version)))
            if at + 4 <= len(blob):
                struct.pack_into("<i", blob, at, draw(INT32))
        elif kind == "byte" and blob:
            at = draw(st.integers(0, min(len(blob) - 1, 300)))
            blob[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del blob[draw(st.integers(0, len(blob))):]
        else:
            blob += draw(st.binary(min_size=1, max_size=64))
    return version, bytes(blob)


def _bounded(fn):
    """fn()'s result, with its time and its peak of Python-allocated memory."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        return fn(), time.monotonic() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@given(damaged_checkpoints())
def test_a_damaged_checkpoint_loads_correctly_or_is_named(case):
    version, blob = case
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.bin")
        with open(path, "wb") as f:
            f.write(blob)

        def attempt():
            try:
                return load(path)
            except ModelFormatError as e:
                assert path in str(e) or "cannot read" in str(e)
                return None
        model, seconds, peak = _bounded(attempt)
    assert seconds < 5 and peak < 16 * len(blob) + (8 << 20), (seconds, peak)
    event("loaded" if model is not None else "refused")
    if model is not None:
        model.config.validate()
        for name, w in model.weights.items():
            assert np.all(np.isfinite(w)), name


@st.composite
def damaged_tokenizers(draw):
    blob = bytearray(open(DEFAULT_TOKENIZER, "rb").read())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["max_len", "length", "byte", "truncate", "extend"]))
        if kind == "max_len" and len(blob) >= 4:
            struct.pack_into("<I", blob, 0, draw(st.integers(0, 2 ** 32 - 1)))
        elif kind == "length" and len(blob) >= 12:
            struct.pack_into("<i", blob, 8, draw(INT32))          # the first piece's length
        elif kind == "byte" and blob:
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del blob[draw(st.integers(0, len(blob))):]
        else:
            blob += draw(st.binary(min_size=1, max_size=64))
    return bytes(blob)


@given(damaged_tokenizers(), st.text(max_size=40))
def test_a_damaged_tokenizer_loads_and_encodes_or_is_named(blob, text):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tokenizer.bin")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            tok = Tokenizer.load(path, vocab_size=512)
        except TokenizerFormatError as e:
            assert path in str(e)
            event("refused")
            return
    event("loaded")
    try:
        ids = tok.encode(text)
    except ValueError as e:                      # a character the damaged vocabulary cannot spell
        assert "not in the vocabulary" in str(e)
        return
    assert ids[0] == 1 and all(0 <= i < 512 for i in ids)
    assert tok.min_tokens(text) <= len(ids)


CSR_KINDS = st.sampled_from(["csr_register", "csr_base", "constant", "memory_region", "#comment", "csr_bogus", ""])
CSR_VALUES = st.one_of(st.integers(0, 2 ** 32 - 1).map(hex), st.integers(1, 8).map(str),
                       st.integers(-5, 2 ** 33).map(hex), st.text(alphabet="0x,Gz- \"", max_size=6))
VALID_ROW = st.tuples(st.just("csr_register"), st.text(alphabet="abc_0", min_size=1, max_size=5),
                      st.integers(0, 2 ** 32 - 1).map(hex), st.integers(1, 8).map(str), st.just(3))
ANY_ROW = st.tuples(CSR_KINDS, st.text(alphabet="abc_0", max_size=5), CSR_VALUES, CSR_VALUES, st.integers(0, 3))


@given(st.lists(st.one_of(VALID_ROW, VALID_ROW, ANY_ROW), max_size=12))
def test_a_csr_map_parses_or_is_named(rows):
    lines = [",".join([k, n, a, b, "rw"][:2 + cut]) for k, n, a, b, cut in rows]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "csr.csv")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        try:
            csr = CSRMap(path)
        except CSRMapError as e:
            assert path in str(e)
            event("refused")
            return
    event("parsed")
    assert csr.registers and all(0 <= a < 2 ** 32 for a, _ in csr.registers.values())


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    assert rc in (0, 2), (argv, rc, err.getvalue())
    assert "Traceback" not in err.getvalue()
    lines = out.getvalue().strip().splitlines()
    result = json.loads(lines[-1]) if "--json" in argv else None
    if rc:
        assert err.getvalue().strip().splitlines()[-1].startswith("litetransformer")
        assert result is None or result["ok"] is False
    return rc, result


NUMBERS = st.one_of(st.sampled_from(["0", "0.5", "0.9", "1", "1.0", "42", "3"]), st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-2 ** 70, 2 ** 70).map(str),
                    st.text(alphabet="0123456789.-+eEx naif", max_size=8))
PROMPTS = st.one_of(st.text(max_size=30), st.sampled_from(["Once upon a time", "\udcff", "é" * 3000, "\x00"]))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["-t", "-p", "-s", "-n", "-i"]), st.one_of(NUMBERS, PROMPTS), max_size=5),
       st.booleans())
def test_any_generate_command_line_is_a_result_or_a_usage_error(options, as_json):
    # -n is kept small (or refused) so that a run that is accepted takes a few golden passes.
    if "-n" in options and options["-n"].lstrip("+").isdigit() and not 0 < int(options["-n"]) <= 12:
        options["-n"] = "12"
    options.setdefault("-n", "6")
    argv = ["generate", "--target", "golden", "--quiet"] + (["--json"] if as_json else [])
    for flag, value in options.items():
        argv += [flag, value]
    rc, result = _run(argv)
    event(f"exit {rc}")
    if rc == 0 and as_json:
        # llama2.c's -n counts positions; each one's output is a token, BOS comes before them.
        assert result["generated_tokens"] + result["prompt_tokens"] <= int(options["-n"], 0) + 1


@given(st.lists(st.one_of(st.integers(0, 511).map(str), st.integers(-3, 600).map(str),
                          st.sampled_from(["x", "1.5", "0x10", "\u0661"])), max_size=20))
def test_any_token_file_is_evaluated_or_refused(words):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ids.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(" ".join(words))
        rc, result = _run(["eval", "--tokens", path, "--target", "golden", "--json", "--quiet"])
    event(f"exit {rc}")
    if rc == 0:
        assert len(result["argmax"]) == len(words) and all(0 <= t < 512 for t in result["argmax"])
