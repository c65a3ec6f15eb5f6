"""KVWRITE's int8 unit alone (Migen simulation): gateware/core/kvwrite8.py on real scratchpads
(four read ports), against the golden model's KVWRITE for Params.kv_format "int8": every
head's scale word and row (spec.numerics.to_kv8) where spec.isa's layout puts them, bytes
outside them untouched. Two slots one after the other at random positions, head sizes 8, 16
and 48, a sequencer that grants each burst after a few cycles and a write port that stalls.
A slot is done once it is read: the next slot starts while its bursts are still going out."""

import numpy as np
import pytest
from migen import Array, Module, Signal, passive, run_simulation

from driver.golden import GoldenCore
from gateware.core.kvwrite8 import Kvwrite8
from gateware.core.scratchpad import Scratchpads
from spec import isa, numerics as N

ADDR_BITS = 24
DRAM = 1 << 16


class _Kvwrite8OnScratchpads(Module):
    def __init__(self, slots=2, depth=512, max_head=64):
        self.submodules.act = act = Scratchpads(slots, depth, 4)
        self.slot = Signal(max=slots)
        self.submodules.kvw = kvw = Kvwrite8(max_head, ADDR_BITS)
        self.comb += [act.radr[e].eq(kvw.radr[e]) for e in range(4)]
        self.comb += [kvw.x[e].eq(Array(act.rdat[e])[self.slot]) for e in range(4)]


def _expected(dram, x, slots, heads, m, stride, pos):
    """Golden's KVWRITE (Params.kv_format "int8") on a DRAM image, slot by slot."""
    core = GoldenCore(len(dram), isa.Params(kv_format="int8", act_read_ports=4))
    core.dram[:] = dram
    for s, (src, base) in enumerate(slots):
        for h in range(heads):
            q, scale = N.to_kv8(x[s, src + h * m:src + (h + 1) * m])
            hb = (base + h * stride) & ~(isa.BEAT_BYTES - 1)
            core.write_bytes(hb + isa.kv8_scale_offset(pos[s], m), int(scale).to_bytes(2, "little"))
            core.write_bytes(hb + isa.kv_row_offset("int8", pos[s], m), q.astype("<i1").tobytes())
    return bytes(core.dram)


# Row maxima where spec.numerics.kv8_scale changes course: exact small rows, the first
# shifted scale, a mantissa that rounds up to 256, the largest shift and beyond it.
EDGES = [0, 1, 126, 127, 128, 252, 253, 254, 255, 256, 257, 383, 384, 507, 508, 509, 511, 512,
         1016, 1017, 1 << 20, (1 << 20) + 1, 8323072, 8323073, 8355840, (1 << 23) - 1, 1 << 23,
         (1 << 31) - 1]


# (seeds 7..9: heads a beat or two apart, so a head's scale beat lies on the rows before it and
# the order of the writes decides the bytes)
@pytest.mark.parametrize("m,seed", [(8, 0), (8, 1), (16, 2), (48, 3), (64, 4), (8, 5), (16, 6),
                                    (8, 7), (16, 8), (8, 9)])
def test_kvwrite8_writes_each_head_as_golden_does(m, seed):
    rng = np.random.default_rng(seed)
    top = _Kvwrite8OnScratchpads()
    kvw = top.kvw
    edges = seed >= 5                                   # rows whose maxima are EDGES
    heads = len(EDGES) // 2 if edges else int(rng.integers(1, 4))
    stride = 16 * int(rng.integers(1, 40) if seed < 7 else seed - 6) + int(rng.integers(0, 16))  # KVHEAD, any byte count
    if seed >= 7:
        heads = 3
    pos = [int(rng.integers(0, 40)) for _ in range(2)]
    slots = [(int(rng.integers(0, 100)), int(rng.integers(0, 4096))) for _ in range(2)]    # (src, base)
    x = rng.integers(-2 ** 31, 2 ** 31, (2, 128 + heads * m))
    for s in range(2):                                  # rows of every magnitude
        for h in range(heads):
            lo = slots[s][0] + h * m
            if edges:
                peak = EDGES[s * heads + h]
                x[s, lo:lo + m] = rng.integers(-peak, peak + 1, m)
                x[s, lo + int(rng.integers(0, m))] = peak * int(rng.choice([-1, 1]))
            else:
                x[s, lo:lo + m] >>= int(rng.integers(0, 31))
    dram = bytearray(rng.integers(0, 256, DRAM, dtype=np.uint8).tobytes())
    want = _expected(bytes(dram), x, slots, heads, m, stride, pos)
    grants = []
    cycle = [0]
    done_at = []

    @passive
    def sequencer():
        """BURST: each request granted 1-4 cycles on."""
        while True:
            yield
            cycle[0] += 1
            if (yield kvw.req):
                grants.append(((yield kvw.req_addr), (yield kvw.req_bytes), cycle[0]))
                for _ in range(int(rng.integers(1, 5))):
                    yield
                yield kvw.granted.eq(1)
                yield
                yield kvw.granted.eq(0)

    @passive
    def write_port():
        while True:
            ready = int(rng.random() < 0.5)
            yield kvw.wr_ready.eq(ready)
            yield
            if ready and (yield kvw.wr_valid):
                beat, data, skip = (yield kvw.wr_address), (yield kvw.wr_data), (yield kvw.wr_skip)
                raw = data.to_bytes(16, "little")
                for b in range(16):
                    if not skip >> b & 1:
                        dram[16 * beat + b] = raw[b]

    def gen():
        for s in range(2):
            for k in range(x.shape[1]):
                yield top.act.mems[s][k].eq(int(x[s, k]) & 0xffffffff)
        yield kvw.n.eq(heads)
        yield kvw.m.eq(m)
        yield kvw.stride.eq(stride)
        for s, (src, base) in enumerate(slots):
            yield top.slot.eq(s)
            yield kvw.src.eq(src)
            yield kvw.base.eq(base)
            yield kvw.pos.eq(pos[s])
            yield kvw.last.eq(s == 1)
            yield kvw.start.eq(1)
            yield
            yield kvw.start.eq(0)
            for _ in range(3000):
                yield
                if (yield kvw.done):
                    done_at.append(cycle[0])
                    break
            else:
                raise AssertionError("KVWRITE did not finish")
        for _ in range(8):
            yield
        assert (yield kvw.idle)

    run_simulation(top, [gen(), sequencer(), write_port()])
    want_grants = []
    for s, (src, base) in enumerate(slots):
        for h in range(heads):
            hb = (base + h * stride) & ~15
            want_grants += [(hb + isa.kv8_scale_offset(pos[s], m), 2), (hb + isa.kv_row_offset("int8", pos[s], m), m)]
    assert [g[:2] for g in grants] == want_grants
    # the first slot was done (read) before its last burst was asked for
    assert done_at[0] < grants[2 * heads - 1][2]
    assert bytes(dram) == want


def test_kvwrite8_abort_stops_its_reads_and_requests():
    top = _Kvwrite8OnScratchpads()
    kvw = top.kvw
    after = []

    def gen():
        yield kvw.n.eq(4)
        yield kvw.m.eq(64)
        yield kvw.stride.eq(1024)
        yield kvw.wr_ready.eq(1)
        yield kvw.start.eq(1)
        yield
        yield kvw.start.eq(0)
        for _ in range(30):
            yield
        yield kvw.abort.eq(1)
        yield
        yield kvw.abort.eq(0)
        for _ in range(5):
            yield
        for _ in range(20):
            yield
            after.append(((yield kvw.req), (yield kvw.done), (yield kvw.wr_valid)))
        assert (yield kvw.idle)

    run_simulation(top, gen())
    assert not any(any(a) for a in after)
