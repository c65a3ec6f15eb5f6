"""A compiled model on a device: upload once, then one program run per step.

``DeviceRunner`` has the interface of ``driver.compiler.GoldenRunner`` (``step(slots, kv)`` ->
logits, argmax), so the same test drives the golden model and the hardware.
"""

import numpy as np

from spec import isa


class DeviceRunner:
    """``compiled`` (a driver.compiler.CompiledModel) on an open ``driver.device.Device``."""

    def __init__(self, device, compiled, progress=None):
        self.device, self.cm = device, compiled
        params = device.accel_params()
        cp = compiled.params
        for name in ("act_depth", "max_cols", "max_seq", "max_head"):
            if getattr(cp, name) > getattr(params, name):
                raise ValueError(f"model compiled for {name} = {getattr(cp, name)}; "
                                 f"{device.name}'s core has {getattr(params, name)}")
        if compiled.base + compiled.total_bytes > device.dram_size:
            raise ValueError(f"the model needs {compiled.base + compiled.total_bytes} bytes of DRAM; "
                             f"{device.name} has {device.dram_size}")
        device.upload(compiled.base, compiled.image, progress=progress)      # CRC-verified
        self.counters = None

    def step(self, slots, kv=None, watchdog=0):
        """Run one step: ``slots`` = (token, pos) per active slot, slot i on KV region
        ``kv[i]`` (default i). Returns (logits int64 (nslots, vocab), argmax per slot)."""
        cm, dev = self.cm, self.device
        kv = list(range(len(slots))) if kv is None else list(kv)
        if not 1 <= len(slots) <= min(cm.params.slots, dev.accel_params().slots):
            raise ValueError(f"step: {len(slots)} slots; the core takes 1..{dev.accel_params().slots}")
        if len(kv) != len(slots):
            raise ValueError(f"step: {len(slots)} slots but {len(kv)} KV regions")
        table = isa.pack_slots([(t, p, cm.kv_base(r)) for (t, p), r in zip(slots, kv)])
        dev.write_dram(cm.slots, table)
        self.counters = dev.run_program(cm.prog, cm.slots, len(slots), watchdog=watchdog)
        vocab = cm.config.vocab_size
        raw = dev.read_dram(cm.logits, cm.logits_stride * len(slots))
        logits = np.stack([np.frombuffer(raw, "<i4", vocab, s * cm.logits_stride)
                           for s in range(len(slots))]).astype(np.int64)
        am = dev.read_dram(cm.argmax, isa.BEAT_BYTES * len(slots))
        argmax = [int.from_bytes(am[16 * s:16 * s + 4], "little") for s in range(len(slots))]
        return logits, argmax
