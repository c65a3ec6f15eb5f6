"""Params.attn_pairs: ATTN takes heads h and h + 1 of a slot as a pair. The stream brings K(h),
K(h + 1), V(h), V(h + 1), so the second head's scores follow the first's without a gap and the
first head's values follow the second head's keys. Each head keeps a half of the query memory
(the head's h[0]) and a score memory of its own. The first head's values are weighed and
summed by attention.py's datapath, the second head's by a second one (its own exponential
pipeline, divider and accumulators), so its values follow the first head's as soon as its own
last score is in. A drain works from a copy of the accumulators (two copies, ap_osnap[0] and
[1], taken in turn and drained in that order, one right behind the other), so a head's values
are summed while the two heads before it drain. A slot's heads go in
pairs only when every K and V burst of the slot lies inside DRAM (so none can fault, and the
order of the requests cannot change what golden reports) and the query heads share K/V heads
one or two at a time (src2 = 1 or 2); otherwise, and for an odd last head, a head runs alone as
without the option.

With src2 = 2 the pair's heads share their KV head, and it is read once: each key beat goes
into both heads' dot products (a second score datapath, into the second head's score memory),
and each value beat into both datapaths at once. The stream then brings K(h), V(h) only.

A mixin of gateware/core/attention.py's Attention: its states call these hooks, which return
the one-head statements unchanged when the option is off.
"""

from functools import reduce
from operator import or_

from migen import *

from gateware.arith import Divider, as_signed
from gateware.core.pipeline import delay_chain

ADDR_W = 50
V_AHEAD_BYTES = 1024      # the longest V span the pair before asks for (src2 = 1)


class AttnPairs:
    def _pair_signals(self):
        """The pair state that the one-head code reads."""
        self.ap_pair = Signal()           # the current head h is the first of a pair
        self.ap_ksec = Signal()           # AT_K takes the second head's K
        self.ap_vsec = Signal()           # AT_V takes the second head's V
        self.ap_ks = [Signal(name=f"ap_ks{x}") for x in range(8)]    # the score pipeline's head
        self.ap_smax1 = Signal((32, True))
        self.ap_scount1 = Signal(32)
        self.ap_busy = Signal()           # the pair's requests are not all in the read queue
        self.ap_push = Signal()
        self.ap_push_beat, self.ap_push_beats = Signal(ADDR_W), Signal(32)
        self.ap_pair_go = Signal()        # heads h and h + 1 may go as a pair
        self.ap_slot_age = Signal(3)      # cycles since the slot started, up to 7
        self.ap_start = Signal()          # a pair's K phase begins: its requests start over
        # The next pair's queries load during this pair's V (_pairs).
        self.ap_ql_start, self.ap_ql_active = Signal(), Signal()
        self.ap_ql_j, self.ap_ql_sec = Signal(8), Signal()
        self.ap_all_free = Signal()       # no sums in either datapath or waiting for a copy
        self.ap_shared = Signal()         # the pair shares its KV head (src2 = 2): K and V read once
        self.ap_od_base = Signal(18)      # where a drain starting now writes
        self.ap_od_recip = Signal(32)     # and its 2**46 / sum
        self.ap_dslot = Signal(8)         # the slot of the drain that runs

    def _pair_reset(self):
        """A slot starts with no pair."""
        return [NextValue(self.ap_pair, 0), NextValue(self.ap_ksec, 0), NextValue(self.ap_vsec, 0)]

    def _pair_first(self, alone):
        """AT_QD (``alone``: its own statements, which ask for the first K): a slot's first pair
        (both queries loaded: AT_Q, AP_Q1) starts there as a pair."""
        if not self.pairs:
            return alone
        # ap_pair_go settles within seven cycles of a new slot.
        return If(self.ap_slot_age == 7,
            alone,
            If(self.ap_pair_go & self.pk_idle, NextValue(self.ap_pair, 1), self.ap_start.eq(1))
        )

    def _pair_scores_done(self, t, scount, alone):
        """AT_K's end: a pair's goes to its values once the second head's keys are all taken
        and the first head's scores are in (the second's finish meanwhile: its values come
        after the first's)."""
        if not self.pairs:
            return alone
        cur_pos = self.pos_n
        return If(self.ap_pair,
            If((self.ap_ksec | self.ap_shared) & (t > cur_pos) & (scount == cur_pos + 1),
                NextValue(t, 0), NextValue(self.ap_ksec, 0), NextValue(self.ap_vsec, 0),
                self.ap_ql_start.eq(1), NextState("AT_V"))
        ).Else(alone)

    def _pair_next(self, kv_early, alone):
        """AT_NEXTH: once the pair's requests are queued, the next head alone or a new pair."""
        if not self.pairs:
            return alone
        return If(~self.ap_busy & self.pk_idle,
            NextValue(self.ap_pair, self.ap_pair_go),
            alone,
            If(kv_early & self.ap_pair_go, self.ap_start.eq(1))
        )

    def _pair_drain(self, r):
        """The accumulators only sum; a head's sums are copied (into ap_osnap[fill], the two
        copies taken in turn) once its 2**46 / sum is in, and a drain shifts a copy out
        (ap_osnap[dsel]), so the next head's V is summed meanwhile (its first beat waits only
        for the copy: v_free, _drain_order). ``ap_wsel``: the element the drain takes."""
        wacc = r.wacc
        wb = self.wacc_bits
        self.ap_osnap = [[Signal((wb, True), name=f"ap_osnap{i}_{x}") for x in range(len(wacc))] for i in range(2)]
        self.ap_wacc2 = [Signal((wb, True), name=f"ap_wacc2_{x}") for x in range(len(wacc))]  # (_shared_values)
        self.ap_copy_a, self.ap_copy_b = Signal(), Signal()
        self.ap_fill, self.ap_dsel = Signal(), Signal()     # the copy taken next, the copy draining
        self.ap_wsel = Signal((wb, True))
        self.comb += self.ap_wsel.eq(Mux(self.ap_dsel, self.ap_osnap[1][0], self.ap_osnap[0][0]))
        for x in range(len(wacc)):
            g = x // 8
            self.sync += If(r.wacc_en_g[g] & ~r.bs[7],
                            wacc[x].eq(Mux(r.wfirst_g[g], 0, wacc[x]) + r.vprod[x % len(r.vprod)]))
            for i, snap in enumerate(self.ap_osnap):
                self.sync += If((self.ap_copy_a | self.ap_copy_b) & (self.ap_fill == i),
                    snap[x].eq(Mux(self.ap_copy_a, wacc[x], self.ap_wacc2[x]))
                ).Elif(r.wshift_g[g] & (self.ap_dsel == i),
                    snap[x].eq(snap[x + 1] if x + 1 < len(wacc) else 0)
                )

    def _shared_v_end(self, h, hm, hg, kvh, m):
        """AT_V's last value beat of a shared pair: both heads are done (it overrides the
        one-head and pair statements before it)."""
        return [If(self.ap_shared,
            NextValue(self.ap_vsec, 0), NextValue(h, h + 2), NextValue(hm, hm + (m << 1)),
            NextValue(hg, 0), NextValue(kvh, kvh + 1),
            If(h + 2 == self.n, NextState("AT_OUTW")).Else(NextState("AT_NEXTH"))
        )]

    def _pairs(self, r):
        """The pairs' states, per-head registers and requests (``r``: what Attention's parts
        share)."""
        fsm, on, sig = r.fsm, self.on, vars(r)
        j, ii, k, t, h = (sig[x] for x in ("j", "ii", "k", "t", "h"))
        n, m, src2 = self.n, self.m, self.src2
        span = sig["span"]
        kvhead, voff, dram_beats = self.kvhead, self.voff, sig["dram_beats"]
        # Whether the slot's heads may pair: its last KV head's V burst (the highest) inside
        # DRAM. Registered in steps; valid four cycles after a new slot.
        last_kvh = Signal(16)
        ext, vlast = Signal(ADDR_W), Signal(ADDR_W)
        slot_ok = Signal()
        self.sync += [
            last_kvh.eq(Mux(src2 == 2, (n - 1) >> 1, n - 1)),
            ext.eq(last_kvh * kvhead + voff),
            vlast.eq(self.kvaddr + ext),
            slot_ok.eq(((src2 == 1) | (src2 == 2)) & (n >= 2)
                       & ((vlast >> 4) + ((span + 15) >> 4) <= dram_beats)),
            If(self.start, self.ap_slot_age.eq(0)
            ).Elif(self.ap_slot_age != 7, self.ap_slot_age.eq(self.ap_slot_age + 1)),
        ]
        self.comb += [self.ap_pair_go.eq(slot_ok & (h + 1 < n)), self.ap_shared.eq(self.ap_pair & (src2 == 2))]
        # Per-head scores: the first head's memory is the one-head path's (sbuf), the second's
        # its own.
        ks, sc, kb6 = self.ap_ks, sig["sc"], sig["kb6"]
        sc2 = self._shared_scores(r)
        sm1 = self._score_memory(r, "ap_scores1")
        self.score_memories.append(sm1)
        kt6 = sig["kt6"]
        self.comb += sm1.radr.eq(t)
        for mem, half in ((r.sm, 0), (sm1, 1)):
            scores = sc2 if half else sc
            self.comb += [
                mem.wadr.eq(kt6), mem.wdat.eq(scores[0]),
                mem.we.eq(sig["ka6"] & ((ks[7] == half) | (self.ap_shared & half))),
            ]
            if self.kv8:
                self.comb += [mem.wdat_b.eq(scores[1]), mem.we_b.eq(mem.we & kb6)]
        self.sync += [
            ks[0].eq(self.ap_ksec), [ks[x].eq(ks[x - 1]) for x in range(1, 8)],
            self._count_scores(sig["ka6"] & (ks[7] | self.ap_shared), self.ap_scount1, self.ap_smax1, sc2, kb6),
            If(on("AT_Q") | on("AT_NEXTH"), self.ap_scount1.eq(0)),
        ]
        self._shared_values(r, sm1)

        # Query loads through the four-element packer (_query_four_ports): head h + 1's right
        # behind head h's in AT_Q (AP_Q1); the next pair's two while this pair's V runs (the
        # loader below: the FSM's states then use no scratchpad read port).
        fsm.act("AP_Q1",
            *[adr.eq(ii + e) for e, adr in enumerate(self.radr)],
            NextValue(j, j + 4), NextValue(ii, ii + 4),
            If(j + 4 == m, NextState("AT_QD"))
        )
        ql_ii, ql_two = Signal(32), Signal()
        qj = self.ap_ql_j
        self.sync += If(self.ap_ql_start,
            self.ap_ql_active.eq(h + 2 < n), qj.eq(0), self.ap_ql_sec.eq(0), ql_two.eq(h + 3 < n),
            ql_ii.eq(self.src + sig["hm"] + (m << 1))
        ).Elif(self.ap_ql_active,
            qj.eq(qj + 4), ql_ii.eq(ql_ii + 4),
            If(qj + 4 == m,
                qj.eq(0), self.ap_ql_sec.eq(1),
                If(self.ap_ql_sec | ~ql_two, self.ap_ql_active.eq(0))
            )
        )
        self.comb += If(self.ap_ql_active, *[adr.eq(ql_ii + e) for e, adr in enumerate(self.radr)])

        self._pair_requests(r, ext)

    def _pair_requests(self, r, ext):
        """A pair's reads, asked for ahead into the read queue (``ext``: the last KV head's V
        offset from the slot's KV base)."""
        fsm, on, sig = r.fsm, self.on, vars(r)
        h, kv_early, span = r.h, r.kv_early, r.span
        n, m, src2 = self.n, self.m, self.src2
        kvhead, voff, dram_beats = self.kvhead, self.voff, r.dram_beats
        # Requests, in the order the stream brings them (steps 0..6): K(h + 1) (unless the pair
        # before asked for it), V(h), V(h + 1), then the next pair's K: K(h + 2) or the next
        # slot's first head (where that passes ATTN's checks and lies inside DRAM; it sets
        # kv_early), and K(h + 3) or the next slot's second head (where that slot will pair its
        # heads: the same test as its own, on its KV base and position); then, where the span
        # is short, the next pair's V: V(h + 2) and V(h + 3) where heads h + 2, h + 3 pair in
        # this slot, or after the slot's last pair the next slot's V(0) and V(1). The next
        # pair's values then wait in the read FIFO behind its keys instead of a DRAM latency
        # after them, and its own requests start at step 3.
        # With src2 = 2, h is even and heads h, h + 1 share a KV head: K(h + 1), V(h + 1) and
        # K(h + 3) are K(h), V(h) and K(h + 2); in K(h + 3)'s place comes V(h + 2) where heads
        # h + 2, h + 3 pair in this slot (after the slot's last pair, the next slot's first V
        # where that slot will pair). Steps 5 and 6 then ask, for a short span, for the pair
        # after next: K(h + 4), V(h + 4) (after the slot's last pair, the next slot's second
        # pair), and the next pair skips steps 3 and 4 (q4): a short pair takes fewer cycles
        # than DRAM's latency, so keys asked for one pair ahead would come after the pair
        # needs them.
        kb1, vb1, kb2, kb3 = (Signal(ADDR_W, name=f"ap_{x}") for x in ("kb1", "vb1", "kb2", "kb3"))
        f1, f1_len = Signal(ADDR_W), Signal(ADDR_W)
        f1_ok, f2_ok = Signal(), Signal()
        f2, f2_len = Signal(ADDR_W), Signal(ADDR_W)
        next_pairs = Signal()             # the next slot will pair its heads
        next_span = Signal(ADDR_W)
        kq2 = Signal()                    # K(h + 1) of the next pair is queued
        vq2 = Signal()                    # the next pair's V is queued, behind its K
        q4, q4_l = Signal(), Signal()     # a shared pair queued the pair after next (K(h + 4), V(h + 4))
        step = Signal(3)                  # 0..6: the request to make; 7: all made
        age = Signal(3)                   # cycles since the pair began, up to 7
        nx_kvaddr = sig["nx_kvaddr"]
        self.sync += [
            kb1.eq(sig["kvhead_base"] + Mux(src2 == 1, kvhead, 0)),
            vb1.eq(kb1 + voff),
            kb2.eq(sig["kvhead_base"] + Mux(src2 == 1, kvhead << 1, kvhead)),
            kb3.eq(sig["kvhead_base"] + Mux(src2 == 1, (kvhead << 1) + kvhead, kvhead)),
            next_span.eq(sig["nx_slot_span"]),
            If(h + 2 < n,
                f1.eq(kb2), f1_len.eq(span), f1_ok.eq(1)
            ).Else(
                f1.eq(nx_kvaddr), f1_len.eq(next_span),
                f1_ok.eq(sig["nx_pos_ok"] & ((nx_kvaddr >> 4) + ((next_span + 15) >> 4) <= dram_beats))
            ),
            next_pairs.eq(((src2 == 1) | (src2 == 2)) & (n >= 2)
                          & (((nx_kvaddr + ext) >> 4) + ((next_span + 15) >> 4) <= dram_beats)),
            If(src2 == 2,
                If(h + 3 < n,
                    f2.eq(kb2 + voff), f2_len.eq(span), f2_ok.eq(1)
                ).Elif(h + 2 >= n,
                    f2.eq(nx_kvaddr + voff), f2_len.eq(next_span), f2_ok.eq(f1_ok & next_pairs)
                ).Else(
                    f2_ok.eq(0)
                )
            ).Elif(h + 3 < n,
                f2.eq(kb3), f2_len.eq(span), f2_ok.eq(1)
            ).Elif(h + 2 >= n,
                f2.eq(nx_kvaddr + Mux(src2 == 1, kvhead, 0)), f2_len.eq(next_span),
                f2_ok.eq(f1_ok & next_pairs)
            ).Else(
                f2_ok.eq(0)
            ),
        ]
        # Latched when the pair's addresses have settled (age 5): the later requests may leave
        # after the pair has moved on to its second head (kvh and h with it), when the read
        # port is slow to take the bursts before them.
        vb0_l, vb1_l, f1_l, f1_len_l, f2_l, f2_len_l, v2_l, v3_l = (Signal(ADDR_W) for _ in range(8))
        f1_ok_l, f2_ok_l, v23_ok_l = Signal(), Signal(), Signal()
        self.sync += If(age == 5,
            vb0_l.eq(sig["vhead_base"]), vb1_l.eq(vb1), f1_l.eq(f1), f1_len_l.eq(f1_len), f2_l.eq(f2),
            f2_len_l.eq(f2_len), f1_ok_l.eq(f1_ok), f2_ok_l.eq(f2_ok),
            # Steps 5 and 6, only for short spans (a long one's requests would hold the pair
            # back until the bursts before them were sent, while the stream is busy anyway).
            # The slot's last pair asks for the next slot's first pair's V (src2 = 1: its K are
            # f1, f2) or its second pair (src2 = 2: its first is f1, f2).
            If(h + 2 >= n,
                v2_l.eq(nx_kvaddr + Mux(src2 == 2, kvhead, voff)), v3_l.eq(nx_kvaddr + kvhead + voff),
                v23_ok_l.eq(f1_ok & next_pairs & ((src2 == 1) | (n >= 4)) & (next_span <= V_AHEAD_BYTES))
            ).Elif(src2 == 2,
                v2_l.eq(kb2 + kvhead), v3_l.eq(kb2 + kvhead + voff),
                v23_ok_l.eq((h + 5 < n) & (span <= V_AHEAD_BYTES))
            ).Else(
                v2_l.eq(kb2 + voff), v3_l.eq(kb3 + voff),
                v23_ok_l.eq((src2 == 1) & (h + 3 < n) & (span <= V_AHEAD_BYTES))
            )
        )
        pairing = self.ap_pair & (on("AT_K") | on("AT_V") | on("AT_NEXTH") | on("AT_OUTW"))
        # K(h + 1) is asked for at once (step 0 is only a slot's first pair, whose addresses
        # settled with the slot); the others once the pair's own addresses have settled.
        ready = pairing & ((age >= 6) | (step == 0)) & (step != 7)
        # (a shared pair: K(h + 1) and V(h + 1) are K(h) and V(h); K(h + 3) is K(h + 2))
        # (a pair whose next pair's K and V the pair before queued (q4_l) skips them, as made)
        queued = q4_l & ((step == 3) | (step == 4))
        skip = ((step == 3) & ~f1_ok_l) | ((step == 4) & ~f2_ok_l) | ((step >= 5) & ~v23_ok_l) \
            | (self.ap_shared & ((step == 0) | (step == 2))) | queued
        self.comb += [
            self.ap_busy.eq((self.ap_pair & (step != 7)) | self.ap_ql_active),
            self.ap_push.eq(ready & ~skip & ~self.rdq_valid),
            self.ap_push_beat.eq(Array([kb1, vb0_l, vb1_l, f1_l, f2_l, v2_l, v3_l, v3_l])[step] >> 4),
            # (steps 5 and 6 lie in f1's slot: this one, or the next after the slot's last pair)
            self.ap_push_beats.eq(Mux(step == 4, (f2_len_l + 15) >> 4,
                                      Mux(step >= 3, (f1_len_l + 15) >> 4, (span + 15) >> 4))),
        ]
        self.sync += [
            If(self.ap_start,
                step.eq(Mux(vq2, 3, Mux(kq2, 1, 0))), kq2.eq(0), vq2.eq(0), age.eq(0),
                q4_l.eq(q4), q4.eq(0)
            ).Else(
                If(age != 7, age.eq(age + 1)),
                If(self.ap_push | (ready & skip), step.eq(step + 1)),
                If((self.ap_push | (ready & queued)) & (step == 3), kv_early.eq(1)),
                If((self.ap_push | (ready & queued)) & (step == 4),
                   kq2.eq(~self.ap_shared), vq2.eq(self.ap_shared)),
                If(self.ap_push & (step == 6), If(self.ap_shared, q4.eq(1)).Else(vq2.eq(1))),
            ),
            # (kq2 is kept into the next slot, whose first pair takes it)
            If(self.clear, kq2.eq(0), vq2.eq(0), q4.eq(0), q4_l.eq(0)),
        ]

    def _shared_scores(self, r):
        """The second head's score datapath: the same key beats against the other half of the
        query memory (attention.py's _score_lane, as the first head's). Returns
        the score the second head's memory takes (the first head's path, in a pair that does not
        share)."""
        q_rp2 = r.q_mem.get_port()
        self.specials += q_rp2
        sc2 = self._score_lane(r, self._query_reads(r, q_rp2, ~r.h[0]), "ap")
        return [Mux(self.ap_shared, a, b) for a, b in zip(sc2, r.sc)]

    def _shared_values(self, r, sm1):
        """The second datapath: the weighted sum of a pair's second head (its exponentials from
        its score memory and max through attention.py's _weigh, as the first head's, into
        ap_wacc2, with a divider of its own). A pair that does not share sends its second
        head's value beats here, so they follow the first head's without waiting for its sums;
        a shared pair sends every beat to both datapaths. Then the order of the drains
        (_drain_order)."""
        dd = self._distances(self.ap_smax1, sm1, "ap")
        # stage k: the beat is this datapath's (a second head's, or a shared pair's)
        vs = delay_chain(self, self.ap_shared | self.ap_vsec, 8, name="ap_vs")
        vprod, esum = self._weigh(r, dd, "ap", vs[6])
        for x, acc in enumerate(self.ap_wacc2):
            g = x // 8
            self.sync += If(r.wacc_en_g[g] & vs[7], acc.eq(Mux(r.wfirst_g[g], 0, acc) + vprod[x % len(vprod)]))
        self.submodules.ap_rdiv1 = rdiv1 = Divider(47, 32, quotient_bits=32, steps=r.divider_steps)
        recip1, r1ok = Signal(32), Signal()
        self.comb += [rdiv1.start.eq(r.wdone & vs[8]), rdiv1.dividend.eq(1 << 46), rdiv1.divisor.eq(esum)]
        self.sync += If(rdiv1.start, r1ok.eq(0)).Elif(rdiv1.done, r1ok.eq(1), recip1.eq(rdiv1.quotient))
        self._drain_order(r, vs, recip1, r1ok)

    def _drain_order(self, r, vs, recip1, r1ok):
        """The drains, one at a time, from two copies of the accumulators taken in turn: a
        head's sums are copied (with its 2**46 / sum) into the next copy once that copy is
        neither held nor still shifting out and the sum's reciprocal is in (the first
        datapath's before the second's), and the copies drain in the order they were taken. A
        head's first value beat waits only until its datapath's sums before it are copied
        (v_free): its accumulators and divider are then free. ``vs``: the second datapath's
        beats, by stage. Each head's output address is taken as its last value beat is."""
        wdone, dst, hm, m, bs = r.wdone, self.dst, r.hm, self.m, r.bs
        fill, dsel = self.ap_fill, self.ap_dsel
        a_pend, w2_pend = Signal(), Signal()
        a_base, w2_base, a_last, b_last = Signal(18), Signal(18), Signal(18), Signal(18)
        a_slot, w2_slot = Signal(8), Signal(8)
        held = [Signal(name=f"ap_held{i}") for i in range(2)]
        base = [Signal(18, name=f"ap_hbase{i}") for i in range(2)]
        slot = [Signal(8, name=f"ap_hslot{i}") for i in range(2)]
        recip = [Signal(32, name=f"ap_hrecip{i}") for i in range(2)]
        nxt = Signal()                    # the copy that drains next
        # (a copy may be taken into the one draining once its last element has shifted out)
        free = ~Array(held)[fill] & ~(self.od_shift & (dsel == fill))
        a_done, b_done = wdone & ~bs[8], wdone & bs[8]    # a first or lone head's; a second head's
        shared_done = a_done & vs[8]      # a shared pair's: both heads' sums are done
        in_a = reduce(or_, [r.va[k] & ~bs[k] for k in range(1, 8)]) | a_done
        in_b = reduce(or_, [r.va[k] & vs[k] for k in range(1, 8)]) | (wdone & vs[8])
        free_a, free_b = ~(in_a | a_pend), ~(in_b | w2_pend)
        self.comb += [
            self.ap_copy_a.eq(a_pend & r.recip_ok & free),
            self.ap_copy_b.eq(w2_pend & ~a_pend & r1ok & free),
            r.od_start.eq(Array(held)[nxt] & ~self.od_shift),
            self.ap_od_base.eq(Array(base)[nxt]),
            self.ap_od_recip.eq(Array(recip)[nxt]),
            self.v_busy.eq(r.in_flight | a_pend | w2_pend | held[0] | held[1]),
            # (a second head's values also wait for its last score and its max: they may
            # follow the first head's values before its scores are all in)
            r.v_free.eq(Mux(self.ap_vsec, free_b & (self.ap_scount1 == self.pos_n + 1),
                            free_a & (free_b | ~self.ap_shared))),
            self.ap_all_free.eq(free_a & free_b),
        ]
        copy = self.ap_copy_a | self.ap_copy_b
        self.sync += [
            If(r.a_v & r.vl[0], If(self.ap_vsec, b_last.eq(dst + hm)).Else(a_last.eq(dst + hm))),
            If(self.ap_copy_a, a_pend.eq(0)),
            If(self.ap_copy_b, w2_pend.eq(0)),
            If(a_done, a_pend.eq(1), a_base.eq(a_last), a_slot.eq(self.slot)),
            If(shared_done, w2_pend.eq(1), w2_base.eq(a_last + m), w2_slot.eq(self.slot)),
            If(b_done, w2_pend.eq(1), w2_base.eq(b_last), w2_slot.eq(self.slot)),
            [If(copy & (fill == i),
                held[i].eq(1), base[i].eq(Mux(self.ap_copy_a, a_base, w2_base)),
                slot[i].eq(Mux(self.ap_copy_a, a_slot, w2_slot)),
                recip[i].eq(Mux(self.ap_copy_a, r.recip, recip1))
            ).Elif(r.od_start & (nxt == i), held[i].eq(0)) for i in range(2)],
            If(copy, fill.eq(~fill)),
            If(r.od_start, self.ap_dslot.eq(Array(slot)[nxt]), dsel.eq(nxt), nxt.eq(~nxt)),
            If(self.clear, fill.eq(0), nxt.eq(0)),
        ]
