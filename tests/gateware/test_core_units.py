"""The core's infrastructure units alone (Migen simulation), each against a plain-Python model
of its contract: ReadBursts (the read stream's addresses, one burst queued, a flush), Counters
(the benchmark's counters and the watchdog) and Scratchpads (two-cycle reads, registered
writes, every slot its own RAM)."""

import random

import pytest
from migen import Module, Signal, passive, run_simulation
from litex.soc.interconnect import stream

from gateware.core.counters import Counters
from gateware.core.readbursts import ReadBursts
from gateware.core.scratchpad import Scratchpads
from spec import isa


# ReadBursts --------------------------------------------------------------------------------------

class _Bursts(Module):
    def __init__(self):
        self.sink = stream.Endpoint([("address", 16)])
        self.taken = Signal()
        self.submodules.dut = ReadBursts(self.sink, 16, self.taken)


@pytest.mark.parametrize("seed", range(6))
def test_read_bursts_send_each_burst_then_the_queued_one_in_order(seed):
    """Random bursts started and queued against a stalling address sink: every address of a
    burst is sent once, in order, and a queued burst follows the one before it; ``outstanding``
    counts addresses sent and not yet taken back."""
    rng = random.Random(seed)
    top = _Bursts()
    dut = top.dut
    bursts = [(rng.randrange(0, 1 << 12), rng.randrange(0, 6)) for _ in range(12)]
    sent, expected = [], []

    def driver():
        for k, (addr, length) in enumerate(bursts):
            # Start one burst, and queue the next behind it (every other time).
            yield dut.start.eq(1)
            yield dut.start_addr.eq(addr)
            yield dut.start_len.eq(length)
            yield
            yield dut.start.eq(0)
            expected.extend(range(addr, addr + length))
            if k % 2:
                qa, ql = rng.randrange(0, 1 << 12), rng.randrange(1, 4)
                yield dut.push.eq(1)
                yield dut.push_addr.eq(qa)
                yield dut.push_len.eq(ql)
                yield
                yield dut.push.eq(0)
                expected.extend(range(qa, qa + ql))
            yield                       # the unit takes what was set at the next clock edge
            while (yield dut.more) or (yield dut.queued):
                yield
        for _ in range(4):
            yield

    @passive
    def sink():
        while True:
            ready = int(rng.random() < 0.6)
            yield top.sink.ready.eq(ready)
            yield
            if ready and (yield top.sink.valid):
                sent.append((yield top.sink.address))

    @passive
    def taker():
        while True:
            yield top.taken.eq(0)
            yield
            if (yield dut.outstanding) and rng.random() < 0.5:
                yield top.taken.eq(1)
                yield

    run_simulation(top, [driver(), sink(), taker()])
    assert sent == expected


def test_read_bursts_flush_drops_the_rest_and_the_queue():
    top = _Bursts()
    dut = top.dut
    sent = []

    def driver():
        yield top.sink.ready.eq(1)
        yield dut.start.eq(1)
        yield dut.start_addr.eq(100)
        yield dut.start_len.eq(10)
        yield
        yield dut.start.eq(0)
        yield dut.push.eq(1)
        yield dut.push_addr.eq(500)
        yield dut.push_len.eq(3)
        yield
        yield dut.push.eq(0)
        yield
        yield dut.flush.eq(1)
        yield
        yield dut.flush.eq(0)
        for _ in range(20):
            yield
        assert (yield dut.remaining) == 0 and not (yield dut.more) and not (yield dut.queued)
        assert (yield dut.outstanding) == len(sent)

    @passive
    def sink():
        while True:
            yield
            if (yield top.sink.valid) and (yield top.sink.ready):
                sent.append((yield top.sink.address))

    run_simulation(top, [driver(), sink()])
    assert sent == [100, 101, 102]          # started, two more, then the flush; nothing queued


# Counters ----------------------------------------------------------------------------------------

def test_counters_count_each_event_while_counting_and_clear():
    n = len(isa.CLASSES)
    dut = Counters(n)
    rng = random.Random(1)
    model = {"cycles": 0, "mac_busy": 0, "dram_stall": 0, "bytes_read": 0, "bytes_written": 0, "retired": 0}
    per_class = [0] * n
    fired = []

    def gen():
        yield dut.watchdog.eq(150)
        yield dut.clear.eq(1)
        yield
        yield dut.clear.eq(0)
        prev_cls = 0                    # the class register's value as counting starts
        for cycle in range(300):
            counting = int(cycle < 250)
            ev = {k: int(rng.random() < 0.5) for k in ("mac_beat", "stall", "read_beat", "retire")}
            wb, cls = rng.randrange(3), rng.randrange(n)
            yield dut.counting.eq(counting)
            for k, v in ev.items():
                yield getattr(dut, k).eq(v)
            yield dut.write_beats.eq(wb)
            yield dut.cls.eq(cls)
            yield
            if counting:
                model["cycles"] += 1
                model["mac_busy"] += ev["mac_beat"]
                model["dram_stall"] += ev["stall"]
                model["bytes_read"] += isa.BEAT_BYTES * ev["read_beat"]
                model["bytes_written"] += isa.BEAT_BYTES * wb
                per_class[prev_cls] += 1        # the class is registered before it counts
            model["retired"] += ev["retire"]
            prev_cls = cls
            fired.append((yield dut.watchdog_fired))
        yield dut.counting.eq(0)
        yield
        yield
        for k, v in model.items():
            assert (yield getattr(dut, k)) == v, k
        for c in range(n):
            yield dut.class_sel.eq(c)
            yield
            assert (yield dut.class_cycles) == per_class[c], isa.CLASSES[c]

    run_simulation(dut, gen())
    # The watchdog fires (registered) once 150 cycles are counted, and stays up while counting.
    assert 148 <= fired.index(1) <= 152 and all(fired[fired.index(1):250])


# Scratchpads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("read_ports", [2, 4])
def test_scratchpads_read_two_cycles_after_the_address_and_write_one_later(read_ports):
    slots, depth = 3, 64
    dut = Scratchpads(slots, depth, read_ports, write_taps=True)
    rng = random.Random(read_ports)
    model = [[0] * depth for _ in range(slots)]
    taps = []

    def gen():
        pending = []        # writes given last cycle land now
        history = []        # the read addresses of each cycle
        last = ([0] * slots, [0] * slots)
        for cycle in range(400):
            radr = [rng.randrange(depth) for _ in range(read_ports)]
            wadr = rng.randrange(depth)
            we = [int(rng.random() < 0.4) for _ in range(slots)]
            wdat = [rng.randrange(-2 ** 31, 2 ** 31) for _ in range(slots)]
            for p in range(read_ports):
                yield dut.radr[p].eq(radr[p])
            yield dut.wadr.eq(wadr)
            for s in range(slots):
                yield dut.we[s].eq(we[s])
                yield dut.wdat[s].eq(wdat[s] & 0xffffffff)
            yield
            # What a generator sets before a clock edge, the logic samples at the next edge: a
            # write set here is registered at edge t+1 and in the RAM at t+2; a read address
            # set here is sampled at t+1 (seeing the writes set at t-2 and before) and its data
            # are out of the second register after edge t+2.
            history.append((radr, [row[:] for row in model]))
            for s, a, d in pending:
                model[s][a] = d
            pending = [(s, wadr, wdat[s]) for s in range(slots) if we[s]]
            if len(history) >= 3:
                ra, snap = history[-3]
                for p in range(read_ports):
                    for s in range(slots):
                        assert (yield dut.rdat[p][s]) == snap[s][ra[p]], (cycle, p, s)
            for s in range(slots):          # the write taps show the last cycle's write, registered
                assert (yield dut.wq_we[s]) == last[0][s]
                if last[0][s]:
                    assert (yield dut.wq_dat[s]) == last[1][s]
                    taps.append(s)
            last = (we, wdat)

    run_simulation(dut, gen())
    assert set(taps) == set(range(slots))
