"""A behavioural LiteDRAM native port for Migen testbenches: a dict of beats behind the
cmd/wdata/rdata handshakes, with a fixed read latency and random stalls so the blocks under
test see backpressure."""

import random

from migen import passive


class NativePortMemory:
    def __init__(self, port, seed=0, stall_probability=0.3, read_latency=4):
        self.port  = port
        self.beats = {}        # beat address -> int
        self.writes = []       # beat addresses in write order
        self.rng   = random.Random(seed)
        self.stall = stall_probability
        self.read_latency = read_latency

    @passive
    def generator(self):
        port = self.port
        pending_reads = []     # [(ready_cycle, address)]
        pending_writes = []    # addresses awaiting wdata
        cycle = 0
        while True:
            # Command channel.
            cmd_ready = int(self.rng.random() >= self.stall)
            yield port.cmd.ready.eq(cmd_ready)
            yield port.wdata.ready.eq(int(self.rng.random() >= self.stall))
            yield
            cycle += 1
            if cmd_ready and (yield port.cmd.valid):
                addr = (yield port.cmd.addr)
                if (yield port.cmd.we):
                    pending_writes.append(addr)
                else:
                    pending_reads.append((cycle + self.read_latency, addr))
            if (yield port.wdata.valid) and (yield port.wdata.ready):
                assert pending_writes, "wdata without a write command"
                addr = pending_writes.pop(0)
                data, we = (yield port.wdata.data), (yield port.wdata.we)
                mask = sum(0xff << (8 * b) for b in range(16) if we >> b & 1)     # the byte enables
                self.beats[addr] = (self.beats.get(addr, 0) & ~mask) | (data & mask)
                self.writes.append(addr)
            # Read data channel (in order).
            if (yield port.rdata.valid) and (yield port.rdata.ready):
                pending_reads.pop(0)
            if pending_reads and pending_reads[0][0] <= cycle:
                yield port.rdata.valid.eq(1)
                yield port.rdata.data.eq(self.beats.get(pending_reads[0][1], 0))
            else:
                yield port.rdata.valid.eq(0)

    def load(self, beat_bytes, base_beat, data):
        for i in range(0, len(data), beat_bytes):
            self.beats[base_beat + i // beat_bytes] = int.from_bytes(data[i:i + beat_bytes], "little")

    def dump(self, beat_bytes, base_beat, nbeats):
        return b"".join(self.beats.get(base_beat + i, 0).to_bytes(beat_bytes, "little") for i in range(nbeats))


def include_csrs(dut):
    """CSRStatus drives its status word from its fields in its own comb; in a SoC the CSR bank
    pulls it in, in a bare testbench we add each CSR as a submodule."""
    from litex.soc.interconnect.csr import CSRStatus
    for csr in dut.get_csrs():
        if isinstance(csr, CSRStatus):
            csr.finalize(32, "big")
            dut.submodules += csr
    return dut
