"""The transformer core's instruction set, parameters and DRAM formats.

One instruction is one 128-bit DRAM beat (little-endian fields below). The core runs the
program from DRAM at ``prog`` until HALT; every instruction works on all active batch slots.
Activations live on chip, one int32 Q16 scratchpad of ``act_depth`` words per slot; weights,
tables and the KV cache live in DRAM and are addressed in bytes from the start of DRAM.

Slot table (``slots`` CSR, one beat per slot): token u32, pos u32, kv_base u32, 0.
Addresses are summed in bytes (fields, registers, slot kv_base, pos offsets) and the sum's low
4 bits are dropped. Stored shift bytes (row shifts, fixed16 headers) use their low 6 bits.
The golden model (driver/golden.py) is the executable description of every opcode.
"""

from dataclasses import dataclass, asdict

import numpy as np

BEAT_BYTES = 16          # one native-port beat at 128 bits; also one instruction
LANES      = 16          # int8 weights per beat (the matrix layout); a core multiplies
                         # Params.mac_lanes of them per slot per cycle

# Instruction fields: name -> (lsb, width) -------------------------------------------------------
FIELDS = {
    "op":    (0,   8),
    "flags": (8,   8),
    "dst":   (16, 16),   # act word address
    "src":   (32, 16),   # act word address
    "src2":  (48, 16),   # act word address, or a small count (ATTN: kv_mul)
    "n":     (64, 16),
    "m":     (80, 16),
    "addr":  (96, 32),   # DRAM byte address, beat aligned
}

# Opcodes ----------------------------------------------------------------------------------------
OPCODES = {
    "HALT":    0x00,   # stop; done
    "SETR":    0x01,   # reg[dst] = addr
    "LOOP":    0x02,   # begin the layer loop: n iterations, layer = 0
    "ENDLOOP": 0x03,   # layer += 1; back to the instruction after LOOP while layer < n
    "EMBED":   0x10,   # act[dst:+n] = row `token` of the (m, n) matrix at addr (m = vocab, n <= max_cols)
    "RMSNORM": 0x11,   # act[dst:+n] = rmsnorm(act[src:+n]) with the fixed16 gains at addr
    "MATVEC":  0x12,   # act[dst:+n] (+)= W[n, m] @ act[src:+m], W streamed from addr
    "ROPE":    0x13,   # act[dst:+n] = rope(act[src:+n]) with head size m, table row `pos` at addr
    "KVWRITE": 0x14,   # cache[kvh][pos][:] = to_kv(act[src + kvh*m:+m]) for kv heads kvh < n
    "ATTN":    0x15,   # act[dst + h*m:+m] = softmax(q_h . K) . V for heads h < n (m = head size,
                       # src2 = query heads per KV head)
    "SILU":    0x16,   # act[dst:+n] = silu(act[src:+n]) * act[src2:+n]
    "STORE":   0x17,   # DRAM[addr + slot*m*16:] = act[src:+n] as int32
    "ARGMAX":  0x18,   # DRAM[addr + slot*16] = (m + argmax act[src:+n], max, 0, 0); FLAG_ACC: vs the last
    "LOAD":    0x19,   # act[dst:+n] = DRAM[addr + slot*m*16:] as int32 (saturated)
}
OPNAMES = {v: k for k, v in OPCODES.items()}
# Cycle counter classes: one per opcode, plus fetching and decoding (CSR class_sel order).
CLASSES = list(OPCODES) + ["FETCH"]

# Flags.
FLAG_LAYER = 1 << 0   # addr += layer * reg[WSTRIDE] (KVWRITE, ATTN: layer * reg[KVSTRIDE])
FLAG_ACC   = 1 << 1   # MATVEC: dst = saturate(dst + W @ x); ARGMAX: keep the held result unless beaten

# Registers written by SETR.
REGS = {
    "WSTRIDE":  0,    # bytes between layers' weight blocks
    "KVSTRIDE": 1,    # bytes between layers in a slot's KV cache
    "KVHEAD":   2,    # bytes between KV heads within a layer (seq_len * head_size * 2)
    "VOFF":     3,    # bytes from a layer's K cache to its V cache
    "SEQLEN":   4,    # positions the RoPE table and the KV cache hold
    "ATTSCALE": 5,    # round(2**15 / sqrt(head_size))
}
N_REGS = len(REGS)

# Error codes (status CSR); the core stops at the first one.
ERRORS = {
    "NONE":       0,
    "ILLEGAL_OP": 1,   # unknown opcode
    "BAD_FIELD":  2,   # a field out of range: act range, sizes, alignment, loop nesting
    "WINDOW":     3,   # a DRAM access outside [0, dram_size)
    "BAD_TOKEN":  4,   # slot token >= vocab (EMBED m)
    "BAD_POS":    5,   # slot pos >= SEQLEN
    "BAD_SLOTS":  6,   # nslots 0 or above the core's batch slots
    "TIMEOUT":    7,   # the watchdog's cycle budget ran out
}
ERROR_NAMES = {v: k for k, v in ERRORS.items()}

# Parameters -------------------------------------------------------------------------------------

# Params.write_ports with one write port per bank of an 8-bank DDR3 (the simulated SoC's, the
# Arty's): LiteDRAM's crossbar holds a port while a bank still has its command, so only a port
# per bank lets writes to every bank wait in the controller at once.
WRITE_PORTS_PER_BANK = 8

@dataclass(frozen=True)
class Params:
    """Size of one core: batch slots, MAC lanes and on-chip buffer depths. The weight layout is
    fixed by the 128-bit beat (LANES int8); ``mac_lanes`` of them are multiplied per slot per
    cycle, so a beat takes LANES // mac_lanes cycles (a board whose DRAM delivers fewer than
    16 bytes per cycle loses nothing with fewer lanes). MATVEC requests its weights before its
    two passes over the input (2 x its columns in cycles); ``read_fifo_depth`` beats per read
    port is what DRAM can deliver meanwhile, so a depth that covers the passes lets the stream
    run without a gap between them and the multiplies. ``read_ports``: the read stream goes
    through 1 or 2 LiteDRAM ports (two alternate by bank, see gateware/readstream.py);
    ``write_ports`` likewise for the write stream: 1, 2 (a write to one bank need not wait for
    the row another bank is opening, which KVWRITE's one-beat heads, each in a row of its own,
    spend most of their time on) or ``WRITE_PORTS_PER_BANK`` (one port per bank of the DDR3:
    a port's writes never wait for another bank's, and the compiler spreads each layer's KV
    heads over the banks, driver/compiler.py).
    ``element_units``: copies of the RMSNORM, SILU and ROPE datapaths; that many slots run
    each of those instructions at once, in groups of that many slots (0: one copy per slot).
    ``act_read_ports``: read ports of each slot's activation scratchpad (2 or 4); MATVEC's
    input pass quantises that many elements a cycle and ARGMAX compares that many; with 4,
    KVWRITE and ATTN's query load pack four elements a cycle and KVWRITE's beats stream out
    while the next are read (a RAM copy per two ports on an FPGA).
    ``write_stats``: the core gathers each written vector's largest |x| and sum of squares as
    it is written, so a MATVEC or RMSNORM reading it skips its first pass (a squarer per slot;
    worth it where the element work, not DRAM's bandwidth, decides a token's time).
    ``fast_exponent``: MATVEC's input exponent from all its bounds compared at once (two
    cycles, ~0.5 k LUT4 per slot on an ECP5) instead of one bound per two cycles.
    ``attn_overlap``: ATTN overlaps consecutive heads further: while a head's scores are
    computed its V and then the next head's K go into the read queue (each where its burst
    lies inside DRAM), and the next head starts as the last V beat is taken.
    ``attn_pairs`` (needs attn_overlap and four scratchpad ports): ATTN takes a slot's heads two
    at a time where every K and V burst of the slot lies inside DRAM and src2 is 1 or 2: the
    second head's scores follow the first's and the first head's values follow them, the second
    head's values are summed while the first's drain (a score memory per head of a pair, a copy
    of the accumulators for the drain); with src2 = 2 the pair reads its shared KV head once (a
    second score datapath, exponential pipeline, divider and set of accumulators).
    ``divider_steps``: radix-4 steps per cycle of the RMSNORM and ATTN dividers (1, 2 or 4: two,
    four or eight quotient bits a cycle, chaining that many subtract-and-compare stages).
    ``fetch_beats``: instructions read per DRAM burst into an on-chip buffer, so a loop's body
    is fetched from DRAM once per run (0: one burst per instruction). A write burst that
    overlaps the buffered beats empties the buffer, so a program that writes its own
    instructions still runs what the golden model runs.
    ``mac_beats``: weight beats MATVEC takes from the read stream per cycle (1 or 2; 2 needs
    ``mac_lanes`` = LANES, a second set of multipliers per slot). DRAM delivers at most one
    beat a cycle, so a second beat pays only where the read FIFO holds a backlog: the next
    MATVEC's weights, requested ahead, gather there while other instructions run, and MATVEC
    then takes them two at a time (two weight beats of one row) until it has caught up.
    ``weight_ports``: LiteDRAM read ports of a weight stream of MATVEC's own (0: the weights
    come through the read stream). With one, the next MATVEC's weights are requested while
    any instruction that writes no DRAM runs (ATTN, ROPE and EMBED too, whose own reads would
    otherwise queue behind them), not only behind the instruction's own last read."""
    slots:     int = 4       # B: sequences (or prompt positions) per weight beat
    act_depth: int = 4096    # int32 words of activation scratchpad per slot
    max_cols:  int = 1024    # longest matvec input (input mantissa buffer)
    max_seq:   int = 1024    # longest attention span (score buffer)
    max_head:  int = 128     # largest head size
    mac_lanes: int = 16      # L: int8 x int16 multipliers per slot
    read_fifo_depth: int = 64    # DRAM read beats in flight per read port (see below)
    read_ports: int = 2          # LiteDRAM read ports of the read stream (1 or 2)
    write_ports: int = 1         # LiteDRAM write ports of the write stream (1 or 2)
    element_units: int = 0       # RMSNORM/SILU/ROPE datapaths (0 becomes slots: one per slot)
    act_read_ports: int = 2      # scratchpad reads per cycle per slot (MATVEC's input pass)
    write_stats: bool = True     # MATVEC/RMSNORM first passes from the writes before them
    divider_steps: int = 1       # radix-4 steps per cycle of the dividers
    fast_exponent: bool = True   # MATVEC's input exponent in two cycles
    attn_overlap: bool = True    # ATTN: V and the next K asked for with the scores
    attn_pairs: bool = False     # ATTN: two heads of a slot at a time
    fetch_beats: int = 0         # instruction buffer (0: none)
    mac_beats: int = 1           # weight beats MATVEC takes per cycle (1 or 2)
    weight_ports: int = 0        # LiteDRAM read ports of MATVEC's own weight stream (0: none)
    kv_format: str = "int16"     # the K/V cache's rows: "int16" (Q8) or "int8" (a scale per row; kv_layout)

    def __post_init__(self):
        if not self.element_units:
            object.__setattr__(self, "element_units", self.slots)

    def validate(self):
        for name, lo, hi in (("slots", 1, 16), ("act_depth", 256, 65536), ("max_cols", LANES, 65536),
                             ("max_seq", 8, 65536), ("max_head", 8, 1024),
                             ("mac_lanes", 2, LANES), ("read_fifo_depth", 16, 4096)):
            v = getattr(self, name)
            if not lo <= v <= hi or v & (v - 1):
                raise ValueError(f"Params.{name} = {v}: must be a power of two in [{lo}, {hi}]")
        if self.divider_steps not in (1, 2, 4):
            raise ValueError(f"Params.divider_steps = {self.divider_steps}: must be 1, 2 or 4")
        if self.act_read_ports not in (2, 4):
            raise ValueError(f"Params.act_read_ports = {self.act_read_ports}: must be 2 or 4")
        if self.attn_pairs and not (self.attn_overlap and self.act_read_ports == 4):
            raise ValueError("Params.attn_pairs needs attn_overlap and act_read_ports = 4")
        if self.mac_beats not in (1, 2):
            raise ValueError(f"Params.mac_beats = {self.mac_beats}: must be 1 or 2")
        if self.mac_beats == 2 and self.mac_lanes != LANES:
            raise ValueError(f"Params.mac_beats = 2 needs mac_lanes = {LANES}")
        if self.weight_ports not in (0, 1, 2):
            raise ValueError(f"Params.weight_ports = {self.weight_ports}: must be 0, 1 or 2")
        if self.read_ports not in (1, 2):
            raise ValueError(f"Params.read_ports = {self.read_ports}: must be 1 or 2")
        if self.write_ports not in (1, 2, WRITE_PORTS_PER_BANK):
            raise ValueError(f"Params.write_ports = {self.write_ports}: must be 1, 2 or {WRITE_PORTS_PER_BANK}")
        if self.kv_format not in KV_FORMATS:
            raise ValueError(f"Params.kv_format = {self.kv_format!r}: must be one of {', '.join(KV_FORMATS)}")
        if self.kv_format == "int8" and self.act_read_ports != 4:
            raise ValueError("Params.kv_format = 'int8' needs act_read_ports = 4 (KVWRITE's int8 unit reads "
                             "four elements a cycle)")
        f = self.fetch_beats
        if f and (not 2 <= f <= 256 or f & (f - 1)):
            raise ValueError(f"Params.fetch_beats = {f}: must be 0 or a power of two in [2, 256]")
        u = self.element_units
        if u < 1 or u & (u - 1) or self.slots % u:
            raise ValueError(f"Params.element_units = {u}: must be a power of two that divides "
                             f"slots ({self.slots})")
        return self


def params_dict(p):
    return asdict(p)


def _choices():
    return {"kv_format": KV_FORMATS}


def params_constants(p):
    """Params as integers, as a build's constants hold them (C has no True and no strings): a
    boolean 0 or 1, a choice of names (kv_format) its index."""
    ch = _choices()
    return {k: ch[k].index(v) if k in ch else int(v) for k, v in asdict(p).items()}


def params_from_constants(values):
    """params_constants' inverse; KeyError where a field is missing (an older build's)."""
    ch, fields = _choices(), asdict(Params())
    return Params(**{k: ch[k][int(values[k])] if k in ch else type(v)(values[k]) for k, v in fields.items()})


# The configuration of each target, declared once: the simulated SoC is at least as large as
# every board's (its DRAM and cycle budget are not the limit; the ULX3S's LUTs and DSPs are).
TARGET_PARAMS = {
    # sim: two ports x 1024 beats hold the weights DRAM delivers during the longest MATVEC
    # input passes (2 x 1024 columns).
    # A 32-instruction buffer holds a whole decode layer loop (a program refills it once more
    # for the classifier's chunks).
    # 8192 scratchpad words a slot hold stories110M's working vectors (6,144; the classifier
    # runs in chunks over them), and with a copy per read port the scratchpads stay within an
    # XC7A200T's block RAM (scripts/xilinx_resources.py).
    "sim":   Params(slots=8, act_depth=8192, max_cols=1024, max_seq=1024, max_head=128,
                   read_fifo_depth=1024, fetch_beats=32, act_read_ports=4, divider_steps=4, attn_pairs=True,
                   write_ports=WRITE_PORTS_PER_BANK, mac_beats=2, weight_ports=2, kv_format="int8"),
    # ULX3S: its SDRAM gives 2 bytes per cycle at 50 MHz, so 4 lanes per slot keep up with it
    # and cost a quarter of the multipliers (timing and routing: issue 3). One read port: a
    # bank change costs the SDRAM a few cycles in 512 (a 1 KiB row at 2 bytes per cycle), not
    # worth a second 16-to-128-bit converter and FIFO on the routing-limited board. One copy
    # of the element units: with a copy per slot the board's builds had 109 MULT18 (85 with
    # one) and ~1.9 k more LUT4, and routed at 43 MHz or not at all.
    # 4096 scratchpad words a slot hold stories15M's working vectors (2,304; its image, 17.4 MB
    # with the classifier as the embedding table, and 2 slots' K/V fit the 32 MB SDRAM): 8
    # more DP16KD than 2048.
    # No write statistics and no fast exponent: its SDRAM, not the element work, decides a
    # token's time, and with the statistics the build routed at 49.9 MHz (+1.7 k LUT4, +8
    # MULT18), with the fast exponent alone at 41.8 MHz (+1.0 k LUT4, 141 router iterations).
    "ulx3s": Params(slots=2, act_depth=4096, max_cols=1024, max_seq=512, max_head=64, mac_lanes=4,
                    read_ports=1, element_units=1, write_stats=False, fast_exponent=False,
                    attn_overlap=False),
    # Arty A7-100T: its DDR3 gives the simulator's 16 bytes a cycle at 100 MHz, so 16 lanes a
    # slot. The XC7A100T's LUTs and 240 DSP48E1 decide the rest: with 20 % of each left free
    # (Yosys's counts of the whole SoC, `litetransformer build --board arty`, docs/toolchain.md)
    # it holds two slots, ATTN one head at a time, one divider step a cycle, no write statistics.
    "arty":  Params(slots=2, act_depth=4096, max_cols=1024, max_seq=1024, max_head=64,
                    read_fifo_depth=1024, fetch_beats=32, act_read_ports=4, divider_steps=1, attn_pairs=False,
                    write_ports=WRITE_PORTS_PER_BANK, weight_ports=2, element_units=1, kv_format="int8",
                    fast_exponent=False, write_stats=False),
    # Acorn CLE-215+ (XC7A200T, 740 DSP48E1): the same 16 bytes a cycle as the Arty, so 16 lanes a
    # slot, and the batch as wide as the part holds with 20 % of each resource free (Yosys's
    # counts of the whole SoC, docs/toolchain.md): 8 slots take 78 % of the DSPs with one element
    # unit per two slots and ATTN a head at a time; 8,192 scratchpad words a slot took 86 % of the
    # block RAM (the scratchpads are slots x 4 read-port copies), 4,096 take 51 %.
    "acorn": Params(slots=8, act_depth=4096, max_cols=1024, max_seq=1024, max_head=64,
                    read_fifo_depth=1024, fetch_beats=32, act_read_ports=4, divider_steps=4, attn_pairs=False,
                    write_ports=WRITE_PORTS_PER_BANK, mac_beats=2, weight_ports=2, element_units=4, kv_format="int8",
                    fast_exponent=False),
}

# Encoding ---------------------------------------------------------------------------------------

def encode(op, flags=0, dst=0, src=0, src2=0, n=0, m=0, addr=0):
    """One instruction as a Python int (128 bits)."""
    word = 0
    values = dict(op=OPCODES[op] if isinstance(op, str) else op, flags=flags, dst=dst, src=src,
                  src2=src2, n=n, m=m, addr=addr)
    for name, (lsb, width) in FIELDS.items():
        v = values[name]
        if not 0 <= v < (1 << width):
            raise ValueError(f"encode {op}: field {name} = {v} does not fit {width} bits")
        word |= v << lsb
    return word


def decode(word):
    """128-bit int -> dict of fields."""
    return {name: (word >> lsb) & ((1 << width) - 1) for name, (lsb, width) in FIELDS.items()}


def program_bytes(words):
    return b"".join(int(w).to_bytes(BEAT_BYTES, "little") for w in words)


def program_words(blob):
    if len(blob) % BEAT_BYTES:
        raise ValueError("program length is not a whole number of beats")
    return [int.from_bytes(blob[i:i + BEAT_BYTES], "little") for i in range(0, len(blob), BEAT_BYTES)]

# DRAM formats -----------------------------------------------------------------------------------

def beats(nbytes):
    return -(-nbytes // BEAT_BYTES)


def matvec_cols_padded(cols):
    """Matrix rows are zero-padded to whole beats (LANES int8)."""
    return -(-cols // LANES) * LANES


ROW_BLOCK   = 16        # rows sharing one beat of row shifts
SUPERBLOCK  = 8         # weight beats after each beat of group-scale mantissas
SHIFT_RANGE = (0, 63)   # stored shifts are 6-bit; with input exponents <= 16 a rounding shift stays in [-16, 63]


def matrix_bytes(rows, cols):
    """Bytes of one matrix in the streamed format (see pack_matrix)."""
    cp = matvec_cols_padded(cols)
    total = 0
    for r0 in range(0, rows, ROW_BLOCK):
        wbeats = min(ROW_BLOCK, rows - r0) * cp // LANES
        total += 1 + wbeats + -(-wbeats // SUPERBLOCK)
    return total * BEAT_BYTES


def matrix_row_reads(row, cols):
    """The two reads that fetch one row of a matrix in pack_matrix's format (EMBED's table):
    the beat of row shifts of the row's block, then the superblocks from the one holding the
    row's first weight beat up to the row's last weight beat. Returns ((offset, bytes),
    (offset, bytes), skip): byte offsets from the matrix's start, and how many weight beats
    of the first superblock come before the row's. Every block before the row's is full, so
    its offset is the row's block times 1 + 18 beats per row (1 shift beat, 16 rows of
    weight beats, one mantissa beat per 8 of them)."""
    bpr = matvec_cols_padded(cols) // LANES
    block_beats = 1 + ROW_BLOCK * bpr + ROW_BLOCK * bpr // SUPERBLOCK
    block_off = (row // ROW_BLOCK) * block_beats * BEAT_BYTES
    sb0, skip = divmod((row % ROW_BLOCK) * bpr, SUPERBLOCK)
    superblocks = (skip + bpr - 1) // SUPERBLOCK + 1
    span_off = block_off + (1 + sb0 * (SUPERBLOCK + 1)) * BEAT_BYTES
    return (block_off, BEAT_BYTES), (span_off, (superblocks + skip + bpr) * BEAT_BYTES), skip


def tiled_matrix_bytes(rows, cols):
    """Bytes of a matrix stored as its column tiles (spec.numerics.tiles), as the compiler lays
    out any matrix: matrix_bytes itself up to TILE_COLS columns."""
    from spec import numerics as N
    return sum(matrix_bytes(rows, w) for _, w in N.tiles(cols))


def pack_matrix(q, mant, shift):
    """Matrix in (q int8 (rows, cp8), mant (rows, cp8/8), shift (rows,)) form -> the byte stream
    MATVEC reads: per block of 16 rows one beat of row shifts (int8), then for every 8 weight
    beats (rows flattened, 16 int8 each) one beat of their 16 group mantissas (uint8)."""
    from spec import numerics as N
    rows = q.shape[0]
    cols = q.shape[1]
    cp = matvec_cols_padded(cols)
    qp = np.zeros((rows, cp), np.int64)
    qp[:, :cols] = q
    mp = np.zeros((rows, cp // N.WEIGHT_GROUP), np.int64)
    mp[:, :mant.shape[1]] = mant
    lo, hi = SHIFT_RANGE
    if rows and (shift.min() < lo or shift.max() > hi):
        raise ValueError(f"pack_matrix: row shifts {shift.min()}..{shift.max()} outside {SHIFT_RANGE}")
    if (mp < 0).any() or (mp > 255).any():
        raise ValueError("pack_matrix: group mantissas outside uint8")
    out = bytearray()
    for r0 in range(0, rows, ROW_BLOCK):
        r1 = min(rows, r0 + ROW_BLOCK)
        sh = np.zeros(BEAT_BYTES, np.int64)
        sh[:r1 - r0] = shift[r0:r1]
        out += sh.astype(np.int8).tobytes()
        wb = qp[r0:r1].reshape(-1, LANES).astype(np.int8)                       # weight beats
        mb = mp[r0:r1].reshape(-1, LANES // N.WEIGHT_GROUP).astype(np.uint8)     # 2 mantissas per beat
        for b0 in range(0, wb.shape[0], SUPERBLOCK):
            m = np.zeros(BEAT_BYTES, np.uint8)
            chunk = mb[b0:b0 + SUPERBLOCK].reshape(-1)
            m[:chunk.size] = chunk
            out += m.tobytes()
            out += wb[b0:b0 + SUPERBLOCK].tobytes()
    assert len(out) == matrix_bytes(rows, cols)
    return bytes(out)


def fixed16_bytes(n):
    """A fixed16 vector: one header beat (byte 0: shift, int8) and n int16 padded to beats."""
    return BEAT_BYTES * (1 + beats(2 * n))


def pack_fixed16(values, shift):
    lo, hi = SHIFT_RANGE
    if not lo <= int(shift) <= hi:
        raise ValueError(f"pack_fixed16: shift {shift} outside {SHIFT_RANGE}")
    n = len(values)
    out = bytearray(fixed16_bytes(n))
    out[0] = int(shift) & 0xff
    out[BEAT_BYTES:BEAT_BYTES + 2 * n] = np.asarray(values, np.int64).astype("<i2").tobytes()
    return bytes(out)


# K/V cache layout ---------------------------------------------------------------------------------
# A KV head's K (or V) rows for one slot and layer, positions in order. "int16": each row is
# head_size int16 (spec.numerics.to_kv). "int8": groups of KV8_GROUP positions, each a beat of
# their u16 scale words (position r of the group at bytes 2r, 2r + 1) followed by their rows of
# head_size int8 (spec.numerics.to_kv8): 1 + 2 / head_size bytes an element, and ATTN finds a
# row's scale in the same stream, ahead of the row. Head sizes are 8 or a multiple of 16 there,
# so that a beat holds whole rows.
KV_FORMATS = ("int16", "int8")
KV8_GROUP = BEAT_BYTES // 2


def kv_head_size_ok(fmt, head_size):
    return head_size % 8 == 0 and (fmt == "int16" or head_size == 8 or head_size % 16 == 0)


def kv_row_bytes(fmt, head_size):
    return head_size * (2 if fmt == "int16" else 1)


def kv8_group_bytes(head_size):
    return BEAT_BYTES + KV8_GROUP * head_size


def kv_head_bytes(fmt, seq_len, head_size):
    """Bytes of one KV head's rows for ``seq_len`` positions."""
    if fmt == "int16":
        return seq_len * head_size * 2
    return -(-seq_len // KV8_GROUP) * kv8_group_bytes(head_size)


def kv_row_offset(fmt, pos, head_size):
    """Where position ``pos``'s row starts, in bytes from the KV head's base."""
    if fmt == "int16":
        return pos * head_size * 2
    g, r = divmod(pos, KV8_GROUP)
    return g * kv8_group_bytes(head_size) + BEAT_BYTES + r * head_size


def kv8_scale_offset(pos, head_size):
    """Where position ``pos``'s scale word is ("int8"), in bytes from the KV head's base."""
    g, r = divmod(pos, KV8_GROUP)
    return g * kv8_group_bytes(head_size) + 2 * r


def kv_span(fmt, pos, head_size):
    """The bytes ATTN reads from a KV head's base at position ``pos``: rows 0..pos, and with
    "int8" their groups' scale beats."""
    return kv_row_offset(fmt, pos, head_size) + kv_row_bytes(fmt, head_size)


def unpack_kv8(data, n, head_size):
    """The first ``n`` positions' int8 rows (n, head_size) and scale words (n,) from a KV head's
    bytes (kv_span's)."""
    raw = np.frombuffer(bytes(data), np.uint8)
    rows = np.stack([raw[kv_row_offset("int8", t, head_size) + np.arange(head_size)] for t in range(n)])
    scale = np.array([int(raw[o]) | int(raw[o + 1]) << 8 for o in (kv8_scale_offset(t, head_size) for t in range(n))],
                     dtype=np.int64)
    return rows.view(np.int8).astype(np.int64), scale


def rope_row_bytes(head_size):
    """One RoPE table row: head_size/2 (cos, sin) int16 pairs, padded to beats."""
    return BEAT_BYTES * beats(2 * head_size)


def pack_rope(cos_q, sin_q):
    """(seq_len, hs/2) Q14 tables -> rows of interleaved (cos, sin) int16."""
    seq, half = cos_q.shape
    row = rope_row_bytes(2 * half)
    out = bytearray(seq * row)
    for p in range(seq):
        pairs = np.stack([cos_q[p], sin_q[p]], axis=1).reshape(-1).astype("<i2").tobytes()
        out[p * row:p * row + len(pairs)] = pairs
    return bytes(out)


def pack_slots(slots):
    """[(token, pos, kv_base)] -> slot table bytes."""
    return b"".join(np.array([t, p, kv, 0], "<u4").tobytes() for t, p, kv in slots)


def c_header():
    """The ISA as a C header for firmware (opcodes, field positions, flags, registers, errors, and
    the register word layouts of spec.registers)."""
    lines = ["/* Generated from spec/isa.py: do not edit. */", "#ifndef LITETRANSFORMER_ISA_H",
             "#define LITETRANSFORMER_ISA_H", "", f"#define LT_BEAT_BYTES {BEAT_BYTES}", f"#define LT_LANES {LANES}"]
    lines += [f"#define LT_FIELD_{k.upper()}_LSB {lsb}\n#define LT_FIELD_{k.upper()}_WIDTH {w}"
              for k, (lsb, w) in FIELDS.items()]
    lines += [f"#define LT_OP_{k} 0x{v:02x}" for k, v in OPCODES.items()]
    lines += [f"#define LT_FLAG_LAYER {FLAG_LAYER}", f"#define LT_FLAG_ACC {FLAG_ACC}"]
    lines += [f"#define LT_REG_{k} {v}" for k, v in REGS.items()]
    lines += [f"#define LT_ERROR_{k} {v}" for k, v in ERRORS.items()]
    from spec import registers
    lines += registers.c_header_lines()
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def spec_contents():
    return {"fields": FIELDS, "opcodes": OPCODES, "flags": [FLAG_LAYER, FLAG_ACC], "regs": REGS,
            "errors": ERRORS, "lanes": LANES, "beat": BEAT_BYTES, "row_block": ROW_BLOCK,
            "superblock": SUPERBLOCK, "shift_range": SHIFT_RANGE}
