"""The core's units alone (Migen simulation): the infrastructure against a plain-Python model
of its contract — ReadBursts (the read stream's addresses, one burst queued, a flush), Counters
(the benchmark's counters and the watchdog), Scratchpads (two-cycle reads, registered writes,
every slot its own RAM) — and the opcode units against the golden model's function for their
opcode (SILU: spec.numerics.silu_mul; RMSNORM: spec.numerics.rmsnorm; ROPE: spec.numerics.rope; ARGMAX: numpy's argmax; EMBED: spec.numerics.embed on pack_matrix rows), on real scratchpads."""

import random

import numpy as np
import pytest
from migen import Module, Signal, passive, run_simulation
from litex.soc.interconnect import stream

from gateware.core.argmax import Argmax
from gateware.core.counters import Counters
from gateware.core.embed import Embed
from gateware.core.readbursts import ReadBursts
from gateware.core.scratchpad import Scratchpads
from gateware.core.rmsnorm import Rmsnorm
from gateware.core.rope import Rope
from gateware.core.silu import Silu
from gateware.core.store import Store
from gateware.core.unpack import BeatUnpacker
from gateware.core.writestats import WriteStats
from spec import isa, numerics as N



def _read_int32(mem, base, n):
    """Words base .. base + n - 1 of a scratchpad RAM as int32 (a simulation generator)."""
    got = []
    for k in range(n):
        got.append((yield mem[base + k]))
    got = np.array(got, np.int64)
    return np.where(got >= 2 ** 31, got - 2 ** 32, got)


def _run_unit(unit, budget, grant_after=None):
    """Pulse ``unit.start`` (and, ``grant_after`` cycles later, ``granted``: the sequencer's
    BURST sending the unit's request), wait up to ``budget`` cycles for ``done``, then let
    the last write land (a simulation generator). Returns the cycles until done."""
    yield unit.start.eq(1)
    yield
    yield unit.start.eq(0)
    if grant_after is not None:
        for _ in range(grant_after):
            yield
        yield unit.granted.eq(1)
        yield
        yield unit.granted.eq(0)
    for cycle in range(budget):
        yield
        if (yield unit.done):
            break
    else:
        raise AssertionError(f"{type(unit).__name__} did not finish in {budget} cycles")
    for _ in range(3):
        yield
    return cycle


@passive
def _beat_stream(unp, beats, rng, p=0.5):
    """The read stream a BeatUnpacker takes ``beats`` from: a beat on offer only some cycles,
    as DRAM's would be."""
    queue = list(beats)
    while True:
        have = bool(queue) and rng.random() < p
        yield unp.rd_valid.eq(int(have))
        yield unp.rd_data.eq(queue[0] if have else 0)
        yield
        if have and (yield unp.rd_ready):
            queue.pop(0)


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
    """Each event counts in the cycle after it (registered inputs) while counting; a clear
    zeroes everything; the watchdog fires once the budget is reached."""
    n = len(isa.CLASSES)
    dut = Counters(n, mac_beats=2, read_beats=4, write_beats=8)
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
        prev_ev, prev_wb = {"mac_beats": 0, "stall": 0, "read_beats": 0}, 0     # events are registered too
        for cycle in range(300):
            counting = int(cycle < 250)
            ev = {k: int(rng.random() < 0.5) for k in ("stall", "retire")}
            ev.update(mac_beats=rng.randrange(3), read_beats=rng.randrange(5))
            wb, cls = rng.randrange(3), rng.randrange(n)
            yield dut.counting.eq(counting)
            for k, v in ev.items():
                yield getattr(dut, k).eq(v)
            yield dut.write_beats.eq(wb)
            yield dut.cls.eq(cls)
            yield
            if counting:
                model["cycles"] += 1
                model["mac_busy"] += prev_ev["mac_beats"]
                model["dram_stall"] += prev_ev["stall"]
                model["bytes_read"] += isa.BEAT_BYTES * prev_ev["read_beats"]
                model["bytes_written"] += isa.BEAT_BYTES * prev_wb
                per_class[prev_cls] += 1        # the class is registered before it counts
            model["retired"] += ev["retire"]
            prev_cls, prev_ev, prev_wb = cls, ev, wb
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


# SILU --------------------------------------------------------------------------------------------

class _SiluOnScratchpads(Module):
    """Silu wired to real scratchpads as the core wires it (every lane's slot written at once)."""

    def __init__(self, lanes, depth=256):
        self.submodules.act = act = Scratchpads(lanes, depth, 2)
        self.submodules.silu = silu = Silu(lanes)
        self.comb += [
            act.radr[0].eq(silu.radr), act.radr[1].eq(silu.radr2), act.wadr.eq(silu.wadr),
            *[act.we[x].eq(silu.we) for x in range(lanes)],
            *[act.wdat[x].eq(silu.out[x]) for x in range(lanes)],
            *[silu.a[x].eq(act.rdat[0][x]) for x in range(lanes)],
            *[silu.b[x].eq(act.rdat[1][x]) for x in range(lanes)],
        ]


def _silu_operands(rng, count):
    """Values across the sigmoid table's range, its clamps and int32's ends."""
    edge = [0, 1, -1, N.SIGMOID_RANGE << N.ACT_FRAC, -(N.SIGMOID_RANGE << N.ACT_FRAC), 2 ** 31 - 1, -2 ** 31 + 1]
    return np.array([rng.choice(edge) if rng.random() < 0.15 else
                     int(rng.gauss(0, 3 << N.ACT_FRAC)) for _ in range(count)], np.int64)


@pytest.mark.parametrize("lanes,seed", [(1, 0), (2, 1), (4, 2)])
def test_silu_matches_the_golden_function(lanes, seed):
    rng = random.Random(seed)
    top = _SiluOnScratchpads(lanes)
    n = rng.randrange(1, 40)
    src, src2, dst = 0, 64, 128 + rng.randrange(0, 64)
    a = [_silu_operands(rng, n) for _ in range(lanes)]
    b = [_silu_operands(rng, n) for _ in range(lanes)]
    cycles = []

    def gen():
        for x in range(lanes):
            for k in range(n):
                yield top.act.mems[x][src + k].eq(int(a[x][k]) & 0xffffffff)
                yield top.act.mems[x][src2 + k].eq(int(b[x][k]) & 0xffffffff)
        yield top.silu.src.eq(src)
        yield top.silu.src2.eq(src2)
        yield top.silu.dst.eq(dst)
        yield top.silu.n.eq(n)
        cycles.append((yield from _run_unit(top.silu, n + 40)))
        for x in range(lanes):
            got = yield from _read_int32(top.act.mems[x], dst, n)
            assert (got == N.silu_mul(a[x], b[x])).all(), x

    run_simulation(top, gen())
    assert cycles[0] <= n + 12                      # one element a cycle, then the pipeline


def test_silu_abort_stops_its_writes():
    top = _SiluOnScratchpads(1)
    writes = []

    def gen():
        yield top.silu.n.eq(30)
        yield top.silu.dst.eq(100)
        yield top.silu.start.eq(1)
        yield
        yield top.silu.start.eq(0)
        for _ in range(12):
            yield
        yield top.silu.abort.eq(1)
        yield
        yield top.silu.abort.eq(0)
        for _ in range(40):
            yield
            writes.append((yield top.silu.we))
        assert not (yield top.silu.running) and not (yield top.silu.done)

    run_simulation(top, gen())
    assert not any(writes[1:])


# Write statistics --------------------------------------------------------------------------------

def _issue(dut, op, **fields):
    """One instruction through the sequencer's side: fields settle, it issues, it retires."""
    for name in ("dst", "src", "n", "m"):
        yield getattr(dut, name).eq(fields.get(name, 0))
    yield dut.nm.eq(fields.get("n", 0) * fields.get("m", 0))
    yield dut.op.eq(isa.OPCODES[op])
    yield
    yield
    yield dut.issue.eq(1)
    yield
    yield dut.issue.eq(0)
    yield
    use, amax, sumsq = (yield dut.use), [], []
    for a, q in zip(dut.amax, dut.sumsq):
        amax.append((yield a))
        sumsq.append((yield q))
    return use, amax, sumsq


@pytest.mark.parametrize("seed", range(3))
def test_write_stats_give_the_figures_of_a_vector_just_written(seed):
    """A MATVEC writes a vector; the RMSNORM that reads exactly it gets its largest |x| and its
    sum of squares of x rounded by RMS_PRE_SHIFT, and the ARGMAX that reads exactly it each
    slot's largest x and its first index (numpy's argmax: the max appears twice here); one that
    reads another range, or reads it after a SILU wrote into it, does not."""
    slots, rng = 2, np.random.default_rng(seed)
    dut = WriteStats(slots)
    n, dst = int(rng.integers(2, 30)), int(rng.integers(0, 100))
    x = rng.integers(-2 ** 31 + 1, 2 ** 31, (slots, n))
    x[:, -1] = x.max(axis=1)                     # a tie: the first of the two counts
    seen = {}

    def best():
        got = [(yield dut.use_max), [], []]
        for b, i in zip(dut.best, dut.best_i):
            got[1].append((yield b))
            got[2].append((yield i))
        return tuple(got)

    def write(values, base):
        for k in range(values.shape[1]):
            for s in range(slots):
                yield dut.wdat[s].eq(int(values[s, k]))
                yield dut.we[s].eq(1)
            yield
        for s in range(slots):
            yield dut.we[s].eq(0)

    def gen():
        yield dut.reset.eq(1)
        yield
        yield dut.reset.eq(0)
        yield from _issue(dut, "MATVEC", dst=dst, src=200, n=n, m=8)          # entry 0
        yield from write(x, dst)
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        for _ in range(4):
            yield
        seen["hit"] = yield from _issue(dut, "RMSNORM", dst=300, src=dst, n=n)
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        yield from _issue(dut, "ARGMAX", src=dst, n=n)
        seen["argmax"] = yield from best()
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        yield from _issue(dut, "ARGMAX", src=dst, n=n - 1)
        seen["argmax other"] = yield from best()
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        seen["other"] = yield from _issue(dut, "RMSNORM", dst=300, src=dst + 1, n=n)
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        yield from _issue(dut, "SILU", dst=dst + n - 1, src=400, n=1)      # entry 1, into entry 0
        yield from write(x[:, :1], dst + n - 1)
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        for _ in range(4):
            yield
        seen["after"] = yield from _issue(dut, "RMSNORM", dst=300, src=dst, n=n)
        yield dut.advance.eq(1)
        yield
        yield dut.advance.eq(0)
        yield from _issue(dut, "ARGMAX", src=dst, n=n)
        seen["argmax after"] = yield from best()

    run_simulation(dut, gen())
    use, amax, sumsq = seen["hit"]
    xs = N.round_shift(x, N.RMS_PRE_SHIFT)
    assert use == 1
    assert amax == [int(v) for v in np.abs(x).max(axis=1)]
    assert sumsq == [int(v) for v in (xs * xs).sum(axis=1)]
    assert seen["other"][0] == 0 and seen["after"][0] == 0
    assert seen["argmax"] == (1, [int(v) for v in x.max(axis=1)], [int(v) for v in x.argmax(axis=1)])
    assert seen["argmax other"][0] == 0 and seen["argmax after"][0] == 0


# Beats into elements -----------------------------------------------------------------------------

@pytest.mark.parametrize("wide,seed", [(0, 0), (0, 1), (1, 2), (1, 3)])
def test_unpacker_issues_every_element_in_order_from_a_stalling_stream(wide, seed):
    """A fixed16 vector (header beat, eight int16 a beat) or an int32 one (four a beat) read
    from a stream that has a beat only some cycles: the elements issue in order, one a cycle
    while a beat is held, each beat taking one cycle of its own."""
    rng = np.random.default_rng(seed)
    dut = BeatUnpacker()
    n = int(rng.integers(1, 40))
    per = 4 if wide else 8
    values = rng.integers(-2 ** 31, 2 ** 31, n) if wide else rng.integers(-2 ** 15, 2 ** 15, n)
    dtype = "<i4" if wide else "<i2"
    body = values.astype(dtype).tobytes()
    body += bytes(-len(body) % 16)
    beats = [int.from_bytes(body[k:k + 16], "little") for k in range(0, len(body), 16)]
    if not wide:
        beats = [37] + beats                     # the header: shift 37 in its low 6 bits
    issued, stream_cycles = [], []

    def gen():
        yield dut.n.eq(n)
        yield dut.wide.eq(wide)
        if wide:
            yield dut.clear.eq(1)
            yield
            yield dut.clear.eq(0)
        queue = list(beats)
        phase = "run" if wide else "header"
        for cycle in range(20 * n + 100):
            have = bool(queue) and rng.random() < 0.5
            yield dut.rd_valid.eq(int(have))
            yield dut.rd_data.eq(queue[0] if have else 0)
            yield dut.header.eq(int(phase == "header"))
            yield dut.run.eq(int(phase == "run"))
            yield                               # the values above are seen from here on
            if (yield dut.issue):
                issued.append(((yield dut.i), (yield dut.element)))
            if have and (yield dut.rd_ready):
                queue.pop(0)
                stream_cycles.append(cycle)
            if phase == "header" and (yield dut.header_taken):
                phase = "run"
            if len(issued) == n:
                break
        if not wide:
            assert (yield dut.shift) == 37

    run_simulation(dut, gen())
    assert [i for i, _ in issued] == list(range(n))
    assert [e for _, e in issued] == [int(v) for v in values]
    assert len(stream_cycles) == len(beats) and -(-n // per) + (0 if wide else 1) == len(beats)


# RMSNORM -----------------------------------------------------------------------------------------

class _RmsnormOnScratchpads(Module):
    """Rmsnorm wired as the core wires it: real scratchpads, its gains through a BeatUnpacker."""

    def __init__(self, lanes, write_stats, depth=256):
        self.submodules.act = act = Scratchpads(lanes, depth, 2)
        self.submodules.unp = unp = BeatUnpacker()
        self.submodules.rms = rms = Rmsnorm(lanes, divider_steps=2, write_stats=write_stats)
        self.rd_valid, self.rd_data = unp.rd_valid, unp.rd_data
        self.comb += [
            act.radr[0].eq(rms.radr), act.wadr.eq(rms.wadr),
            *[act.we[x].eq(rms.we) for x in range(lanes)], *[act.wdat[x].eq(rms.out[x]) for x in range(lanes)],
            *[rms.x[x].eq(act.rdat[0][x]) for x in range(lanes)],
            unp.n.eq(rms.n), *unp.lend_to(rms), *unp.feed(rms),
        ]


@pytest.mark.parametrize("lanes,use_stats,seed", [(1, False, 0), (2, False, 1), (2, True, 2), (4, True, 3)])
def test_rmsnorm_matches_the_golden_function(lanes, use_stats, seed):
    """Each lane's slot normalised with one read of the gains (a fixed16 vector from a stream
    that stalls), against spec.numerics.rmsnorm; with the write statistics' sum of squares
    the first pass is skipped and the result is the same."""
    rng = np.random.default_rng(seed)
    top = _RmsnormOnScratchpads(lanes, write_stats=use_stats)
    n = int(rng.integers(1, 48))
    src, dst = 0, 128
    x = rng.integers(-2 ** 24, 2 ** 24, (lanes, n))
    gains, gshift = N.quantize_fixed16(rng.normal(1.0, 0.3, n))
    blob = isa.pack_fixed16(gains, int(gshift))
    beats = [int.from_bytes(blob[k:k + 16], "little") for k in range(0, len(blob), 16)]
    xs = N.round_shift(x, N.RMS_PRE_SHIFT)

    def gen():
        for l in range(lanes):
            for k in range(n):
                yield top.act.mems[l][src + k].eq(int(x[l, k]) & 0xffffffff)
        rms = top.rms
        yield rms.src.eq(src)
        yield rms.dst.eq(dst)
        yield rms.n.eq(n)
        if use_stats:
            yield rms.use.eq(1)
            for l in range(lanes):
                yield rms.use_sumsq[l].eq(int((xs[l] * xs[l]).sum()))
        yield from _run_unit(rms, 30 * n + 200, grant_after=3)
        for l in range(lanes):
            got = yield from _read_int32(top.act.mems[l], dst, n)
            assert (got == N.rmsnorm(x[l], gains, gshift)).all(), l

    run_simulation(top, [gen(), _beat_stream(top.unp, beats, rng)])


def test_a_state_tested_but_never_defined_is_refused():
    """A state moved into a unit but still named where the sequencer tests for it is an error
    at elaboration, not a condition that silently reads 0."""
    from migen import FSM, NextState
    from gateware.core.pipeline import check_no_dead_states
    fsm = FSM()
    fsm.act("A", NextState("B"))
    fsm.act("B", NextState("A"))
    fsm.ongoing("A")
    check_no_dead_states(fsm, "Sequencer")
    fsm.ongoing("MOVED")
    with pytest.raises(RuntimeError, match="Sequencer: .*MOVED"):
        check_no_dead_states(fsm, "Sequencer")


# ROPE --------------------------------------------------------------------------------------------

class _RopeOnScratchpads(Module):
    def __init__(self, lanes, depth_beats, depth=256):
        self.submodules.act = act = Scratchpads(lanes, depth, 2)
        self.submodules.rope = rope = Rope(lanes, depth_beats)
        self.comb += [
            act.radr[0].eq(rope.radr), act.wadr.eq(rope.wadr),
            *[act.we[x].eq(rope.we) for x in range(lanes)], *[act.wdat[x].eq(rope.out[x]) for x in range(lanes)],
            *[rope.x[x].eq(act.rdat[0][x]) for x in range(lanes)],
        ]


@pytest.mark.parametrize("lanes,head_size,heads,seed", [(1, 8, 2, 0), (2, 16, 3, 1), (4, 32, 1, 2), (2, 2, 5, 3)])
def test_rope_matches_the_golden_function(lanes, head_size, heads, seed):
    """Each lane's slot rotated by its own (cos, sin) row, loaded beat by beat as the sequencer
    loads it, against spec.numerics.rope."""
    rng = np.random.default_rng(seed)
    row_beats = isa.rope_row_bytes(head_size) // isa.BEAT_BYTES
    top = _RopeOnScratchpads(lanes, max(row_beats, 2))
    n = head_size * heads
    src, dst = 0, 128
    x = rng.integers(-2 ** 30, 2 ** 30, (lanes, n))
    cos = rng.integers(-2 ** 14, 2 ** 14 + 1, (lanes, head_size // 2))
    sin = rng.integers(-2 ** 14, 2 ** 14 + 1, (lanes, head_size // 2))

    def gen():
        rope = top.rope
        for l in range(lanes):
            for k in range(n):
                yield top.act.mems[l][src + k].eq(int(x[l, k]) & 0xffffffff)
            row = isa.pack_rope(cos[l:l + 1], sin[l:l + 1])
            for b in range(row_beats):
                yield rope.load_we.eq(1)
                yield rope.load_lane.eq(l)
                yield rope.load_adr.eq(b)
                yield rope.load_data.eq(int.from_bytes(row[16 * b:16 * (b + 1)], "little"))
                yield
        yield rope.load_we.eq(0)
        yield rope.src.eq(src)
        yield rope.dst.eq(dst)
        yield rope.n.eq(n)
        yield rope.m.eq(head_size)
        yield from _run_unit(rope, n + 40)
        for l in range(lanes):
            got = yield from _read_int32(top.act.mems[l], dst, n)
            assert (got == N.rope(x[l], cos[l], sin[l], head_size)).all(), l

    run_simulation(top, gen())


# ARGMAX ------------------------------------------------------------------------------------------

class _ArgmaxOnScratchpads(Module):
    def __init__(self, slots, read_ports, depth=256):
        self.submodules.act = act = Scratchpads(slots, depth, read_ports)
        self.submodules.am = am = Argmax(slots, read_ports)
        self.comb += [act.radr[p].eq(am.radr[p]) for p in range(read_ports)]
        self.comb += [am.rdat[p][s].eq(act.rdat[p][s]) for p in range(read_ports) for s in range(slots)]


def _argmax_pass(top, x, src, base=0, acc=False, use=False):
    """One ARGMAX over ``x`` (slots × n), loaded at ``src`` (a simulation generator). With
    ``use`` the write statistics give each slot's maximum and its first index instead, and the
    scratchpad holds junk. Returns the cycles until done."""
    for s in range(x.shape[0]):
        for k in range(x.shape[1]):
            yield top.act.mems[s][src + k].eq(12345 if use else int(x[s, k]) & 0xffffffff)
        yield top.am.use_best[s].eq(int(x[s].max()))
        yield top.am.use_i[s].eq(int(np.argmax(x[s])))
    yield top.am.use.eq(int(use))
    yield top.am.src.eq(src)
    yield top.am.n.eq(x.shape[1])
    yield top.am.base.eq(base)
    yield top.am.acc.eq(int(acc))
    return (yield from _run_unit(top.am, x.shape[1] + 20))


def _assert_argmax(top, x):
    """Every slot's held result is numpy's first index of the maximum of its row of ``x``."""
    for s in range(x.shape[0]):
        assert (yield top.am.best_i[s]) == int(np.argmax(x[s])), s
        assert (yield top.am.best[s]) == int(x[s].max()), s


@pytest.mark.parametrize("read_ports,seed", [(2, 0), (2, 1), (4, 2), (4, 3)])
def test_argmax_matches_numpy_first_on_a_tie(read_ports, seed):
    rng = np.random.default_rng(seed)
    slots = 3
    top = _ArgmaxOnScratchpads(slots, read_ports)
    n = int(rng.integers(1, 60))
    src = int(rng.integers(0, 100))
    # Few distinct values, so ties are common; int32's ends included.
    x = rng.choice([-2 ** 31 + 1, -5, 0, 7, 7, 2 ** 31 - 1, 3], (slots, n)) if seed % 2 else \
        rng.integers(-2 ** 31 + 1, 2 ** 31, (slots, n))

    def gen():
        yield from _argmax_pass(top, x, src)
        yield from _assert_argmax(top, x)

    run_simulation(top, gen())


@pytest.mark.parametrize("read_ports,seed", [(2, 4), (2, 5), (4, 6), (4, 7)])
def test_argmax_over_row_chunks_finds_the_first_maximum_of_them_all(read_ports, seed):
    # A vector in chunks (as the compiler runs a classifier too long for the scratchpad), each
    # chunk loaded into the same scratchpad range and passed with its first row as the base,
    # FLAG_ACC after the first: the held result is numpy's argmax of the whole vector. Ties
    # across chunks are common, so a later chunk's equal maximum must not replace the held one.
    rng = np.random.default_rng(seed)
    slots = 2
    top = _ArgmaxOnScratchpads(slots, read_ports)
    total = int(rng.integers(20, 200))
    x = rng.choice([-2 ** 31 + 1, -5, 0, 7, 2 ** 31 - 1], (slots, total)) if seed % 2 else \
        rng.integers(-50, 50, (slots, total))
    cuts = sorted(set(int(c) for c in rng.integers(1, total, 4)))
    chunks = list(zip([0] + cuts, cuts + [total]))

    def gen():
        yield top.am.clear.eq(1)
        yield
        yield top.am.clear.eq(0)
        for k, (r0, r1) in enumerate(chunks):
            # Every other chunk from the write statistics (a MATVEC just wrote it): no pass.
            cycles = yield from _argmax_pass(top, x[:, r0:r1], 10, base=r0, acc=k > 0, use=k % 2 == 1)
            assert k % 2 == 0 or cycles <= 2
        yield from _assert_argmax(top, x)

    run_simulation(top, gen())


# EMBED -------------------------------------------------------------------------------------------

class _EmbedOnScratchpads(Module):
    def __init__(self, depth=256):
        self.submodules.act = act = Scratchpads(1, depth, 2)
        self.submodules.emb = emb = Embed(max_cols=128)
        self.comb += [act.wadr.eq(emb.wadr), act.wdat[0].eq(emb.wdat), act.we[0].eq(emb.we)]


@pytest.mark.parametrize("shifts,seed", [((8, 30), 0), ((0, 0), 1), ((63, 63), 2), ((0, 63), 3), ((0, 20), 4)])
def test_embed_matches_the_golden_function(shifts, seed):
    """Rows of a random matrix in pack_matrix's format: the unit's read addresses are
    spec.isa.matrix_row_reads', and each row from a stalling stream is converted to Q16 as spec.numerics.embed
    does: shifts that round, that shift left, that round to zero; rows that start anywhere in
    a superblock; int8 -128 and mantissas up to 255."""
    rng = np.random.default_rng(seed)
    rows, n = int(rng.integers(1, 40)), int(rng.integers(1, 100))
    cp = isa.matvec_cols_padded(n)
    q = rng.integers(-128, 128, (rows, cp))
    mant = rng.integers(0, 256, (rows, cp // N.WEIGHT_GROUP))
    shift = rng.integers(shifts[0], shifts[1] + 1, rows)
    blob = isa.pack_matrix(q, mant, shift)
    tokens = [int(t) for t in rng.integers(0, rows, 4)] + [rows - 1]
    top = _EmbedOnScratchpads()
    base = 16 * int(rng.integers(0, 1 << 20))
    beats = []
    for t in tokens:
        for off, nbytes in isa.matrix_row_reads(t, n)[:2]:
            beats += [int.from_bytes(blob[k:k + 16], "little") for k in range(off, off + nbytes, 16)]

    def gen():
        emb = top.emb
        for t in tokens:
            dst = int(rng.integers(0, 150))
            yield emb.dst.eq(dst)
            yield emb.n.eq(n)
            yield emb.token.eq(t)
            yield emb.base.eq(base)
            for _ in range(5):                      # n and token land, then four register stages
                yield
            (hdr, _), (span, span_bytes), _ = isa.matrix_row_reads(t, n)
            assert ((yield emb.hdr_addr), (yield emb.span_addr), (yield emb.span_bytes)) == \
                (base + hdr, base + span, span_bytes)
            yield emb.start.eq(1)
            yield
            yield emb.start.eq(0)
            for _ in range(2):                      # BURST sends the two reads
                yield emb.granted.eq(1)
                yield
                yield emb.granted.eq(0)
                yield
            for _ in range(40 * n + 200):
                yield
                if (yield emb.done):
                    break
            else:
                raise AssertionError("Embed did not finish")
            for _ in range(3):
                yield
            got = yield from _read_int32(top.act.mems[0], dst, n)
            assert (got == N.embed(q[t], mant[t], shift[t])[:n]).all(), t

    run_simulation(top, [gen(), _beat_stream(top.emb, beats, rng)])


# STORE -------------------------------------------------------------------------------------------

class _StoreOnScratchpads(Module):
    def __init__(self, depth=256):
        self.submodules.act = act = Scratchpads(1, depth, 2)
        self.submodules.st = st = Store()
        self.comb += [act.radr[0].eq(st.radr), st.x.eq(act.rdat[0][0])]


@pytest.mark.parametrize("seed", range(4))
def test_store_writes_the_int32_vector_as_golden_does_into_a_stalling_stream(seed):
    rng = np.random.default_rng(seed)
    top = _StoreOnScratchpads()
    n = int(rng.integers(1, 45))
    src = int(rng.integers(0, 150))
    x = rng.integers(-2 ** 31, 2 ** 31, n)
    beats = []

    @passive
    def sink():
        while True:
            ready = int(rng.random() < 0.4)
            yield top.st.wr_ready.eq(ready)
            yield
            if ready and (yield top.st.wr_valid):
                beats.append((yield top.st.wr_data))

    def gen():
        for k in range(n):
            yield top.act.mems[0][src + k].eq(int(x[k]) & 0xffffffff)
        yield top.st.src.eq(src)
        yield top.st.n.eq(n)
        yield from _run_unit(top.st, 30 * n + 100, grant_after=0)

    run_simulation(top, [gen(), sink()])
    blob = b"".join(b.to_bytes(16, "little") for b in beats)
    expected = x.astype("<i4").tobytes()
    assert blob == expected + bytes(len(blob) - len(expected)) and len(beats) == -(-n // 4)
