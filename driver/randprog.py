"""Random programs for differential testing: the hardware against the golden model.

``make_case(seed, params)`` builds a small valid program with its DRAM image: SETRs of every
register, LOADs of random data into every activation word the program reads, a random body of
5-30 instructions (sometimes with a layer loop), STOREs of every activation word touched, HALT.
The golden model runs it; the Case holds the initial and the expected final DRAM.

Programs that stop with one error are driver/randfaults.py's, on this module's generator.

Rules the generator keeps so that a case tests the ISA and not an unspecified corner:
- an instruction's destination range never overlaps its source ranges (MATVEC FLAG_ACC reads
  its destination by definition); the ISA does not say yet whether partial overlap is allowed;
- a slot's STORE/LOAD stride holds its data, KV regions are per slot: no two writes of one
  instruction touch the same byte, so the order of slots inside an instruction does not matter;
- an error case fails on slot 0 and on the first burst of its instruction: nothing of the
  failing instruction reaches DRAM;
- MATVEC row shifts lie in [8, 30], so (row shift - input exponent) stays inside [-16, 63];
- padding bytes (matrix columns past m, unused shift/mantissa bytes, the high two bits of stored
  shifts, fixed16 headers, RoPE rows, the slot table past nslots) are sometimes random: the
  core must ignore them.
"""

import math
from dataclasses import dataclass

import numpy as np

from driver.golden import GoldenCore
from spec import isa, numerics as N

BEAT = isa.BEAT_BYTES
MATRIX_BUDGET = 64 << 10      # weight bytes streamed per case (a loop body counts once per layer)
ACT_BOUNDS = (1 << 8, 1 << 16, 1 << 20, 1 << 24, 1 << 24, 1 << 24, 1 << 30)


@dataclass
class Case:
    """One program with its DRAM before and after (the golden model's result)."""
    seed: int
    params: isa.Params
    kind: str                    # "valid" or one of driver.randfaults.ERROR_KINDS
    dram: bytes                  # initial DRAM, dram_size bytes
    prog: int                    # program byte address
    slots: int                   # slot table byte address
    nslots: int
    program: list                # instruction words
    expected_code: int
    expected_addr: int
    expected_dram: bytes
    retired: int                 # instructions the golden model completed (HALT included)
    extent: int                  # every byte from here on is zero before and after
    beats: int = 0               # DRAM beats the golden model moved: a rough cost
    fail_index: int = -1         # error cases: index of the faulting instruction in ``program``

    @property
    def dram_size(self):
        return len(self.dram)

    def listing(self):
        return [f"{self.prog + BEAT * i:08x}  {disassemble(w)}" for i, w in enumerate(self.program)]


def disassemble(word):
    f = isa.decode(word)
    name = isa.OPNAMES.get(f["op"], f"op{f['op']:#04x}")
    fl = "".join(c for c, b in (("L", isa.FLAG_LAYER), ("A", isa.FLAG_ACC)) if f["flags"] & b)
    return (f"{name:<8}{'.' + fl if fl else '':<4} dst={f['dst']} src={f['src']} src2={f['src2']} "
            f"n={f['n']} m={f['m']} addr=0x{f['addr']:x}")


class _CheckedCore(GoldenCore):
    """The golden model, counting DRAM beats and checking that activations stay int32 (the
    scratchpad's width: a value outside would be a golden-model bug)."""

    beats = 0

    def read(self, byte_addr, nbytes):
        data = super().read(byte_addr, nbytes)
        self.beats += len(data) // BEAT
        return data

    def write(self, byte_addr, data):
        super().write(byte_addr, data)
        self.beats += isa.beats(len(data))

    def write_bytes(self, byte_addr, data):
        super().write_bytes(byte_addr, data)
        self.beats += isa.beats(byte_addr % BEAT + len(data))


def _checked(name):
    base = getattr(GoldenCore, name)

    def op(self, ins):
        result = base(self, ins)
        if self.act.max() > (1 << 31) - 1 or self.act.min() < -(1 << 31):
            raise AssertionError(f"golden model: {name} left an activation outside int32")
        return result
    return op


for _name in isa.OPCODES:
    setattr(_CheckedCore, "op_" + _name.lower(), _checked("op_" + _name.lower()))

# The generator -----------------------------------------------------------------------------------

class _Gen:
    """Builds one program: DRAM allocations, activation ranges, instructions."""

    def __init__(self, rng, params, dram_size, pos_ops=True, small=False):
        self.rng, self.p, self.dram_size, self.small = rng, params, dram_size, small
        self.dram = bytearray(dram_size)
        self.at = BEAT * int(rng.integers(0, 64))
        self.body = []                       # instruction words
        self.reads, self.writes = [], []     # act intervals (start, n)
        self.written_starts = []
        self.written = []                    # (start, n) of every write, for exact reuse
        self.stores = []                     # (addr, m, n) of unflagged body STOREs, for LOADs
        self.budget = MATRIX_BUDGET // 8 if small else MATRIX_BUDGET
        self.pos_ops = pos_ops
        self._setup()

    # Random helpers -------------------------------------------------------------------------------
    def ri(self, lo, hi):
        """Integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p):
        return self.rng.random() < p

    def junk(self, n):
        return self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def alloc(self, nbytes, fill=None):
        """Beat-aligned DRAM for ``nbytes``, after a small random gap; ``fill`` bytes or junk."""
        self.at += BEAT * self.ri(0, 3)
        addr, size = self.at, isa.beats(nbytes) * BEAT
        self.at += size
        if self.at > self.dram_size - 4096:
            raise MemoryError("randprog: case does not fit its DRAM")
        self.dram[addr:addr + size] = self.junk(size) if fill is None else bytes(fill) + self.junk(size - len(fill))
        return addr

    def int32s(self, n):
        bound = ACT_BOUNDS[self.ri(0, len(ACT_BOUNDS) - 1)]
        v = self.rng.integers(-bound + 1, bound, n)
        if self.chance(0.1):                                      # extremes, -2**31 saturates on LOAD
            v[self.rng.integers(0, n, max(1, n // 8))] = self.rng.choice([-(1 << 31), -(1 << 31) + 1, (1 << 31) - 1])
        return v.astype("<i4").tobytes()

    def int16s(self, n, bits=None):
        bound = 1 << (bits or self.ri(4, 15))
        return self.rng.integers(-bound, bound, n).clip(-32768, 32767).astype("<i2").tobytes()

    # Case geometry: registers, slots, KV regions ---------------------------------------------------
    def _setup(self):
        p = self.p
        self.nslots = self.ri(1, min(p.slots, 4) if self.small else p.slots)
        self.vocab = self.ri(2, 64)
        self.hs_kv = [h for h in (8, 16) if h <= p.max_head]
        hsmax = max(self.hs_kv)
        self.seq = self.ri(8, min(12 if self.small else 24, p.max_seq))
        self.nkv = self.ri(1, 2 if self.small else 3)
        self.lmax = 2 if self.small else self.ri(2, 3)
        kvhead = self.seq * hsmax * 2 + BEAT * self.ri(0, 2)
        voff = self.nkv * kvhead + BEAT * self.ri(0, 2)
        kvstride = 2 * voff + BEAT * self.ri(0, 2)
        self.wstride = BEAT * (self.ri(64, 128) if self.small else self.ri(128, 512))
        hs_scale = int(self.rng.choice(self.hs_kv))
        self.regs = {"WSTRIDE": self.wstride, "KVSTRIDE": kvstride, "KVHEAD": kvhead, "VOFF": voff,
                     "SEQLEN": self.seq, "ATTSCALE": round((1 << 15) / math.sqrt(hs_scale)) if self.chance(0.7)
                     else self.ri(1, 0xffff)}
        self.tokens = [self.ri(0, self.vocab - 1) for _ in range(self.nslots)]
        self.pos = [self.ri(0, self.seq - 1) for _ in range(self.nslots)]
        self.slot_addr = self.alloc(p.slots * BEAT)
        self.kv_bases = [self.alloc(self.lmax * kvstride, self.int16s(self.lmax * kvstride // 2))
                         for _ in range(self.nslots)]
        self.window()

    def more_slots(self, n):
        """At least ``n`` slots (before the program is generated: its operands size for them)."""
        while self.nslots < n:
            self.nslots += 1
            self.tokens.append(self.ri(0, self.vocab - 1))
            self.pos.append(self.ri(0, self.seq - 1))
            kvstride = self.regs["KVSTRIDE"]
            self.kv_bases.append(self.alloc(self.lmax * kvstride, self.int16s(self.lmax * kvstride // 2)))

    def window(self):
        """The activation words this case uses: sometimes at the top of the scratchpad."""
        depth = self.p.act_depth
        span = min(depth, int(self.rng.choice([256, 512, 1024])))
        self.lo = int(self.rng.choice([0, depth - span, self.ri(0, depth - span)]))
        self.hi = self.lo + span

    def slot_table(self):
        rows = [(t, p, kv) for t, p, kv in zip(self.tokens, self.pos, self.kv_bases)]
        table = isa.pack_slots(rows)
        if self.chance(0.5):
            table += self.junk(BEAT * (self.p.slots - len(rows)))
        self.dram[self.slot_addr:self.slot_addr + len(table)] = table

    # Activation ranges ---------------------------------------------------------------------------
    def ranges(self, specs, pinned=None):
        """Starts for operands ``specs`` = [(kind, n)], kind 'r', 'w' or 'rw': writes overlap
        nothing else, reads may overlap each other. ``pinned``: {operand index: start}, tried
        first. None if no placement was found."""
        for attempt in range(100):
            starts = []
            for x, (kind, n) in enumerate(specs):
                fits = [s for s in self.written_starts if self.lo <= s <= self.hi - n]
                if pinned and x in pinned and attempt < 50:
                    starts.append(pinned[x])
                elif kind == "r" and fits and self.chance(0.6):
                    starts.append(int(self.rng.choice(fits)))
                else:
                    starts.append(self.ri(self.lo, self.hi - n))
            ok = all(a == "r" and b == "r" or s1 + n1 <= s2 or s2 + n2 <= s1
                     for i, ((a, n1), s1) in enumerate(zip(specs, starts))
                     for (b, n2), s2 in list(zip(specs, starts))[i + 1:])
            if ok:
                return starts
        return None

    def emit(self, op, flags=0, acts=(), pinned=None, **fields):
        """acts: [(field, kind, n)]; places them, records them, appends the instruction."""
        starts = self.ranges([(k, n) for _, k, n in acts], pinned)
        if starts is None:
            return False
        reads, writes = [], []
        for (name, kind, n), s in zip(acts, starts):
            fields[name] = s
            (reads if "r" in kind else []).append((s, n))
            (writes if "w" in kind else []).append((s, n))
        self.reads += reads
        self.writes += writes
        self.written_starts += [s for s, _ in writes]
        self.written += writes
        self.body.append(isa.encode(op, flags, **fields))
        return True

    def reuse(self, limit):
        """Often an earlier write's exact range (start, n) with n <= limit, else None: MATVEC
        and RMSNORM then read a vector the core has gathered figures for as it was written
        (gateware/core/writestats.py), or one written over since."""
        fits = [(s, n) for s, n in self.written if n <= limit]
        if fits and self.chance(0.5):
            return fits[-1] if self.chance(0.5) else fits[self.ri(0, len(fits) - 1)]
        return None

    def vec(self, limit=256, parts=2):
        """A vector length for an instruction with ``parts`` disjoint operands."""
        top = max(1, min(limit, (self.hi - self.lo) // parts))
        return self.ri(1, top) if self.chance(0.7) else self.ri(1, max(1, top // 8))

    # DRAM operands ------------------------------------------------------------------------------
    def operand(self, make, layers, flag):
        """Allocate a table/weight operand; with ``flag`` one copy per layer, WSTRIDE apart."""
        blobs = [make() for _ in range(layers if flag else 1)]
        size = len(blobs[0])
        addr = self.alloc((len(blobs) - 1) * self.wstride + size, b"")
        for l, blob in enumerate(blobs):
            self.dram[addr + l * self.wstride:addr + l * self.wstride + size] = blob
        return addr

    def fixed16(self, n, shift_lo, shift_hi):
        head = bytearray(self.junk(BEAT) if self.chance(0.3) else bytes(BEAT))
        head[0] = self.ri(shift_lo, shift_hi) | (self.ri(0, 3) << 6 if self.chance(0.3) else 0)
        body = self.int16s(n, self.ri(8, 15))
        pad = BEAT * isa.beats(2 * n) - 2 * n
        return bytes(head) + body + (self.junk(pad) if self.chance(0.3) else bytes(pad))

    def matrix(self, rows, cols, shifts=(8, 30)):
        cp = isa.matvec_cols_padded(cols)
        q = self.rng.integers(-128, 128, (rows, cp))
        if self.chance(0.6):
            q[:, cols:] = 0
        lo = 0 if self.chance(0.1) else 1
        mant = self.rng.integers(lo, 256, (rows, cp // N.WEIGHT_GROUP))
        shift = self.rng.integers(shifts[0], shifts[1] + 1, rows)
        blob = bytearray(isa.pack_matrix(q, mant, shift))
        if self.chance(0.3):                  # junk in the bytes the core must ignore
            off = 0
            for r0 in range(0, rows, isa.ROW_BLOCK):
                k = min(isa.ROW_BLOCK, rows - r0)
                for i in range(k):
                    blob[off + i] |= self.ri(0, 3) << 6
                blob[off + k:off + BEAT] = self.junk(BEAT - k)
                off += BEAT
                nbeats = k * cp // isa.LANES
                for b0 in range(0, nbeats, isa.SUPERBLOCK):
                    kb = min(isa.SUPERBLOCK, nbeats - b0)
                    blob[off + 2 * kb:off + BEAT] = self.junk(BEAT - 2 * kb)
                    off += BEAT * (1 + kb)
            assert off == len(blob)
        return bytes(blob)

    def rope_table(self, hs):
        theta = self.rng.uniform(-math.pi, math.pi, (self.seq, hs // 2))
        blob = bytearray(isa.pack_rope(N.to_fixed(np.cos(theta), N.ROPE_FRAC), N.to_fixed(np.sin(theta), N.ROPE_FRAC)))
        row = isa.rope_row_bytes(hs)
        if self.chance(0.3) and row > 2 * hs:
            for p in range(self.seq):
                blob[p * row + 2 * hs:(p + 1) * row] = self.junk(row - 2 * hs)
        return bytes(blob)

    # Instructions -------------------------------------------------------------------------------
    def g_embed(self, layers=1, flag=False):
        n = self.vec(min(128, self.p.max_cols), 1)
        m = self.vocab + self.ri(0, 3)
        if flag and isa.matrix_bytes(m, n) > self.wstride:
            flag = False
        # Shifts down to 0: the largest row values (q * mant * 2**16) just fit int32.
        addr = self.operand(lambda: self.matrix(m, n, shifts=(0, 40)), layers, flag)
        return self.emit("EMBED", isa.FLAG_LAYER * flag, [("dst", "w", n)], n=n, m=m, addr=addr)

    def g_rmsnorm(self, layers=1, flag=False):
        again = self.reuse((self.hi - self.lo) // 2)
        n = again[1] if again else self.vec()
        if flag and isa.fixed16_bytes(n) > self.wstride:
            flag = False
        addr = self.operand(lambda: self.fixed16(n, 10, 20), layers, flag)
        return self.emit("RMSNORM", isa.FLAG_LAYER * flag, [("src", "r", n), ("dst", "w", n)],
                         pinned={0: again[0]} if again else None, n=n, addr=addr)

    def g_matvec(self, layers=1, flag=False):
        rows = self.ri(1, 64)
        again = self.reuse(min(256, self.p.max_cols, self.hi - self.lo - 1))
        cols = again[1] if again else self.vec(min(256, self.p.max_cols), 1)
        rows = min(rows, max(1, self.hi - self.lo - cols))
        while rows > 1 and isa.matrix_bytes(rows, cols) * layers > self.budget:
            rows, cols = max(1, rows // 2), max(1, cols // 2)
        size = isa.matrix_bytes(rows, cols)
        if size * layers > self.budget:
            return False
        self.budget -= size * layers
        if flag and size > self.wstride:
            flag = False
        acc = self.chance(0.4)
        addr = self.operand(lambda: self.matrix(rows, cols), layers, flag)
        return self.emit("MATVEC", isa.FLAG_LAYER * flag | isa.FLAG_ACC * acc,
                         [("src", "r", cols), ("dst", "rw" if acc else "w", rows)],
                         pinned={0: again[0]} if again else None, n=rows, m=cols, addr=addr)

    def g_rope(self, layers=1, flag=False):
        hs = int(self.rng.choice([h for h in (2, 4, 8, 16, 16, 32, 64) if h <= self.p.max_head]))
        n = 2 * self.vec(128, 4)
        if flag and self.seq * isa.rope_row_bytes(hs) > self.wstride:
            flag = False
        addr = self.operand(lambda: self.rope_table(hs), layers, flag)
        return self.emit("ROPE", isa.FLAG_LAYER * flag, [("src", "r", n), ("dst", "w", n)], n=n, m=hs, addr=addr)

    def kv_addr(self, flag, voff=False):
        layer = 0 if flag else self.ri(0, self.lmax - 1) * self.regs["KVSTRIDE"]
        return layer + (self.regs["VOFF"] if voff else 0)

    def g_kvwrite(self, layers=1, flag=False):
        hs = int(self.rng.choice(self.hs_kv))
        heads = self.ri(1, self.nkv)
        return self.emit("KVWRITE", isa.FLAG_LAYER * flag, [("src", "r", heads * hs)], n=heads, m=hs,
                         addr=self.kv_addr(flag, self.chance(0.5)))

    def g_attn(self, layers=1, flag=False):
        hs = int(self.rng.choice(self.hs_kv))
        kv_mul = self.ri(1, 4)
        heads = self.ri(1, self.nkv * kv_mul)
        while heads > 1 and 2 * heads * hs > self.hi - self.lo:
            heads //= 2
        return self.emit("ATTN", isa.FLAG_LAYER * flag, [("src", "r", heads * hs), ("dst", "w", heads * hs)],
                         n=heads, m=hs, src2=kv_mul, addr=self.kv_addr(flag))

    def g_silu(self, layers=1, flag=False):
        n = self.vec(256, 3)
        return self.emit("SILU", 0, [("src", "r", n), ("src2", "r", n), ("dst", "w", n)], n=n)

    def g_store(self, layers=1, flag=False):
        n = self.vec(256, 1)
        m = isa.beats(4 * n) + self.ri(0, 2)
        size = (self.nslots - 1) * m * BEAT + isa.beats(4 * n) * BEAT
        if flag and size > self.wstride:
            flag = False
        addr = self.alloc((layers - 1) * self.wstride * flag + size)
        if not flag:
            self.stores.append((addr, m, n))
        return self.emit("STORE", isa.FLAG_LAYER * flag, [("src", "r", n)], n=n, m=m, addr=addr)

    def g_argmax(self, layers=1, flag=False):
        # Often a range just written (a MATVEC's: the core then takes its maximum from the
        # write statistics, gateware/core/writestats.py).
        again = self.reuse(256)
        n = again[1] if again else self.vec(256, 1)
        if flag and self.nslots * BEAT > self.wstride:
            flag = False
        addr = self.alloc((layers - 1) * self.wstride * flag + self.nslots * BEAT)
        # Half of them against the held results (a classifier's later row chunks), with an
        # index base (the chunk's first row) up to the field's largest.
        acc, base = self.chance(0.5), (self.ri(0, 0xffff) if self.chance(0.5) else 0)
        return self.emit("ARGMAX", isa.FLAG_LAYER * flag | isa.FLAG_ACC * acc, [("src", "r", n)], n=n, m=base,
                         addr=addr, pinned={0: again[0]} if again else None)

    def g_load(self, layers=1, flag=False):
        if self.stores and not flag and self.chance(0.3):        # read back an earlier STORE
            addr, m, n = self.stores[self.ri(0, len(self.stores) - 1)]
            n = self.ri(1, n)
        else:
            n = self.vec(256, 1)
            m = self.ri(0, isa.beats(4 * n) + 2)
            size = (self.nslots - 1) * m * BEAT + isa.beats(4 * n) * BEAT
            if flag and size > self.wstride:
                flag = False
            count = ((layers - 1) * self.wstride * flag + size) // 4
            addr = self.alloc(4 * count, self.int32s(count))
        return self.emit("LOAD", isa.FLAG_LAYER * flag, [("dst", "w", n)], n=n, m=m, addr=addr)

    def g_rewrite(self, layers=1, flag=False):
        """A MATVEC whose weights the program rewrites just before it: RMSNORM, LOAD of a second
        matrix's bytes, STORE of them over the first, MATVEC on the first's address. Golden
        reads the weights when the MATVEC runs; a core that read them ahead (during the
        RMSNORM) must read them again."""
        rows, cols = self.ri(1, 8), self.ri(1, min(32, self.p.max_cols))
        size = isa.matrix_bytes(rows, cols)
        words = size // 4                    # at most 76 (19 beats: every slot LOADs and STOREs them)
        if words > (self.hi - self.lo) // 4 or 2 * size > self.budget:
            return False
        self.budget -= 2 * size
        # Every slot LOADs the same words (m = 0) and STOREs them size bytes apart: slot 0's
        # copy lands on the matrix, the others' after it.
        addr = self.alloc(self.nslots * size, self.matrix(rows, cols))
        other = self.alloc(size, self.matrix(rows, cols))
        if not self.g_rmsnorm():
            return False
        if not self.emit("LOAD", 0, [("dst", "w", words)], n=words, m=0, addr=other):
            return False
        start = self.written[-1][0]
        if not self.emit("STORE", 0, [("src", "r", words)], pinned={0: start}, n=words, m=size // BEAT, addr=addr):
            return False
        acc = self.chance(0.4)
        return self.emit("MATVEC", isa.FLAG_ACC * acc, [("src", "r", cols), ("dst", "rw" if acc else "w", rows)],
                         n=rows, m=cols, addr=addr)

    OPS = {"EMBED": 1, "RMSNORM": 2, "MATVEC": 3, "ROPE": 2, "KVWRITE": 2, "ATTN": 2, "SILU": 2,
           "STORE": 1, "ARGMAX": 1, "LOAD": 1, "REWRITE": 0.5}
    POS_OPS = ("ROPE", "KVWRITE", "ATTN")
    LAYERED = ("EMBED", "RMSNORM", "MATVEC", "ROPE", "KVWRITE", "ATTN", "STORE", "ARGMAX", "LOAD")

    def random_op(self, layers=1, in_loop=False):
        names = [k for k in self.OPS if self.pos_ops or k not in self.POS_OPS]
        w = np.array([self.OPS[k] for k in names], float)
        name = names[int(self.rng.choice(len(names), p=w / w.sum()))]
        flag = name in self.LAYERED and (self.chance(0.7) if in_loop else self.chance(0.05))
        return getattr(self, "g_" + name.lower())(layers, flag)

    def random_body(self, count):
        while count > 0:
            if count >= 3 and self.chance(0.15):
                layers = self.ri(1, self.lmax)
                inner = self.ri(1, min(5, count - 2))
                self.body.append(isa.encode("LOOP", n=layers))
                for _ in range(inner):
                    self.random_op(layers, in_loop=True)
                self.body.append(isa.encode("ENDLOOP"))
                count -= inner + 2
            else:
                count -= bool(self.random_op())

    # Assembly -----------------------------------------------------------------------------------
    @staticmethod
    def merged(intervals, chunk=512):
        out = []
        for s, n in sorted(intervals):
            if out and s <= out[-1][1]:
                out[-1][1] = max(out[-1][1], s + n)
            else:
                out.append([s, s + n])
        return [(a, min(chunk, b - a)) for s0, b in out for a in range(s0, b, chunk)]

    def prologue(self):
        names = list(self.regs)
        self.rng.shuffle(names)
        words = []
        if self.chance(0.3):                                     # overwritten before use
            words.append(isa.encode("SETR", dst=self.ri(0, isa.N_REGS - 1), addr=self.ri(0, 0xffffffff)))
        words += [isa.encode("SETR", dst=isa.REGS[r], addr=self.regs[r]) for r in names]
        for s, n in self.merged(self.reads):
            m = isa.beats(4 * n) + self.ri(0, 1)
            count = ((self.nslots - 1) * m * BEAT + isa.beats(4 * n) * BEAT) // 4
            words.append(isa.encode("LOAD", dst=s, n=n, m=m, addr=self.alloc(4 * count, self.int32s(count))))
        return words

    def epilogue(self):
        words = []
        for s, n in self.merged(self.reads + self.writes):
            m = isa.beats(4 * n)
            words.append(isa.encode("STORE", src=s, n=n, m=m, addr=self.alloc(self.nslots * m * BEAT)))
        return words + [isa.encode("HALT")]


def _finish(gen, program, seed, kind, nslots=None, fail_index=-1):
    """Place the program, run the golden model, package the Case."""
    prog = gen.alloc(len(program) * BEAT, isa.program_bytes(program))
    gen.slot_table()
    extent = gen.dram_size if kind == "write_window" else gen.at
    initial = bytes(gen.dram)
    core = _CheckedCore(gen.dram_size, gen.p)
    core.dram[:] = initial
    nslots = gen.nslots if nslots is None else nslots
    code, addr = core.run(prog, gen.slot_addr, nslots)
    assert not any(core.dram[extent:])
    return Case(seed=seed, params=gen.p, kind=kind, dram=initial, prog=prog, slots=gen.slot_addr, nslots=nslots,
                program=program, expected_code=code, expected_addr=addr, expected_dram=bytes(core.dram),
                retired=core.retired, extent=extent, beats=core.beats, fail_index=fail_index)


def make_case(seed, params=isa.Params(), dram_size=1 << 20):
    """A random valid program (the golden model halts cleanly) and its DRAM."""
    params = params.validate()
    gen = _Gen(np.random.default_rng(seed), params, dram_size)
    gen.random_body(gen.ri(5, 30))
    case = _finish(gen, gen.prologue() + gen.body + gen.epilogue(), seed, "valid")
    assert (case.expected_code, case.expected_addr) == (0, 0), \
        f"randprog seed {seed}: golden stopped with {isa.ERROR_NAMES[case.expected_code]} at 0x{case.expected_addr:x}"
    return case
