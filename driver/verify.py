"""Differential verification: random valid programs on the hardware and on the golden model.

Every case (driver.randprog) is a program with its DRAM image; the golden model's final DRAM is
the expected result. Targets:
- ``core``: the Accelerator alone in Verilator (soc.coresim), every DRAM byte compared;
- a device (``sim``, ``sim://…``, ``serial://…``): the case is uploaded at DRAM offset 0, run
  by the core, and the whole case window is compared by the device's CRC engine (the first
  differing byte is then located by reading DRAM back).
"""

import time
import zlib

import numpy as np

from driver.randprog import make_case
from spec import isa

CASE_DRAM = 1 << 20          # DRAM window each case lives in


def _first_difference(a, b):
    a, b = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    diff = np.nonzero(a != b)[0]
    return int(diff[0]) if diff.size else None


def _mismatch(case, where, detail):
    return {"seed": case.seed, "first_byte": where, **detail, "program": case.listing()}


def _used_extent(*images):
    """Bytes from 0 that hold anything nonzero in any of ``images``, rounded up to a beat."""
    hi = 0
    for img in images:
        nz = np.nonzero(np.frombuffer(img, np.uint8))[0]
        if nz.size:
            hi = max(hi, int(nz[-1]) + 1)
    return -(-hi // isa.BEAT_BYTES) * isa.BEAT_BYTES


def verify_core(programs, seed, params=None, progress=None, stall_percent=10):
    """``stall_percent``: the chance per cycle that each simulated DRAM port refuses a command
    or a write beat (the simulator's backpressure)."""
    from soc.coresim import CoreSim
    if not 0 <= stall_percent <= 95:
        raise ValueError(f"verify: stall percent {stall_percent} outside 0..95")
    params = params or isa.TARGET_PARAMS["sim"]
    result = {"target": "core", "programs": 0, "mismatches": 0, "seed": seed, "cycles": 0,
              "stall_percent": stall_percent}
    with CoreSim(params, CASE_DRAM, progress=progress) as sim:
        for k in range(programs):
            case = make_case(seed + k, params, dram_size=CASE_DRAM)
            r = sim.run(case.dram, case.prog, case.slots, case.nslots, seed=seed + k, stall_percent=stall_percent)
            result["programs"] += 1
            result["cycles"] += r.counters["cycles"]
            where = _first_difference(case.expected_dram, r.dram)
            if r.error or where is not None or r.counters["retired"] != case.retired:
                result["mismatches"] += 1
                result.setdefault("first_mismatch", _mismatch(case, where, {
                    "error": isa.ERROR_NAMES.get(r.error, r.error), "retired": r.counters["retired"],
                    "expected_retired": case.retired}))
            if progress and (k + 1) % 100 == 0:
                progress(f"[verify] {k + 1}/{programs} programs, {result['mismatches']} mismatches")
    return result


def verify_device(device, programs, seed, progress=None):
    params = device.accel_params()
    result = {"target": device.name, "programs": 0, "mismatches": 0, "seed": seed, "cycles": 0}
    dirty = 0                                   # DRAM bytes from 0 the previous case may have changed
    for k in range(programs):
        case = make_case(seed + k, params, dram_size=CASE_DRAM)
        extent = _used_extent(case.dram, case.expected_dram)
        # Restore every byte an earlier case touched, so the device starts from this case's image.
        device.upload(0, case.dram[:max(extent, dirty, isa.BEAT_BYTES)])
        dirty = extent
        error = None
        try:
            counters = device.run_program(case.prog, case.slots, case.nslots, watchdog=50_000_000)
            result["cycles"] += counters["cycles"]
            retired = counters["retired"]
        except Exception as e:          # a core error on a valid program is a mismatch
            from driver.errors import AcceleratorError
            if not isinstance(e, AcceleratorError):
                raise
            error, retired = str(e), None
        result["programs"] += 1
        crc_ok = device.checksum(0, CASE_DRAM) == zlib.crc32(case.expected_dram)
        if error or not crc_ok or retired != case.retired:
            result["mismatches"] += 1
            if "first_mismatch" not in result:
                got = device.read_dram(0, extent)
                result["first_mismatch"] = _mismatch(case, _first_difference(case.expected_dram[:extent], got), {
                    "error": error, "retired": retired, "expected_retired": case.retired})
        if progress and (k + 1) % 25 == 0:
            progress(f"[verify] {k + 1}/{programs} programs, {result['mismatches']} mismatches")
    return result


def verify(target, programs, seed, csr=None, progress=None, config="sim", stall_percent=10):
    """``config``, ``stall_percent`` (core target only): which spec.isa.TARGET_PARAMS the core is
    built with, and how often its simulated DRAM ports refuse a request."""
    t0 = time.monotonic()
    if target == "core":
        if config not in isa.TARGET_PARAMS:
            raise ValueError(f"verify: unknown configuration {config!r} (one of {', '.join(isa.TARGET_PARAMS)})")
        result = verify_core(programs, seed, params=isa.TARGET_PARAMS[config], progress=progress,
                             stall_percent=stall_percent)
        result["config"] = config
    else:
        from driver.device import Device
        with Device.open(target, csr=csr, progress=progress) as device:
            result = verify_device(device, programs, seed, progress=progress)
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result
