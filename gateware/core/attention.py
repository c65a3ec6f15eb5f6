"""ATTN: for each head h < n of one slot, out[dst + h*m:][:m] = softmax(q·K / sqrt(m)) · V over
positions 0..pos, q the head's query act[src + h*m:][:m] and K, V the slot's cached rows of KV
head h // src2 (spec.numerics.scores, softmax_terms, attend). The sequencer walks the slots: it
checks each slot's position and starts the unit, which runs the slot's heads and answers
``done`` once the slot's outputs may be overtaken.

Per head: the query is packed into int16 (the packer, gateware/core/pack16.py, lent to the
unit) into one half of the query memory; K streams in and every position's score is computed
(stage 0 accepts a key beat, 1 registers both operands, 1a multiplies, 1b sums the 8 products,
2 accumulates over the head, 3 scales, 4 adds the rounding bias, 5 shifts and saturates, 6
takes the max and stores it in the score memory); the next head's query loads into the other
half; then V streams in once: each beat's position gets its exponential from its score and
the max, which weights the beat into the accumulators and adds to the exponentials' sum; a
divider takes 2**46 / sum, and the accumulators drain through a multiplier by it to the
scratchpad beside the next head's work. Two passes over DRAM, no pass over the scores.

Bursts go through the sequencer (``req``, ``req_addr``, ``req_bytes``: BURST checks them
against the DRAM window, ``granted``); requests made ahead (this head's V, the next head's K)
go into the read queue (``q_push``, ``q_addr``, ``q_len``) only where their burst lies inside
DRAM, so any fault is reported where golden reports it. ``attn_overlap`` asks for V and the
next K while the scores run; ``attn_pairs`` takes two heads at a time
(gateware/core/attn_pairs.py).
"""

from functools import reduce
from types import SimpleNamespace
from operator import or_

from migen import *

from spec import numerics as N
from gateware.arith import round_shift, round_shift_split, saturate, Divider, as_signed
from gateware.core.attn_pairs import AttnPairs
from gateware.core.attn_query import AttnQuery
from gateware.core.kv8view import AttnKv8, _lanes
from gateware.core.pipeline import delay_chain, stop_on_abort

ADDR_W = 50


class Attention(Module, AttnPairs, AttnQuery, AttnKv8):
    """Start/done: ``start`` begins a slot (its position passed the checks), ``done`` is high in
    its last cycle; ``abort`` stops the unit at once: nothing its states drive happens in that
    cycle, as the sequencer has left them; ``clear`` (a run's start) forgets requests made
    ahead. Operands hold still until done: ``src``, ``dst``, ``n``, ``m``, ``src2``; the slot's
    ``cur_pos``, ``pos_off`` (pos * 2m), ``kvaddr`` (its KV base for the layer), ``slot``,
    ``last_slot``; the next slot's ``next_pos`` and ``next_kvb``, ``kv_off`` (the instruction's
    KV offset for the layer); registers ``seqlen``, ``kvhead``, ``voff``, ``attscale``.
    Scratchpad: ``radr[p]`` while ``reading``; the drain's ``od_we``, ``od_wadr``, ``od_wdat``
    (with ``attn_pairs``, into slot ``od_slot``). Read stream: ``rd_valid``/``rd_data``,
    ``rd_ready``/``rd_wait``; the read queue's ``rdq_valid``. Packer: see ``_packer_ports``.
    Status: ``od_active`` (a drain runs), ``v_busy`` (V beats still being summed),
    ``pair_busy`` (a pair's requests or query loads are not all made), ``burst_out`` (the
    instruction's last burst has gone out: the sequencer may ask for the next one's weights)."""

    def __init__(self, params, dram_beats):
        XR, D = params.act_read_ports, params.act_depth
        self.overlap, self.pairs = params.attn_overlap, params.attn_pairs
        self.kv8 = params.kv_format == "int8"
        # int8 rows: the sums of shifted value rows are exact (spec.numerics.attend8), < 2**56.
        self.wacc_bits = 58 if self.kv8 else 48
        self.start, self.abort, self.clear, self.done = Signal(), Signal(), Signal(), Signal()
        self.src, self.dst, self.n, self.m, self.src2 = (Signal(16, name=f"attn_{x}") for x in
                                                          ("src", "dst", "n", "m", "src2"))
        self.cur_pos, self.next_pos, self.next_kvb = Signal(32), Signal(32), Signal(32)
        self.pos_off, self.kvaddr, self.kv_off = Signal(ADDR_W), Signal(ADDR_W), Signal(ADDR_W)
        self.slot, self.last_slot = Signal(8), Signal()
        self.seqlen, self.kvhead, self.voff, self.attscale = (Signal(32) for _ in range(4))
        self.req, self.req_addr, self.req_bytes, self.granted = Signal(), Signal(ADDR_W), Signal(ADDR_W), Signal()
        self.rd_valid, self.rd_data, self.rd_ready, self.rd_wait, self.rdq_valid = \
            Signal(), Signal(128), Signal(), Signal(), Signal()
        self.q_push, self.q_addr, self.q_len = Signal(), Signal(ADDR_W), Signal(ADDR_W)
        self.radr, self.reading = [Signal(17, name=f"attn_radr{p}") for p in range(XR)], Signal()
        self.od_we, self.od_wadr, self.od_wdat, self.od_slot = Signal(), Signal(18), Signal((32, True)), Signal(8)
        self.od_active, self.v_busy, self.pair_busy, self.burst_out = Signal(), Signal(), Signal(), Signal()
        self._packer_ports(XR)

        # # #

        self._kv_stream()
        # pos < max_seq (checked before start): t and its compares that wide (timing: t <= pos is the read's ready)
        self.pos_n = Signal(max=params.max_seq + 1)
        self.comb += self.pos_n.eq(self.cur_pos)
        src, dst, n, m, src2, cur_pos = self.src, self.dst, self.n, self.m, self.src2, self.pos_n
        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        on = self.on = lambda state: fsm.ongoing(state) & ~self.abort
        # The unit's registers: loop indices, the head, its KV head (kvh) and its place in the
        # KV head's group (hg), h * m kept by adding m per head (timing: no multiplier between
        # the FSM's registers).
        j, k, t = Signal(8), Signal(16), Signal(max=params.max_seq + 2)
        ii = Signal(max=D + 1)
        h, kvh, hg, hm = Signal(16), Signal(16), Signal(16), Signal(32)
        kv_early = Signal()               # the current head's K is already requested
        od_active, od_start = self.od_active, Signal()
        self.sync += If(self.clear, kv_early.eq(0))
        if self.pairs:
            self._pair_signals()
        ret, ret_states = Signal(4), []

        def burst(addr, nbytes, then):
            if then not in ret_states:
                ret_states.append(then)
            return [self.req.eq(1), self.req_addr.eq(addr), self.req_bytes.eq(nbytes),
                    NextValue(ret, ret_states.index(then)), NextState("BURST")]

        # One reciprocal divider: 2**46 / sum. The sum is at least 2**15 (the max score's
        # exponential), so the reciprocal fits 32 bits.
        self.submodules.recip_divider = rdiv = Divider(47, 32, quotient_bits=32, steps=params.divider_steps)

        # Two heads' queries (halves h[0] and not h[0]): the next head's is loaded while this
        # head's division runs (AT_NQ).
        q_beats = max(params.max_head // 8, 2)
        q_mem = Memory(128, 2 * q_beats)
        q_rp, q_wp = q_mem.get_port(), q_mem.get_port(write_capable=True)
        self.specials += q_mem, q_rp, q_wp
        exp_rom = Memory(16, len(N.EXP2_TABLE), init=[int(v) for v in N.EXP2_TABLE])
        self.specials += exp_rom
        hsb = Signal(13)                  # a row's beats
        self.comb += hsb.eq(self._beats_per_row(m))
        kvhead_base, vhead_base, span = self._head_addresses(kvh, cur_pos)
        pk = self
        if XR == 2:
            self.comb += [q_wp.adr.eq(Cat(pk.pk_beat_idx[:log2_int(q_beats)], pk.pk_beat_half)),
                          q_wp.dat_w.eq(pk.pk_beat), q_wp.we.eq(pk.pk_beat_done),
                          self.pk_read.eq(on("AT_Q") | on("AT_NQ")), self.pk_idx.eq(j),
                          self.pk_half.eq(h[0] ^ on("AT_NQ")), self.reading.eq(self.pk_read)]
        else:
            self._query_four_ports(fsm, q_wp, q_beats, j, ii, h)
        # What the datapath's parts below share: the unit's registers, memories and helpers.
        r = SimpleNamespace(
            fsm=fsm, on=on, burst=burst, j=j, k=k, t=t, ii=ii, h=h, kvh=kvh, hg=hg, hm=hm, kv_early=kv_early,
            od_active=od_active, od_start=od_start, rdiv=rdiv, q_beats=q_beats, q_mem=q_mem, q_rp=q_rp,
            exp_rom=exp_rom, hsb=hsb, span=span, kvhead_base=kvhead_base, vhead_base=vhead_base,
            D=D, XR=XR, src=src, dst=dst, n=n, m=m, src2=src2, cur_pos=cur_pos, dram_beats=dram_beats,
            max_seq=params.max_seq, max_head=params.max_head, divider_steps=params.divider_steps)
        # The scores (attn_pairs: the first head's).
        r.sm = self._score_memory(r, "at_scores")
        self.score_memories = [r.sm]
        self._next_head(r)
        # wshift (the output shift below) is a register equal to "draining and oj < m": set
        # when a head's drain starts, cleared as oj reaches m (decoded from the FSM state it
        # fanned out to 3,072 flip-flops across the chip).
        wshift = Signal()
        # Each group of 8 accumulators has its own shift, accumulate and first-beat registers
        # (timing: one register steering all 3,072 flip-flops took a 16.5 ns route with placer
        # seed 2). They differ on purpose, so synthesis cannot merge them back into one: group g
        # shifts while j + 8g < m (it holds no element that is still to come after that), and
        # accumulates only the beats addressed to it.
        groups = (params.max_head + 7) // 8
        wshift_g = [Signal(name=f"wshift{g}") for g in range(groups)]
        wacc_en_g = [Signal(name=f"wacc_en{g}") for g in range(groups)]
        wfirst_g = [Signal(name=f"wacc_first{g}") for g in range(groups)]
        fsm.act("IDLE",
            If(self.start,
                NextValue(h, 0), NextValue(hm, 0), NextValue(kvh, 0), NextValue(hg, 0),
                *(self._pair_reset() if self.pairs else []), NextState("AT_H"),
            )
        )
        fsm.act("AT_H", NextValue(j, 0), NextValue(ii, src + hm), NextState("AT_Q"))
        # The head's query, one element a cycle through the int16 packer (four with four
        # scratchpad ports, _query_four_ports); each full beat goes to q_mem.
        if XR == 2:
            fsm.act("AT_Q",
                self.radr[0].eq(ii), NextValue(j, j + 1), NextValue(ii, ii + 1),
                If(j == m - 1, NextState("AT_QD"))
            )
        fsm.act("AT_QD", self._pair_first(
            If(self.pk_idle,
                NextValue(t, 0), NextValue(k, 0),
                If(kv_early,
                    NextValue(kv_early, 0), NextState("AT_K")
                ).Else(
                    *burst(kvhead_base, span, "AT_K")
                )
            )
        ))
        vars(r).update(groups=groups, wshift=wshift, wshift_g=wshift_g, wacc_en_g=wacc_en_g,
                       wfirst_g=wfirst_g)
        self._next_query(r)
        self._scores(r)
        self._values(r)
        self._drain(r)
        self._kv8_view_counters(t, k, r.a_acc | r.a_v)
        if self.pairs:
            self._pairs(r)
        # The instruction's last burst is out once its last slot's last head has asked for V.
        last = (r.last_head | (self.ap_shared & (h + 2 == n) & ~self.ap_busy)) if self.pairs else r.last_head
        self.comb += self.burst_out.eq(last & self.last_slot & reduce(or_, [on(st) for st in
            ("AT_NQ", "AT_NQD", "AT_V")]))
        if not self.pairs:
            self.ap_busy = C(0)
        self.comb += self.pair_busy.eq(self.ap_busy)
        fsm.act("BURST", If(self.granted, Case(ret, {i: NextState(s) for i, s in enumerate(ret_states)})))
        # In the cycle the sequencer has left for FLUSH, nothing a state drives happens.
        for state in list(fsm.actions):
            if state != "IDLE":
                fsm.actions[state] = [If(~self.abort, *fsm.actions[state])]
        stop_on_abort(fsm, self.abort)

    def _head_addresses(self, kvh, cur_pos):
        """The head's K and V addresses and the causal span (kv_span), registered: they settle
        during AT_H and AT_Q (the first burst leaves from AT_QD, at least 10 cycles later)."""
        kvh_off, kvhead_base = Signal(ADDR_W), Signal(ADDR_W)
        span, vhead_base = Signal(ADDR_W), Signal(ADDR_W)
        self.sync += [
            kvh_off.eq(kvh * self.kvhead),
            span.eq(self._span_of(cur_pos, self.pos_off)),
            kvhead_base.eq(self.kvaddr + kvh_off),
            vhead_base.eq(kvhead_base + self.voff),
        ]
        return kvhead_base, vhead_base, span

    def _next_head(self, r):
        """The next head's K address and whether it may be asked for ahead (registered in steps)."""
        h, hg, kvhead_base, m, n, span, src2 = r.h, r.hg, r.kvhead_base, r.m, r.n, r.span, r.src2
        # The next head's K is requested right behind this head's V (AT_KN), so its beats wait
        # in the read FIFO and the next AT_K does not wait for DRAM's latency (~25 cycles a
        # head). The next head is h + 1 of this slot, or head 0 of the next slot. It is asked
        # for early only where its burst lies inside DRAM and the next slot's position passes
        # ATTN's checks; otherwise that head asks in AT_QD and faults there, as golden does.
        # Registered in steps during AT_Q and AT_K (at least 10 cycles before AT_KN).
        last_head = Signal()
        nx_pos, nx_kvb, nx_pos_off, nx_kvaddr = Signal(32), Signal(32), Signal(ADDR_W), Signal(ADDR_W)
        nx_base, nx_span = Signal(ADDR_W), Signal(ADDR_W)
        nx_pos_ok, nx_ok = Signal(), Signal()
        self.comb += last_head.eq(h == n - 1)
        nx_slot_span = self._span_of(nx_pos, nx_pos_off)      # the next slot's span
        self.sync += [
            nx_pos.eq(self.next_pos), nx_kvb.eq(self.next_kvb),
            nx_pos_off.eq(nx_pos * (m << 1)),
            nx_kvaddr.eq(nx_kvb + self.kv_off),
            nx_pos_ok.eq((nx_pos < self.seqlen) & (nx_pos < r.max_seq) & ~self.last_slot),
            If(last_head,
                nx_base.eq(nx_kvaddr), nx_span.eq(nx_slot_span)
            ).Else(
                nx_base.eq(kvhead_base + Mux(hg == src2 - 1, self.kvhead, 0)), nx_span.eq(span)
            ),
            nx_ok.eq(((nx_base >> 4) + ((nx_span + 15) >> 4) <= r.dram_beats) & (~last_head | nx_pos_ok)),
        ]
        vars(r).update(last_head=last_head, nx_base=nx_base, nx_kvaddr=nx_kvaddr, nx_ok=nx_ok,
                       nx_slot_span=nx_slot_span, nx_pos_ok=nx_pos_ok, nx_span=nx_span)

    def _scores(self, r):
        """AT_K, AT_KN: each position's score from the key beats, the requests for V and the next K."""
        (burst, cur_pos, fsm, h, hsb, k, kv_early, nx_base, nx_ok, nx_span, on, q_beats, q_rp,
         span, t, vhead_base) = (
            r.burst, r.cur_pos, r.fsm, r.h, r.hsb, r.k, r.kv_early, r.nx_base, r.nx_ok,
            r.nx_span, r.on, r.q_beats, r.q_rp, r.span, r.t, r.vhead_base)
        # Scores.
        a_acc = Signal()
        kt1, kt2, kt3, kt4 = (Signal(32) for _ in range(4))
        ka1, kf1, kl1 = Signal(), Signal(), Signal()
        ka2, kf2, kl2 = Signal(), Signal(), Signal()
        ka3, ka4 = Signal(), Signal()
        kbeat = Signal(128)
        scount = Signal(32)
        smax = Signal((32, True))
        scale = as_signed(self, self.attscale[0:16], 17)
        self.comb += a_acc.eq(on("AT_K") & self.kv_valid & (t <= cur_pos))
        qdat = self._query_reads(r, q_rp, (h[0] ^ self.ap_ksec) if self.pairs else h[0])
        if self.overlap:
            self._overlap(fsm, vhead_base, span, r.dram_beats, scount == cur_pos + 1, nx_ok, kv_early)
        fsm.act("AT_K",
            self.kv_ready.eq(t <= cur_pos), self.rd_wait.eq(t <= cur_pos),
            *([If(self.k_push, NextValue(kv_early, 1))] if self.overlap else []),
            If(a_acc,
                If(k == hsb - 1, NextValue(k, 0), NextValue(t, self._next_row(t))).Else(NextValue(k, k + 1))
            ),
            # attn_pairs: the second head's K follows the first's.
            *([If(a_acc & (k == hsb - 1) & self._last_row(t, cur_pos) & self.ap_pair & ~self.ap_ksec & ~self.ap_shared,
                NextValue(t, 0), NextValue(self.ap_ksec, 1))] if self.pairs else []),
            # The head's V is requested now (unless it is already queued, Params.attn_overlap):
            # its beats wait in the read FIFO while the next head's query loads, so AT_V does
            # not wait for DRAM's latency.
            self._pair_scores_done(t, scount,
            If(scount == cur_pos + 1, NextValue(t, 0),
                If(self.v_queued, NextState("AT_KN")).Else(*burst(vhead_base, span, "AT_KN"))
                if self.overlap else burst(vhead_base, span, "AT_KN")))
        )
        # The read queue takes, with attn_overlap, this head's V (v_push) and the next head's K
        # (k_push), with attn_pairs the pair's requests (ap_push), and the next head's K in AT_KN.
        kn_push = Signal()
        q_addr, q_len = nx_base >> 4, (nx_span + 15) >> 4
        for p, a, b in reversed(([(self.v_push, vhead_base >> 4, (span + 15) >> 4)] if self.overlap else [])
                                + ([(self.ap_push, self.ap_push_beat, self.ap_push_beats)] if self.pairs else [])):
            q_addr, q_len = Mux(p, a, q_addr), Mux(p, b, q_len)
        self.comb += [self.q_addr.eq(q_addr), self.q_len.eq(q_len),
                      self.q_push.eq(kn_push | (self.v_push | self.k_push if self.overlap else 0)
                                     | (self.ap_push if self.pairs else 0))]
        fsm.act("AT_KN",
            If((nx_ok & ~kv_early) if self.overlap else nx_ok, kn_push.eq(1), NextValue(kv_early, 1)),
            r.after_scores
        )
        ka5, kt5, ka6, kt6 = Signal(), Signal(32), Signal(), Signal(32)
        ka1a, kf1a, kl1a, kt1a = Signal(), Signal(), Signal(), Signal(32)
        ka1b, kf1b, kl1b, kt1b = Signal(), Signal(), Signal(), Signal(32)
        kbeat_r = Signal(128)
        keys_r = self._kv_lanes(kbeat_r)
        self.sync += [
            ka1.eq(a_acc), kbeat.eq(self.kv_data), kf1.eq(k == 0), kl1.eq(k == hsb - 1), kt1.eq(t),
            kbeat_r.eq(kbeat),
            ka1a.eq(ka1), kf1a.eq(kf1), kl1a.eq(kl1), kt1a.eq(kt1),
            ka1b.eq(ka1a), kf1b.eq(kf1a), kl1b.eq(kl1a), kt1b.eq(kt1a),
            ka2.eq(ka1b), kf2.eq(kf1b), kl2.eq(kl1b), kt2.eq(kt1b),
            ka3.eq(ka2 & kl2), kt3.eq(kt2),
            ka4.eq(ka3), kt4.eq(kt3),
            ka5.eq(ka4), kt5.eq(kt4),
            ka6.eq(ka5), kt6.eq(kt5),
        ]
        # The beat's second row is in the span (int8 rows, two a beat), in stage 6.
        kb6 = delay_chain(self, self._second_row(t, cur_pos), 8, name="at_kb")[8] if self.kv8 else C(0)
        vars(r).update(keys_r=keys_r, ka2=ka2, kf2=kf2, kl2=kl2, scale=scale, a_acc=a_acc)
        if self.kv8:
            self._kv8_key_scales(r, ka2, kl2, scale)
        sc = self._score_lane(r, qdat, "at")
        self.sync += [
            self._count_scores(ka6 & ~self.ap_ks[-1] if self.pairs else ka6, scount, smax, sc, kb6),
            If(on("AT_Q") | on("AT_NEXTH"), scount.eq(0)),
        ]
        vars(r).update(ka6=ka6, kt6=kt6, kb6=kb6, sc=sc, smax=smax)

    def _score_lane(self, r, qdat, name):
        """One query's score datapath over the key beats (stage numbers as in _scores):
        ``qdat`` (the query memory's read of the beat's 8 query elements, stage 1) is
        registered next to the multipliers with the key beat (1a), the 8 products registered
        (1b) before their sum (2), which accumulates over the head (2, the head's sum in 3),
        is scaled (4), gets its rounding bias (5) and is shifted and saturated: the score in
        stage 6 (spec.numerics.scores). Returns [that register] (int8 rows: _score_lane8)."""
        if self.kv8:
            return self._score_lane8(r, qdat, name)
        qword, dot = Signal(128, name=f"{name}_qword"), Signal((40, True), name=f"{name}_dot8")
        kp = [Signal((32, True), name=f"{name}_kp{l}") for l in range(8)]
        dacc, dsum, dprod = Signal((48, True)), Signal((48, True)), Signal((80, True))
        qs = [as_signed(self, v, 16) for v in _lanes(qword, 16, 8)]
        self.sync += [
            qword.eq(qdat),
            [kp[l].eq(r.keys_r[l] * qs[l]) for l in range(8)],
            dot.eq(sum(kp)),
            If(r.ka2, dacc.eq(Mux(r.kf2, 0, dacc) + dot)),
            If(r.ka2 & r.kl2, dsum.eq(Mux(r.kf2, 0, dacc) + dot)),
            dprod.eq(dsum * r.scale),
        ]
        finish = round_shift_split(self, dprod, 15 + 2 * N.KV_FRAC - N.ACT_FRAC, 80)
        sc = Signal((32, True), name=f"{name}_score")
        self.sync += sc.eq(saturate(self, as_signed(self, finish(), 80), 32))
        return [sc]

    def _next_query(self, r):
        """AT_NQ, AT_NQD: between a head's scores and its values, the next head's query (same
        slot) goes into q_mem's other half, so that head starts with its scores; its K is already
        requested (kv_early). The V beats wait in the read FIFO meanwhile."""
        fsm, j, ii, m, t, k = r.fsm, r.j, r.ii, r.m, r.t, r.k
        nq_ii = Signal(max=r.D + 1)
        self.sync += nq_ii.eq(r.src + r.hm + m)
        r.to_values = [NextValue(t, 0), NextValue(k, 0), NextState("AT_V")]
        r.after_scores = If(r.last_head, *r.to_values).Else(NextValue(j, 0), NextValue(ii, nq_ii), NextState("AT_NQ"))
        if r.XR == 2:
            fsm.act("AT_NQ",
                self.radr[0].eq(ii), NextValue(j, j + 1), NextValue(ii, ii + 1),
                If(j == m - 1, NextState("AT_NQD"))
            )
        fsm.act("AT_NQD", If(self.pk_idle, *r.to_values))

    def _values(self, r):
        """AT_V..AT_OUTW: one pass over V. Each value beat's position gets its softmax exponential
        from its score (spec.numerics.softmax_terms) and weights the beat into the accumulators;
        the exponentials are summed, and at the end a divider takes 2**46 / sum for the drain
        (spec.numerics.attend). Then the next head or slot."""
        (cur_pos, fsm, groups, h, hg, hm, hsb, k, kv_early, kvh, last_head, m,
         od_active, od_start, on, rdiv, sm, smax, src2, t, wacc_en_g, wfirst_g) = (
            r.cur_pos, r.fsm, r.groups, r.h, r.hg, r.hm, r.hsb, r.k, r.kv_early, r.kvh,
            r.last_head, r.m, r.od_active, r.od_start, r.on, r.rdiv, r.sm, r.smax,
            r.src2, r.t, r.wacc_en_g, r.wfirst_g)
        # Stage 0 accepts a value beat and reads its position's score, 1 takes the distance to
        # the max, 2 multiplies it by log2(e), 3 rounds that, 4 reads the exp2 table, 5 shifts, 6
        # multiplies the beat's values and sums the exponential (once per position), 7
        # accumulates.
        # A head's first beat waits until the previous head's sums have left the accumulators
        # (v_free: with attn_pairs, set by _pairs).
        a_v, v_take, v_free = Signal(), Signal(), Signal()
        self.comb += [v_take.eq((t <= cur_pos) & (v_free | (t != 0) | (k != 0))),
                      a_v.eq(on("AT_V") & self.kv_valid & v_take)]
        va = delay_chain(self, a_v, 7, name="at_va")                         # stage k: va[k]
        vf = delay_chain(self, t == 0, 6, name="at_vf")
        vk = delay_chain(self, k[:13], 6, name="at_vk")
        vl = delay_chain(self, self._last_row(t, cur_pos) & (k == hsb - 1), 7, name="at_vl")
        vbeat = delay_chain(self, self.kv_data, 6, name="at_vbeat")
        # int8 rows: the rows' scale words ride with their beats (a mant weighs the
        # exponential in stage 5, a shift the products as they are summed in stage 7), and
        # whether the beat's second row is in the span (two rows a beat).
        if self.kv8:
            r.vsc = delay_chain(self, self.kv_scale, 7, name="at_vscale")
            r.vscb = delay_chain(self, self.kv_scale_b, 7, name="at_vscale_b")
            r.vb = delay_chain(self, self._second_row(t, cur_pos), 6, name="at_vb")
        # attn_pairs: a pair's second head's beats (bs) go to the second datapath (_pairs), the
        # first head's and a lone head's to this one.
        bs = delay_chain(self, self.ap_vsec, 8, name="ap_bs") if self.pairs else [C(0)] * 9
        self.comb += sm.radr.eq(t)
        # The scores' memory takes the scores (attn_pairs: each head of a pair has its own, _pairs).
        if not self.pairs:
            self.comb += [sm.wadr.eq(r.kt6), sm.wdat.eq(r.sc[0]), sm.we.eq(r.ka6)]
            if self.kv8:
                self.comb += [sm.wdat_b.eq(r.sc[1]), sm.we_b.eq(r.ka6 & r.kb6)]
        dd = self._distances(smax, sm, "at")
        vals = self._kv_lanes(vbeat[6])
        vars(r).update(vals=vals, va=va, vf=vf, vk=vk, vl=vl, a_v=a_v, bs=bs)
        vprod, esum = self._weigh(r, dd, "at", ~bs[6])
        wacc = [Signal((self.wacc_bits, True), name=f"wacc{x}") for x in range(r.max_head)]
        wdone = Signal()
        self.sync += [
            [wacc_en_g[g].eq(va[6] & self._acc_group(vk[6], g)) for g in range(groups)],   # va7, group g's beat
            [wfirst_g[g].eq(vf[6] & self._acc_group(vk[6], g)) for g in range(groups)],    # vf7, where it counts
            wdone.eq(va[7] & vl[7]),
        ]
        # The head's 2**46 / sum starts as its sums are done; the drain waits for it.
        recip, recip_ok = Signal(32), Signal()
        self.comb += [rdiv.start.eq(wdone & ~bs[8]), rdiv.dividend.eq(1 << 46), rdiv.divisor.eq(esum)]
        self.sync += If(rdiv.start, recip_ok.eq(0)).Elif(rdiv.done, recip_ok.eq(1), recip.eq(rdiv.quotient))
        in_flight = reduce(or_, va[1:]) | wdone
        if not self.pairs:
            sums_wait = Signal()          # the sums are done, the drain has not started
            self.sync += If(wdone, sums_wait.eq(1)).Elif(od_start, sums_wait.eq(0))
            self.comb += [self.v_busy.eq(in_flight | sums_wait), v_free.eq(~self.v_busy & ~od_active),
                          od_start.eq(sums_wait & recip_ok & ~od_active)]
        fsm.act("AT_V",
            self.kv_ready.eq(v_take), self.rd_wait.eq(v_take),
            If(a_v,
                If(k == hsb - 1, NextValue(k, 0), NextValue(t, self._next_row(t))).Else(NextValue(k, k + 1))
            ),
            # The head is done: its outputs drain on their own while the next head starts.
            # With attn_overlap the next head starts as the last V beat is taken.
            If((a_v & vl[0]) if self.overlap else wdone,
                NextValue(h, h + 1), NextValue(hm, hm + m),
                If(hg == src2 - 1,
                    NextValue(hg, 0), NextValue(kvh, kvh + 1)
                ).Else(
                    NextValue(hg, hg + 1)
                ),
                If(last_head, NextState("AT_OUTW")).Else(NextState("AT_NEXTH")),
                # attn_pairs: the pair's second head next (its V is next in the stream).
                *([If(self.ap_pair & ~self.ap_vsec,
                    NextValue(self.ap_vsec, 1), NextValue(t, 0), NextValue(k, 0), NextState("AT_V")
                ).Elif(self.ap_pair, NextValue(self.ap_vsec, 0)), *self._shared_v_end(h, hm, hg, kvh, m)]
                  if self.pairs else [])
            )
        )
        # The next head of this slot: its query is in q_mem; its K was requested (kv_early), or
        # it is requested from AT_QD after a fresh query load (where it may fault).
        fsm.act("AT_NEXTH", self._pair_next(kv_early,
            If(kv_early,
                NextValue(kv_early, 0), NextValue(t, 0), NextValue(k, 0), NextState("AT_K")
            ).Else(
                NextState("AT_H")
            )
        ))
        # A new slot writes to its own scratchpad: the drain ends first. (attn_pairs: a drain
        # writes the slot its sums were copied in, so the next slot starts once the sums are
        # copied; only the last slot waits for every drain.)
        fsm.act("AT_OUTW", If(~self.ap_busy & Mux(self.last_slot, ~self.v_busy & ~od_active, self.ap_all_free) if self.pairs
                              else ~od_active & ~self.v_busy,
                              self.done.eq(1), NextState("IDLE")))
        vars(r).update(vprod=vprod, wacc=wacc, wdone=wdone, in_flight=in_flight, v_free=v_free, recip=recip,
                       recip_ok=recip_ok)

    def _distances(self, smax, sm, name):
        """Stage 1: the max score minus the beat's position's (int8 rows two a beat: and minus
        the second row's)."""
        dd = [Signal((34, True), name=f"{name}_dd"), Signal((34, True), name=f"{name}_dd_b")]
        self.sync += dd[0].eq(smax - as_signed(self, sm.rdat, 32))
        if self.kv8:
            self.sync += dd[1].eq(smax - as_signed(self, sm.rdat_b, 32))
        return dd

    def _exponential(self, r, dd, name):
        """A distance ``dd`` (stage 2) -> its softmax exponential 2**(-dd * log2(e)) in Q15:
        scaled (2) and rounded (3), the exp2 table read (4), shifted: ``ev`` in stage 5 and
        registered in 6. Returns (ev, ev5)."""
        exp_rp = r.exp_rom.get_port()
        self.specials += exp_rp
        u, u4, ev, ev5 = Signal(40), Signal(40), Signal(17, name=f"{name}_ev"), Signal(17, name=f"{name}_ev5")
        # The product registered before its rounding (timing: the DSP's output into the rounding
        # adder was the ULX3S's worst path, 20.2 ns).
        dd_l = Signal((56, True), name=f"{name}_dd_log2e")
        self.sync += dd_l.eq(dd * N.LOG2E_Q15)
        st, u_r = round_shift(dd_l, 15, 56)
        self.comb += [st, exp_rp.adr.eq(u[N.ACT_FRAC - N.EXP2_TABLE_BITS:N.ACT_FRAC]),
                      ev.eq(exp_rp.dat_r >> Mux(u4[N.ACT_FRAC:] > 31, 31, u4[N.ACT_FRAC:]))]
        self.sync += [u.eq(u_r), u4.eq(u), ev5.eq(ev)]        # (timing: the table's output shifted)
        return ev, ev5

    def _weigh(self, r, dd, name, mine):
        """One head's weights for the value beats: ``dd`` (_distances) -> the exponentials
        (_exponential); in stage 6 the exponential times the beat's values (``vprod``,
        registered for the accumulators in stage 7) and, on a position's first beat, into the
        sum ``esum`` (spec.numerics.softmax_terms, attend), where ``mine`` (stage 6) says the
        beat is this datapath's. Returns (vprod: each accumulator lane's input, esum)."""
        ev, ev5 = self._exponential(r, dd[0], name)
        esum = Signal(48, name=f"{name}_esum")     # at least 2**15: the max score's exponential
        if not self.kv8:
            vprod = [Signal((34, True), name=f"{name}_vprod{l}") for l in range(8)]
            self.sync += If(r.va[6] & (r.vk[6] == 0) & mine, esum.eq(Mux(r.vf[6], 0, esum) + ev5))
            self.sync += [vprod[l].eq(as_signed(self, ev5, 18) * r.vals[l]) for l in range(8)]
            return vprod, esum
        # int8 rows, two a beat: the second row's exponential (0 past the span) into the sum too.
        ev_b, _ = self._exponential(r, dd[1], f"{name}_b")
        ev_bm, ev5_b = Signal(17), Signal(17)
        self.comb += ev_bm.eq(Mux(r.vb[5], ev_b, 0))
        self.sync += [ev5_b.eq(ev_bm),
                      If(r.va[6] & (r.vk[6] == 0) & mine, esum.eq(Mux(r.vf[6], 0, esum) + ev5 + ev5_b))]
        return self._kv8_weights(r, ev, ev_bm, name), esum

    def _drain(self, r):
        """The drain: the accumulators shift out, times the head's 2**46 / sum, rounded and
        saturated (spec.numerics.attend), into the scratchpad."""
        (D, dst, groups, hm, m, od_active, od_start, vprod, wacc, wacc_en_g, wfirst_g, wshift,
         wshift_g) = (
            r.D, r.dst, r.groups, r.hm, r.m, r.od_active, r.od_start, r.vprod, r.wacc,
            r.wacc_en_g, r.wfirst_g, r.wshift, r.wshift_g)
        # Output: the accumulators shift down one per output (wacc0 holds element j) rather
        # than being muxed by j: a 64:1 mux of 48-bit registers drew half of the ULX3S's routing
        # congestion into one spot. S0 registers wacc0, S1 multiplies it by the reciprocal's two
        # halves, S2 adds them, S3 rounds, saturates and writes.
        if self.pairs:
            self._pair_drain(r)
        for x in range(r.max_head) if not self.pairs else []:
            below = wacc[x + 1] if x + 1 < r.max_head else 0
            g = x // 8
            self.sync += If(wshift_g[g], wacc[x].eq(below)
                         ).Elif(wacc_en_g[g], wacc[x].eq(Mux(wfirst_g[g], 0, wacc[x]) + vprod[x % len(vprod)]))
        # The drain runs beside the FSM (which starts the next head meanwhile; nothing else
        # writes the scratchpads then): output oj is in wacc0, and goes to dst + h*m + oj.
        # Drains follow each other without a gap: the next may start once the last element
        # has shifted out (od_shift low), while that element is still multiplied and written:
        # each stage carries its element's address (and slot), so od_base may move on.
        # od_active (status) holds while any element is still to be written.
        wsel = Signal((self.wacc_bits, True))
        ov1, ov2, ov3 = Signal(), Signal(), Signal()
        od_shift, oj = Signal(), Signal(8)
        oa = [Signal(18, name=f"at_oadr{x}") for x in range(1, 4)]     # the element's address, S1..S3
        od_base, od_recip = Signal(max=D + 1), Signal(32)
        self.od_shift = od_shift
        # |wsel| <= 2**15 * sum and recip <= 2**46 / sum, so every product fits 62 bits.
        p_lo, p_hi, wprod = Signal((64, True)), Signal((64, True)), Signal((64, True))
        self.comb += od_active.eq(od_shift | ov1 | ov2 | ov3)
        self.sync += [
            If(od_start,
                # (hm has moved on to the next head by now; attn_pairs: _pair_drain)
                od_shift.eq(1), oj.eq(0), od_base.eq(self.ap_od_base if self.pairs else dst + hm - m),
                od_recip.eq(self.ap_od_recip if self.pairs else r.recip),
                wshift.eq(m != 0), *[wshift_g[g].eq(8 * g < m) for g in range(groups)]
            ).Elif(od_shift,
                If(oj < m, oj.eq(oj + 1)),
                wshift.eq(oj + 1 < m), *[wshift_g[g].eq(oj + 1 + 8 * g < m) for g in range(groups)],
                If(oj + 1 >= m, od_shift.eq(0))
            ),
            wsel.eq(self._drain_sum(self.ap_wsel if self.pairs else wacc[0])), ov1.eq(wshift), oa[0].eq(od_base + oj),
            p_lo.eq(wsel * as_signed(self, od_recip[:16], 17)), p_hi.eq(wsel * as_signed(self, od_recip[16:], 17)),
            ov2.eq(ov1), oa[1].eq(oa[0]),
            wprod.eq((p_hi << 16) + p_lo), ov3.eq(ov2), oa[2].eq(oa[1]),
        ]
        if self.pairs:
            os_ = delay_chain(self, self.ap_dslot, 3, name="at_oslot")
            self.comb += self.od_slot.eq(os_[3])
        st, wo_r = round_shift(wprod, 46 + 7 - N.ATTN8_ACC_DROP if self.kv8 else N.ATTN_OUT_SHIFT, 64)
        self.comb += st
        self.comb += [self.od_we.eq(ov3), self.od_wadr.eq(oa[2]), self.od_wdat.eq(saturate(self, wo_r, 32))]

    def do_finalize(self):
        # One-hot on the FPGA, as the sequencer's (timing): each state's decode is one flip-flop.
        self.fsm.state.attr.add(("fsm_encoding", "one-hot"))

    def _overlap(self, fsm, vhead_base, span, dram_beats, scores_done, next_k_ok, kv_early):
        """Params.attn_overlap, the requests: while AT_K computes a head's scores, its V goes
        into the read queue, and once the stream has taken V, the next head's K (head h + 1, or
        head 0 of the next slot) follows it. Their beats then wait in the read FIFO instead of
        each waiting a DRAM latency after the scores (V) or after V's request (K). Each only
        where its burst lies inside DRAM (and the next slot's position passes ATTN's checks):
        otherwise the head asks at AT_K's end and AT_KN, as without the option, and faults
        there as golden does. The addresses settle four cycles after a new KV head (kvh ->
        kvh_off -> kvhead_base -> vhead_base -> in_dram; the next head's, one more), so AT_K
        waits four cycles before V and seven before K."""
        self.v_push, self.v_queued, self.k_push = Signal(), Signal(), Signal()
        age = Signal(3)                   # cycles in AT_K, up to 7
        in_dram = Signal()
        at_k = self.on("AT_K")
        self.sync += [
            in_dram.eq((vhead_base >> 4) + ((span + 15) >> 4) <= dram_beats),
            If(at_k, If(age != 7, age.eq(age + 1))).Else(age.eq(0)),
            If(self.v_push, self.v_queued.eq(1)),
            # Taken at AT_K's end (or dropped with the instruction, after a fault).
            If(self.on("AT_KN") | self.start | self.clear, self.v_queued.eq(0)),
        ]
        scoring = at_k & ~scores_done
        if self.pairs:
            scoring = scoring & ~self.ap_pair          # a pair makes its own requests
        self.comb += [
            self.v_push.eq(scoring & (age == 4) & in_dram & ~self.v_queued & ~self.rdq_valid),
            self.k_push.eq(scoring & (age == 7) & self.v_queued & ~self.rdq_valid & next_k_ok & ~kv_early),
        ]
