"""The sequencer alone (Migen simulation), against the golden model: the control instructions
(SETR, LOOP, ENDLOOP, HALT) and the faults it finds itself (ILLEGAL_OP, BAD_FIELD, BAD_SLOTS,
WINDOW), from a DRAM model that answers its bursts with stalling beats. The units are idle
stand-ins here: every instruction that would start one is in the other tests
(test_core_units.py, test_matvec.py, test_kvwrite.py, test_attention.py, test_accelerator.py)."""

import random
from types import SimpleNamespace

import pytest
from migen import Module, Signal, passive, run_simulation
from litex.soc.interconnect import stream

from driver.golden import GoldenCore
from gateware.core.sequencer import Sequencer
from spec import isa

DRAM = 4096
E = isa.encode


def _idle_units():
    """What the sequencer reads and drives of each unit, none of them ever started here."""
    s = Signal
    unit = lambda **extra: SimpleNamespace(start=s(), done=s(), **extra)
    return SimpleNamespace(
        embed=unit(hdr_addr=s(50), span_addr=s(50), span_bytes=s(20)), rmsnorm=unit(), matvec=unit(bytes=s(32)), rope=unit(load_we=s()),
        kvwrite=unit(req=s(), req_addr=s(50), req_bytes=s(16), owed=s()), silu=unit(), store=unit(), argmax=unit(),
        attention=unit(req=s(), req_addr=s(50), req_bytes=s(50), burst_out=s(), pair_busy=s()),
        unpack=SimpleNamespace(clear=s(), issue=s(), last=s()))


class _Dut(Module):
    def __init__(self, params):
        self.rd = stream.Endpoint([("data", 128)])
        self.submodules.seq = seq = Sequencer(params, DRAM // isa.BEAT_BYTES, self.rd, _idle_units())
        self.held = Signal()          # the DRAM model holds beats not yet taken
        self.comb += [self.rd.ready.eq(seq.rd_ready), seq.drained.eq(1),
                      seq.flush_done.eq(~self.held & ~self.rd.valid)]


@passive
def _dram(dut, mem, rng, p):
    """Each read burst the sequencer sends, its beats offered some cycles (``p``), in order."""
    seq, rd, queue = dut.seq, dut.rd, []
    while True:
        if (yield seq.rd_start):
            beat, beats = (yield seq.req_beat), (yield seq.req_beats)
            queue += [int.from_bytes(mem[16 * b:16 * b + 16], "little") for b in range(beat, beat + beats)]
        have = bool(queue) and rng.random() < p
        yield rd.valid.eq(int(have))
        yield rd.data.eq(queue[0] if have else 0)
        yield dut.held.eq(int(bool(queue)))
        yield
        if have and (yield rd.ready):
            queue.pop(0)


def _run(params, mem, prog, nslots, seed, p=0.6):
    dut = _Dut(params)
    out = {}

    def bench():
        seq = dut.seq
        yield seq.prog.eq(prog)
        yield seq.table.eq(0)
        yield seq.nslots_in.eq(nslots)
        yield seq.go.eq(1)
        yield
        yield seq.go.eq(0)
        retired = 0
        for _ in range(20_000):
            yield
            retired += (yield seq.retire)
            if (yield seq.done):
                break
        else:
            raise AssertionError("the sequencer did not finish")
        regs = []
        for r in seq.regs:
            regs.append((yield r))
        out.update(err=(yield seq.err_code), addr=(yield seq.err_addr), retired=retired, regs=regs)
    run_simulation(dut, [bench(), _dram(dut, mem, random.Random(seed), p)])
    return out


def _program(rng):
    """Random control instructions: SETRs inside and outside a layer loop, then HALT."""
    body = [E("SETR", dst=rng.randrange(isa.N_REGS), addr=rng.getrandbits(32)) for _ in range(rng.randint(0, 3))]
    prog = [E("SETR", dst=rng.randrange(isa.N_REGS), addr=rng.getrandbits(32)) for _ in range(rng.randint(1, 3))]
    prog += [E("LOOP", n=rng.randint(1, 3)), *body, E("ENDLOOP")]
    return prog + [E("SETR", dst=rng.randrange(isa.N_REGS), addr=rng.getrandbits(32)), E("HALT")]


FAULTS = {
    "illegal op": lambda rng: [E("SETR", dst=1, addr=5), 0xEE],
    "SETR register": lambda rng: [E("SETR", dst=isa.N_REGS + rng.randrange(3), addr=1), E("HALT")],
    "nested LOOP": lambda rng: [E("LOOP", n=2), E("LOOP", n=2), E("ENDLOOP"), E("ENDLOOP"), E("HALT")],
    "ENDLOOP without LOOP": lambda rng: [E("SETR", dst=0, addr=3), E("ENDLOOP"), E("HALT")],
    "LOOP of 0": lambda rng: [E("LOOP", n=0), E("ENDLOOP"), E("HALT")],
    "past DRAM": lambda rng: [E("SETR", dst=0, addr=3)] * 3,          # no HALT: the fetch leaves DRAM
}


def _case(params, prog, nslots=1, at=None):
    """DRAM with the slot table at 0 and ``prog`` at ``at`` (default 0x100); the golden
    model's outcome of running it."""
    mem = bytearray(DRAM)
    mem[0:16 * params.slots] = isa.pack_slots([(1, 0, 0)] * params.slots)
    at = 0x100 if at is None else at
    blob = isa.program_bytes(prog)[:DRAM - at]
    mem[at:at + len(blob)] = blob
    golden = GoldenCore(DRAM, params)
    golden.dram[:] = mem
    err, addr = golden.run(at, 0, nslots)
    return mem, at, dict(err=err, addr=addr, retired=golden.retired, regs=golden.regs)


@pytest.mark.parametrize("fetch_beats", [0, 32])
@pytest.mark.parametrize("seed", range(3))
def test_control_programs_run_as_golden_runs_them(fetch_beats, seed):
    # Registers, the loop's repetitions (retired counts them) and a clean HALT.
    rng = random.Random(seed)
    params = isa.Params(slots=2, fetch_beats=fetch_beats)
    nslots = rng.randint(1, 2)
    mem, at, want = _case(params, _program(rng), nslots=nslots)
    assert want["err"] == 0
    assert _run(params, mem, at, nslots, seed) == want


@pytest.mark.parametrize("fetch_beats", [0, 32])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_are_reported_as_golden_reports_them(fetch_beats, fault):
    # The error code, the instruction's address and what retired before it.
    rng = random.Random(len(fault))
    params = isa.Params(slots=2, fetch_beats=fetch_beats)
    prog = FAULTS[fault](rng)
    mem, at, want = _case(params, prog, at=DRAM - 16 * len(prog) if fault == "past DRAM" else None)
    assert want["err"] != 0
    assert _run(params, mem, at, 1, seed=7) == want


@pytest.mark.parametrize("nslots", [0, 3])
def test_a_slot_count_the_core_does_not_have_is_refused(nslots):
    params = isa.Params(slots=2)
    mem, at, want = _case(params, [E("HALT")], nslots=nslots)
    assert want["err"] == isa.ERRORS["BAD_SLOTS"]
    assert _run(params, mem, at, nslots, seed=1) == want
