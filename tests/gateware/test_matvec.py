"""MATVEC's unit alone (Migen simulation): gateware/core/matvec.py with its input quantiser, on
real scratchpads, its weights (spec.isa.pack_matrix) from a read stream that stalls, against
the golden model's function for the opcode (spec.numerics.quantize_input, then
spec.numerics.matvec; with FLAG_ACC the saturated sum with the old rows), in the core's
variants: 1 or 4 chunks per beat (mac_lanes), 2 or 4 scratchpad ports, the exponent at once or
a bound at a time, the input's largest |x| gathered by the write statistics or found by pass 1."""

import numpy as np
import pytest
from migen import Module, passive, run_simulation

from gateware.core.matvec import Matvec
from gateware.core.scratchpad import Scratchpads
from spec import isa, numerics as N
from tests.gateware.test_core_units import _read_int32, _run_unit


class _MatvecOnScratchpads(Module):
    """Matvec wired as the core wires it: every scratchpad port, every slot written at once."""

    def __init__(self, params, depth=512):
        B, XR = params.slots, params.act_read_ports
        self.submodules.act = act = Scratchpads(B, depth, XR)
        self.submodules.mv = mv = Matvec(params, write_stats=params.write_stats)
        self.comb += [
            *[act.radr[p].eq(mv.radr[p]) for p in range(XR)], act.wadr.eq(mv.wadr),
            *[act.we[s].eq(mv.we & (s < mv.nslots)) for s in range(B)],
            *[act.wdat[s].eq(mv.out[s]) for s in range(B)],
            *[mv.rdat[p][s].eq(act.rdat[p][s]) for p in range(XR) for s in range(B)],
        ]


def _weight_stream(mv, beats, rng, p, pairs=None):
    """The read stream: beat after beat, each on offer only some cycles, as DRAM's would be;
    to a unit that takes two a cycle (mac_beats = 2) the next beat is on offer beside it, also
    only some cycles. ``pairs`` (a list) gets a 1 for each cycle two beats were taken."""
    queue = list(beats)

    @passive
    def gen():
        while True:
            have = bool(queue) and rng.random() < p
            have2 = mv.two and have and len(queue) > 1 and rng.random() < p
            yield mv.rd_valid.eq(int(have))
            yield mv.rd_data.eq(queue[0] if have else 0)
            if mv.two:
                yield mv.rd_valid2.eq(int(have2))
                yield mv.rd_data2.eq(queue[1] if have2 else 0)
            yield
            if have and (yield mv.rd_ready):
                queue.pop(0)
                if have2 and (yield mv.rd_ready2):
                    queue.pop(0)
                    if pairs is not None:
                        pairs.append(1)
    return gen(), queue


def _matrix(rng, rows, cols):
    q = rng.integers(-127, 128, (rows, isa.matvec_cols_padded(cols)))
    q[:, cols:] = rng.integers(-127, 128, (rows, q.shape[1] - cols))    # padding: must not count
    mant = rng.integers(1, 256, (rows, q.shape[1] // N.WEIGHT_GROUP))
    shift = rng.integers(6, 30, rows)
    blob = isa.pack_matrix(q, mant, shift)
    beats = [int.from_bytes(blob[k:k + 16], "little") for k in range(0, len(blob), 16)]
    q[:, cols:] = 0
    return q, mant, shift, beats


def _inputs(rng, nslots, cols):
    """Each slot's input at its own scale, with int32's ends now and then."""
    x = np.stack([rng.integers(-1, 2, cols) * rng.integers(0, 2 ** int(rng.integers(4, 31)), cols)
                  for _ in range(nslots)])
    for s in range(nslots):
        if rng.random() < 0.3:
            x[s, int(rng.integers(0, cols))] = rng.choice([2 ** 31 - 1, -2 ** 31 + 1])
    return x


VARIANTS = {
    "16 lanes, 2 ports, fast exponent": isa.Params(slots=2, max_cols=256),
    "4 lanes, 2 ports, a bound a cycle": isa.Params(slots=2, max_cols=256, mac_lanes=4, fast_exponent=False,
                                                     write_stats=False),
    "8 lanes, 4 ports, 4 slots": isa.Params(slots=4, max_cols=256, mac_lanes=8, act_read_ports=4),
    "two beats a cycle, 4 ports": isa.Params(slots=2, max_cols=256, act_read_ports=4, mac_beats=2),
}


@pytest.mark.parametrize("variant,seed", [(v, s) for v in VARIANTS for s in range(2)])
def test_matvec_matches_the_golden_function(variant, seed):
    params = VARIANTS[variant]
    rng = np.random.default_rng(seed)
    B = params.slots
    rows, cols = int(rng.integers(1, 40)), int(rng.integers(1, 100))
    nslots = int(rng.integers(1, B + 1))
    accumulate = bool(seed % 2)
    use_stats = params.write_stats and rng.random() < 0.5
    src, dst = int(rng.integers(0, 100)), 256 + int(rng.integers(0, 100))
    q, mant, shift, beats = _matrix(rng, rows, cols)
    x = _inputs(rng, nslots, cols)
    old = rng.integers(-2 ** 31, 2 ** 31, (nslots, rows))
    top = _MatvecOnScratchpads(params)
    pairs = []
    stream, left = _weight_stream(top.mv, beats, rng, p=0.6 if seed % 2 else 1.0, pairs=pairs)
    mac_cycles = []

    @passive
    def count_macs():
        while True:
            yield
            mac_cycles.append((yield top.mv.mac_beats))

    def gen():
        for s in range(nslots):
            for k in range(cols):
                yield top.act.mems[s][src + k].eq(int(x[s, k]) & 0xffffffff)
            for k in range(cols, isa.matvec_cols_padded(cols) + 4):     # not the input's
                yield top.act.mems[s][src + k].eq(int(rng.integers(0, 2 ** 32)))
            for r in range(rows):
                yield top.act.mems[s][dst + r].eq(int(old[s, r]) & 0xffffffff)
        mv = top.mv
        for sig, v in ((mv.src, src), (mv.dst, dst), (mv.n, rows), (mv.m, cols), (mv.nslots, nslots),
                       (mv.accumulate, accumulate)):
            yield sig.eq(v)
        if use_stats:
            yield mv.use.eq(1)
            for s in range(nslots):
                yield mv.use_amax[s].eq(int(np.abs(x[s]).max()))
        for _ in range(4):                # bytes settles three cycles after n and m
            yield
        assert (yield mv.bytes) == isa.matrix_bytes(rows, cols)
        yield from _run_unit(mv, 20 * len(beats) + 8 * cols + 200, grant_after=3)
        for s in range(nslots):
            xm, e = N.quantize_input(x[s])
            want = N.matvec(q, mant, shift, xm, e)
            if accumulate:
                want = N.saturate(old[s] + want, 32)
            got = yield from _read_int32(top.act.mems[s], dst, rows)
            assert (got == want).all(), (s, list(zip(got, want)))

    run_simulation(top, [gen(), stream, count_macs()])
    assert not left                                           # every beat was taken
    weight_beats = rows * isa.matvec_cols_padded(cols) // isa.LANES
    assert sum(mac_cycles) == weight_beats * isa.LANES // params.mac_lanes
    # Two weight beats go in one cycle where both are of one row under one mantissa beat;
    # with every beat on offer (even seeds), exactly where the parser's rule says.
    if params.mac_beats == 1:
        assert not pairs
    elif seed % 2 == 0:
        assert len(pairs) == _pairs_taken(rows, isa.matvec_cols_padded(cols) // isa.LANES)


def _pairs_taken(rows, cpb):
    """How many cycles take two weight beats when the next beat is always on offer: a weight
    beat goes with the next one when that one is in its row and under its mantissa beat (one
    mantissa beat per 8 weight beats of a 16-row block)."""
    pairs = 0
    for block in range(0, rows, isa.ROW_BLOCK):
        beats = [(r, k) for r in range(block, min(block + isa.ROW_BLOCK, rows)) for k in range(cpb)]
        i = 0
        while i < len(beats):
            r, k = beats[i]
            if k + 1 < cpb and i % 8 != 7:
                pairs, i = pairs + 1, i + 2
            else:
                i += 1
    return pairs


def test_matvec_waits_for_its_burst_unless_queued():
    """Without ``queued`` the quantiser starts only once the burst is granted; with it, at once."""
    params = VARIANTS["16 lanes, 2 ports, fast exponent"]
    for queued in (0, 1):
        top = _MatvecOnScratchpads(params)
        reads = []

        def gen():
            mv = top.mv
            yield mv.n.eq(4)
            yield mv.m.eq(16)
            yield mv.nslots.eq(1)
            yield mv.queued.eq(queued)
            yield mv.start.eq(1)
            yield
            yield mv.start.eq(0)
            for _ in range(10):
                yield
                reads.append((yield mv.radr[1]))

        run_simulation(top, gen())
        assert any(reads) == bool(queued)


def test_matvec_abort_stops_it_and_takes_no_beat():
    params = VARIANTS["4 lanes, 2 ports, a bound a cycle"]
    rng = np.random.default_rng(7)
    q, mant, shift, beats = _matrix(rng, 20, 40)
    top = _MatvecOnScratchpads(params)
    stream, left = _weight_stream(top.mv, beats, rng, p=1.0)
    after = []

    def gen():
        mv = top.mv
        for sig, v in ((mv.dst, 300), (mv.n, 20), (mv.m, 40), (mv.nslots, 1), (mv.queued, 1)):
            yield sig.eq(v)
        yield mv.start.eq(1)
        yield
        yield mv.start.eq(0)
        while not (yield mv.rd_ready):
            yield
        for _ in range(12):
            yield
        yield mv.abort.eq(1)
        taken = len(left)
        yield
        yield mv.abort.eq(0)
        assert len(left) == taken                      # the abort cycle took no beat
        for _ in range(30):
            yield
            after.append(((yield mv.we), (yield mv.rd_ready), (yield mv.done)))

    run_simulation(top, [gen(), stream])
    assert not any(any(a) for a in after) and left
