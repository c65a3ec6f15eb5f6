"""BankInterleavedReader: every beat goes through the port of its bank's parity, and the data
leave in request order even when the two ports answer at different latencies.
WindowReader: the same, with the next two beats on offer and 0, 1 or 2 taken a cycle; a
consumer that waited takes the backlog two a cycle.
BankInterleavedWriter: every beat goes through the port its bank bits fold to (XOR; with eight
ports, the bank number), and each port writes its beats in the order they came."""

import random

import pytest
from migen import Signal, passive, run_simulation

from litedram.common import LiteDRAMNativePort

from gateware.readstream import BANK_BITS, BankInterleavedReader, BankInterleavedWriter, WindowReader
from tests.gateware.dram_port_model import NativePortMemory

BANK_SHIFT = 2          # 4-beat bank runs: the stream changes port every 4 beats


def _run(addresses, latencies, fifo_depth=8, sink_stall=0.3, seed=0, window=False, wait=0, nports=2, avoid=None):
    """Request ``addresses``, take the data (a beat on some cycles; with ``window``, 0, 1 or
    2 of the beats on offer, after ``wait`` idle cycles). Returns each port's addresses, the
    data in the order taken, the memory, and the cycles from the first beat taken to the last.
    ``avoid`` (with ``window``): the banks to avoid change at random each cycle, and each
    command sent is appended to this list as (the avoided banks then, its address)."""
    ports = [LiteDRAMNativePort("read", address_width=16, data_width=32) for _ in range(nports)]
    avoid_sig = Signal(1 << BANK_BITS) if avoid is not None else None
    if window:
        dut = WindowReader(ports, BANK_SHIFT if nports == 2 else None, fifo_depth=fifo_depth, avoid=avoid_sig)
    else:
        dut = BankInterleavedReader(ports, BANK_SHIFT, fifo_depth=fifo_depth)
    mems = [NativePortMemory(p, seed=seed + i, stall_probability=0.3, read_latency=lat)
            for i, (p, lat) in enumerate(zip(ports, latencies))]
    for mem in mems:                                  # both ports see the same memory
        for a in range(1 << 10):
            mem.beats[a] = (a * 2654435761) & 0xffffffff
    per_port = [[] for _ in ports]
    received = []
    taking = []
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
        nbanks = 1 << BANK_BITS
        while True:
            if avoid_sig is not None:
                # Mostly one bank avoided at a time, now and then none or several.
                yield avoid_sig.eq(rng.choice([0, 0, 1 << rng.randrange(nbanks), rng.randrange(1 << nbanks)]))
            yield
            for i, p in enumerate(ports):
                if (yield p.cmd.valid) and (yield p.cmd.ready):
                    per_port[i].append((yield p.cmd.addr))
                    if avoid_sig is not None:
                        avoid.append(((yield avoid_sig), (yield p.cmd.addr)))

    def consumer():
        for _ in range(wait):
            yield
        for cycle in range(40 * len(addresses) + 200):
            ready = int(rng.random() >= sink_stall)
            if window:
                ready2 = int(rng.random() >= sink_stall)
                yield dut.ready.eq(ready)
                yield dut.ready2.eq(ready2)
                yield
                beats = [(yield dut.data), (yield dut.data2)][:(yield dut.taken)]
                assert len(beats) <= ready + (ready & ready2)
            else:
                yield dut.source.ready.eq(ready)
                yield
                beats = [(yield dut.source.data)] if ready and (yield dut.source.valid) else []
            if beats:
                received.extend(beats)
                taking.append(cycle)
            if len(received) == len(addresses):
                return

    gens = [requests(), consumer(), commands()] + [m.generator() for m in mems]
    run_simulation(dut, gens)
    return per_port, received, mems[0].beats, taking[-1] - taking[0] + 1


@pytest.mark.parametrize("latencies", [(4, 4), (2, 19), (17, 3)], ids=["same", "port1-slow", "port0-slow"])
def test_in_order_and_by_bank(latencies):
    addresses = list(range(37, 37 + 90)) + [5, 6, 200, 9, 13]     # a run, then scattered beats
    per_port, received, beats, _ = _run(addresses, latencies, seed=latencies[1])
    assert received == [beats[a] for a in addresses]
    for i in range(2):
        assert per_port[i] == [a for a in addresses if (a >> BANK_SHIFT) & 1 == i]


@pytest.mark.parametrize("nports,latencies", [(2, (4, 4)), (2, (2, 19)), (2, (17, 3)), (1, (5,))],
                         ids=["same", "port1-slow", "port0-slow", "one-port"])
def test_window_in_order_and_by_bank(nports, latencies):
    addresses = list(range(37, 37 + 90)) + [5, 6, 200, 9, 13]
    per_port, received, beats, _ = _run(addresses, latencies, seed=latencies[-1], window=True, nports=nports)
    assert received == [beats[a] for a in addresses]
    for i in range(nports):
        assert per_port[i] == [a for a in addresses if nports == 1 or (a >> BANK_SHIFT) & 1 == i]


def test_window_sends_nothing_to_an_avoided_bank():
    """``avoid`` (the weight stream giving way to another stream's waiting command): no read
    goes to a bank whose bit is set in that cycle; the data still come in address order."""
    addresses = list(range(37, 37 + 120)) + [5, 6, 200, 9, 13, 250, 251]
    sent = []
    per_port, received, beats, _ = _run(addresses, (5, 9), seed=3, window=True, avoid=sent)
    assert received == [beats[a] for a in addresses]
    assert len(sent) == len(addresses)
    assert not [(mask, a) for mask, a in sent if mask >> ((a >> BANK_SHIFT) % (1 << BANK_BITS)) & 1]
    assert any(mask for mask, _ in sent)          # the banks were avoided now and then


@pytest.mark.parametrize("nports", [1, 2])
def test_window_takes_a_backlog_two_a_cycle(nports):
    """With the FIFOs full (the consumer waited), a consumer that always takes two gets the
    next 2 x depth beats in depth cycles, from one port or across both."""
    depth = 16
    addresses = list(range(64, 64 + nports * depth))
    per_port, received, beats, cycles = _run(addresses, [6] * nports, fifo_depth=depth, sink_stall=0.0,
                                             window=True, wait=200, nports=nports)
    assert received == [beats[a] for a in addresses]
    assert cycles == len(addresses) // 2


def test_one_port_passes_through():
    port = LiteDRAMNativePort("read", address_width=16, data_width=32)
    dut = BankInterleavedReader([port], None, fifo_depth=8)
    assert not hasattr(dut, "order")
    for cls in (BankInterleavedReader, WindowReader):
        with pytest.raises(ValueError, match="1 or 2 ports"):
            cls([], None)


def _port_of(a, nports):
    """The writer's port for beat address ``a``: bank bit j (of three) XORed into port bit
    j mod log2(nports)."""
    bank, k, port = (a >> BANK_SHIFT) & 7, nports.bit_length() - 1, 0
    for j in range(3):
        port ^= ((bank >> j) & 1) << (j % k)
    return port


@pytest.mark.parametrize("nports", [2, 4, 8])
def test_writes_by_bank_in_order_per_port(nports):
    ports = [LiteDRAMNativePort("write", address_width=16, data_width=32) for _ in range(nports)]
    dut = BankInterleavedWriter(ports, BANK_SHIFT, fifo_depth=4)
    mems = [NativePortMemory(p, seed=i, stall_probability=0.4) for i, p in enumerate(ports)]
    rng = random.Random(3)
    # A run, heads 16 beats (four banks) apart as KVWRITE's packed ones are, heads 20 beats
    # (five banks) apart as the compiler spreads them, and one address twice.
    addresses = list(range(3, 40)) + [100 + 16 * h for h in range(8)] + [300 + 20 * h for h in range(8)] + [7]
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
    for i in range(nports):
        mine = [(a, d) for a, d in zip(addresses, data) if _port_of(a, nports) == i]
        assert mems[i].writes == [a for a, _ in mine]
        assert all(mems[i].beats[a] == d for a, d in dict(mine).items())     # the later 7 wins
    assert sum(handed) == len(addresses)
    # Packed heads alternate between two ports (by parity alone they would share one); spread
    # ones take a port each of eight.
    assert {_port_of(100 + 16 * h, 2) for h in range(8)} == {0, 1}
    assert sorted(_port_of(300 + 20 * h, 8) for h in range(8)) == list(range(8))
    assert _port_of(300 + 20 * 3, 8) == (300 + 20 * 3) >> BANK_SHIFT & 7


def test_the_writer_takes_two_four_or_eight_ports():
    port = LiteDRAMNativePort("write", address_width=16, data_width=32)
    with pytest.raises(ValueError, match="2 or 4 or 8 ports"):
        BankInterleavedWriter([port], 2)
    with pytest.raises(ValueError, match="2 or 4 or 8 ports"):
        BankInterleavedWriter([port] * 3, 2)
    with pytest.raises(ValueError, match="2 or 4 or 8 ports"):
        BankInterleavedWriter([], None)
