"""The weight prefetch alone (gateware/core/prefetch.py, Migen simulation): it finds the next
MATVEC past the instructions that may come between, pushes its burst only when allowed, holds
it for that instruction, and marks it stale after a write over the weights or over the
instructions it read ahead through, not after other writes."""

from migen import Memory, Module, run_simulation

from gateware.core.prefetch import WeightPrefetch, MAX_AHEAD, REQUESTS
from spec import isa

DRAM_BEATS = 1 << 16
PC0, PC_BEAT0 = 40, 1000        # the current instruction: its index and its DRAM beat
W_ADDR = 0x2000                 # the MATVEC's weights (byte address)


def _program(gap_ops, rows=5, cols=40, tail="HALT"):
    """The current instruction (RMSNORM), ``gap_ops``, a MATVEC, then ``tail``."""
    words = [isa.encode("RMSNORM", n=8)] + [isa.encode(op, n=4, m=8) for op in gap_ops]
    words += [isa.encode("MATVEC", n=rows, m=cols, addr=W_ADDR), isa.encode(tail)]
    return words


def _run(words, events, cycles=60, may_push=1, base=0, **inputs):
    """Run the prefetch over ``words`` (the buffer, the current instruction at offset ``base``,
    pc PC0 + base) with ``inputs`` (the loop's signals) and ``events``: {cycle: [(signal name,
    value)]}. Returns the cycles it pushed in, and its pending, stale and hit at the end."""
    dut = WeightPrefetch(32, DRAM_BEATS, 50)
    top = Module()
    top.submodules.dut = dut
    mem = Memory(128, 32, init=words)              # the instruction buffer, read synchronously
    port = mem.get_port()
    top.specials += mem, port
    top.comb += [port.adr.eq(dut.scan_off), dut.word.eq(port.dat_r)]
    pushes, out = [], {}

    def gen():
        yield dut.base.eq(base)
        yield dut.count.eq(len(words))
        yield dut.pc.eq(PC0 + base)
        yield dut.pc_beat.eq(PC_BEAT0 + base)
        for name, value in inputs.items():
            yield getattr(dut, name).eq(value)
        yield dut.may_push.eq(may_push)
        yield dut.restart.eq(1)
        yield
        yield dut.restart.eq(0)
        for cycle in range(cycles):
            for name, value in events.get(cycle, []):
                yield getattr(dut, name).eq(value)
            yield
            for name, _ in events.get(cycle, []):
                if name in ("write", "consume", "drop", "restart", "endloop"):
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


def test_stops_at_setr_the_reading_limit_and_loop_instructions_it_cannot_follow():
    for gap, inputs in ((["SETR"], {}), (["ROPE"] * MAX_AHEAD, {}),
                        (["ROPE", "ENDLOOP"], {}),                      # outside a loop: it faults
                        (["LOOP"], {"in_loop": 1}),                       # inside one: it faults
                        (["LOOP", "ENDLOOP"], {})):                       # the new loop's ENDLOOP
        pushes, out = _run(_program(gap), {}, **inputs)
        assert not pushes and not out["pending"], gap
    pushes, _ = _run(_program(["LOOP", "ROPE"]), {})                     # outside a loop LOOP passes
    assert len(pushes) == 1


def _loop_body():
    """A loop from offset 0 (pc PC0): RMSNORM, a layered MATVEC, SILU (the current instruction,
    offset 2), ENDLOOP, then a layered MATVEC after the loop."""
    return [isa.encode("RMSNORM", n=8), isa.encode("MATVEC", isa.FLAG_LAYER, n=5, m=40, addr=W_ADDR),
            isa.encode("SILU", n=8), isa.encode("ENDLOOP"),
            isa.encode("MATVEC", isa.FLAG_LAYER, n=3, m=16, addr=0x4000), isa.encode("HALT")]


def test_follows_endloop_to_the_next_layers_matvec_or_past_the_loop_to_layer_0s():
    loop = dict(base=2, in_loop=1, loop_start=PC0, w_layer_off=0x10000, wstride=0x3000)
    pushes, out = _run(_loop_body(), {}, last_layer=0, **loop)
    assert [b for _, b, _ in pushes] == [(W_ADDR + 0x13000) // 16]      # the next layer's, once
    assert out["pending"] and not out["hit"]
    pushes, out = _run(_loop_body(), {}, last_layer=1, **loop)
    assert [b for _, b, _ in pushes] == [0x4000 // 16]                    # after the loop: layer 0
    # The current instruction an ENDLOOP: it waits for the one after it.
    pushes, _ = _run(_loop_body(), {}, last_layer=0, **{**loop, "base": 3})
    assert not pushes


def test_two_requests_in_program_order_and_the_second_moves_up():
    words = _program(["ATTN"])[:-1] + [isa.encode("SILU", n=4), isa.encode("MATVEC", n=3, m=16, addr=0x4000),
                                       isa.encode("HALT")]
    pushes, out = _run(words, {}, cycles=80)
    assert [b for _, b, _ in pushes] == [W_ADDR // 16, 0x4000 // 16]
    assert out["pending"] and not out["hit"]
    # The first MATVEC (offset 2) runs and takes its request: the second is then the first.
    pushes, out = _run(words, {60: [("pc", PC0 + 2), ("base", 2), ("pc_beat", PC_BEAT0 + 2)],
                               61: [("consume", 1)], 62: [("pc", PC0 + 4), ("base", 4)]}, cycles=90)
    assert len(pushes) == 2 and out["pending"] and out["hit"]


def test_at_most_REQUESTS_pending_in_program_order():
    """One more MATVEC than REQUESTS, each behind a SILU: the first REQUESTS are pushed in
    program order, the last waits for a request to be taken."""
    addrs = [0x4000 + 0x1000 * k for k in range(REQUESTS + 1)]
    words = [isa.encode("RMSNORM", n=8)]
    for a in addrs:
        words += [isa.encode("SILU", n=4), isa.encode("MATVEC", n=3, m=16, addr=a)]
    words.append(isa.encode("HALT"))
    assert len(words) - 1 <= MAX_AHEAD
    pushes, out = _run(words, {}, cycles=40 * len(words))
    assert [b for _, b, _ in pushes] == [a // 16 for a in addrs[:REQUESTS]]
    assert out["pending"] and not out["hit"]


def test_a_write_over_the_second_requests_weights_makes_it_stale_once_first():
    words = _program(["ATTN"])[:-1] + [isa.encode("MATVEC", n=3, m=16, addr=0x4000), isa.encode("HALT")]
    events = {50: [("write", 1), ("write_beat", 0x4000 // 16 + 1), ("write_beats", 1)],
              60: [("pc", PC0 + 2), ("base", 2)], 61: [("consume", 1)]}
    _, out = _run(words, events, cycles=70)
    assert out["pending"] and out["stale"]
    events[50] = [("write", 1), ("write_beat", 0x4000 // 16 + isa.beats(isa.matrix_bytes(3, 16))),
                  ("write_beats", 1)]                                             # right past it
    _, out = _run(words, events, cycles=70)
    assert out["pending"] and not out["stale"]


def test_drop_forgets_both_and_reads_again():
    words = _program(["ATTN"])[:-1] + [isa.encode("MATVEC", n=3, m=16, addr=0x4000), isa.encode("HALT")]
    pushes, out = _run(words, {60: [("drop", 1), ("may_push", 0)]}, cycles=90)
    assert len(pushes) == 2 and not out["pending"]
    pushes, out = _run(words, {60: [("drop", 1)]}, cycles=120)
    assert len(pushes) == 4 and out["pending"]


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


def test_reads_again_after_consume_past_the_first_requests_matvec():
    words = _program(["ATTN"])[:-1] + [isa.encode("SILU", n=4), isa.encode("MATVEC", n=3, m=16, addr=0x4000),
                                       isa.encode("SILU", n=4), isa.encode("MATVEC", n=2, m=16, addr=0x8000)]
    pushes, out = _run(words, {60: [("pc", PC0 + 2), ("base", 2), ("pc_beat", PC_BEAT0 + 2)], 61: [("consume", 1)]},
                       cycles=110)
    assert [b for _, b, _ in pushes] == [W_ADDR // 16, 0x4000 // 16, 0x8000 // 16]
    assert out["pending"] and not out["hit"]


def test_reset_drops_a_pending_prefetch():
    pushes, out = _run(_program(["ATTN"]), {40: [("reset", 1)]})
    assert pushes and out == {"pending": 0, "stale": 0, "hit": 0}


def test_reading_again_passes_the_first_requests_matvec_reached_through_endloop():
    # The loop: RMSNORM (its first instruction), MATVEC A, ROPE, MATVEC B, SILU (current), ENDLOOP.
    E, LF = isa.encode, isa.FLAG_LAYER
    words = [E("RMSNORM", n=8), E("MATVEC", LF, n=5, m=40, addr=W_ADDR), E("ROPE", n=4, m=8),
             E("MATVEC", LF, n=3, m=16, addr=0x4000), E("SILU", n=8), E("ENDLOOP"), E("HALT")]
    loop = dict(base=4, in_loop=1, loop_start=PC0, w_layer_off=0x10000, wstride=0x3000, last_layer=0)
    first, _ = _run(words, {}, **loop)
    at = first[0][0]
    # Only A's request is out when the current instruction is read again.
    pushes, out = _run(words, {at + 1: [("may_push", 0)], at + 3: [("restart", 1)], at + 5: [("may_push", 1)]},
                       cycles=90, **loop)
    assert [b for _, b, _ in pushes] == [(W_ADDR + 0x13000) // 16, (0x4000 + 0x13000) // 16]
    # After the ENDLOOP ran (A's request is now this layer's), A is reached without one.
    pushes, _ = _run(words, {at + 1: [("may_push", 0)], at + 2: [("endloop", 1)], at + 3: [("restart", 1), ("base", 0),
                              ("pc", PC0), ("pc_beat", PC_BEAT0), ("w_layer_off", 0x13000)],
                              at + 5: [("may_push", 1)]}, cycles=90, **loop)
    assert [b for _, b, _ in pushes] == [(W_ADDR + 0x13000) // 16, (0x4000 + 0x13000) // 16]
