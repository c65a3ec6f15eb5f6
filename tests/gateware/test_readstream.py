"""BankInterleavedReader: every beat goes through the port of its bank's parity, and the data
leave in request order even when the two ports answer at different latencies.
BankInterleavedWriter: every beat goes through the port of its bank bits' XOR, and each port
writes its beats in the order they came."""

import random

import pytest
from migen import passive, run_simulation

from litedram.common import LiteDRAMNativePort

from gateware.readstream import BankInterleavedReader, BankInterleavedWriter
from tests.gateware.dram_port_model import NativePortMemory

BANK_SHIFT = 2          # 4-beat bank runs: the stream changes port every 4 beats


def _run(addresses, latencies, fifo_depth=8, sink_stall=0.3, seed=0):
    ports = [LiteDRAMNativePort("read", address_width=16, data_width=32) for _ in range(2)]
    dut = BankInterleavedReader(ports, BANK_SHIFT, fifo_depth=fifo_depth)
    mems = [NativePortMemory(p, seed=seed + i, stall_probability=0.3, read_latency=lat)
            for i, (p, lat) in enumerate(zip(ports, latencies))]
    for mem in mems:                                  # both ports see the same memory
        for a in range(1 << 10):
            mem.beats[a] = (a * 2654435761) & 0xffffffff
    per_port = [[], []]
    received = []
    rng = random.Random(seed)

    def requests():
        for a in addresses:
            yield dut.sink.valid.eq(1)
            yield dut.sink.address.eq(a)
            yield
            while not (yield dut.sink.ready):
                yield
        yield dut.sink.valid.eq(0)

    @passive
    def commands():
        while True:
            for i, p in enumerate(ports):
                if (yield p.cmd.valid) and (yield p.cmd.ready):
                    per_port[i].append((yield p.cmd.addr))
            yield

    def consumer():
        for _ in range(40 * len(addresses) + 200):
            ready = int(rng.random() >= sink_stall)
            yield dut.source.ready.eq(ready)
            yield
            if ready and (yield dut.source.valid):
                received.append((yield dut.source.data))
            if len(received) == len(addresses):
                return

    gens = [requests(), consumer(), commands()] + [m.generator() for m in mems]
    run_simulation(dut, gens)
    return per_port, received, mems[0].beats


@pytest.mark.parametrize("latencies", [(4, 4), (2, 19), (17, 3)], ids=["same", "port1-slow", "port0-slow"])
def test_in_order_and_by_bank(latencies):
    addresses = list(range(37, 37 + 90)) + [5, 6, 200, 9, 13]     # a run, then scattered beats
    per_port, received, beats = _run(addresses, latencies, seed=latencies[1])
    assert received == [beats[a] for a in addresses]
    for i in range(2):
        assert per_port[i] == [a for a in addresses if (a >> BANK_SHIFT) & 1 == i]


def test_one_port_passes_through():
    port = LiteDRAMNativePort("read", address_width=16, data_width=32)
    dut = BankInterleavedReader([port], None, fifo_depth=8)
    assert not hasattr(dut, "order")
    with pytest.raises(ValueError, match="one or two ports"):
        BankInterleavedReader([], None)


def _bank_xor(a):
    return ((a >> BANK_SHIFT) ^ (a >> (BANK_SHIFT + 1)) ^ (a >> (BANK_SHIFT + 2))) & 1


def test_writes_by_bank_xor_in_order_per_port():
    ports = [LiteDRAMNativePort("write", address_width=16, data_width=32) for _ in range(2)]
    dut = BankInterleavedWriter(ports, BANK_SHIFT, fifo_depth=4)
    mems = [NativePortMemory(p, seed=i, stall_probability=0.4) for i, p in enumerate(ports)]
    rng = random.Random(3)
    # A run, heads 16 beats (four banks) apart as KVWRITE's are, and one address twice.
    addresses = list(range(3, 40)) + [100 + 16 * h for h in range(8)] + [7]
    data = [rng.getrandbits(32) for _ in addresses]
    handed = []

    def writes():
        for a, d in zip(addresses, data):
            yield dut.sink.valid.eq(1)
            yield dut.sink.address.eq(a)
            yield dut.sink.data.eq(d)
            yield
            while not (yield dut.sink.ready):
                yield
        yield dut.sink.valid.eq(0)
        for _ in range(200):
            yield

    @passive
    def count():
        while True:
            handed.append((yield dut.wdata_beats))
            yield

    run_simulation(dut, [writes(), count()] + [m.generator() for m in mems])
    for i in range(2):
        mine = [(a, d) for a, d in zip(addresses, data) if _bank_xor(a) == i]
        assert mems[i].writes == [a for a, _ in mine]
        assert all(mems[i].beats[a] == d for a, d in dict(mine).items())     # the later 7 wins
    assert sum(handed) == len(addresses)
    # The KVWRITE-like heads alternate ports (by parity alone they would share one).
    assert {_bank_xor(100 + 16 * h) for h in range(8)} == {0, 1}


def test_the_writer_takes_two_ports():
    port = LiteDRAMNativePort("write", address_width=16, data_width=32)
    with pytest.raises(ValueError, match="two ports"):
        BankInterleavedWriter([port], 2)
    with pytest.raises(ValueError, match="one or two ports"):
        BankInterleavedWriter([], None)
