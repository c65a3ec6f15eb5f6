"""The instruction buffer alone (gateware/core/fetchbuffer.py, Migen simulation): a fill from the
current instruction's beat, the instruction at pc and at pc + 1 from it, a shorter fill where
DRAM ends, and emptied by a write over its beats (not by one beside them) or by a new run."""

from migen import run_simulation

from gateware.core.fetchbuffer import InstructionBuffer

FB, DRAM_BEATS = 8, 100


def _word(beat):
    return 0x1000 + beat                    # a distinct word per DRAM beat


def _drive(events):
    """Fill from pc beat 40, then run ``events`` (a generator of the buffer). Returns what it
    yields."""
    dut = InstructionBuffer(FB, DRAM_BEATS)
    out = []

    def gen():
        yield dut.pc_beat.eq(40)
        yield dut.fill.eq(1)
        yield
        yield dut.fill.eq(0)
        n = yield dut.fill_beats
        lasts = []
        for k in range(n):
            yield dut.fill_we.eq(1)
            yield dut.fill_data.eq(_word(40 + k))
            yield
            lasts.append((yield dut.fill_last))          # (the simulator applies writes a cycle on)
        yield dut.fill_we.eq(0)
        yield
        assert lasts == [0] * (n - 1) + [1]
        yield from events(dut, out)

    run_simulation(dut, gen())
    return out


def _at(dut, beat):
    yield dut.pc_beat.eq(beat)
    yield
    yield
    return ((yield dut.hit), (yield dut.word), (yield dut.next_hit), (yield dut.next_word))


def test_fill_then_the_instruction_and_the_next_from_it():
    def events(dut, out):
        out.append((yield dut.count))
        for beat in (40, 43, 47, 48):
            out.append((yield from _at(dut, beat)))
    count, at40, at43, at47, at48 = _drive(events)
    assert count == FB
    assert at40 == (1, _word(40), 1, _word(41)) and at43 == (1, _word(43), 1, _word(44))
    assert at47[:3] == (1, _word(47), 0)            # the last buffered: no next
    assert at48[0] == 0


def test_a_fill_stops_at_the_end_of_dram():
    dut = InstructionBuffer(FB, DRAM_BEATS)
    seen = []

    def gen():
        for beat in (90, 95, 99, 100, 120):
            yield dut.pc_beat.eq(beat)
            yield
            seen.append((yield dut.fill_beats))

    run_simulation(dut, gen())
    assert seen == [8, 5, 1, 1, 1]          # past DRAM: one beat, so the fetch faults as golden's


def _after_write(beat, beats, clear=0):
    def events(dut, out):
        yield dut.write.eq(1)
        yield dut.write_beat.eq(beat)
        yield dut.write_beats.eq(beats)
        yield dut.clear.eq(clear)
        yield
        yield dut.write.eq(0)
        yield dut.clear.eq(0)
        yield
        out.append((yield dut.count))
    return _drive(events)[0]


def test_a_write_over_its_beats_or_a_new_run_empties_it():
    assert _after_write(47, 1) == 0 and _after_write(30, 11) == 0 and _after_write(44, 100) == 0
    assert _after_write(48, 4) == FB and _after_write(36, 4) == FB        # beside it
    assert _after_write(0, 0, clear=1) == 0
