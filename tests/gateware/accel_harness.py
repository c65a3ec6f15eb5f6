"""Run the Accelerator in Migen simulation against a DRAM image, and the same program on the
golden model, for block-level differential tests."""

import os

import numpy as np
from migen import run_simulation

from litedram.common import LiteDRAMNativePort

from driver.golden import GoldenCore
from gateware.accelerator import Accelerator, CLASSES
from spec import isa
from tests.gateware.dram_port_model import NativePortMemory, include_csrs

VCD = os.environ.get("LT_VCD")

SMALL = isa.Params(slots=2, act_depth=256, max_cols=64, max_seq=32, max_head=16)


def run_hw(dram, prog, slots, nslots, params=SMALL, timeout=200_000, watchdog=0, stall=0.1, seed=1):
    """-> dict(status, error, err_addr, dram (bytes), counters)."""
    rp = LiteDRAMNativePort("read", address_width=24, data_width=128)
    wp = LiteDRAMNativePort("write", address_width=24, data_width=128)
    dut = include_csrs(Accelerator(rp, wp, dram_size=len(dram), params=params))
    rmem = NativePortMemory(rp, seed=seed, stall_probability=stall)
    wmem = NativePortMemory(wp, seed=seed + 1, stall_probability=stall)
    wmem.beats = rmem.beats          # one DRAM behind both ports
    rmem.load(16, 0, dram)
    out = {}

    def gen():
        yield dut.prog.storage.eq(prog)
        yield dut.slots.storage.eq(slots)
        yield dut.nslots.storage.eq(nslots)
        yield dut.watchdog.storage.eq(watchdog)
        yield
        yield dut.control.fields.start.eq(1)
        yield
        yield dut.control.fields.start.eq(0)
        for cycle in range(timeout):
            yield
            status = (yield dut.status.status)
            if status & 2:
                break
        else:
            raise AssertionError(f"accelerator did not finish within {timeout} cycles")
        out["status"] = status
        out["error"] = (status >> 8) & 0xff
        out["err_addr"] = (yield dut.err_addr.status)
        out["counters"] = {}
        for name in ("cycles", "mac_busy", "dram_stall", "bytes_read", "bytes_written", "retired"):
            out["counters"][name] = (yield getattr(dut, name).status)

    run_simulation(dut, [gen(), rmem.generator(), wmem.generator()], vcd_name=VCD)
    out["dram"] = rmem.dump(16, 0, len(dram) // 16)
    return out


def run_golden(dram, prog, slots, nslots, params=SMALL):
    core = GoldenCore(len(dram), params)
    core.dram[:] = dram
    code, addr = core.run(prog, slots, nslots)
    return {"error": code, "err_addr": addr, "dram": bytes(core.dram), "retired": core.retired}


def first_difference(a, b):
    a, b = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    diff = np.nonzero(a != b)[0]
    return int(diff[0]) if diff.size else None
