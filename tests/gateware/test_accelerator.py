"""The Accelerator against the golden model, bit for bit (tier b, core alone in Verilator):
random valid programs compare every DRAM byte and the retired count; designed error programs
compare the error code, the error address and DRAM (nothing written past the fault)."""

import pytest

from driver.randprog import ERROR_KINDS, make_case, make_error_case
from driver.verify import verify_core
from spec import isa

pytestmark = pytest.mark.sim
PARAMS = isa.TARGET_PARAMS["sim"]
DRAM = 1 << 20


@pytest.fixture(scope="module")
def core():
    from soc.coresim import CoreSim
    with CoreSim(PARAMS, DRAM) as sim:
        yield sim


def test_random_programs_match_golden():
    # A few hundred random valid programs (the CI share of the >= 10,000 run for the note).
    result = verify_core(300, seed=1000, params=PARAMS)
    assert result["programs"] == 300
    assert result["mismatches"] == 0, result.get("first_mismatch")


def test_random_programs_match_golden_on_the_ulx3s_config():
    # The board's core differs in structure (one read port, 4 MAC lanes, RMSNORM/SILU/ROPE
    # one slot at a time: element_units = 1 of 2 slots), so it is checked on its own.
    params = isa.TARGET_PARAMS["ulx3s"]
    assert params.element_units < params.slots and params.read_ports == 1
    result = verify_core(100, seed=2000, params=params)
    assert result["programs"] == 100
    assert result["mismatches"] == 0, result.get("first_mismatch")


def test_a_program_that_writes_its_own_instructions_runs_what_golden_runs(core):
    # The instruction buffer (Params.fetch_beats) holds the whole program after its first
    # fetch. A STORE over a later instruction must empty it, or the core would run the old word
    # (here an illegal opcode, which the golden model never sees).
    from driver.golden import GoldenCore
    assert PARAMS.fetch_beats >= 4
    E = isa.encode
    prog, data, slots = 0x1000, 0x2000, 0x3000
    program = [E("LOAD", dst=0, n=4, m=1, addr=data),             # act[0:4] = a HALT, as int32
               E("STORE", src=0, n=4, m=1, addr=prog + 3 * 16),   # written over instruction 3
               E("SETR", dst=0, addr=7),
               E(0xff)]                                           # illegal unless rewritten
    dram = bytearray(DRAM)
    dram[prog:prog + 64] = isa.program_bytes(program)
    dram[data:data + 16] = E("HALT").to_bytes(16, "little")
    golden = GoldenCore(DRAM, PARAMS)
    golden.dram[:] = dram
    assert golden.run(prog, slots, 1) == (0, 0)
    r = core.run(bytes(dram), prog, slots, 1)
    assert (isa.ERROR_NAMES[r.error], r.counters["retired"]) == ("NONE", golden.retired)
    assert r.dram == bytes(golden.dram)


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_error_programs_stop_like_golden(core, kind):
    # The core stops with the golden model's code and address and writes nothing after the fault.
    for seed in range(3):
        case = make_error_case(kind, seed, PARAMS, dram_size=DRAM)
        r = core.run(case.dram, case.prog, case.slots, case.nslots, seed=seed)
        assert (isa.ERROR_NAMES[r.error], r.err_addr) == (isa.ERROR_NAMES[case.expected_code], case.expected_addr)
        assert r.dram == case.expected_dram


def test_watchdog_stops_a_long_run_then_the_core_runs_clean(core):
    # TIMEOUT within the watchdog budget; the following run (same core, no reset) matches golden.
    big = make_case(11, PARAMS, dram_size=DRAM)
    r = core.run(big.dram, big.prog, big.slots, big.nslots, watchdog=300)
    assert isa.ERROR_NAMES[r.error] == "TIMEOUT"
    assert r.counters["cycles"] < 300 + 200
    r = core.run(big.dram, big.prog, big.slots, big.nslots)
    assert r.error == 0 and r.dram == big.expected_dram


def test_stalling_ports_do_not_change_results(core):
    # Heavy backpressure on both ports: same bytes, more cycles.
    case = make_case(5, PARAMS, dram_size=DRAM)
    fast = core.run(case.dram, case.prog, case.slots, case.nslots, stall_percent=0)
    slow = core.run(case.dram, case.prog, case.slots, case.nslots, stall_percent=60, seed=3)
    assert fast.dram == slow.dram == case.expected_dram
    assert slow.counters["cycles"] > fast.counters["cycles"]
    assert slow.counters["dram_stall"] > fast.counters["dram_stall"]


def test_verify_command_json():
    # `litetransformer verify --json`: the last stdout line is one JSON object with the counts.
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "driver.cli", "verify", "--target", "core", "--programs", "20",
                          "--seed", "77", "--json", "--quiet"], capture_output=True, text=True, timeout=600,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["programs"], result["mismatches"], result["seed"]) == (20, 0, 77)


def _attn_program(kvhead, kv_bases, positions, seqlen=8):
    """Two slots of a 4-head ATTN (2 KV heads, head size 8) on random K/V and queries, its
    result stored: the case for ATTN's early K requests (the next head's, the next slot's)."""
    import numpy as np
    rng = np.random.default_rng(7)
    E, R = isa.encode, isa.REGS
    prog, data, slots, out = 0x1000, 0x2000, 0x3000, 0x4000
    program = [E("LOAD", dst=0, n=32, m=8, addr=data),
               E("SETR", dst=R["SEQLEN"], addr=seqlen), E("SETR", dst=R["KVSTRIDE"], addr=0),
               E("SETR", dst=R["KVHEAD"], addr=kvhead), E("SETR", dst=R["VOFF"], addr=0x800),
               E("SETR", dst=R["ATTSCALE"], addr=round(2 ** 15 / 8 ** 0.5)),
               E("ATTN", dst=64, src=0, src2=2, n=4, m=8, addr=0),
               E("STORE", src=64, n=32, m=8, addr=out),
               E("HALT")]
    dram = bytearray(DRAM)
    dram[prog:prog + 16 * len(program)] = isa.program_bytes(program)
    dram[data:data + 256] = rng.integers(-1 << 18, 1 << 18, 64).astype("<i4").tobytes()
    dram[slots:slots + 32] = isa.pack_slots([(0, p, b) for p, b in zip(positions, kv_bases)])
    for base in kv_bases:
        for off in (0, kvhead, 0x800, 0x800 + kvhead):
            a = base + off
            if a + 128 <= DRAM:
                dram[a:a + 128] = rng.integers(-512, 512, 64).astype("<i2").tobytes()
    return bytes(dram), prog, slots


@pytest.mark.parametrize("name, kvhead, kv_bases, positions, error", [
    ("valid", 0x100, (0x10000, 0x20000), (3, 5), "NONE"),
    ("second KV head past DRAM", DRAM - 0x10000, (0x10000, 0x20000), (3, 5), "WINDOW"),
    ("second slot's K past DRAM", 0x100, (0x10000, DRAM - 16), (3, 5), "WINDOW"),
    ("second slot's pos >= SEQLEN", 0x100, (0x10000, 0x20000), (3, 8), "BAD_POS"),
])
def test_attn_requests_the_next_heads_keys_early_without_faulting_early(core, name, kvhead, kv_bases, positions, error):
    # ATTN asks for the next head's (or the next slot's first head's) K while the current
    # head finishes. Where that burst would leave DRAM or the next slot's position is bad, it
    # must not be asked early: the core faults at that head, as golden does, and the next
    # run starts clean.
    from driver.golden import GoldenCore
    dram, prog, slots = _attn_program(kvhead, kv_bases, positions)
    golden = GoldenCore(DRAM, PARAMS)
    golden.dram[:] = dram
    code, where = golden.run(prog, slots, 2)
    assert isa.ERROR_NAMES[code] == error
    r = core.run(dram, prog, slots, 2)
    assert (isa.ERROR_NAMES[r.error], r.err_addr) == (error, where)
    assert r.dram == bytes(golden.dram)
    valid, prog, slots = _attn_program(0x100, (0x10000, 0x20000), (3, 5))
    golden.dram[:] = valid
    assert golden.run(prog, slots, 2) == (0, 0)
    r = core.run(valid, prog, slots, 2)
    assert r.error == 0 and r.dram == bytes(golden.dram)
