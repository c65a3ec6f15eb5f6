"""The int16 packer: int32 Q16 elements into beats of eight int16 in the K/V cache's format
(spec.numerics.to_kv: round by ACT_FRAC - KV_FRAC, saturate to 16 bits). KVWRITE packs a
head's K or V row with it for DRAM; ATTN packs each head's query with it into its query
memory. The sequencer lends it to one of them at a time.

Two variants behind one interface: ``Pack16`` (two scratchpad ports: one element a cycle)
and ``Pack16x4`` (four ports: four elements a cycle, two cycles a beat). Both take the
elements two cycles after their read was addressed (the scratchpads' latency), as ``read``
said, and hand a complete beat on with the ``tag`` (where it goes) it was read with.
"""

from functools import reduce
from operator import or_

from migen import *

from spec import numerics as N
from gateware.arith import round_shift, saturate, as_signed


def _to_kv(m, x):
    """spec.numerics.to_kv of one signed element, in ``m``."""
    st, r = round_shift(x, N.ACT_FRAC - N.KV_FRAC, 40)
    m.comb += st
    return saturate(m, r, 16)


class Pack16(Module):
    """One element a cycle. ``read``: element ``idx`` of the row was addressed this cycle (its
    lane is idx[0:3], its beat idx >> 3), ``half`` rides along (the query memory's half); the
    element arrives in ``x`` two cycles later. The beat builds up in ``word`` (a register);
    ``beat`` is ``word`` with the newest element in, ``beat_done`` says it holds its eighth
    (lane 7), ``beat_idx`` and ``beat_half`` are where it goes. ``v[k]``: stage k holds an
    element (0: addressed, 1: arriving, 2: converted, packed as it leaves)."""

    def __init__(self):
        self.read, self.idx, self.half = Signal(), Signal(8), Signal()
        self.x = Signal((32, True))
        self.word, self.beat = Signal(128), Signal(128)
        self.beat_done, self.beat_idx, self.beat_half = Signal(), Signal(13), Signal()
        self.v = [Signal(name=f"pack16_v{k}") for k in range(3)]
        self.idle = Signal()

        # # #

        kv16 = as_signed(self, _to_kv(self, self.x), 16)
        kv16_r = Signal((16, True))       # registered (timing): read, convert, then pack
        lane = [Signal(3, name=f"pack16_lane{k}") for k in range(3)]
        bidx = [Signal(13, name=f"pack16_beat{k}") for k in range(3)]
        half = [Signal(name=f"pack16_half{k}") for k in range(3)]
        v = self.v
        self.comb += self.beat.eq(self.word)
        for l in range(8):
            self.comb += If(lane[2] == l, self.beat[16 * l:16 * (l + 1)].eq(kv16_r))
        self.sync += [
            kv16_r.eq(kv16),
            v[0].eq(self.read), lane[0].eq(self.idx[0:3]), bidx[0].eq(self.idx >> 3), half[0].eq(self.half),
            [(v[k].eq(v[k - 1]), lane[k].eq(lane[k - 1]), bidx[k].eq(bidx[k - 1]), half[k].eq(half[k - 1]))
             for k in (1, 2)],
            If(v[2], self.word.eq(self.beat)),
        ]
        self.comb += [
            self.beat_done.eq(v[2] & (lane[2] == 7)), self.beat_idx.eq(bidx[2]), self.beat_half.eq(half[2]),
            self.idle.eq(~reduce(or_, v)),
        ]


class Pack16x4(Module):
    """Four elements a cycle, two cycles a beat. ``read``: elements of the row were addressed on
    the four ports this cycle, the beat's second half when ``hi``; ``query`` and ``tag`` (the
    beat's address: query memory or DRAM) ride along. The elements are slot ``slot``'s
    (``rdat[p][s]``), taken two cycles later; the slot may move on meanwhile. Stages: read (0),
    arrive (2), converted and registered (3); the beat's first half is kept, and with its
    second the beat is complete: ``beat_valid``, ``beat`` (``lo`` and the four newest),
    ``beat_query``, ``beat_tag``. ``idle``: nothing in flight."""

    def __init__(self, slots, tag_width):
        self.read, self.hi, self.query = Signal(), Signal(), Signal()
        self.tag = Signal(tag_width)
        self.slot = Signal(max=max(slots, 2))
        self.rdat = [[Signal((32, True), name=f"pack4_rdat{p}_{s}") for s in range(slots)] for p in range(4)]
        self.beat, self.beat_valid, self.beat_query = Signal(128), Signal(), Signal()
        self.beat_tag = Signal(tag_width)
        self.idle = Signal()

        # # #

        v = [Signal(name=f"pack4_v{k}") for k in range(3)]      # stage k valid
        hi = [Signal(name=f"pack4_hi{k}") for k in range(3)]    # the beat's second half
        isq = [Signal(name=f"pack4_q{k}") for k in range(3)]    # a query beat
        a = [Signal(tag_width, name=f"pack4_a{k}") for k in range(3)]   # its tag
        lo = Signal(64, name="pack4_lo")
        # The slot moves on with a row's last reads, so its data is selected by the slot it
        # was read from (two cycles on).
        slot = [Signal(max=max(slots, 2)) for _ in range(2)]
        self.sync += [slot[0].eq(self.slot), slot[1].eq(slot[0])]
        elems = []
        for e in range(4):
            q = Signal(16, name=f"pack4_elem{e}")
            self.sync += q.eq(_to_kv(self, as_signed(self, Array(self.rdat[e])[slot[1]], 32)))
            elems.append(q)
        self.sync += [
            v[0].eq(self.read), isq[0].eq(self.query), hi[0].eq(self.hi), a[0].eq(self.tag),
            [(v[k].eq(v[k - 1]), hi[k].eq(hi[k - 1]), isq[k].eq(isq[k - 1]), a[k].eq(a[k - 1])) for k in (1, 2)],
            If(v[2] & ~hi[2], lo.eq(Cat(*elems))),
        ]
        self.comb += [
            self.beat.eq(Cat(lo, *elems)), self.beat_valid.eq(v[2] & hi[2]),
            self.beat_query.eq(isq[2]), self.beat_tag.eq(a[2]),
            self.idle.eq(~reduce(or_, v)),
        ]
