"""The benchmark's bookkeeping without hardware: which slots and KV regions each program run
gets, the figures computed from the counters, the report, and the options it refuses."""

import json

import numpy as np
import pytest

from driver import bench, bench_report, cli
from driver.device import Device
from driver.intforward import QuantizedModel
from driver.model import Config, Model, random_model
from spec import isa

TINY = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32,
              shared_classifier=True)
BASE, PER_SLOT = 1000, 300      # the fake core's cycles per run: weights once, then per slot


class FakeRunner:
    max_slots = 4

    def __init__(self, device):
        self.device = device

    def step(self, slots, kv, want_logits=True):
        self.device.calls.append((list(slots), list(kv)))
        self.device.last = len(slots)
        return None, [_next_token(t, p) for t, p in slots]


def _next_token(token, pos):
    """The fake core's "argmax": a function of the slot's input that differs from it, so a bench
    that fed back nothing (or the same token) would be seen."""
    return (7 * token + pos + 1) % TINY.vocab_size


class FakeDevice:
    """Counters from a cost model: BASE + PER_SLOT × slots cycles, half of BASE on weight beats."""
    name = "fake"

    def __init__(self, slots=4):
        self.params, self.calls, self.clock = isa.Params(slots=slots), [], 0
        self.max_context = 1 << 20              # a DRAM of this many positions' KV regions

    def accel_params(self):
        return self.params

    def load(self, model, seq_len=None, progress=None):
        if seq_len > self.max_context:
            raise ValueError(f"compile: the model needs {seq_len} bytes of DRAM from 0x0 (…)")
        self.model = model
        return type("Loaded", (), {"runner": FakeRunner(self)})()

    def cycles(self):
        self.clock += 10_000
        return self.clock

    def accel_counters(self, per_class=False):
        cycles = BASE + PER_SLOT * self.last
        return {"cycles": cycles, "mac_busy": BASE // 2, "dram_stall": 100, "bytes_read": 8 * BASE,
                "bytes_written": 64 * self.last, "retired": 40,
                "class_cycles": {"MATVEC": BASE, "ATTN": PER_SLOT * self.last}}


def test_runs_use_the_slots_and_regions_of_each_phase():
    # Prefill: B consecutive positions on region 0; decode: B sequences on regions 0..B-1 at one
    # position, each fed its own previous output.
    dev = FakeDevice()
    out = bench.bench(dev, Model(TINY, _weights()), batches=[1, 2, 4], positions=3, start_pos=5)
    prefill = dev.calls[:7]            # prompt of 4 (the largest B): 4 runs at B = 1, 2 at B = 2, 1 at B = 4
    assert [[p for _, p in slots] for slots, _ in prefill] == [[0], [1], [2], [3], [0, 1], [2, 3], [0, 1, 2, 3]]
    assert all(set(kv) == {0} for _, kv in prefill)
    decode = dev.calls[-3:]            # B = 4, positions 5, 6, 7
    assert [c[1] for c in decode] == [[0, 1, 2, 3]] * 3
    assert [{p for _, p in c[0]} for c in decode] == [{5}, {6}, {7}]
    for before, after in zip(decode, decode[1:]):                               # argmax fed back
        assert [t for t, _ in after[0]] == [_next_token(t, p) for t, p in before[0]]
    # Untimed fill before decode: positions 0..4 of every region the decode uses.
    fill = {(r, p) for slots, kv in dev.calls for (_, p), r in zip(slots, kv) if p < 5}
    assert {(r, p) for r in range(4) for p in range(5)} <= fill
    phases = [(r["phase"], r["batch"]) for r in out["runs"]]
    assert phases == [("prefill", 1), ("prefill", 2), ("prefill", 4), ("decode", 1), ("decode", 2), ("decode", 4)]


def test_figures_follow_from_the_counters():
    # Per-token figures divide by B; the speedup is a ratio of tokens per cycle; the roofline
    # bound counts the weights once per run and the K/V rows per slot.
    out = bench.bench(FakeDevice(), Model(TINY, _weights()), batches=[1, 4], positions=2)
    runs = {(r["phase"], r["batch"]): r for r in out["runs"]}
    d1, d4 = runs["decode", 1], runs["decode", 4]
    assert d1["cycles_per_token"] == BASE + PER_SLOT
    assert d4["cycles_per_token"] == (BASE + 4 * PER_SLOT) / 4
    assert d4["batch_speedup"] == pytest.approx((BASE + PER_SLOT) / ((BASE + 4 * PER_SLOT) / 4), abs=1e-3)
    assert d1["batch_speedup"] == 1.0
    weights, row, macs = _packed_sizes(Model(TINY, _weights()))
    kv_row = TINY.n_layers * 2 * TINY.kv_dim * 2            # a position's K and V, int16, every layer
    bound = (2 * weights + 4 * (row + kv_row) + 4 * (row + 2 * kv_row)) / 16
    assert d4["roofline_efficiency"] == pytest.approx(bound / (2 * (BASE + 4 * PER_SLOT)), abs=1e-4)
    assert bench.weight_bytes(TINY) == weights and bench.matrix_macs(TINY) == macs
    macs *= 8
    assert d4["mac_utilisation"] == pytest.approx(macs / (16 * 4 * 2 * (BASE + 4 * PER_SLOT)), abs=1e-4)
    assert d4["class_cycles_per_token"]["ATTN"] == PER_SLOT


def test_projection_caps_the_weight_stream_by_board_bandwidth():
    # The other cycles at the board clock, plus the stream at the clock or at the board's DRAM
    # bandwidth, whichever is slower; batches above the ULX3S core's slots are not projected.
    p = bench.project(cycles_per_token=100_000, bytes_per_token=1_000_000, batch=1, stream_cycles_per_token=80_000)
    assert p["arty"] == pytest.approx(1000.0)                   # 1 ms at 100 MHz; the stream's 0.6 ms of DRAM fit
    assert p["ulx3s"] == pytest.approx(1 / (20_000 / 50e6 + 0.01), abs=0.1)   # 10 ms of SDRAM at 100 MB/s
    assert bench.project(100_000, 1_000_000, 4, 80_000)["ulx3s"] is None


def test_no_projection_for_a_board_whose_build_cannot_hold_the_model():
    # The ULX3S build holds stories15M: working vectors of 2,304 words a slot (x, xb, the
    # attention's; the classifier in chunks) in its 4,096, and the image (the shared classifier
    # doubling as the embedding table) with two slots' K/V in its 32 MiB. stories42M's working
    # vectors fit too, but not its weights.
    from spec import isa
    ulx3s, dram = isa.TARGET_PARAMS["ulx3s"], bench.BOARDS["ulx3s"]["dram_bytes"]
    assert bench.fits(ulx3s, bench.SHAPES["stories15M"], dram)
    assert bench.fits(ulx3s, bench.SHAPES["stories260K"], dram)
    assert bench.fits(ulx3s, bench.SHAPES["stories42M"]) and not bench.fits(ulx3s, bench.SHAPES["stories42M"], dram)
    with pytest.raises(ValueError, match=r"the model and 2 slots' K/V need \d+ bytes of DRAM; 33292288 are free"):
        bench.check_fits(ulx3s, bench.SHAPES["stories42M"], dram)
    # Wider than a MATVEC tile (hidden_dim 1376 and 2048): their w2 runs as column tiles.
    assert all(bench.fits(isa.TARGET_PARAMS["sim"], bench.SHAPES[s]) for s in ("stories42M", "stories110M"))
    p = bench.project(100_000, 1_000_000, 1, 80_000, bench.SHAPES["stories42M"])
    assert p["ulx3s"] is None and p["arty"] == pytest.approx(1000.0)
    assert bench.project(100_000, 1_000_000, 1, 80_000, bench.SHAPES["stories15M"])["ulx3s"] is not None
    small = isa.Params(slots=2, act_depth=2048)
    with pytest.raises(ValueError, match="activations need 2304 words per slot"):
        bench.check_fits(small, bench.SHAPES["stories15M"])


@pytest.mark.parametrize("kv_format", ["int16", "int8"])
def test_dram_need_matches_the_compiled_image(kv_format):
    # The estimate the projection uses against what the compiler lays out (stories260K shape,
    # random weights): within the slot table, results and program (a few kilobytes).
    import dataclasses
    from driver.compiler import compile_model
    from driver.intforward import QuantizedModel
    from driver.model import random_model
    from spec import isa
    params = dataclasses.replace(isa.TARGET_PARAMS["ulx3s"], kv_format=kv_format, act_read_ports=4)
    c = bench.SHAPES["stories260K"]
    cm = compile_model(QuantizedModel(random_model(c, seed=2)), params, dram_size=1 << 30)
    assert 0 <= cm.total_bytes - bench.dram_need(params, c) <= 16 << 10


def test_int8_rows_read_a_quarter_more_than_their_elements_at_head_size_8():
    # stories260K (head size 8): a position's K/V in whole groups of 8 is 1.25 bytes an element
    # with the scale beats, 2 in int16; stories15M (48): 1.04.
    from spec import isa
    for name, ratio in (("stories260K", 1.25), ("stories15M", 1 + 2 / 48)):
        c = bench.SHAPES[name]
        kv = {f: bench.slot_bytes(c, 255, f) - isa.matrix_bytes(1, c.dim) for f in isa.KV_FORMATS}
        elements = c.n_layers * 2 * c.kv_dim * 256
        assert kv["int16"] == 2 * elements and kv["int8"] == pytest.approx(ratio * elements)


def test_a_context_too_long_for_the_dram_is_halved_down_to_the_positions_measured():
    # TINY's 32 positions do not fit; 8 do, and hold the 8 the runs need (prefill 4, decode 4).
    dev = FakeDevice()
    dev.max_context = 10
    out = bench.bench(dev, Model(TINY, _weights()), batches=[1, 2, 4], positions=4, start_pos=4)
    assert out["seq_len"] == 8 and dev.calls
    dev = FakeDevice()
    dev.max_context = 4
    with pytest.raises(ValueError, match="bytes of DRAM"):
        bench.bench(dev, Model(TINY, _weights()), batches=[1, 2, 4], positions=4, start_pos=4)
    assert not dev.calls


def test_the_cli_names_the_benchs_shapes():
    assert list(cli.BENCH_SHAPES) == list(bench.SHAPES)


def test_refused_options():
    # Unknown shapes and bad batch lists are named; golden has no counters; batches above the
    # core's slots are refused before anything is uploaded.
    with pytest.raises(ValueError, match="unknown shape 'nope'"):
        bench.resolve_model("nope")
    for bad in ("", "1,x", "0,1", "2,1", "1,1"):
        with pytest.raises(ValueError, match="--batch"):
            bench.parse_batches(bad)
    with pytest.raises(ValueError, match="no cycles"):
        bench.bench(Device.open("golden"), "stories260K")
    dev = FakeDevice(slots=2)
    with pytest.raises(ValueError, match="2 batch slots"):
        bench.bench(dev, Model(TINY, _weights()), batches=[1, 4])
    assert not dev.calls


@pytest.mark.parametrize("argv, message", [
    (["--shape", "stories999M"], "unknown shape 'stories999M'"),
    (["--batch", "1,two"], "comma-separated list"),
    (["--batch", "4,2"], "increasing"),
    (["--target", "golden"], "no cycles"),
    (["--positions", "0"], "--positions"),
])
def test_cli_refuses_bad_options(capsys, argv, message):
    # Refused before a simulator starts: exit code 2 and the problem on stderr (and as JSON).
    assert cli.main(["bench", *argv, "--json"]) == 2
    out = capsys.readouterr()
    assert message in out.err and json.loads(out.out.strip().splitlines()[-1])["ok"] is False


def test_markdown_section_is_replaced_in_place(tmp_path):
    # --markdown rewrites only its own section; the prose around it stays.
    report = _report()
    path = tmp_path / "perf.md"
    path.write_text("# Performance\n\nprose before\n\n<!-- bench:results -->\nSTALE SECTION\n<!-- /bench:results -->\n\nprose after\n")
    bench_report.write_markdown(report, str(path))
    text = path.read_text()
    assert "STALE SECTION" not in text and "prose before" in text and "prose after" in text
    assert text.count("<!-- bench:results -->") == 1 and "| tiny | decode | 2 |" in text
    bench_report.write_markdown(report, str(path), section="late")
    assert "<!-- /bench:late -->" in path.read_text() and "prose after" in path.read_text()


def test_roofline_plot(tmp_path):
    pytest.importorskip("matplotlib")
    bench_report.plot(_report(), str(tmp_path / "roof.png"))
    assert (tmp_path / "roof.png").read_bytes()[:4] == b"\x89PNG"


def _packed_sizes(model):
    """What the core reads, from the spec's packers on the model's own tensors (not from the
    bench's formulas): the bytes of every matrix and gain vector a step streams, of one
    embedding row, and the multiply-accumulates of the matrix products."""
    qm, c = QuantizedModel(model), model.config
    fuse = lambda *ms: tuple(np.concatenate(parts) for parts in zip(*ms))
    matrix = lambda qms: len(isa.pack_matrix(*qms))
    gains = lambda qs: len(isa.pack_fixed16(*qs))
    weights = sum(matrix(fuse(qm.wq[l], qm.wk[l], qm.wv[l])) + matrix(qm.wo[l]) + matrix(fuse(qm.w1[l], qm.w3[l]))
                  + matrix(qm.w2[l]) + gains(qm.rms_att[l]) + gains(qm.rms_ffn[l]) for l in range(c.n_layers))
    weights += matrix(qm.wcls) + gains(qm.rms_final)
    q, mant, shift = qm.embedding
    row = matrix((q[:1], mant[:1], shift[:1]))
    w = model.weights
    macs = sum(w[n][l].size for n in ("wq", "wk", "wv", "wo", "w1", "w2", "w3") for l in range(c.n_layers))
    return weights, row, macs + w["wcls"].size


def _weights():
    return random_model(TINY, seed=1).weights


def _report():
    out = bench.bench(FakeDevice(), Model(TINY, _weights()), batches=[1, 2], positions=2)
    for r in out["runs"]:
        r["shape"] = "tiny"
    return {"target": "fake", "params": {"slots": 4}, "decode_positions": [0, 1], "prompt_len": 2,
            "runs": out["runs"], "simulator": [{"shape": "tiny", "upload_seconds": 0.0, **out["simulator"]}],
            "cpu": [{"shape": "tiny", "tokens_per_s": 1e4, "cpu": "x", "cflags": "-O3", "threads": 1, "positions": 32}]}
