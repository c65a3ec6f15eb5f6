"""Random programs: valid ones halt cleanly and define their results, error ones stop where designed."""

import collections
import dataclasses

import numpy as np

import pytest

from driver.golden import GoldenCore
from driver.randfaults import ERROR_KINDS, make_error_case
from driver.randprog import disassemble, make_case
from spec import isa

SMALL = isa.Params(slots=1, act_depth=256, max_cols=16, max_seq=8, max_head=8)
WIDE = isa.Params(slots=16, act_depth=65536)


def rerun(case, program=None, **state):
    """Run ``case`` (or ``program`` in its place) on a fresh golden core; ``state`` presets
    attributes (act, regs) to values a real core may hold from an earlier run."""
    core = GoldenCore(case.dram_size, case.params)
    core.dram[:] = case.dram
    if program is not None:
        core.dram[case.prog:case.prog + isa.BEAT_BYTES * len(program)] = isa.program_bytes(program)
    for name, value in state.items():
        setattr(core, name, value)
    return core, core.run(case.prog, case.slots, case.nslots)


def test_deterministic_by_seed():
    # The same seed gives the same case, byte for byte; another seed another case.
    for seed in (0, 7):
        a, b = make_case(seed), make_case(seed)
        assert (a.dram, a.program, a.expected_dram, a.nslots, a.retired) == \
               (b.dram, b.program, b.expected_dram, b.nslots, b.retired)
    assert make_case(1).dram != make_case(2).dram
    e1, e2 = make_error_case("read_window", 3), make_error_case("read_window", 3)
    assert (e1.dram, e1.expected_dram, e1.expected_addr) == (e2.dram, e2.expected_dram, e2.expected_addr)


@pytest.mark.parametrize("params", [isa.Params(), SMALL, WIDE, isa.Params(kv_format="int8", act_read_ports=4)],
                         ids=["default", "small", "wide", "int8-kv"])
def test_valid_cases(params):
    # Halts cleanly, stores results, stays small, and fits its DRAM and act window.
    for seed in range(15):
        case = make_case(seed, params)
        assert (case.expected_code, case.expected_addr) == (0, 0)
        assert len(case.dram) == len(case.expected_dram) == 1 << 20
        assert case.expected_dram != case.dram
        assert not any(case.dram[case.extent:]) and not any(case.expected_dram[case.extent:])
        assert 1 <= case.nslots <= params.slots
        assert case.beats < 20_000, f"seed {seed}: {case.beats} beats"
        ops = [isa.OPNAMES[isa.decode(w)["op"]] for w in case.program]
        assert ops[-1] == "HALT" and ops.count("LOOP") == ops.count("ENDLOOP")
        assert set(ops[:isa.N_REGS]) == {"SETR"}


def test_results_do_not_depend_on_leftover_state():
    # Every act word is loaded before it is read and every register set before use: garbage
    # from an earlier program in the scratchpad and the registers changes nothing.
    rng = np.random.default_rng(0)
    for seed in range(20):
        case = make_case(seed)
        act = rng.integers(-(1 << 31), 1 << 31, (case.params.slots, case.params.act_depth))
        regs = [int(r) for r in rng.integers(0, 1 << 32, isa.N_REGS)]
        core, result = rerun(case, act=act, regs=regs)
        assert result == (0, 0) and bytes(core.dram) == case.expected_dram, f"seed {seed}"


def test_coverage():
    # Over 40 seeds every opcode, both flags, loops and batches appear.
    ops, flags, nslots = collections.Counter(), collections.Counter(), set()
    for seed in range(40):
        case = make_case(seed)
        nslots.add(case.nslots)
        for w in case.program:
            f = isa.decode(w)
            ops[isa.OPNAMES[f["op"]]] += 1
            flags[f["flags"]] += 1
    assert set(ops) == set(isa.OPCODES)
    assert flags[isa.FLAG_LAYER] and flags[isa.FLAG_ACC] and flags[isa.FLAG_LAYER | isa.FLAG_ACC]
    assert len(nslots) == 4


@pytest.mark.parametrize("kind", list(ERROR_KINDS))
@pytest.mark.parametrize("params", [isa.Params(), SMALL, isa.Params(kv_format="int8", act_read_ports=4)],
                         ids=["default", "small", "int8-kv"])
def test_error_kinds(kind, params):
    # Each kind stops with its code (make_error_case checks the address it designed), and DRAM
    # holds exactly what the instructions before the fault wrote: nothing after it ran.
    if kind == "bad_pos_late" and params.slots < 2:
        with pytest.raises(ValueError, match="two slots"):
            make_error_case(kind, 0, params)
        return
    for seed in range(4):
        case = make_error_case(kind, seed, params)
        assert isa.ERROR_NAMES[case.expected_code] == ERROR_KINDS[kind]
        if kind == "bad_nslots":
            assert case.expected_dram == case.dram and case.retired == 0
            continue
        if ERROR_KINDS[kind] != "WINDOW":                          # WINDOW gives the burst's address
            assert case.expected_addr == case.prog + isa.BEAT_BYTES * case.fail_index
        prefix = case.program[:case.fail_index] + [isa.encode("HALT")]
        core, result = rerun(case, prefix)
        assert result == (0, 0)
        if kind == "bad_pos_late":
            # The slots before the failing one ran the instruction: DRAM is what the prefix and
            # the instruction on those slots alone write (the most slots that run clean).
            with_fault = case.program[:case.fail_index + 1] + [isa.encode("HALT")]
            clean = [j for j in range(1, case.nslots) if rerun(dataclasses.replace(case, nslots=j), with_fault)[1] == (0, 0)]
            assert clean and clean == list(range(1, clean[-1] + 1))
            core, _ = rerun(dataclasses.replace(case, nslots=clean[-1]), with_fault)
        lo, hi = case.prog, case.prog + isa.BEAT_BYTES * len(case.program)
        got, want = case.expected_dram, bytes(core.dram)
        assert got[:lo] == want[:lo] and got[hi:] == want[hi:], f"seed {seed}: DRAM differs from the prefix's"
        assert case.retired == core.retired - 1 - (kind == "bad_pos_late")     # HALT (and the instruction)


def test_write_window_moves_no_byte():
    # A STORE straddling the end of DRAM, or a KVWRITE/ARGMAX past it, leaves the last 4 KiB
    # (random bytes) exactly as they were.
    for seed in range(12):
        case = make_error_case("write_window", seed)
        assert case.expected_dram[-4096:] == case.dram[-4096:]
        assert case.expected_addr >= len(case.dram) - 4096


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        make_error_case("nope", 0)


def test_listing():
    case = make_case(5)
    lines = case.listing()
    assert len(lines) == len(case.program) and lines[-1].endswith("addr=0x0") and "HALT" in lines[-1]
    assert disassemble(isa.encode("MATVEC", isa.FLAG_LAYER | isa.FLAG_ACC, n=3, m=4, addr=0x40)).startswith("MATVEC  .LA")
