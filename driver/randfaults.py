"""Random programs that stop with one error, for differential testing of the faults: a valid
prefix, the faulting instruction, more instructions that must not run. Built on
driver/randprog.py's generator, under its rules (an error case fails on slot 0 and on the first
burst of its instruction, so nothing of the failing instruction reaches DRAM; but
``bad_pos_late``, whose earlier slots are written before a later slot's position fails).

``make_error_case(kind, seed, params)``: ``kind`` is one of ERROR_KINDS.
"""

import numpy as np

from driver.randprog import BEAT, _Gen, _finish
from spec import isa

# Error case kinds -> the error each stops with.
ERROR_KINDS = {
    "illegal_op":   "ILLEGAL_OP",   # an unassigned opcode
    "act_range":    "BAD_FIELD",    # an act range past act_depth, or n = 0
    "read_window":  "WINDOW",       # MATVEC/RMSNORM/LOAD/EMBED/ROPE reading past the end of DRAM
    "write_window": "WINDOW",       # STORE straddling the end of DRAM, KVWRITE/ARGMAX past it
    "bad_token":    "BAD_TOKEN",    # slot 0's token >= EMBED m
    "bad_pos":      "BAD_POS",      # SEQLEN lowered to slot 0's pos, then ROPE/KVWRITE/ATTN
    "bad_pos_late": "BAD_POS",      # SEQLEN between slot 0's pos and a later slot's (two slots or more)
    "bad_nslots":   "BAD_SLOTS",    # nslots 0 or above params.slots
    "endloop":      "BAD_FIELD",    # ENDLOOP without LOOP
    "nested_loop":  "BAD_FIELD",    # LOOP inside LOOP
    "loop_zero":    "BAD_FIELD",    # LOOP n = 0
    "bad_reg":      "BAD_FIELD",    # SETR of register >= N_REGS
    "bad_head":     "BAD_FIELD",    # head size odd/unaligned/above max_head, n odd, kv_mul 0
    "max_cols":     "BAD_FIELD",    # MATVEC m > max_cols
    "max_seq":      "BAD_FIELD",    # ATTN with pos < SEQLEN but >= max_seq
}


def _kvwrite_past_dram(gen, fmt, hs, dram_size):
    """(KV head 0's base for slot 0, the burst address golden faults at) for a KVWRITE whose
    first head's row lies past DRAM; with int8 rows, either its scale word's beat past the end
    or the scale word in DRAM's last beat and the row past it."""
    pos = gen.pos[0]
    row = isa.kv_row_offset(fmt, pos, hs)
    if fmt == "int16":
        head = dram_size - row + BEAT * gen.ri(0, 4)
        return head, head + row
    scale_beat = isa.kv8_scale_offset(pos, hs) & ~(BEAT - 1)
    if gen.chance(0.5):
        head = dram_size - scale_beat + BEAT * gen.ri(0, 4)
        return head, head + scale_beat
    head = dram_size - BEAT - scale_beat
    return head, (head + row) & ~(BEAT - 1)


def make_error_case(kind, seed, params=isa.Params(), dram_size=1 << 16):
    """A program that stops with the error ``kind`` (ERROR_KINDS) at a known instruction, after
    a valid prefix; the instructions after it must not run. The golden model's code and address
    are checked against the ones this function designed."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"make_error_case: unknown kind {kind!r}; kinds are {', '.join(ERROR_KINDS)}")
    p = params = params.validate()
    rng = np.random.default_rng([seed, list(ERROR_KINDS).index(kind)])
    gen = _Gen(rng, params, dram_size, pos_ops=kind != "max_seq", small=True)
    E = isa.encode
    if kind == "bad_pos_late":
        if p.slots < 2:
            raise ValueError("make_error_case: bad_pos_late needs two slots or more")
        gen.more_slots(2)
    gen.random_body(gen.ri(0, 4))
    pre = []                  # valid instructions right before the fault (not in the body's act map)
    want = {"code": isa.ERRORS[ERROR_KINDS[kind]], "addr": None}     # addr None: the faulting pc
    acts = lambda n: gen.ri(gen.lo, gen.hi - n)
    loaded = lambda n: _loaded(gen, n)
    nslots = None

    if kind == "illegal_op":
        op = int(rng.choice([o for o in range(256) if o not in isa.OPNAMES]))
        fault = E(op, flags=gen.ri(0, 255), dst=gen.ri(0, 0xffff), n=gen.ri(0, 0xffff), addr=gen.ri(0, 0xffffffff))
    elif kind == "act_range":
        depth = p.act_depth
        over = lambda n: gen.ri(depth - n + 1, depth - 1) if n > 1 else depth
        n = gen.ri(2, 64)
        fault = [lambda: E("RMSNORM", dst=over(n), src=acts(n), n=n, addr=gen.alloc(isa.fixed16_bytes(n))),
                 lambda: E("RMSNORM", dst=acts(n), src=acts(n), n=0, addr=gen.alloc(BEAT)),
                 lambda: E("MATVEC", dst=over(n), src=acts(16), n=n, m=16, addr=gen.alloc(isa.matrix_bytes(n, 16))),
                 lambda: E("MATVEC", dst=acts(n), src=over(n), n=16, m=n, addr=gen.alloc(isa.matrix_bytes(16, n))),
                 lambda: E("SILU", dst=acts(n), src=acts(n), src2=over(n), n=n),
                 lambda: E("STORE", src=over(n), n=n, m=isa.beats(4 * n), addr=gen.alloc(p.slots * 4 * n)),
                 lambda: E("LOAD", dst=over(n), n=n, m=0, addr=gen.alloc(4 * n)),
                 lambda: E("ARGMAX", src=over(n), n=n, addr=gen.alloc(p.slots * BEAT)),
                 lambda: E("EMBED", dst=0xffff, n=n, m=gen.vocab, addr=gen.alloc(isa.matrix_bytes(gen.vocab, n))),
                 lambda: E("ATTN", dst=over(8 * gen.nkv), src=acts(8 * gen.nkv), n=gen.nkv, m=8, src2=1, addr=0),
                 lambda: E("KVWRITE", src=depth - 8, n=2, m=8, addr=0),
                 ][gen.ri(0, 10)]()
    elif kind == "read_window":
        choice = gen.ri(0, 4)
        if choice == 0:
            rows, cols = gen.ri(1, 32), gen.ri(1, min(64, p.max_cols))
            nb = isa.matrix_bytes(rows, cols) // BEAT
            addr = dram_size - BEAT * gen.ri(1, nb - 1) if nb > 1 else dram_size
            fault = isa.encode("MATVEC", **_disjoint(gen, rows, cols), n=rows, m=cols, addr=addr)
            want["addr"] = addr
        elif choice == 1:
            n = gen.ri(1, 64)
            addr = dram_size - BEAT * gen.ri(1, isa.beats(2 * n))
            fault = isa.encode("RMSNORM", **_disjoint(gen, n, n), n=n, addr=addr)
            want["addr"] = addr
        elif choice == 2:
            n = gen.ri(5, 64)
            addr = dram_size - BEAT * gen.ri(1, isa.beats(4 * n) - 1)
            fault = E("LOAD", dst=acts(n), n=n, m=isa.beats(4 * n), addr=addr)
            want["addr"] = addr
        elif choice == 3:
            n = gen.ri(1, min(32, p.max_cols))
            _, (span, span_bytes), _ = isa.matrix_row_reads(gen.tokens[0], n)
            addr = dram_size - span - BEAT * gen.ri(0, span_bytes // BEAT - 1)   # slot 0's row ends past DRAM
            fault = E("EMBED", dst=acts(n), n=n, m=gen.vocab, addr=addr)
            want["addr"] = addr + span
        else:
            addr = dram_size + BEAT * gen.ri(0, 16)
            hs = 2 * gen.ri(1, min(8, p.max_head // 2))
            fault = isa.encode("ROPE", **_disjoint(gen, 2 * hs, 2 * hs), n=2 * hs, m=hs, addr=addr)
            want["addr"] = addr + gen.pos[0] * isa.rope_row_bytes(hs)
    elif kind == "write_window":
        choice = gen.ri(0, 2)
        if choice == 0:                                   # straddles the end: no byte moves
            n = gen.ri(5, 64)
            addr = dram_size - BEAT * gen.ri(1, isa.beats(4 * n) - 1)
            fault = E("STORE", src=acts(n), n=n, m=isa.beats(4 * n), addr=addr)
            want["addr"] = addr
        elif choice == 1:
            hs = int(rng.choice(gen.hs_kv))
            head, want["addr"] = _kvwrite_past_dram(gen, p.kv_format, hs, dram_size)
            # (int8: the scale word may be written before the row faults, so its elements are loaded)
            fault = E("KVWRITE", src=loaded(hs * gen.nkv), n=gen.nkv, m=hs, addr=head - gen.kv_bases[0])
        else:
            addr = dram_size + BEAT * gen.ri(0, 4)
            fault = E("ARGMAX", src=acts(16), n=16, addr=addr)
            want["addr"] = addr
    elif kind == "bad_token":
        m = gen.ri(0, gen.tokens[0])                      # slot 0's token is out of range
        n = gen.ri(1, min(32, p.max_cols))
        fault = E("EMBED", dst=acts(n), n=n, m=m, addr=gen.alloc(isa.matrix_bytes(max(1, m), n)))
    elif kind == "bad_pos":
        pre.append(E("SETR", dst=isa.REGS["SEQLEN"], addr=gen.ri(0, gen.pos[0])))
        hs = int(rng.choice(gen.hs_kv))
        fault = [lambda: isa.encode("ROPE", **_disjoint(gen, hs, hs), n=hs, m=hs, addr=gen.alloc(gen.seq * isa.rope_row_bytes(hs))),
                 lambda: E("KVWRITE", src=acts(hs), n=1, m=hs, addr=0),
                 lambda: isa.encode("ATTN", **_disjoint(gen, hs, hs), n=1, m=hs, src2=1, addr=0)][gen.ri(0, 2)]()
    elif kind == "bad_pos_late":
        fault = _bad_pos_late(gen, rng, pre, loaded)
    elif kind == "bad_nslots":
        nslots = 0 if rng.random() < 0.5 else gen.ri(p.slots + 1, p.slots + 16)
        fault = E("HALT")
        want["addr"] = "prog"
    elif kind == "endloop":
        if rng.random() < 0.5:
            pre += [E("LOOP", n=gen.ri(1, 3)), E("ENDLOOP")]
        fault = E("ENDLOOP")
    elif kind == "nested_loop":
        pre.append(E("LOOP", n=gen.ri(1, 3)))
        fault = E("LOOP", n=gen.ri(1, 3))
    elif kind == "loop_zero":
        fault = E("LOOP", n=0)
    elif kind == "bad_reg":
        fault = E("SETR", dst=gen.ri(isa.N_REGS, 0xffff), addr=gen.ri(0, 0xffffffff))
    elif kind == "bad_head":
        bad_kv = [4, 6, 12, 2 * p.max_head] + ([24, 40] if p.kv_format == "int8" else [])
        fault = [lambda: E("ROPE", dst=acts(6), src=acts(6), n=6, m=2 * gen.ri(0, 2) + 1, addr=0),   # odd head size
                 lambda: E("ROPE", dst=acts(6), src=acts(6), n=5, m=2, addr=0),                       # odd n
                 lambda: E("ROPE", dst=acts(6), src=acts(6), n=4, m=2 * p.max_head, addr=0),
                 lambda: E("KVWRITE", src=acts(48), n=1, m=int(rng.choice(bad_kv)), addr=0),
                 lambda: E("ATTN", dst=acts(48), src=acts(48), n=1, m=int(rng.choice([0] + bad_kv)), src2=1, addr=0),
                 lambda: E("ATTN", dst=acts(16), src=acts(16), n=1, m=8, src2=0, addr=0)][gen.ri(0, 5)]()
    elif kind == "max_cols":
        cols = p.max_cols + BEAT * gen.ri(0, 2) + gen.ri(1, 15)
        fault = E("MATVEC", dst=acts(4), src=gen.ri(0, 0xffff - cols), n=4, m=cols, addr=gen.alloc(BEAT))
    elif kind == "max_seq":
        # SEQLEN above the score buffer: slot 0 passes the BAD_POS check, fails max_seq.
        gen.pos[0] = p.max_seq + gen.ri(0, 3)
        pre.append(E("SETR", dst=isa.REGS["SEQLEN"], addr=p.max_seq + 8))
        fault = isa.encode("ATTN", **_disjoint(gen, 8, 8), n=1, m=8, src2=1, addr=0)

    post_start = len(gen.body)
    gen.random_body(gen.ri(1, 3))
    post = gen.body[post_start:]
    body = gen.body[:post_start]
    head = gen.prologue()
    program = head + body + pre + [fault] + post + gen.epilogue()
    fail_index = len(head) + len(body) + len(pre)
    if kind == "write_window":
        gen.dram[dram_size - 4096:] = gen.junk(4096)         # visible if a byte moved
    case = _finish(gen, program, seed, kind, nslots, fail_index)
    if want["addr"] is None:
        want["addr"] = case.prog + BEAT * fail_index
    elif want["addr"] == "prog":
        want["addr"] = case.prog
        case.fail_index = 0
    want["addr"] &= 0xfffffff0
    got = (case.expected_code, case.expected_addr)
    assert got == (want["code"], want["addr"]), \
        (f"make_error_case({kind!r}, {seed}): golden gives {isa.ERROR_NAMES.get(got[0])} at 0x{got[1]:x}, "
         f"designed {isa.ERROR_NAMES[want['code']]} at 0x{want['addr']:x}")
    return case


def _loaded(gen, n):
    """An act range the prologue loads, for a fault after a write that carries it (the earlier
    slots of bad_pos_late, an int8 scale word before its row's WINDOW): golden's act starts
    at zero, a core's holds what the last run left."""
    start = gen.ri(gen.lo, gen.hi - n)
    gen.reads.append((start, n))
    return start


def _bad_pos_late(gen, rng, pre, loaded):
    """Slot 0 passes and writes; a later slot (k or one before it) is at or past SEQLEN."""
    E = isa.encode
    k = gen.ri(1, gen.nslots - 1)
    gen.pos[0] = gen.ri(0, gen.seq - 2)
    gen.pos[k] = gen.ri(gen.pos[0] + 1, gen.seq - 1)
    pre.append(E("SETR", dst=isa.REGS["SEQLEN"], addr=gen.ri(gen.pos[0] + 1, gen.pos[k])))
    hs = int(rng.choice(gen.hs_kv))
    return [lambda: E("ROPE", **_disjoint(gen, hs * gen.nkv, hs * gen.nkv), n=hs * gen.nkv, m=hs,
                      addr=gen.alloc(gen.seq * isa.rope_row_bytes(hs))),
            lambda: E("KVWRITE", src=loaded(hs * gen.nkv), n=gen.nkv, m=hs, addr=0),
            lambda: E("KVWRITE", src=loaded(hs * gen.nkv), n=gen.nkv, m=hs, addr=0),
            lambda: E("ATTN", **_disjoint(gen, hs, hs), n=1, m=hs, src2=1, addr=0)][gen.ri(0, 3)]()


def _disjoint(gen, nd, ns):
    """dst and src act fields of sizes nd and ns that do not overlap."""
    dst, src = gen.ranges([("w", nd), ("r", ns)])
    return {"dst": dst, "src": src}
