"""The weight prefetch alone (gateware/core/prefetch.py, Migen simulation): it finds the next
MATVEC past the instructions that may come between, pushes its burst only when allowed, holds
it for that instruction, and marks it stale after a write over the weights or over the
instructions it read ahead through, not after other writes."""

from migen import Memory, Module, run_simulation

from gateware.core.prefetch import WeightPrefetch, MAX_AHEAD
from spec import isa

DRAM_BEATS = 1 << 16
PC0, PC_BEAT0 = 40, 1000        # the current instruction: its index and its DRAM beat
W_ADDR = 0x2000                 # the MATVEC's weights (byte address)


def _program(gap_ops, rows=5, cols=40, tail="HALT"):
    """The current instruction (RMSNORM), ``gap_ops``, a MATVEC, then ``tail``."""
    words = [isa.encode("RMSNORM", n=8)] + [isa.encode(op, n=4, m=8) for op in gap_ops]
    words += [isa.encode("MATVEC", n=rows, m=cols, addr=W_ADDR), isa.encode(tail)]
    return words


def _run(words, events, cycles=60, may_push=1):
    """Run the prefetch over ``words`` (the buffer, the current instruction at offset 0) with
    ``events``: {cycle: [(signal name, value)]}. Returns the cycles it pushed in, and its
    pending, stale and hit at the end."""
    dut = WeightPrefetch(32, DRAM_BEATS, 50)
    top = Module()
    top.submodules.dut = dut
    mem = Memory(128, 32, init=words)              # the instruction buffer, read synchronously
    port = mem.get_port()
    top.specials += mem, port
    top.comb += [port.adr.eq(dut.scan_off), dut.word.eq(port.dat_r)]
    pushes, out = [], {}

    def gen():
        yield dut.base.eq(0)
        yield dut.count.eq(len(words))
        yield dut.pc.eq(PC0)
        yield dut.pc_beat.eq(PC_BEAT0)
        yield dut.may_push.eq(may_push)
        yield dut.restart.eq(1)
        yield
        yield dut.restart.eq(0)
        for cycle in range(cycles):
            for name, value in events.get(cycle, []):
                yield getattr(dut, name).eq(value)
            yield
            for name, _ in events.get(cycle, []):
                if name in ("write", "consume", "restart"):
                    yield getattr(dut, name).eq(0)
            if (yield dut.push):
                pushes.append((cycle, (yield dut.push_beat), (yield dut.push_beats)))
        out.update(pending=(yield dut.pending), stale=(yield dut.stale), hit=(yield dut.hit))

    run_simulation(top, gen())
    return pushes, out


def test_finds_the_matvec_past_other_instructions_and_pushes_its_burst():
    pushes, out = _run(_program(["ROPE", "KVWRITE", "KVWRITE", "ATTN"]), {})
    assert len(pushes) == 1
    _, beat, beats = pushes[0]
    assert (beat, beats) == (W_ADDR // 16, isa.beats(isa.matrix_bytes(5, 40)))
    assert out == {"pending": 1, "stale": 0, "hit": 0}     # for the MATVEC five ahead, not this one


def test_stops_at_loops_setr_and_the_reading_limit():
    for gap in (["ROPE", "ENDLOOP"], ["SETR"], ["LOOP"], ["ROPE"] * MAX_AHEAD):
        pushes, out = _run(_program(gap), {})
        assert not pushes and not out["pending"], gap


def test_waits_for_may_push():
    pushes, _ = _run(_program(["ATTN"]), {}, may_push=0)
    assert not pushes
    pushes, _ = _run(_program(["ATTN"]), {30: [("may_push", 1)]}, may_push=0)
    assert [c for c, _, _ in pushes] == [30]


def _pushed_then_write(beat, beats, gap=("ROPE", "KVWRITE")):
    pushes, _ = _run(_program(list(gap)), {})
    at = pushes[0][0] + 2
    return _run(_program(list(gap)), {at: [("write", 1), ("write_beat", beat), ("write_beats", beats)]})[1]


def test_a_write_over_the_weights_or_the_instructions_ahead_makes_it_stale():
    w, n = W_ADDR // 16, isa.beats(isa.matrix_bytes(5, 40))
    assert _pushed_then_write(w + n - 1, 4)["stale"]                 # the weights' last beat
    assert _pushed_then_write(w - 3, 4)["stale"]                     # their first
    assert _pushed_then_write(PC_BEAT0 + 3, 1)["stale"]              # the MATVEC (two ahead + 1)
    assert _pushed_then_write(PC_BEAT0 + 1, 1)["stale"]              # the next instruction
    assert not _pushed_then_write(w + n, 8)["stale"]                 # right after the weights
    assert not _pushed_then_write(w - 8, 8)["stale"]                 # right before
    assert not _pushed_then_write(PC_BEAT0, 1)["stale"]              # the current instruction
    assert not _pushed_then_write(PC_BEAT0 + 4, 1)["stale"]          # past the MATVEC


def test_hit_for_its_matvec_then_reads_ahead_again_after_consume():
    words = _program(["ATTN"]) [:-1] + [isa.encode("SILU", n=4), isa.encode("MATVEC", n=3, m=16, addr=0x4000)]
    pushes, out = _run(words, {40: [("pc", PC0 + 2), ("base", 2)], 41: [("consume", 1)]}, cycles=90)
    assert [b for _, b, _ in pushes] == [W_ADDR // 16, 0x4000 // 16]      # then the one after it
    assert out["pending"] and not out["hit"]


def test_reset_drops_a_pending_prefetch():
    pushes, out = _run(_program(["ATTN"]), {40: [("reset", 1)]})
    assert pushes and out == {"pending": 0, "stale": 0, "hit": 0}
