"""KVWRITE's unit alone (Migen simulation): gateware/core/kvwrite.py with the int16 packer
(gateware/core/pack16.py), on real scratchpads, against the golden model's function for the
opcode: every head's row spec.numerics.to_kv(x[src + h*m:][:m]) as little-endian int16 at
base + h * stride. Both variants (one element a cycle; four a cycle through a FIFO), two slots
one after the other, a sequencer that grants each burst after a few cycles and a write port
that stalls."""

import numpy as np
import pytest
from migen import Array, Module, Signal, passive, run_simulation

from gateware.core.kvwrite import Kvwrite, Kvwrite4
from gateware.core.pack16 import Pack16, Pack16x4
from gateware.core.scratchpad import Scratchpads
from spec import numerics as N

ADDR_BITS = 24


class _KvwriteOnScratchpads(Module):
    """The unit and the packer wired as the core wires them, for ``slots`` slots."""

    def __init__(self, ports, slots=2, depth=512):
        self.submodules.act = act = Scratchpads(slots, depth, ports)
        self.slot = Signal(max=slots)
        if ports == 2:
            self.submodules.pk = pk = Pack16()
            self.submodules.kvw = kvw = Kvwrite()
            self.comb += [
                pk.read.eq(kvw.pk_read), pk.idx.eq(kvw.pk_idx), pk.x.eq(Array(act.rdat[0])[self.slot]),
                *[a.eq(b) for a, b in zip(kvw.pk_v, pk.v)], kvw.pk_word.eq(pk.word),
            ]
        else:
            self.submodules.pk = pk = Pack16x4(slots, ADDR_BITS)
            self.submodules.kvw = kvw = Kvwrite4(ADDR_BITS)
            self.comb += [
                pk.read.eq(kvw.pk_read), pk.hi.eq(kvw.pk_hi), pk.tag.eq(kvw.pk_tag), pk.slot.eq(self.slot),
                *[pk.rdat[e][s].eq(act.rdat[e][s]) for e in range(4) for s in range(slots)],
                kvw.beat_valid.eq(pk.beat_valid & ~pk.beat_query), kvw.beat_addr.eq(pk.beat_tag),
                kvw.beat_data.eq(pk.beat), kvw.pk_idle.eq(pk.idle),
            ]
        self.comb += [act.radr[p].eq(kvw.radr[p]) for p in range(len(kvw.radr))]


@pytest.mark.parametrize("ports,seed", [(2, 0), (2, 1), (4, 2), (4, 3)])
def test_kvwrite_writes_each_head_row_as_golden_does(ports, seed):
    rng = np.random.default_rng(seed)
    top = _KvwriteOnScratchpads(ports)
    kvw = top.kvw
    heads, m = int(rng.integers(1, 4)), 8 * int(rng.integers(1, 5))
    stride = 16 * int(rng.integers(heads * m // 8, 4 * heads * m // 8 + 1))
    slots = [(int(rng.integers(0, 100)), 16 * int(rng.integers(0, 4096))) for _ in range(2)]    # (src, base)
    x = rng.integers(-2 ** 31, 2 ** 31, (2, 128 + heads * m))
    x[:, ::7] = rng.integers(-2 ** 24, 2 ** 24, x[:, ::7].shape)     # some inside int16's range
    written, grants = {}, []
    state = {"beat": 0}

    @passive
    def sequencer():
        """BURST: each request granted 1-4 cycles on; the write stream's address starts there."""
        while True:
            yield
            if (yield kvw.req):
                grants.append((yield kvw.req_addr))
                for _ in range(int(rng.integers(1, 5))):
                    yield
                state["beat"] = grants[-1] >> 4
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
                if kvw.wr_address is None:
                    beat, state["beat"] = state["beat"], state["beat"] + 1
                else:
                    beat = (yield kvw.wr_address)
                assert beat not in written
                written[beat] = (yield kvw.wr_data)

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
            if ports == 4:
                yield kvw.last.eq(s == 1)
            yield kvw.start.eq(1)
            yield
            yield kvw.start.eq(0)
            for _ in range(2000):
                yield
                if (yield kvw.done):
                    break
            else:
                raise AssertionError("KVWRITE did not finish")
        for _ in range(8):
            yield
        assert ports == 2 or (yield kvw.idle)

    run_simulation(top, [gen(), sequencer(), write_port()])
    assert grants == [base + h * stride for _, base in slots for h in range(heads)]
    for s, (src, base) in enumerate(slots):
        for h in range(heads):
            row = N.to_kv(x[s, src + h * m:src + (h + 1) * m]).astype("<i2").tobytes()
            got = b"".join(written.pop(((base + h * stride) >> 4) + b).to_bytes(16, "little")
                           for b in range(m // 8))
            assert got == row, (s, h)
    assert not written                                  # nothing else was written


@pytest.mark.parametrize("ports", [2, 4])
def test_kvwrite_abort_stops_its_reads_and_writes(ports):
    top = _KvwriteOnScratchpads(ports)
    kvw = top.kvw
    after = []

    def gen():
        yield kvw.n.eq(4)
        yield kvw.m.eq(64)
        yield kvw.stride.eq(1024)
        yield kvw.wr_ready.eq(0)
        yield kvw.start.eq(1)
        yield
        yield kvw.start.eq(0)
        for _ in range(3):
            yield
        yield kvw.granted.eq(1)
        yield
        yield kvw.granted.eq(0)
        for _ in range(5):
            yield
        yield kvw.abort.eq(1)
        yield
        yield kvw.abort.eq(0)
        for _ in range(20):
            yield
            after.append(((yield kvw.pk_read), (yield kvw.req), (yield kvw.done)))

    run_simulation(top, gen())
    assert not any(any(a) for a in after)
