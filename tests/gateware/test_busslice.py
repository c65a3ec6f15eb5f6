"""WishboneSlice: reads and writes through it reach a slave that answers late, in order, with
the slave's data; an error reaches the master as an error; a master that gives up (drops
cyc) leaves the slave's access to finish and takes no stale answer into its next access."""

import random

import pytest
from migen import run_simulation, passive

from litex.soc.interconnect import wishbone

from gateware.busslice import WishboneSlice


class _Slave:
    """A word memory behind Wishbone that answers after a random delay (err above ``limit``)."""

    def __init__(self, bus, seed, limit=1 << 20):
        self.bus, self.rng, self.limit = bus, random.Random(seed), limit
        self.mem, self.cycles_cut = {}, 0

    @passive
    def run(self):
        bus = self.bus
        while True:
            yield bus.ack.eq(0)
            yield bus.err.eq(0)
            yield
            if not ((yield bus.cyc) and (yield bus.stb)):
                continue
            adr, we, dat = (yield bus.adr), (yield bus.we), (yield bus.dat_w)
            for _ in range(self.rng.randrange(4)):
                yield
                if not (yield bus.cyc):
                    self.cycles_cut += 1
            if adr >= self.limit:
                yield bus.err.eq(1)
            elif we:
                self.mem[adr] = dat
            else:
                yield bus.dat_r.eq(self.mem.get(adr, 0))
            yield bus.ack.eq(1)
            yield


def _access(bus, adr, we=0, dat=0, timeout=50):
    """One classic cycle from the master side; returns ('ack', dat_r), ('err', None) or ('timeout', None)."""
    yield bus.adr.eq(adr)
    yield bus.we.eq(we)
    yield bus.dat_w.eq(dat)
    yield bus.sel.eq(0xf)
    yield bus.cyc.eq(1)
    yield bus.stb.eq(1)
    result = ("timeout", None)
    for _ in range(timeout):
        yield
        if (yield bus.ack):
            result = ("ack", (yield bus.dat_r))
            break
        if (yield bus.err):
            result = ("err", None)
            break
    yield bus.cyc.eq(0)
    yield bus.stb.eq(0)
    yield
    return result


def _dut():
    master = wishbone.Interface(data_width=32, address_width=30, addressing="word")
    slave = wishbone.Interface(data_width=32, address_width=30, addressing="word")
    return master, slave, WishboneSlice(master, slave)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reads_see_writes(seed):
    master, slave, dut = _dut()
    model = _Slave(slave, seed)
    rng = random.Random(seed)
    expect, seen = {}, []

    def gen():
        for _ in range(200):
            adr = rng.randrange(16)
            if rng.random() < 0.5:
                dat = rng.getrandbits(32)
                kind, _ = yield from _access(master, adr, we=1, dat=dat)
                assert kind == "ack"
                expect[adr] = dat
            else:
                kind, got = yield from _access(master, adr)
                seen.append((adr, kind, got, expect.get(adr, 0)))

    run_simulation(dut, [gen(), model.run()])
    assert len(seen) > 50
    for adr, kind, got, want in seen:
        assert (kind, got) == ("ack", want), f"read of word {adr}"
    assert model.mem == expect


def test_error_is_answered_as_error():
    master, slave, dut = _dut()
    model = _Slave(slave, seed=4, limit=8)
    out = []

    def gen():
        out.append((yield from _access(master, 9)))
        out.append((yield from _access(master, 3, we=1, dat=0x1234)))
        out.append((yield from _access(master, 3)))

    run_simulation(dut, [gen(), model.run()])
    assert out == [("err", None), ("ack", 0), ("ack", 0x1234)]


def test_master_that_gives_up_takes_no_stale_answer():
    master, slave, dut = _dut()
    model = _Slave(slave, seed=5)
    out = []

    def gen():
        yield from _access(master, 1, we=1, dat=0xAAAA)
        yield from _access(master, 2, we=1, dat=0xBBBB)
        # Give up on a read after one cycle (the slave answers later), then read another word.
        out.append((yield from _access(master, 1, timeout=1)))
        out.append((yield from _access(master, 2)))
        out.append((yield from _access(master, 1)))

    run_simulation(dut, [gen(), model.run()])
    assert out[0] == ("timeout", None)
    assert out[1:] == [("ack", 0xBBBB), ("ack", 0xAAAA)]
