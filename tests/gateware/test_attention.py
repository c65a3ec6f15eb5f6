"""ATTN's unit alone (Migen simulation): gateware/core/attention.py with the int16 packer, on
real scratchpads, its K and V from a DRAM model through the core's ReadBursts (bursts the
sequencer grants late, reads queued ahead, an address port and a data stream that stall),
against the golden model's function for the opcode: per head, attend(*softmax_terms(scores(
to_kv(q), K)), V) (spec.numerics), over two slots at their own positions and KV bases. The
variants: a head at a time (the ULX3S), V and the next K asked for during the scores
(attn_overlap), and two heads at a time (attn_pairs, four scratchpad ports); and int8 rows
(Params.kv_format, spec.isa's layout: 16 elements a beat, two rows a beat at head size 8),
against scores8 and attend8."""

from collections import deque

import numpy as np
import pytest
from migen import Module, Mux, Signal, passive, run_simulation
from litex.soc.interconnect import stream

from gateware.core.attention import Attention
from gateware.core.pack16 import Pack16, Pack16x4
from gateware.core.readbursts import ReadBursts
from gateware.core.scratchpad import Scratchpads
from spec import isa, numerics as N

DRAM_BYTES = 1 << 18
LATENCY = 6


class _AttentionOnDram(Module):
    """The unit wired as the core wires it: the scratchpads, the packer, the read stream's
    address side; the test drives BURST (``burst_go``) and the DRAM model."""

    def __init__(self, params):
        B, XR = params.slots, params.act_read_ports
        self.submodules.act = act = Scratchpads(B, params.act_depth, XR)
        self.submodules.attn = attn = Attention(params, DRAM_BYTES // 16)
        self.addr = stream.Endpoint([("address", 24)])
        self.rd_valid, self.rd_data = Signal(), Signal(128)
        self.burst_go, self.burst_beat, self.burst_len = Signal(), Signal(24), Signal(32)
        self.slot = Signal(max=B)
        taken = Signal()
        self.submodules.bursts = bursts = ReadBursts(self.addr, 24, taken)
        self.comb += [
            bursts.start.eq(self.burst_go), bursts.start_addr.eq(self.burst_beat),
            bursts.start_len.eq(self.burst_len), attn.granted.eq(self.burst_go),
            bursts.push.eq(attn.q_push), bursts.push_addr.eq(attn.q_addr), bursts.push_len.eq(attn.q_len),
            attn.rdq_valid.eq(bursts.queued),
            attn.rd_valid.eq(self.rd_valid), attn.rd_data.eq(self.rd_data), taken.eq(self.rd_valid & attn.rd_ready),
            attn.slot.eq(self.slot),
        ]
        if XR == 2:
            self.submodules.pk = pk = Pack16()
            self.comb += [
                pk.read.eq(attn.pk_read), pk.idx.eq(attn.pk_idx), pk.half.eq(attn.pk_half),
                pk.x.eq(Mux(self.slot, act.rdat[0][1], act.rdat[0][0]) if B == 2 else act.rdat[0][0]),
                attn.pk_beat_done.eq(pk.beat_done), attn.pk_beat_idx.eq(pk.beat_idx),
                attn.pk_beat_half.eq(pk.beat_half),
            ]
        else:
            self.submodules.pk = pk = Pack16x4(B, 24)
            self.comb += [
                pk.read.eq(attn.pk_query), pk.query.eq(attn.pk_query), pk.hi.eq(attn.pk_hi),
                pk.tag.eq(attn.pk_qaddr), pk.slot.eq(self.slot),
                *[pk.rdat[e][s].eq(act.rdat[e][s]) for e in range(4) for s in range(B)],
                attn.pk_beat_valid.eq(pk.beat_valid), attn.pk_beat_query.eq(pk.beat_query),
                attn.pk_beat_tag.eq(pk.beat_tag),
            ]
        wslot = Mux(attn.od_we, attn.od_slot, self.slot) if params.attn_pairs else self.slot
        self.comb += [
            attn.pk_idle.eq(pk.idle), attn.pk_beat.eq(pk.beat),
            *[act.radr[p].eq(Mux(attn.reading, attn.radr[p], 0)) for p in range(XR)],
            act.wadr.eq(attn.od_wadr),
            *[act.wdat[s].eq(attn.od_wdat) for s in range(B)],
            *[act.we[s].eq(attn.od_we & (wslot == s)) for s in range(B)],
        ]


VARIANTS = {
    "a head at a time": dict(act_read_ports=2, attn_overlap=False, attn_pairs=False),
    "overlap": dict(act_read_ports=2, attn_overlap=True, attn_pairs=False),
    "pairs": dict(act_read_ports=4, attn_overlap=True, attn_pairs=True),
    "int8": dict(act_read_ports=4, attn_overlap=True, attn_pairs=False, kv_format="int8"),
    "int8 pairs": dict(act_read_ports=4, attn_overlap=True, attn_pairs=True, kv_format="int8"),
}


def _golden(x, dram, kvaddr, pos, heads, hs, kv_mul, kvhead, voff, scale, src, fmt):
    out = []
    span = isa.kv_span(fmt, pos, hs)
    for h in range(heads):
        kbase = kvaddr + (h // kv_mul) * kvhead
        q = N.to_kv(x[src + h * hs:src + (h + 1) * hs])
        if fmt == "int8":
            keys, kscale = isa.unpack_kv8(dram[kbase:kbase + span], pos + 1, hs)
            vals, vscale = isa.unpack_kv8(dram[kbase + voff:kbase + voff + span], pos + 1, hs)
            e, recip = N.softmax_terms(N.scores8(q, keys, kscale, scale))
            out.append(N.attend8(e, recip, vals, vscale))
            continue
        keys = np.frombuffer(bytes(dram[kbase:kbase + span]), "<i2").astype(np.int64).reshape(pos + 1, hs)
        vals = np.frombuffer(bytes(dram[kbase + voff:kbase + voff + span]), "<i2").astype(np.int64).reshape(pos + 1, hs)
        out.append(N.attend(*N.softmax_terms(N.scores(q, keys, scale)), vals))
    return np.concatenate(out)


SEQLEN = 12


@pytest.mark.parametrize("variant,kv_mul,seed,max_pos", [
    ("a head at a time", 1, 0, SEQLEN), ("a head at a time", 2, 1, SEQLEN), ("overlap", 1, 2, SEQLEN),
    ("overlap", 3, 3, SEQLEN), ("pairs", 1, 4, SEQLEN), ("pairs", 2, 5, SEQLEN),
    # near position 0, with long gaps between beats
    ("pairs", 1, 6, 2), ("pairs", 2, 7, 2),
    # int8 rows: head size 8 (two rows a beat; the last beat's second row past the span
    # where pos is even), 16 and 32 (two beats a row)
    ("int8", 1, 8, SEQLEN), ("int8", 3, 9, SEQLEN), ("int8 pairs", 1, 10, SEQLEN),
    ("int8 pairs", 2, 11, SEQLEN), ("int8 pairs", 1, 12, 2), ("int8 pairs", 2, 13, 3),
    ("int8", 2, 14, SEQLEN), ("int8 pairs", 1, 15, SEQLEN), ("int8 pairs", 2, 18, SEQLEN)])
def test_attention_matches_the_golden_function(variant, kv_mul, seed, max_pos):
    params = isa.Params(slots=2, act_depth=256, max_head=32, max_seq=16, divider_steps=4,
                        **VARIANTS[variant])
    rng = np.random.default_rng(seed)
    top = _AttentionOnDram(params)
    attn = top.attn
    fmt = params.kv_format
    hs = 8 * int(rng.integers(1, 4)) if fmt == "int16" else (8, 16, 32)[seed % 3]
    heads = kv_mul * int(rng.integers(1, 3)) + int(rng.integers(0, 2)) * (kv_mul == 1)
    if max_pos < SEQLEN:
        heads = max(heads, 2)
    kvhead, voff, seqlen = 0x400, 0x2000, SEQLEN
    scale = round(2 ** 15 / hs ** 0.5)
    src, dst = 0, 128
    slots = [(int(rng.integers(0, max_pos)), 0x10000 * (s + 1)) for s in range(2)]     # (pos, kvaddr)
    dram = bytearray(DRAM_BYTES)
    for _, base in slots:
        for kvh in range(-(-heads // kv_mul)):
            for a in (base + kvh * kvhead, base + kvh * kvhead + voff):
                if fmt == "int8":       # any bytes: rows and scale words (read as their low 12 bits)
                    n = isa.kv_head_bytes(fmt, seqlen, hs)
                    dram[a:a + n] = rng.integers(0, 256, n).astype(np.uint8).tobytes()
                else:
                    dram[a:a + 2 * seqlen * hs] = rng.integers(-512, 512, seqlen * hs).astype("<i2").tobytes()
    x = rng.integers(-1 << 18, 1 << 18, (2, heads * hs))
    grants, taken = [], [0]
    beat_chance = 0.6 if max_pos == SEQLEN else 0.3      # (short spans: long gaps between beats)

    @passive
    def sequencer():
        """BURST: each request granted 0-2 cycles late, its beats asked for from there."""
        while True:
            yield
            if (yield attn.req):
                addr, nbytes = (yield attn.req_addr), (yield attn.req_bytes)
                grants.append(addr)
                for _ in range(int(rng.integers(0, 3))):
                    yield
                yield top.burst_go.eq(1)
                yield top.burst_beat.eq(addr >> 4)
                yield top.burst_len.eq((nbytes + 15) >> 4)
                yield
                yield top.burst_go.eq(0)

    @passive
    def dram_model():
        pending, cycle = deque(), 0
        while True:
            ready = rng.random() < 0.7
            have = bool(pending) and pending[0][0] <= cycle and rng.random() < beat_chance
            yield top.addr.ready.eq(int(ready))
            yield top.rd_valid.eq(int(have))
            yield top.rd_data.eq(int.from_bytes(dram[16 * pending[0][1]:16 * pending[0][1] + 16], "little")
                                 if have else 0)
            yield
            cycle += 1
            if ready and (yield top.addr.valid):
                pending.append((cycle + LATENCY, (yield top.addr.address)))
            if have and (yield attn.rd_ready):
                pending.popleft()
                taken[0] += 1

    def gen():
        for s in range(2):
            for k in range(heads * hs):
                yield top.act.mems[s][src + k].eq(int(x[s, k]) & 0xffffffff)
        # The score memories hold what an earlier instruction left: a score read before it is
        # written (or a max taken before the last score) shows.
        for mem in (m for sm in attn.score_memories for m in sm.memories):
            for t in range(mem.depth):
                yield mem[t].eq(int(rng.integers(-1 << 20, 1 << 20)) & 0xffffffff)
        for sig, v in ((attn.src, src), (attn.dst, dst), (attn.n, heads), (attn.m, hs), (attn.src2, kv_mul),
                       (attn.seqlen, seqlen), (attn.kvhead, kvhead), (attn.voff, voff), (attn.attscale, scale)):
            yield sig.eq(v)
        for s, (pos, kvaddr) in enumerate(slots):
            nxt = slots[s + 1] if s + 1 < len(slots) else (0, 0)
            for sig, v in ((top.slot, s), (attn.cur_pos, pos), (attn.pos_off, pos * 2 * hs),
                           (attn.kvaddr, kvaddr), (attn.last_slot, s == 1),
                           (attn.next_pos, nxt[0]), (attn.next_kvb, nxt[1])):
                yield sig.eq(v)
            for _ in range(8):            # the sequencer's registers settle with a new slot
                yield
            yield attn.start.eq(1)
            yield
            yield attn.start.eq(0)
            for _ in range(30000):
                yield
                if (yield attn.done):
                    break
            else:
                raise AssertionError("ATTN did not finish")
        for _ in range(3 * hs + 20):      # the last drain
            yield
        assert not (yield attn.od_active)
        for s, (pos, kvaddr) in enumerate(slots):
            got = []
            for k in range(heads * hs):
                v = yield top.act.mems[s][dst + k]
                got.append(v - (1 << 32) if v >= 1 << 31 else v)
            want = _golden(x[s], dram, kvaddr, pos, heads, hs, kv_mul, kvhead, voff, scale, src, fmt)
            assert (np.array(got) == want).all(), (s, pos, hs, np.nonzero(np.array(got) != want)[0].tolist())

    run_simulation(top, [gen(), sequencer(), dram_model()])
    # Every burst it asked for is a K or V row of one of the slots' KV heads.
    rows = {base + kvh * kvhead + v for _, base in slots for kvh in range(-(-heads // kv_mul)) for v in (0, voff)}
    assert grants and set(grants) <= rows
    # Each KV head's K and V are read once per query head; with attn_pairs once per pair of
    # query heads that share it (src2 = 2).
    per_read = 2 if params.attn_pairs and kv_mul == 2 else 1
    reads = sum(-(-min(kv_mul, heads - g * kv_mul) // per_read) for g in range(-(-heads // kv_mul)))
    assert taken[0] == sum(2 * reads * -(-isa.kv_span(fmt, pos, hs) // 16) for pos, _ in slots)
