"""Cycle-level measurements of decode on a device, from the core's own counters.

For a model shape: random weights, compiled and uploaded once, then decode steps at successive
positions. Per step: cycles, bytes read/written, MAC-busy cycles, DRAM stalls and cycles per
instruction class, and the roofline bound: (weight bytes + KV bytes read) / port bytes per cycle.
"""

import time

import numpy as np

from driver.compiler import compile_model
from driver.intforward import QuantizedModel
from driver.model import Config, random_model
from driver.runtime import DeviceRunner
from spec import isa

SHAPES = {
    "aidreams260K":    Config(dim=64, hidden_dim=172, n_layers=4, n_heads=4, n_kv_heads=4, vocab_size=512,
                              seq_len=512, shared_classifier=True),
    "stories260K":     Config(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512,
                              seq_len=512, shared_classifier=False),
    "stories15M":      Config(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000,
                              seq_len=256, shared_classifier=True),
}


def weight_bytes(c):
    """DRAM bytes one forward pass must stream for the weights (matrices with their scales,
    RMSNorm gains, one embedding row)."""
    mb, fb = isa.matrix_bytes, isa.fixed16_bytes
    layer = (mb(c.dim + 2 * c.kv_dim, c.dim) + mb(c.dim, c.dim) + mb(2 * c.hidden_dim, c.dim)
             + mb(c.dim, c.hidden_dim) + 2 * fb(c.dim))
    return c.n_layers * layer + mb(c.vocab_size, c.dim) + 2 * fb(c.dim)


def kv_bytes(c, pos):
    """K and V bytes attention must read at position ``pos`` (each KV head once)."""
    return c.n_layers * 2 * c.kv_dim * 2 * (pos + 1)


def measure_decode(device, shape, positions=8, seed=1, progress=None):
    c = SHAPES[shape] if isinstance(shape, str) else shape
    params = device.accel_params()
    t0 = time.monotonic()
    cm = compile_model(QuantizedModel(random_model(c, seed=seed)), params=params, dram_size=device.dram_size)
    if progress:
        progress(f"[bench] {shape}: uploading {len(cm.image) / 1e6:.1f} MB")
    runner = DeviceRunner(device, cm)
    upload_s = time.monotonic() - t0
    port = isa.BEAT_BYTES
    steps, token = [], 1
    for pos in range(positions):
        _, argmax = runner.step([(token, pos)])
        token = argmax[0]
        counters = device.accel_counters(per_class=True)
        bound = (weight_bytes(c) + kv_bytes(c, pos)) / port
        steps.append({
            "pos": pos, **{k: v for k, v in counters.items() if k != "class_cycles"},
            "class_cycles": counters["class_cycles"],
            "roofline_bound_cycles": round(bound),
            "roofline_efficiency": round(bound / counters["cycles"], 4),
            "mac_busy_fraction": round(counters["mac_busy"] / counters["cycles"], 4),
            "mac_utilisation": round(counters["mac_busy"] / (params.slots * counters["cycles"]), 4),
        })
    cyc = np.array([s["cycles"] for s in steps])
    return {
        "shape": shape if isinstance(shape, str) else "custom", "batch": 1, "phase": "decode",
        "positions": positions,
        "weight_bytes": weight_bytes(c),
        "cycles_per_token": round(float(cyc.mean())),
        "cycles_per_token_last": int(cyc[-1]),
        "tokens_per_cycle": float(1 / cyc.mean()),
        "roofline_efficiency": round(float(np.mean([s["roofline_efficiency"] for s in steps])), 4),
        "mac_utilisation": round(float(np.mean([s["mac_utilisation"] for s in steps])), 4),
        "mac_busy_fraction": round(float(np.mean([s["mac_busy_fraction"] for s in steps])), 4),
        "dram_stall_fraction": round(float(np.mean([s["dram_stall"] / s["cycles"] for s in steps])), 4),
        "bytes_read_per_token": round(float(np.mean([s["bytes_read"] for s in steps]))),
        "class_cycles_last": steps[-1]["class_cycles"],
        "upload_seconds": round(upload_s, 1),
        "steps": steps,
    }
