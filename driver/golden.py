"""The golden model: the transformer core's instruction set, executed in numpy.

This is the specification the gateware matches bit for bit. One function per opcode, in the
order of spec/isa.py; each reads its operands, checks them exactly as the hardware does, and
writes its results. Arithmetic comes from spec.numerics. DRAM is a bytearray indexed from 0.
"""

import numpy as np

from spec import isa, numerics as N
from spec.isa import BEAT_BYTES, ERRORS


class CoreError(Exception):
    """The core stopped with an error code (spec.isa.ERRORS)."""

    def __init__(self, code, addr=0):
        self.code, self.addr = code, addr
        super().__init__(f"{isa.ERROR_NAMES.get(code, code)} at 0x{addr:x}")


class GoldenCore:
    """Architectural state of one core: DRAM, per-slot activations, registers, loop state."""

    def __init__(self, dram_size, params=isa.Params()):
        self.params = params.validate()
        self.dram = bytearray(dram_size)
        self.act = np.zeros((params.slots, params.act_depth), np.int64)    # int32 Q16 per slot
        self.regs = [0] * isa.N_REGS
        self.retired = 0

    # DRAM access, one burst at a time: the range is checked before any byte moves ------------
    def _burst(self, byte_addr, nbytes):
        start = (byte_addr >> 4) * BEAT_BYTES
        end = start + isa.beats(nbytes) * BEAT_BYTES
        if end > len(self.dram):
            raise CoreError(ERRORS["WINDOW"], start & 0xffffffff)
        return start, end

    def read(self, byte_addr, nbytes):
        start, end = self._burst(byte_addr, nbytes)
        return bytes(self.dram[start:end])

    def write(self, byte_addr, data):
        start, end = self._burst(byte_addr, len(data))
        padded = bytes(data) + bytes(end - start - len(data))
        self.dram[start:end] = padded

    def write_bytes(self, byte_addr, data):
        """Only ``data``'s bytes, at ``byte_addr`` exactly (a write with byte enables); the beats
        it touches are checked as one burst."""
        start = (byte_addr >> 4) * BEAT_BYTES
        self._burst(start, byte_addr + len(data) - start)
        self.dram[byte_addr:byte_addr + len(data)] = bytes(data)

    # Operand checks ----------------------------------------------------------------------------
    def _need(self, cond):
        if not cond:
            raise CoreError(ERRORS["BAD_FIELD"], self.pc_addr)

    def _act_range(self, base, n):
        self._need(n >= 1 and base + n <= self.params.act_depth)

    def _pos(self, slot):
        pos = self.slots[slot][1]
        if pos >= self.regs[isa.REGS["SEQLEN"]]:
            raise CoreError(ERRORS["BAD_POS"], self.pc_addr)
        return pos

    def _waddr(self, ins):
        """Byte address of a weight/table/result operand."""
        layer = self.layer * self.regs[isa.REGS["WSTRIDE"]] if ins["flags"] & isa.FLAG_LAYER else 0
        return ins["addr"] + layer

    def _kvaddr(self, ins, slot):
        """Byte address of this layer's K cache for a slot."""
        layer = self.layer * self.regs[isa.REGS["KVSTRIDE"]] if ins["flags"] & isa.FLAG_LAYER else 0
        return self.slots[slot][2] + ins["addr"] + layer

    def _fixed16(self, byte_addr, n):
        raw = self.read(byte_addr, isa.fixed16_bytes(n))
        shift = raw[0] & 63
        q = np.frombuffer(raw[BEAT_BYTES:BEAT_BYTES + 2 * n], "<i2").astype(np.int64)
        return q, shift

    # Control -----------------------------------------------------------------------------------
    def op_halt(self, ins):
        return "halt"

    def op_setr(self, ins):
        self._need(ins["dst"] < isa.N_REGS)
        self.regs[ins["dst"]] = ins["addr"]

    def op_loop(self, ins):
        self._need(not self.in_loop and ins["n"] >= 1)
        self.in_loop, self.loop_n, self.loop_start, self.layer = True, ins["n"], self.pc + 1, 0

    def op_endloop(self, ins):
        self._need(self.in_loop)
        self.layer += 1
        if self.layer < self.loop_n:
            self.next_pc = self.loop_start
        else:
            self.in_loop, self.layer = False, 0

    # Vector instructions (every active slot, slot 0 first) -------------------------------------
    def op_embed(self, ins):
        n, dst = ins["n"], ins["dst"]
        self._act_range(dst, n)
        self._need(n <= self.params.max_cols)
        for s in range(self.nslots):
            token = self.slots[s][0]
            if token >= ins["m"]:
                raise CoreError(ERRORS["BAD_TOKEN"], self.pc_addr)
            (hdr, hdr_bytes), (span, span_bytes), skip = isa.matrix_row_reads(token, n)
            shift = self.read(self._waddr(ins) + hdr, hdr_bytes)[token % isa.ROW_BLOCK] & 63
            q, mant = matrix_row(self.read(self._waddr(ins) + span, span_bytes), skip, n)
            self.act[s, dst:dst + n] = N.embed(q, mant, shift)[:n]

    def op_rmsnorm(self, ins):
        n, dst, src = ins["n"], ins["dst"], ins["src"]
        self._act_range(src, n)
        self._act_range(dst, n)
        for s in range(self.nslots):
            gain, shift = self._fixed16(self._waddr(ins), n)
            self.act[s, dst:dst + n] = N.rmsnorm(self.act[s, src:src + n], gain, shift)

    def op_matvec(self, ins):
        rows, cols, dst, src = ins["n"], ins["m"], ins["dst"], ins["src"]
        self._act_range(src, cols)
        self._act_range(dst, rows)
        self._need(cols <= self.params.max_cols)
        q, mant, shift = unpack_matrix(self.read(self._waddr(ins), isa.matrix_bytes(rows, cols)), rows, cols)
        for s in range(self.nslots):
            xm, e = N.quantize_input(self.act[s, src:src + cols])
            y = N.matvec(q, mant, shift, xm, e)
            if ins["flags"] & isa.FLAG_ACC:
                y = N.saturate(self.act[s, dst:dst + rows] + y, 32)
            self.act[s, dst:dst + rows] = y

    def op_rope(self, ins):
        n, hs, dst, src = ins["n"], ins["m"], ins["dst"], ins["src"]
        self._need(hs >= 2 and hs % 2 == 0 and hs <= self.params.max_head and n >= 2 and n % 2 == 0)
        self._act_range(src, n)
        self._act_range(dst, n)
        for s in range(self.nslots):
            pos = self._pos(s)
            row = self.read(self._waddr(ins) + pos * isa.rope_row_bytes(hs), isa.rope_row_bytes(hs))
            cs = np.frombuffer(row[:2 * hs], "<i2").astype(np.int64).reshape(-1, 2)
            self.act[s, dst:dst + n] = N.rope(self.act[s, src:src + n], cs[:, 0], cs[:, 1], hs)

    def op_kvwrite(self, ins):
        kv_heads, hs, src = ins["n"], ins["m"], ins["src"]
        fmt = self.params.kv_format
        self._need(hs >= 8 and isa.kv_head_size_ok(fmt, hs) and hs <= self.params.max_head)
        self._act_range(src, kv_heads * hs)
        for s in range(self.nslots):
            pos = self._pos(s)
            for kvh in range(kv_heads):
                row = self.act[s, src + kvh * hs:src + (kvh + 1) * hs]
                base = (self._kvaddr(ins, s) + kvh * self.regs[isa.REGS["KVHEAD"]]) & ~(BEAT_BYTES - 1)
                if fmt == "int16":
                    self.write(base + isa.kv_row_offset(fmt, pos, hs), N.to_kv(row).astype("<i2").tobytes())
                else:
                    # The scale word first, then the row (each write checked as it is made).
                    q, scale = N.to_kv8(row)
                    self.write_bytes(base + isa.kv8_scale_offset(pos, hs), int(scale).to_bytes(2, "little"))
                    self.write_bytes(base + isa.kv_row_offset(fmt, pos, hs), q.astype("<i1").tobytes())

    def _kv_rows(self, base, pos, hs):
        """A KV head's rows 0..pos from ``base``: int16 values, or int8 rows and scale words."""
        fmt = self.params.kv_format
        span = isa.kv_span(fmt, pos, hs)
        data = self.read(base, span)[:span]           # from the beat holding base
        if fmt == "int16":
            return np.frombuffer(data, "<i2").astype(np.int64).reshape(pos + 1, hs), None
        return isa.unpack_kv8(data, pos + 1, hs)

    def op_attn(self, ins):
        heads, hs, kv_mul, dst, src = ins["n"], ins["m"], ins["src2"], ins["dst"], ins["src"]
        self._need(hs >= 8 and isa.kv_head_size_ok(self.params.kv_format, hs) and hs <= self.params.max_head)
        self._need(kv_mul >= 1)
        self._act_range(src, heads * hs)
        self._act_range(dst, heads * hs)
        scale = self.regs[isa.REGS["ATTSCALE"]] & 0xffff
        for s in range(self.nslots):
            pos = self._pos(s)
            self._need(pos < self.params.max_seq)
            for h in range(heads):
                kbase = self._kvaddr(ins, s) + (h // kv_mul) * self.regs[isa.REGS["KVHEAD"]]
                keys, kscale = self._kv_rows(kbase, pos, hs)
                q = N.to_kv(self.act[s, src + h * hs:src + (h + 1) * hs])
                sc = N.scores(q, keys, scale) if kscale is None else N.scores8(q, keys, kscale, scale)
                e, recip = N.softmax_terms(sc)
                vals, vscale = self._kv_rows(kbase + self.regs[isa.REGS["VOFF"]], pos, hs)
                self.act[s, dst + h * hs:dst + (h + 1) * hs] = \
                    N.attend(e, recip, vals) if vscale is None else N.attend8(e, recip, vals, vscale)

    def op_silu(self, ins):
        n, dst, src, src2 = ins["n"], ins["dst"], ins["src"], ins["src2"]
        for base in (dst, src, src2):
            self._act_range(base, n)
        for s in range(self.nslots):
            self.act[s, dst:dst + n] = N.silu_mul(self.act[s, src:src + n], self.act[s, src2:src2 + n])

    def op_store(self, ins):
        n, src = ins["n"], ins["src"]
        self._act_range(src, n)
        for s in range(self.nslots):
            self.write(self._waddr(ins) + s * ins["m"] * BEAT_BYTES, self.act[s, src:src + n].astype("<i4").tobytes())

    def op_argmax(self, ins):
        # Every slot's result is taken (and held) before the first is written, so a write
        # that faults leaves the held results of all slots updated, as in the hardware.
        n, src = ins["n"], ins["src"]
        self._act_range(src, n)
        for s in range(self.nslots):
            v = self.act[s, src:src + n]
            i = int(np.argmax(v))
            if not ins["flags"] & isa.FLAG_ACC or v[i] > self.argmax_held[s][1]:
                self.argmax_held[s] = (ins["m"] + i, int(v[i]))
        for s in range(self.nslots):
            i, v = self.argmax_held[s]
            self.write(self._waddr(ins) + s * BEAT_BYTES, np.array([i, v, 0, 0], "<i4").tobytes())

    def op_load(self, ins):
        n, dst = ins["n"], ins["dst"]
        self._act_range(dst, n)
        for s in range(self.nslots):
            raw = self.read(self._waddr(ins) + s * ins["m"] * BEAT_BYTES, 4 * n)[:4 * n]
            self.act[s, dst:dst + n] = N.saturate(np.frombuffer(raw, "<i4").astype(np.int64), 32)

    # The run loop ------------------------------------------------------------------------------
    def run(self, prog, slots, nslots, max_instructions=10_000_000):
        """Run the program at byte address ``prog`` with ``nslots`` slots from the table at
        ``slots``. Returns (error code, error address); 0 means it halted cleanly."""
        self.pc, self.layer, self.in_loop, self.loop_n, self.loop_start = 0, 0, False, 0, 0
        self.argmax_held = [(0, -(1 << 31))] * self.params.slots     # (index, max): ARGMAX FLAG_ACC's
        self.pc_addr = prog & ~0xf
        try:
            if not 1 <= nslots <= self.params.slots:
                raise CoreError(ERRORS["BAD_SLOTS"], self.pc_addr)
            raw = self.read(slots, nslots * BEAT_BYTES)
            table = np.frombuffer(raw, "<u4").reshape(nslots, 4)
            self.slots = [(int(t), int(p), int(kv)) for t, p, kv, _ in table]
            self.nslots = nslots
            for _ in range(max_instructions):
                self.pc_addr = (prog & ~0xf) + self.pc * BEAT_BYTES
                word = int.from_bytes(self.read(self.pc_addr, BEAT_BYTES), "little")
                ins = isa.decode(word)
                name = isa.OPNAMES.get(ins["op"])
                if name is None:
                    raise CoreError(ERRORS["ILLEGAL_OP"], self.pc_addr)
                self.next_pc = self.pc + 1
                result = getattr(self, "op_" + name.lower())(ins)
                self.retired += 1
                if result == "halt":
                    return 0, 0
                self.pc = self.next_pc
            raise RuntimeError("golden model: instruction budget exhausted")
        except CoreError as e:
            return e.code, e.addr


def matrix_row(span, skip, cols):
    """(q (cp,), mant (cp/8,)) of one matrix row from the superblocks spec.isa.matrix_row_reads
    names: a mantissa beat before every 8 weight beats, the first ``skip`` weight beats
    another row's."""
    beats = np.frombuffer(span, np.uint8).reshape(-1, BEAT_BYTES)
    q, mant, w = [], [], -skip
    for k, beat in enumerate(beats):
        j = k % (isa.SUPERBLOCK + 1)
        if j == 0:
            mbeat = beat
            continue
        if w >= 0:
            q.append(beat.view(np.int8).astype(np.int64))
            mant.append(mbeat[2 * (j - 1):2 * j].astype(np.int64))
        w += 1
    cp = isa.matvec_cols_padded(cols)
    return np.concatenate(q)[:cp], np.concatenate(mant)[:cp // N.WEIGHT_GROUP]


def unpack_matrix(blob, rows, cols):
    """Inverse of spec.isa.pack_matrix: (q (rows, cp), mant (rows, cp/8), shift (rows,))."""
    cp = isa.matvec_cols_padded(cols)
    q = np.zeros((rows, cp), np.int64)
    mant = np.zeros((rows, cp // N.WEIGHT_GROUP), np.int64)
    shift = np.zeros(rows, np.int64)
    off = 0
    for r0 in range(0, rows, isa.ROW_BLOCK):
        r1 = min(rows, r0 + isa.ROW_BLOCK)
        shift[r0:r1] = np.frombuffer(blob[off:off + r1 - r0], np.uint8) & 63
        off += BEAT_BYTES
        nbeats = (r1 - r0) * cp // isa.LANES
        wb = np.zeros((nbeats, isa.LANES), np.int64)
        mb = np.zeros((nbeats, 2), np.int64)
        for b0 in range(0, nbeats, isa.SUPERBLOCK):
            k = min(isa.SUPERBLOCK, nbeats - b0)
            mb[b0:b0 + k] = np.frombuffer(blob[off:off + 2 * k], np.uint8).reshape(k, 2)
            off += BEAT_BYTES
            wb[b0:b0 + k] = np.frombuffer(blob[off:off + k * BEAT_BYTES], np.int8).reshape(k, isa.LANES)
            off += k * BEAT_BYTES
        q[r0:r1] = wb.reshape(r1 - r0, cp)
        mant[r0:r1] = mb.reshape(r1 - r0, -1)
    return q, mant, shift
