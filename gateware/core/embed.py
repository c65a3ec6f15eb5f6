"""EMBED's conversion: act[dst + k] = embed(row_q[k], row_shift) for k < n (spec.numerics.embed),
one slot's fixed16 row at a time.

The sequencer checks the slot's token and issues the row's burst as it starts the unit; the
row comes through a BeatUnpacker (its header's shift, then eight int16 a beat). One element a
cycle (plus one a beat): the element (S1), rounding bias (S2), shift (S3), saturate and write.
"""

from migen import *

from spec import numerics as N
from gateware.arith import round_shift_split, saturate, as_signed
from gateware.core.pipeline import delay_chain, stop_on_abort
from gateware.core.unpack import add_unpacker_port

LATENCY = 3           # cycles from an element's issue to its write



class Embed(Module):
    """Start/granted/done/abort as Rmsnorm's: ``start`` as the sequencer issues the row's burst,
    ``granted`` when BURST has sent it, ``done`` in the last cycle. ``dst`` and ``n`` hold
    still until then. Row, through a BeatUnpacker: ``f16_header`` and ``f16_run`` drive it;
    ``f16_taken``, ``f16_issue``, ``f16_i``, ``f16_element``, ``f16_shift`` come back. Out: one
    slot's write, ``wadr``, ``wdat``, ``we``."""

    def __init__(self):
        self.start, self.granted, self.abort, self.done = Signal(), Signal(), Signal(), Signal()
        self.dst, self.n = Signal(16), Signal(16)
        add_unpacker_port(self)
        self.wadr, self.wdat, self.we = Signal(17), Signal((32, True)), Signal()

        # # #

        fsm = FSM(reset_state="IDLE")
        self.submodules.fsm = fsm
        run = fsm.ongoing("RUN")
        emb_q = Signal((16, True))
        shift = as_signed(self, self.f16_shift - N.ACT_FRAC, 8)
        finish = round_shift_split(self, emb_q, shift, 64, x_bits=16, s_range=(-N.ACT_FRAC, 63 - N.ACT_FRAC),
                                   sat_bits=32)
        emb_r = Signal((len(finish()), True))
        self.sync += [emb_q.eq(self.f16_element[:16]), emb_r.eq(finish())]
        valid = delay_chain(self, self.f16_issue & run, LATENCY, name="emb_v")
        index = delay_chain(self, self.f16_i[:16], LATENCY, name="emb_i")
        self.comb += self.wdat.eq(saturate(self, emb_r, 32))

        fsm.act("IDLE", If(self.start, NextState("WAIT")))
        fsm.act("WAIT", If(self.granted, NextState("HDR")))
        fsm.act("HDR", self.f16_header.eq(1), If(self.f16_taken, NextState("RUN")))
        fsm.act("RUN",
            self.f16_run.eq(1),
            self.wadr.eq(self.dst + index[LATENCY]), self.we.eq(valid[LATENCY]),
            If((self.f16_i == self.n) & (Cat(*valid[1:]) == 0), self.done.eq(1), NextState("IDLE"))
        )
        stop_on_abort(fsm, self.abort)
