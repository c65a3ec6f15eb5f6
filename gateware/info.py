"""Read-only facts the host checks before it trusts a device."""

from migen import *

from litex.gen import LiteXModule
from litex.soc.interconnect.csr import CSRStatus

import spec

# Core Info ----------------------------------------------------------------------------------------

class CoreInfo(LiteXModule):
    """Spec version and hash, DRAM geometry, and a free-running cycle counter.

    The driver refuses a device whose spec hash differs from its own; the cycle counter lets it
    report rates in bytes per simulated (or real) cycle instead of noisy wall time.
    """
    def __init__(self, dram_size, port_bytes):
        self.spec_version = CSRStatus(32, reset=spec.spec_version_word(),
            description="Spec version: major<<16 | minor<<8 | patch.")
        self.spec_hash    = CSRStatus(32, reset=spec.spec_hash(), description="Spec hash (spec.spec_hash()).")
        self.dram_size    = CSRStatus(32, reset=dram_size, description="DRAM bytes reachable by the core.")
        self.port_bytes   = CSRStatus(8,  reset=port_bytes, description="Bytes per DRAM native port beat.")
        self.cycles       = CSRStatus(64, description="sys_clk cycles since reset.")

        # # #

        self.sync += self.cycles.status.eq(self.cycles.status + 1)
