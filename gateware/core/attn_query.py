"""ATTN's query loads: a head's query goes from the scratchpad through the int16 packer
(gateware/core/pack16.py, lent to the unit) into a half of the query memory. With two
scratchpad ports (Pack16) one element a cycle, driven by the states in attention.py; with four
(Pack16x4) four a cycle, the states below. A mixin of gateware/core/attention.py's Attention.
"""

from migen import *


class AttnQuery:
    def _packer_ports(self, ports):
        """The int16 packer's side (gateware/core/pack16.py). Two ports (Pack16): ``pk_read``,
        ``pk_idx``, ``pk_half`` out; ``pk_beat``, ``pk_beat_done``, ``pk_beat_idx``,
        ``pk_beat_half`` in. Four (Pack16x4): ``pk_query`` (the unit reads), ``pk_qaddr`` (the
        query memory's beat), ``pk_hi`` out; ``pk_beat``, ``pk_beat_valid``, ``pk_beat_query``,
        ``pk_beat_tag`` in. Both: ``pk_idle`` in."""
        self.pk_idle, self.pk_beat = Signal(), Signal(128)
        if ports == 2:
            self.pk_read, self.pk_idx, self.pk_half = Signal(), Signal(8), Signal()
            self.pk_beat_done, self.pk_beat_idx, self.pk_beat_half = Signal(), Signal(13), Signal()
        else:
            self.pk_query, self.pk_qaddr, self.pk_hi = Signal(), Signal(16), Signal()
            self.pk_beat_valid, self.pk_beat_query, self.pk_beat_tag = Signal(), Signal(), Signal(32)

    def _query_four_ports(self, fsm, q_wp, q_beats, j, ii, h):
        """The query loads (AT_Q: this head's; AT_NQ: the next head's, into the other half of
        q_mem) through the four-port packer, four elements a cycle."""
        on, m, n = self.on, self.m, self.n
        loading = on("AT_Q") | on("AT_NQ")
        other = on("AT_NQ")               # the next head's query: the other half of q_mem
        qaddr = Cat((j >> 3)[:log2_int(q_beats)], h[0] ^ other)
        hi = j[2]
        if self.pairs:                    # attn_pairs' loads (_pairs)
            loading = loading | on("AP_Q1") | self.ap_ql_active
            qaddr = Mux(self.ap_ql_active, Cat((self.ap_ql_j >> 3)[:log2_int(q_beats)], self.ap_ql_sec),
                        Cat((j >> 3)[:log2_int(q_beats)], h[0] ^ (other | on("AP_Q1"))))
            hi = Mux(self.ap_ql_active, self.ap_ql_j[2], j[2])
        self.comb += [
            self.pk_query.eq(loading), self.pk_qaddr.eq(qaddr), self.pk_hi.eq(hi), self.reading.eq(loading),
            q_wp.adr.eq(self.pk_beat_tag), q_wp.dat_w.eq(self.pk_beat),
            q_wp.we.eq(self.pk_beat_valid & self.pk_beat_query),
        ]
        for state, done in (("AT_Q", "AT_QD"), ("AT_NQ", "AT_NQD")):
            # (attn_pairs: AT_Q goes on with the next head's query, AP_Q1)
            then = If(h + 1 < n, NextValue(j, 0), NextState("AP_Q1")).Else(NextState(done)) \
                if self.pairs and state == "AT_Q" else NextState(done)
            fsm.act(state,
                *[adr.eq(ii + e) for e, adr in enumerate(self.radr)],
                NextValue(j, j + 4), NextValue(ii, ii + 4),
                If(j + 4 == m, then)
            )
