"""The units' common mechanics, from one helper each: pipeline stage registers (a valid bit or a
value carried down N stages), a unit's running flag, a unit FSM's stop on ``abort``, and the
check that an FSM has no state that is tested but never defined."""

from migen import *
from migen.fhdl.structure import _Assign


def delay_chain(m, first, depth, keep=None, name="stage"):
    """Registers ``s[1] .. s[depth]`` of ``m``: ``s[1]`` takes ``first`` and each later stage
    the one before it, every cycle. With ``keep`` (a valid chain), every stage after the first
    also needs ``keep``: a unit's pipeline empties as soon as it stops running. Returns
    ``[first, s[1], …, s[depth]]`` so that stage k is ``chain[k]``."""
    chain = [first] + [Signal.like(first, name=f"{name}{k}") if isinstance(first, Signal)
                       else Signal(len(first), name=f"{name}{k}") for k in range(1, depth + 1)]
    for k in range(1, depth + 1):
        m.sync += chain[k].eq(chain[k - 1] & keep if keep is not None and k > 1 else chain[k - 1])
    return chain


def drive_running(m, running, start, done, abort):
    """A unit's ``running`` register, in ``m``: set by ``start``, cleared after ``done`` (which
    is high only while running) or ``abort``."""
    m.sync += [
        If(start, running.eq(1)).Elif(running, If(done, running.eq(0))),
        If(abort, running.eq(0)),
    ]


def stop_on_abort(fsm, abort):
    """Every state of a unit's ``fsm`` but IDLE returns to IDLE on ``abort``: a fault stops the
    unit wherever it is. Call once all states are written."""
    for state in list(fsm.actions):
        if state != "IDLE":
            fsm.act(state, If(abort, NextState("IDLE")))


def check_no_dead_states(fsm, owner):
    """Raise if a state of ``fsm`` is only ever asked about (``fsm.ongoing``) and has no action of
    its own: a state moved into a unit, still named where its old owner tests for it, would never
    be entered and the test would silently read 0."""
    def marker(st):
        return isinstance(st, _Assign) and isinstance(st.l, Signal) and st.l.backtrace \
            and st.l.backtrace[-1][0] == "is_ongoing"
    dead = [state for state, stmts in fsm.actions.items() if all(marker(st) for st in stmts)]
    if dead:
        raise RuntimeError(f"{owner}: states tested but never defined: {', '.join(dead)}")
