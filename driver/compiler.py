"""Compile a QuantizedModel into a DRAM image and one program for the transformer core.

One program runs one decoding step for every active slot: embed the slot's token, run the
layer loop, write the logits and the argmax. The per-layer weights sit in blocks of one layout
repeated every ``WSTRIDE`` bytes, so the loop body addresses layer 0 and sets FLAG_LAYER.

DRAM, in bytes from ``base`` (every piece starts on a beat):

    slot table   params.slots beats: (token, pos, kv_base, 0), written by the host each step
    argmax       params.slots beats: (index, max, 0, 0) per slot
    logits       params.slots * logits_stride: int32 vocab per slot
    layers       n_layers * WSTRIDE: rms_att, wq|wk|wv, wo, rms_ffn, w1|w3, w2
    rms_final    fixed16
    wcls         matrix (vocab, dim), column tiles
    embedding    matrix (vocab, dim), one tile; none where the classifier is shared and one
                 tile wide: EMBED then reads the classifier's rows
    rope         seq_len rows of (cos, sin) pairs
    program      the instructions
    program_greedy  the same without the logits STORE
    --- end of ``image``; the KV regions follow, left to the core ---
    kv           kv_regions * kv_bytes: [layer][K, V][kv_head][seq_len rows, spec.isa's K/V
                 layout in Params.kv_format]; with a write port per DRAM bank, from a row and
                 each kv_head block an odd number of rows

Fusing wq|wk|wv (and w1|w3) into one MATVEC is exact: every row is quantised on its own, and
the input vector is quantised once per MATVEC either way. A matrix wider than
spec.numerics.TILE_COLS is stored as its column tiles one after the other, and runs as one
MATVEC per tile, the later ones with FLAG_ACC (spec.numerics.matvec_tiled).
"""

from dataclasses import dataclass, field

import numpy as np

from driver.golden import CoreError, GoldenCore
from spec import isa
from spec import numerics as N

DEFAULT_DRAM_SIZE = 32 << 20      # the ULX3S's SDRAM


@dataclass
class CompiledModel:
    """A model placed in DRAM. Addresses are DRAM byte addresses (``base`` included)."""
    config: object                 # driver.model.Config
    params: isa.Params
    seq_len: int                   # context the KV cache and the RoPE table hold
    dram_size: int
    base: int
    image: bytes                   # DRAM[base : base + len(image)]
    program: list                  # 128-bit instruction words
    prog: int                      # program
    prog_greedy: int               # the program without the logits STORE (argmax only)
    slots: int                     # slot table, params.slots beats
    argmax: int                    # ARGMAX output, one beat per slot
    logits: int                    # STORE output, logits_stride bytes per slot
    logits_stride: int
    kv: int                        # KV region of slot 0
    kv_bytes: int                  # bytes per KV region
    kv_regions: int
    total_bytes: int               # image and KV regions
    regs: dict                     # register name -> value
    acts: dict                     # activation buffer -> (first word, words)
    layout: dict = field(default_factory=dict)   # name -> DRAM byte address
    lossy: list = field(default_factory=list)    # QuantizedModel.lossy: tensors the int8 form misses

    def constant_range(self):
        """(first byte, end) of what no run writes: the weights, gains, RoPE rows and programs.
        The slot table, ARGMAX results and logits come first in the image, and every step
        rewrites them."""
        return self.layout["layers"], self.base + len(self.image) // isa.BEAT_BYTES * isa.BEAT_BYTES

    def kv_base(self, region):
        """Byte address of KV region ``region`` (a slot's kv_base in the slot table)."""
        if not 0 <= region < self.kv_regions:
            raise ValueError(f"KV region {region} out of range: the image has {self.kv_regions}")
        return self.kv + region * self.kv_bytes


# The KV cache against the DRAM's banks. A bank holds one open row; KVWRITE writes a slot's
# heads one after another (a beat each where head_size is 8), and ATTN reads a head's K and
# then its V. With a write port per bank (Params.write_ports = isa.WRITE_PORTS_PER_BANK) each
# head's block is an odd number of KV_ROW_BYTES rows long, so a layer's heads cycle through
# the banks (ROW_BANK_COL: consecutive rows lie in consecutive banks) and their rows open in
# parallel. With fewer ports the blocks stay packed: LiteDRAM's crossbar holds a write port
# while its bank still has the port's command, so writes that alternate between banks wait for
# each other's row changes, while writes to one bank queue there behind each other (measured
# on the simulated SoC, stories260K at B = 8: 0.761 of the roofline packed, 0.642 spread over
# two ports, 0.791 spread over eight). KV_ROW_BYTES is the DDR3's row (MT41K128M16 x16, the
# simulated SoC's and the Arty's: 1,024 columns of 2 bytes, 8 banks).
KV_ROW_BYTES = 2048


def _kv_strides(head_bytes, n_kv_heads, spread):
    """(KVHEAD, VOFF, KVSTRIDE): bytes between a layer's KV heads, from its K to its V, and
    between layers. With ``spread``, a head's block (``head_bytes``, seq_len positions) is
    rounded up to an odd number of DRAM rows where it is longer than one."""
    kvhead = head_bytes
    if spread and head_bytes > KV_ROW_BYTES:
        kvhead = (-(-head_bytes // KV_ROW_BYTES) | 1) * KV_ROW_BYTES
    voff = n_kv_heads * kvhead
    return kvhead, voff, 2 * voff


def _fuse(*mats):
    """Stack (q, mant, shift) matrices with equal column counts into one matrix."""
    return tuple(np.concatenate([m[i] for m in mats]) for i in range(3))


def _pack_matrix(name, qms, tiled=True):
    """A matrix's column tiles in the streamed format, one after the other; with ``tiled``
    false, one tile however wide (EMBED's table)."""
    q, mant, shift = qms
    parts = N.tile_weights(q, mant, shift, q.shape[1]) if tiled else [qms]
    try:
        return b"".join(isa.pack_matrix(*t) for t in parts)
    except ValueError as e:
        raise ValueError(f"compile: matrix {name}: {e}") from None


def _matvec(flags, dst, src, rows, cols, addr, row0=0, all_rows=None):
    """The MATVEC instructions of rows ``row0``.. ``row0 + rows`` of an (``all_rows``, cols)
    matrix at ``addr``: one per column tile, each after the first adding to dst (_pack_matrix
    lays the tiles out in that order; ``row0``, a multiple of 16, starts a row block)."""
    all_rows = rows if all_rows is None else all_rows
    out = []
    for k, (c0, w) in enumerate(N.tiles(cols)):
        out.append(isa.encode("MATVEC", flags | (isa.FLAG_ACC if k else 0), dst=dst, src=src + c0, n=rows, m=w,
                              addr=addr + isa.matrix_bytes(row0, w)))
        addr += isa.matrix_bytes(all_rows, w)
    return out


def _classifier(c, A, layout, m_logits, chunk):
    """The classifier in row chunks of ``chunk`` (one chunk when the logits fit the scratchpad):
    per chunk its MATVEC, its STORE into the slot's logits row, and its ARGMAX, which after the
    first keeps the held result unless beaten (FLAG_ACC) and counts rows from the chunk's first."""
    out = []
    for r0 in range(0, c.vocab_size, chunk):
        rows = min(chunk, c.vocab_size - r0)
        out += _matvec(0, dst=A["logits"], src=A["xb"], rows=rows, cols=c.dim, addr=layout["wcls"], row0=r0,
                       all_rows=c.vocab_size)
        out.append(isa.encode("STORE", src=A["logits"], n=rows, m=m_logits, addr=layout["logits"] + 4 * r0))
        out.append(isa.encode("ARGMAX", isa.FLAG_ACC if r0 else 0, src=A["logits"], n=rows, m=r0,
                              addr=layout["argmax"]))
    return out


def _pack_fixed16(name, q, shift):
    try:
        return isa.pack_fixed16(q, shift)
    except ValueError as e:
        raise ValueError(f"compile: vector {name}: {e}") from None


def _check_fits(c, params, seq_len):
    """Raise ValueError naming the first limit of ``params`` the model exceeds."""
    hs = c.head_size
    if not isa.kv_head_size_ok(params.kv_format, hs):
        need = "a multiple of 8" if params.kv_format == "int16" else "8 or a multiple of 16"
        raise ValueError(f"compile: head size {hs} is not {need} ({params.kv_format} K/V cache rows are "
                         "whole beats or half beats)")
    if hs > params.max_head:
        raise ValueError(f"compile: head size {hs} exceeds Params.max_head {params.max_head}")
    if seq_len > params.max_seq:
        raise ValueError(f"compile: seq_len {seq_len} exceeds Params.max_seq {params.max_seq}")
    for what, cols in (("dim", c.dim), ("hidden_dim", c.hidden_dim)):
        widest = max(w for _, w in N.tiles(cols))
        if widest > params.max_cols:
            raise ValueError(f"compile: {what} {cols} needs MATVEC inputs of {widest} columns "
                             f"(tiles of at most {N.TILE_COLS}); Params.max_cols is {params.max_cols}")
    if c.dim > params.max_cols:
        raise ValueError(f"compile: dim {c.dim} exceeds Params.max_cols {params.max_cols} (EMBED reads a "
                         f"row of the embedding matrix of at most max_cols)")
    for what, v in (("vocab_size", c.vocab_size), ("2 * hidden_dim", 2 * c.hidden_dim),
                    ("dim + 2 * kv_dim", c.dim + 2 * c.kv_dim), ("n_layers", c.n_layers)):
        if v >= 1 << 16:
            raise ValueError(f"compile: {what} {v} does not fit a 16-bit instruction field")


def _place(sizes, at=0):
    acts = {}
    for name, n in sizes:
        acts[name] = (at, n)
        at += n
    return acts, at


def _act_map(c, params):
    """Activation buffers {name: (first word, words)}. No instruction writes a range it reads
    unless it is the same range (the residual ``x``, which MATVEC FLAG_ACC reads and writes by
    definition; SILU's output over its first input in the compact map).

    Where everything fits, each vector has its own range and the logits (``logits``: the
    classifier's rows per chunk) follow them all. Otherwise the map is compact: after x and xb,
    the attention's vectors (qkv, qk, att: dead once the output MATVEC has read att) share
    their range with the FFN's (hb, and hh over hb's first half: dead once w2 has read hh), and
    the logits overlay both (dead after the last layer), in chunks of what the scratchpad holds
    after x and xb (a multiple of 16 rows)."""
    D, dim, hidden = params.act_depth, c.dim, c.hidden_dim
    attn = [("qkv", dim + 2 * c.kv_dim), ("qk", dim + c.kv_dim), ("att", dim)]
    acts, at = _place([("x", dim), ("xb", dim), *attn, ("hb", 2 * hidden), ("hh", hidden)])
    if at + c.vocab_size <= D:
        acts["logits"] = (at, c.vocab_size)
        return acts
    acts, attn_end = _place([("x", dim), ("xb", dim), *attn])
    ffn, ffn_end = _place([("hb", 2 * hidden)], 2 * dim)
    acts.update(ffn, hh=(ffn["hb"][0], hidden))
    chunk = min(c.vocab_size, (D - 2 * dim) // isa.ROW_BLOCK * isa.ROW_BLOCK)
    need = max(attn_end, ffn_end, 2 * dim + min(c.vocab_size, isa.ROW_BLOCK))
    if need > D:
        raise ValueError(f"compile: activations need {need} words per slot (x, xb, then the larger of the "
                         f"attention's and the FFN's vectors, the classifier in chunks), Params.act_depth is {D}")
    acts["logits"] = (2 * dim, chunk)
    return acts


def compile_model(qmodel, params=isa.Params(), dram_size=DEFAULT_DRAM_SIZE, base=0, seq_len=None,
                  kv_regions=None):
    """Place ``qmodel`` (driver.intforward.QuantizedModel) in DRAM at ``base`` and build the
    decoding program. ``seq_len`` (default: the model's) may shorten the context; the image
    holds ``kv_regions`` (default params.slots) KV cache regions."""
    params = params.validate()
    c = qmodel.config
    seq_len = c.seq_len if seq_len is None else seq_len
    kv_regions = params.slots if kv_regions is None else kv_regions
    if not 1 <= seq_len <= c.seq_len:
        raise ValueError(f"compile: seq_len {seq_len} outside [1, model seq_len {c.seq_len}]")
    if kv_regions < 1:
        raise ValueError(f"compile: kv_regions {kv_regions} must be at least 1")
    if base < 0 or base % isa.BEAT_BYTES:
        raise ValueError(f"compile: base 0x{base:x} is not a non-negative multiple of {isa.BEAT_BYTES}")
    _check_fits(c, params, seq_len)
    acts = _act_map(c, params)
    L, dim, hidden, kv_dim, hs = c.n_layers, c.dim, c.hidden_dim, c.kv_dim, c.head_size
    kv_mul = c.n_heads // c.n_kv_heads

    # Per-layer blocks ---------------------------------------------------------------------------
    blocks = []
    for l in range(L):
        blocks.append([
            ("rms_att", _pack_fixed16(f"rms_att[{l}]", *qmodel.rms_att[l])),
            ("wqkv", _pack_matrix(f"wq|wk|wv[{l}]", _fuse(qmodel.wq[l], qmodel.wk[l], qmodel.wv[l]))),
            ("wo", _pack_matrix(f"wo[{l}]", qmodel.wo[l])),
            ("rms_ffn", _pack_fixed16(f"rms_ffn[{l}]", *qmodel.rms_ffn[l])),
            ("w13", _pack_matrix(f"w1|w3[{l}]", _fuse(qmodel.w1[l], qmodel.w3[l]))),
            ("w2", _pack_matrix(f"w2[{l}]", qmodel.w2[l])),
        ])
    wstride = sum(len(b) for _, b in blocks[0])

    # Addresses ----------------------------------------------------------------------------------
    m_logits = isa.beats(4 * c.vocab_size)
    logits_stride = m_logits * isa.BEAT_BYTES
    layout, at = {}, base

    def place(name, nbytes):
        nonlocal at
        layout[name] = at
        at += isa.beats(nbytes) * isa.BEAT_BYTES
        return layout[name]

    place("slots", params.slots * isa.BEAT_BYTES)
    place("argmax", params.slots * isa.BEAT_BYTES)
    place("logits", params.slots * logits_stride)
    place("layers", L * wstride)
    off = layout["layers"]
    for name, blob in blocks[0]:
        layout[name] = off
        off += len(blob)
    rms_final = _pack_fixed16("rms_final", *qmodel.rms_final)
    wcls = _pack_matrix("wcls", qmodel.wcls)
    # EMBED reads its rows from a matrix of one tile: the classifier where the model shares it.
    shared = qmodel.shared_classifier and len(N.tiles(dim)) == 1
    embed = b"" if shared else _pack_matrix("embedding", qmodel.embedding, tiled=False)
    rope = isa.pack_rope(qmodel.rope_cos[:seq_len], qmodel.rope_sin[:seq_len])
    place("rms_final", len(rms_final))
    place("wcls", len(wcls))
    layout["embedding"] = layout["wcls"] if shared else place("embedding", len(embed))
    place("rope", len(rope))

    spread = params.write_ports == isa.WRITE_PORTS_PER_BANK
    kvhead, voff, kvstride = _kv_strides(isa.kv_head_bytes(params.kv_format, seq_len, hs), c.n_kv_heads, spread)
    regs = {"WSTRIDE": wstride, "KVSTRIDE": kvstride, "KVHEAD": kvhead, "VOFF": voff,
            "SEQLEN": seq_len, "ATTSCALE": qmodel.inv_sqrt_hs}

    # Program ------------------------------------------------------------------------------------
    A = {name: a for name, (a, _) in acts.items()}
    LF, ACC = isa.FLAG_LAYER, isa.FLAG_ACC
    E = isa.encode
    prog = [E("SETR", dst=isa.REGS[r], addr=v) for r, v in regs.items()]
    prog += [
        E("EMBED", dst=A["x"], n=dim, m=c.vocab_size, addr=layout["embedding"]),
        E("LOOP", n=L),
        E("RMSNORM", LF, dst=A["xb"], src=A["x"], n=dim, addr=layout["rms_att"]),
        *_matvec(LF, dst=A["qkv"], src=A["xb"], rows=dim + 2 * kv_dim, cols=dim, addr=layout["wqkv"]),
        E("ROPE", dst=A["qk"], src=A["qkv"], n=dim + kv_dim, m=hs, addr=layout["rope"]),
        E("KVWRITE", LF, src=A["qk"] + dim, n=c.n_kv_heads, m=hs, addr=0),
        E("KVWRITE", LF, src=A["qkv"] + dim + kv_dim, n=c.n_kv_heads, m=hs, addr=voff),
        E("ATTN", LF, dst=A["att"], src=A["qk"], src2=kv_mul, n=c.n_heads, m=hs, addr=0),
        *_matvec(LF | ACC, dst=A["x"], src=A["att"], rows=dim, cols=dim, addr=layout["wo"]),
        E("RMSNORM", LF, dst=A["xb"], src=A["x"], n=dim, addr=layout["rms_ffn"]),
        *_matvec(LF, dst=A["hb"], src=A["xb"], rows=2 * hidden, cols=dim, addr=layout["w13"]),
        E("SILU", dst=A["hh"], src=A["hb"], src2=A["hb"] + hidden, n=hidden),
        *_matvec(LF | ACC, dst=A["x"], src=A["hh"], rows=dim, cols=hidden, addr=layout["w2"]),
        E("ENDLOOP"),
        E("RMSNORM", dst=A["xb"], src=A["x"], n=dim, addr=layout["rms_final"]),
        *_classifier(c, A, layout, m_logits, acts["logits"][1]),
        E("HALT"),
    ]
    place("program", len(prog) * isa.BEAT_BYTES)
    # Greedy decoding needs only the argmax: the same program without the logits STORE (on
    # stories15M the STORE is 32,000 elements, about 3 % of a token).
    prog_greedy = [w for w in prog if isa.decode(w)["op"] != isa.OPCODES["STORE"]]
    place("program_greedy", len(prog_greedy) * isa.BEAT_BYTES)
    image_end = at
    # The instruction buffer fills up to fetch_beats beats from the pc, past a program's end:
    # those beats stay unwritten by any run, or a write there (KVWRITE's first rows) would empty
    # the buffer, and with it the loop's start the weight prefetch reads through.
    if params.fetch_beats:
        place("fetch_guard", params.fetch_beats * isa.BEAT_BYTES)
    kv_bytes = L * kvstride
    if spread:
        at = -(-at // KV_ROW_BYTES) * KV_ROW_BYTES
    place("kv", kv_regions * kv_bytes)
    total = at - base
    if base + total > dram_size or base + total > 1 << 32:
        raise ValueError(f"compile: the model needs {total} bytes of DRAM from 0x{base:x} "
                         f"(image {image_end - base}, KV cache {kv_regions} x {kv_bytes}); "
                         f"{max(dram_size - base, 0)} are available")

    # Image --------------------------------------------------------------------------------------
    image = bytearray(image_end - base)

    def put(addr, blob):
        image[addr - base:addr - base + len(blob)] = blob

    for l, block in enumerate(blocks):
        a = layout["layers"] + l * wstride
        for _, blob in block:
            put(a, blob)
            a += len(blob)
    put(layout["rms_final"], rms_final)
    put(layout["wcls"], wcls)
    put(layout["embedding"], embed)
    put(layout["rope"], rope)
    put(layout["program"], isa.program_bytes(prog))
    put(layout["program_greedy"], isa.program_bytes(prog_greedy))

    return CompiledModel(config=c, params=params, seq_len=seq_len, dram_size=dram_size, base=base,
                         image=bytes(image), program=prog, prog=layout["program"],
                         prog_greedy=layout["program_greedy"], slots=layout["slots"],
                         argmax=layout["argmax"], logits=layout["logits"], logits_stride=logits_stride,
                         kv=layout["kv"], kv_bytes=kv_bytes, kv_regions=kv_regions, total_bytes=total,
                         regs=regs, acts=acts, layout=layout, lossy=list(getattr(qmodel, "lossy", [])))


class GoldenRunner:
    """A CompiledModel on the golden model: one ``step`` is one run of the program."""

    def __init__(self, compiled, params=None):
        self.cm = compiled
        self.params = params or compiled.params
        self.core = GoldenCore(compiled.base + compiled.total_bytes, self.params)
        self.core.dram[compiled.base:compiled.base + len(compiled.image)] = compiled.image

    def step(self, slots, kv=None, want_logits=True):
        """Run one step. ``slots``: (token, pos) per active slot; slot i uses KV region
        ``kv[i]`` (default i; slots may share one). Returns (logits int64 (nslots, vocab), or
        None without ``want_logits``, which runs the program without the STORE; argmax indices)."""
        cm, dram = self.cm, self.core.dram
        kv = list(range(len(slots))) if kv is None else list(kv)
        if len(kv) != len(slots):
            raise ValueError(f"step: {len(slots)} slots but {len(kv)} KV regions")
        table = isa.pack_slots([(t, p, cm.kv_base(r)) for (t, p), r in zip(slots, kv)])
        dram[cm.slots:cm.slots + len(table)] = table
        code, addr = self.core.run(cm.prog if want_logits else cm.prog_greedy, cm.slots, len(slots))
        if code:
            raise CoreError(code, addr)
        vocab = cm.config.vocab_size
        logits = np.stack([np.frombuffer(dram, "<i4", vocab, cm.logits + s * cm.logits_stride)
                           for s in range(len(slots))]).astype(np.int64) if want_logits else None
        argmax = [int.from_bytes(dram[cm.argmax + 16 * s:cm.argmax + 16 * s + 4], "little")
                  for s in range(len(slots))]
        return logits, argmax
