"""Pipeline stage registers, from one helper: a valid bit or a value carried down N stages."""

from migen import *


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
