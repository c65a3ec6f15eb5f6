"""The compiled program on the golden model against IntTransformer, bit for bit."""

import dataclasses

import numpy as np
import pytest

from driver.bench import SHAPES as BENCH_SHAPES
from driver.compiler import KV_ROW_BYTES, GoldenRunner, _kv_strides, compile_model
from driver.golden import CoreError
from driver.intforward import IntTransformer, QuantizedModel
from driver.model import Config, load_legacy, random_model
from spec import isa
from spec import numerics as N
from tests.shared import shared_path


# The shapes of ../shared/models (driver.bench.SHAPES) with a short context (the KV cache and
# RoPE table scale with it).
SHAPES = {name: dataclasses.replace(BENCH_SHAPES[bench], seq_len=32)
          for name, bench in (("aidreams260K", "aidreams260K"), ("stories260K-gqa", "stories260K"))}
# And one whose FFN is wider than a MATVEC tile (w2 runs as two column tiles, as stories42M's
# and stories110M's do).
# And one whose KV heads are longer than a DRAM row (spread over the banks, KV_ROW_BYTES).
SHAPES["long-context"] = dataclasses.replace(BENCH_SHAPES["stories260K"], n_layers=2, seq_len=384)
SHAPES["wide-ffn"] = Config(dim=64, hidden_dim=N.TILE_COLS + 16, n_layers=2, n_heads=4, n_kv_heads=2,
                            vocab_size=512, seq_len=32, shared_classifier=True)

_qmodels = {}


def qmodel(name, seed=0):
    if (name, seed) not in _qmodels:
        _qmodels[name, seed] = QuantizedModel(random_model(SHAPES[name], seed=seed))
    return _qmodels[name, seed]


def tokens(n, vocab, seed):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


@pytest.mark.parametrize("name", SHAPES)
def test_one_slot_matches_intforward(name):
    # One slot decoding 10 positions: logits and argmax equal IntTransformer.forward's.
    qm = qmodel(name)
    run, ref = GoldenRunner(compile_model(qm, base=0x1000)), IntTransformer(qm, "int16")
    for pos, tok in enumerate(tokens(10, qm.config.vocab_size, 1)):
        logits, argmax = run.step([(tok, pos)])
        want = ref.forward(tok, pos)
        assert np.array_equal(logits[0], want), f"position {pos}"
        assert argmax == [int(np.argmax(want))]


def test_a_matrix_wider_than_a_tile_runs_as_column_tiles():
    # w2 (hidden_dim columns) is two MATVECs over consecutive tiles of hh, the second adding to
    # x like the first; every other matrix is one MATVEC; no MATVEC is wider than a tile.
    qm = qmodel("wide-ffn")
    cm = compile_model(qm, params=isa.Params(act_depth=8192))
    mv = [isa.decode(w) for w in cm.program if isa.decode(w)["op"] == isa.OPCODES["MATVEC"]]
    assert len(mv) == 6 and max(i["m"] for i in mv) == N.TILE_COLS
    w2 = [i for i in mv if i["addr"] >= cm.layout["w2"] and i["addr"] < cm.layout["layers"] + cm.regs["WSTRIDE"]]
    hh, _ = cm.acts["hh"]
    assert [(i["src"] - hh, i["m"]) for i in w2] == N.tiles(qm.config.hidden_dim)
    assert all(i["flags"] & isa.FLAG_ACC and i["dst"] == cm.acts["x"][0] for i in w2)
    assert w2[1]["addr"] - w2[0]["addr"] == isa.matrix_bytes(qm.config.dim, N.TILE_COLS)
    assert cm.regs["WSTRIDE"] - (cm.layout["w2"] - cm.layout["layers"]) == \
        isa.tiled_matrix_bytes(qm.config.dim, qm.config.hidden_dim)


# Too long a vocabulary for a 512-word scratchpad: the map is compact (the attention's and the
# FFN's vectors share a range, SILU writes over its first input) and the classifier runs in
# chunks of 448 rows over them.
COMPACT = Config(dim=32, hidden_dim=144, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=1000, seq_len=32,
                 shared_classifier=False)
COMPACT_PARAMS = isa.Params(act_depth=512)


def test_a_scratchpad_too_small_for_the_logits_runs_the_classifier_in_chunks():
    # Two slots decoding 6 positions: every chunk's logits land in the slot's logits row and
    # the ARGMAX over the chunks is the first index of the maximum of them all.
    qm = QuantizedModel(random_model(COMPACT, seed=5))
    cm = compile_model(qm, params=COMPACT_PARAMS)
    assert cm.acts["logits"] == (64, 448) and cm.acts["hh"][0] == cm.acts["hb"][0] == cm.acts["qkv"][0] == 64
    ops = [isa.decode(w) for w in cm.program]
    am = [i for i in ops if i["op"] == isa.OPCODES["ARGMAX"]]
    assert [(i["m"], i["n"], bool(i["flags"] & isa.FLAG_ACC)) for i in am] == \
        [(0, 448, False), (448, 448, True), (896, 104, True)]
    run, refs = GoldenRunner(cm), [IntTransformer(qm, "int16"), IntTransformer(qm, "int16")]
    toks = [3, 999]
    for pos in range(6):
        logits, argmax = run.step([(toks[0], pos), (toks[1], pos)])
        for s in range(2):
            want = refs[s].forward(toks[s], pos)
            assert np.array_equal(logits[s], want), (pos, s)
            assert argmax[s] == int(np.argmax(want))
        toks = argmax


@pytest.mark.parametrize("kv_format", isa.KV_FORMATS)
@pytest.mark.parametrize("name, write_ports", [("stories260K-gqa", 1), ("long-context", isa.WRITE_PORTS_PER_BANK)])
def test_writes_stay_in_their_regions(name, write_ports, kv_format):
    # Two slots: the image from the weights on is unchanged, KV regions 2 and 3 stay untouched,
    # and each used KV region holds exactly the K/V entries of the positions run so far, where
    # the registers' strides and spec.isa's K/V layout put them (heads spread over the banks
    # included; int8 rows with their scale words).
    qm = qmodel(name)
    cm = compile_model(qm, isa.Params(write_ports=write_ports, kv_format=kv_format, act_read_ports=4))
    run, c = GoldenRunner(cm), qm.config
    refs = [IntTransformer(qm, kv_format), IntTransformer(qm, kv_format)]
    steps = 10 if kv_format == "int8" else 3          # int8: into the second group of positions
    for pos in range(steps):
        run.step([(pos + 1, pos), (pos + 7, pos)])
        for s in range(2):
            refs[s].forward(pos + 1 + 6 * s, pos)
    dram = run.core.dram
    start = cm.layout["layers"] - cm.base
    assert dram[cm.base + start:cm.base + len(cm.image)] == cm.image[start:]
    assert not any(dram[cm.kv_base(2):cm.kv_base(0) + 4 * cm.kv_bytes])
    hs, r, n = c.head_size, cm.regs, cm.seq_len
    for s, l, which, kvh in np.ndindex(2, c.n_layers, 2, c.n_kv_heads):
        base = cm.kv_base(s) + l * r["KVSTRIDE"] + which * r["VOFF"] + kvh * r["KVHEAD"]
        data = dram[base:base + isa.kv_head_bytes(kv_format, n, hs)]
        cache = (refs[s].key_cache, refs[s].value_cache)[which][l, :n, kvh * hs:(kvh + 1) * hs]
        if kv_format == "int16":
            assert np.array_equal(np.frombuffer(data, "<i2").reshape(n, hs), cache), (s, l, which, kvh)
        else:
            rows, scale = isa.unpack_kv8(data, n, hs)
            want_scale = (refs[s].key_scale, refs[s].value_scale)[which][l, :n, kvh]
            assert np.array_equal(rows, cache) and np.array_equal(scale, want_scale), (s, l, which, kvh)
            assert np.count_nonzero(scale) == steps


@pytest.mark.parametrize("name", SHAPES)
def test_int8_kv_cache_matches_intforward(name):
    # Params.kv_format "int8": two slots decoding 12 positions (two groups of rows), logits
    # equal IntTransformer's with the same format, which differ from the int16 cache's.
    qm = qmodel(name)
    run = GoldenRunner(compile_model(qm, params=isa.Params(kv_format="int8", act_read_ports=4)))
    refs = [IntTransformer(qm, "int8") for _ in range(2)]
    int16 = IntTransformer(qm, "int16")
    seqs = [tokens(12, qm.config.vocab_size, 40 + s) for s in range(2)]
    differ = False
    for pos in range(12):
        logits, argmax = run.step([(seqs[s][pos], pos) for s in range(2)])
        for s in range(2):
            want = refs[s].forward(seqs[s][pos], pos)
            assert np.array_equal(logits[s], want), f"slot {s} position {pos}"
            assert argmax[s] == int(np.argmax(want))
        differ |= not np.array_equal(logits[0], int16.forward(seqs[0][pos], pos))
    assert differ


def test_int8_kv_cache_refuses_a_head_size_its_rows_cannot_take():
    # Head size 24: int16 rows are whole beats, int8 rows (24 bytes) would straddle them.
    qm = QuantizedModel(random_model(Config(dim=48, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=2,
                                            vocab_size=64, seq_len=16, shared_classifier=True)))
    compile_model(qm)
    with pytest.raises(ValueError, match="head size 24 is not 8 or a multiple of 16"):
        compile_model(qm, params=isa.Params(kv_format="int8", act_read_ports=4))


@pytest.mark.parametrize("name", SHAPES)
def test_slots_decode_independent_sequences(name):
    # Four slots, each its own KV region and sequence, in one program run per position.
    qm = qmodel(name, seed=1)
    run = GoldenRunner(compile_model(qm))
    refs = [IntTransformer(qm, "int16") for _ in range(4)]
    seqs = [tokens(8, qm.config.vocab_size, 10 + s) for s in range(4)]
    for pos in range(8):
        logits, argmax = run.step([(seqs[s][pos], pos) for s in range(4)])
        for s in range(4):
            want = refs[s].forward(seqs[s][pos], pos)
            assert np.array_equal(logits[s], want), f"slot {s} position {pos}"
            assert argmax[s] == int(np.argmax(want))


def test_slots_at_different_positions():
    # Fewer active slots than the core has, at unrelated positions: slot 1 starts 3 steps late.
    qm = qmodel("stories260K-gqa")
    run = GoldenRunner(compile_model(qm))
    refs = [IntTransformer(qm, "int16"), IntTransformer(qm, "int16")]
    seqs = [tokens(9, 512, 20), tokens(6, 512, 21)]
    for step in range(9):
        active = [(seqs[0][step], step)] + ([(seqs[1][step - 3], step - 3)] if step >= 3 else [])
        logits, _ = run.step(active)
        for s, (tok, pos) in enumerate(active):
            assert np.array_equal(logits[s], refs[s].forward(tok, pos)), f"slot {s} step {step}"


@pytest.mark.parametrize("name", SHAPES)
def test_prefill_slots_share_one_kv_region(name):
    # Slots 0..3 hold positions p..p+3 of one prompt and share a KV region: the same logits as
    # feeding the prompt one position at a time (KVWRITE writes every slot before ATTN reads).
    qm = qmodel(name, seed=2)
    run, ref = GoldenRunner(compile_model(qm)), IntTransformer(qm, "int16")
    prompt = tokens(10, qm.config.vocab_size, 30)
    for p in (0, 4):
        logits, _ = run.step([(prompt[p + s], p + s) for s in range(4)], kv=[0] * 4)
        for s in range(4):
            assert np.array_equal(logits[s], ref.forward(prompt[p + s], p + s)), f"position {p + s}"
    for pos in (8, 9):                                          # then decode on in the same region
        logits, _ = run.step([(prompt[pos], pos)], kv=[0])
        assert np.array_equal(logits[0], ref.forward(prompt[pos], pos))


@pytest.mark.parametrize("path", [("aidreams260K", "aidreams260K.bin"), ("stories260K-gqa", "model.bin")])
def test_real_model_greedy(path):
    # The real checkpoints, greedy for 8 positions with a 16-position context.
    qm = QuantizedModel(load_legacy(shared_path(*path)))
    run, ref = GoldenRunner(compile_model(qm, seq_len=16)), IntTransformer(qm, "int16")
    tok = 1
    for pos in range(8):
        logits, argmax = run.step([(tok, pos)])
        assert np.array_equal(logits[0], ref.forward(tok, pos)), f"position {pos}"
        tok = argmax[0]


def test_kv_heads_cycle_through_the_banks():
    # With a write port per bank, heads longer than a row start on rows an odd number apart, so
    # a layer's first eight K heads (and V heads) lie in eight different banks of the DDR3;
    # short heads, and every head with fewer ports, stay packed.
    row, banks = KV_ROW_BYTES, 8
    for seq_len, hs, n_kv in ((512, 8, 4), (256, 48, 6), (1024, 64, 12), (384, 8, 4), (2048, 8, 8)):
        head = seq_len * hs * 2
        assert _kv_strides(head, n_kv, False) == (head, n_kv * head, 2 * n_kv * head)
        kvhead, voff, kvstride = _kv_strides(head, n_kv, True)
        assert head <= kvhead < head + 2 * row and kvhead % row == 0 and (kvhead // row) % 2 == 1
        assert voff == n_kv * kvhead and kvstride == 2 * voff
        for first in (0, voff):
            heads = [(first + h * kvhead) // row % banks for h in range(min(n_kv, banks))]
            assert len(set(heads)) == len(heads), (seq_len, hs, n_kv, heads)
    assert _kv_strides(32 * 8 * 2, 4, True) == (512, 2048, 4096)
    qm = qmodel("long-context")
    spread = compile_model(qm, isa.Params(write_ports=isa.WRITE_PORTS_PER_BANK), base=0x2010)
    packed = compile_model(qm, isa.Params(write_ports=2), base=0x2010)
    assert spread.kv % row == 0 and spread.regs["KVHEAD"] == 3 * row
    assert packed.regs["KVHEAD"] == 384 * qm.config.head_size * 2


def test_layout():
    # Deterministic image; the pieces lie in order without overlap; the program ends in HALT.
    qm = qmodel("stories260K-gqa")
    a, b = compile_model(qm, base=0x2000), compile_model(qm, base=0x2000)
    assert a.image == b.image and a.program == b.program
    c = qm.config
    assert a.regs["WSTRIDE"] == (2 * isa.fixed16_bytes(64) + isa.matrix_bytes(64 + 2 * 32, 64)
                                 + isa.matrix_bytes(64, 64) + isa.matrix_bytes(2 * 172, 64) + isa.matrix_bytes(64, 172))
    assert a.kv_bytes == c.n_layers * 2 * c.n_kv_heads * 32 * c.head_size * 2
    assert a.kv_base(3) - a.kv_base(0) == 3 * a.kv_bytes
    assert a.total_bytes == a.kv_base(0) + 4 * a.kv_bytes - a.base
    assert a.base + len(a.image) <= a.kv_base(0)
    addrs = sorted(v for k, v in a.layout.items() if k not in ("rms_att", "wqkv", "wo", "rms_ffn", "w13", "w2"))
    assert addrs == sorted(set(addrs)) and addrs[0] == a.base and all(x % 16 == 0 for x in addrs)
    ops = [isa.OPNAMES[isa.decode(w)["op"]] for w in a.program]
    assert ops[-1] == "HALT" and ops.count("LOOP") == 1 and ops.count("MATVEC") == 5
    greedy = [w for w in a.program if isa.OPNAMES[isa.decode(w)["op"]] != "STORE"]
    assert len(greedy) == len(a.program) - 1
    assert a.image[a.prog - a.base:a.prog_greedy - a.base] == isa.program_bytes(a.program)
    assert a.image[a.prog_greedy - a.base:] == isa.program_bytes(greedy)
    # The instruction buffer's fill past the last program reads beats no run writes.
    params = isa.TARGET_PARAMS["sim"]
    s = compile_model(qm, params, base=0x2000)
    assert params.fetch_beats and s.kv_base(0) - (s.base + len(s.image)) >= params.fetch_beats * isa.BEAT_BYTES
    ends = [(s, s + n) for s, n in a.acts.values()]
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(ends, ends[1:]))


@pytest.mark.parametrize("params, match", [
    (isa.Params(act_depth=256), r"activations need 512 words per slot \(x, xb, then the larger of the attention's "
                                r"and the FFN's vectors, the classifier in chunks\), Params.act_depth is 256"),
    (isa.Params(max_cols=128), r"hidden_dim 172 needs MATVEC inputs of 172 columns \(tiles of at most 1024\); "
                               r"Params.max_cols is 128"),
    (isa.Params(max_seq=16), "seq_len 32 exceeds Params.max_seq 16"),
    (isa.Params(max_head=8), "head size 16 exceeds Params.max_head 8"),
])
def test_too_wide_for_params(params, match):
    # A model wider than the core's buffers is refused with the limit named.
    with pytest.raises(ValueError, match=match):
        compile_model(qmodel("aidreams260K"), params=params)


def test_too_big_for_dram():
    # The error says how many bytes the model needs and how many the DRAM has.
    qm = qmodel("aidreams260K")
    need = compile_model(qm).total_bytes
    with pytest.raises(ValueError, match=f"needs {need} bytes of DRAM from 0x0 .* {need - 16} are available"):
        compile_model(qm, dram_size=need - 16)
    compile_model(qm, dram_size=need)
    with pytest.raises(ValueError, match="are available"):
        compile_model(qm, dram_size=need + 0x1000, base=0x2000)


def test_bad_arguments():
    qm = qmodel("aidreams260K")
    with pytest.raises(ValueError, match="base"):
        compile_model(qm, base=8)
    with pytest.raises(ValueError, match="seq_len 64 outside"):
        compile_model(qm, seq_len=64)
    odd = Config(dim=48, hidden_dim=64, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=32, seq_len=8,
                 shared_classifier=True)
    with pytest.raises(ValueError, match="head size 12 is not a multiple of 8"):
        compile_model(QuantizedModel(random_model(odd)))


def test_runner_names_core_errors():
    # A position past the context stops the core with BAD_POS; the runner raises it by name.
    run = GoldenRunner(compile_model(qmodel("aidreams260K"), seq_len=8))
    with pytest.raises(CoreError, match="BAD_POS"):
        run.step([(1, 8)])
    with pytest.raises(CoreError, match="BAD_TOKEN"):
        run.step([(512, 0)])
