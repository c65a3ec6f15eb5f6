"""The benchmark: prefill and batched decode on a device, measured by the core's own counters.

A model (a checkpoint, or a named shape with random weights) is compiled and uploaded once; then

- prefill at batch B: one sequence's prompt, B consecutive positions per program run, all B
  slots on one KV region (as driver.runtime prefills a prompt);
- decode at batch B: B independent sequences, slot i on KV region i, one program run per step
  over the B slots at the same position, each feeding back its own argmax.

Every per-token figure divides a run's counters by the B tokens it produced. The roofline bound
of a run is the DRAM bytes the maths must read over the port's bytes per cycle: the weights once
for all slots, plus per slot its embedding row and the K/V rows attention reads. The MACs are
the matrix products' (the MAC array's work; attention has its own unit). docs/performance.md
defines every figure and what limits it.
"""

import os
import time

import numpy as np

from driver.model import Config, Model, load as load_model_file, random_model
from driver.progress import UploadBar
from spec import isa

SHAPES = {
    "aidreams260K":    Config(dim=64, hidden_dim=172, n_layers=4, n_heads=4, n_kv_heads=4, vocab_size=512,
                              seq_len=512, shared_classifier=True),
    "stories260K":     Config(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512,
                              seq_len=512, shared_classifier=False),
    "stories15M":      Config(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000,
                              seq_len=256, shared_classifier=True),
    "stories42M":      Config(dim=512, hidden_dim=1376, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000,
                              seq_len=1024, shared_classifier=True),
    "stories110M":     Config(dim=768, hidden_dim=2048, n_layers=12, n_heads=12, n_kv_heads=12, vocab_size=32000,
                              seq_len=1024, shared_classifier=True),
}

# Boards the figures are projected to: sys clock (Hz), peak DRAM bandwidth (bytes/s) as LiteX
# instantiates them, and the core's batch slots where the board's build fixes them.
BOARDS = {
    "acorn":      {"clock_hz": 100e6, "dram_bytes_per_s": 1.6e9, "slots": isa.TARGET_PARAMS["acorn"].slots,
                   "dram_bytes": 1 << 30, "what": "Acorn CLE-215+, DDR3 16-bit, 100 MHz"},
    "arty":       {"clock_hz": 100e6, "dram_bytes_per_s": 1.6e9, "slots": isa.TARGET_PARAMS["arty"].slots,
                   "dram_bytes": 256 << 20, "what": "Arty A7-100T, DDR3 16-bit, 100 MHz"},
    "orangecrab": {"clock_hz": 48e6, "dram_bytes_per_s": 384e6, "slots": None,
                   "what": "OrangeCrab, DDR3 16-bit, 48 MHz"},
    "ulx3s":      {"clock_hz": 50e6, "dram_bytes_per_s": 100e6, "slots": isa.TARGET_PARAMS["ulx3s"].slots,
                   "dram_bytes": 32 << 20, "what": "ULX3S, SDRAM 16-bit, 50 MHz"},
}


# What the maths needs --------------------------------------------------------------------------

def weight_bytes(c):
    """DRAM bytes of the weights every step streams once for all its slots: the matrices in the
    core's format (with their scales) and the RMSNorm gains."""
    mb, fb = isa.tiled_matrix_bytes, isa.fixed16_bytes
    layer = (mb(c.dim + 2 * c.kv_dim, c.dim) + mb(c.dim, c.dim) + mb(2 * c.hidden_dim, c.dim)
             + mb(c.dim, c.hidden_dim) + 2 * fb(c.dim))
    return c.n_layers * layer + mb(c.vocab_size, c.dim) + fb(c.dim)


def slot_bytes(c, pos, kv_format="int16"):
    """DRAM bytes one slot at position ``pos`` must read on its own: its embedding row (as a
    one-row matrix: its shift beat, weight beats and mantissa beats), and the K and V rows
    0..pos of every layer (each KV head once, in ``kv_format``: spec.isa.kv_span)."""
    kv = c.n_layers * 2 * c.n_kv_heads * isa.kv_span(kv_format, pos, c.head_size)
    return isa.matrix_bytes(1, c.dim) + kv


def matrix_macs(c):
    """Multiply-accumulates of one token's matrix products (QKV, output, FFN, classifier)."""
    layer = c.dim * (c.dim + 2 * c.kv_dim) + c.dim * c.dim + 3 * c.dim * c.hidden_dim
    return c.n_layers * layer + c.vocab_size * c.dim


def parse_batches(text):
    """"1,2,4,8" -> [1, 2, 4, 8]: positive, increasing, no repeats."""
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        raise ValueError(f"--batch {text!r}: expected a comma-separated list of batch sizes, e.g. 1,2,4,8") from None
    if not batches or min(batches) < 1 or batches != sorted(set(batches)):
        raise ValueError(f"--batch {text!r}: batch sizes must be positive and increasing, e.g. 1,2,4,8")
    return batches


def dram_need(params, config):
    """DRAM bytes of ``config`` compiled for a core of ``params`` at its full context with a
    K/V region per slot: the weights, the embedding table where the classifier is not it, the
    RoPE rows and the K/V (the slot table, results and program add a few kilobytes)."""
    c, seq = config, min(config.seq_len, params.max_seq)
    shared = c.shared_classifier and c.dim <= 1024
    embedding = 0 if shared else isa.matrix_bytes(c.vocab_size, c.dim)
    kv = params.slots * c.n_layers * 2 * c.n_kv_heads * isa.kv_head_bytes(params.kv_format, seq, c.head_size)
    return weight_bytes(c) + embedding + seq * isa.rope_row_bytes(c.head_size) + kv


def check_fits(params, config, dram_bytes=None):
    """Raise ValueError naming the first limit of the core (``params``) the shape exceeds (the
    compiler's check), so that a list of shapes is refused before anything is measured; with
    ``dram_bytes`` (a board's DRAM), also where the model and its K/V would not fit it beside
    the decode-loop firmware."""
    from driver.compiler import _act_map, _check_fits
    from driver.firmware import RESERVED_BYTES
    _check_fits(config, params, min(config.seq_len, params.max_seq))
    _act_map(config, params)
    if dram_bytes is not None and dram_need(params, config) > dram_bytes - RESERVED_BYTES:
        raise ValueError(f"the model and {params.slots} slots' K/V need {dram_need(params, config)} bytes of DRAM; "
                         f"{dram_bytes - RESERVED_BYTES} are free beside the firmware")


def fits(params, config, dram_bytes=None):
    """Whether a core of ``params`` compiles ``config`` (check_fits without the message)."""
    try:
        check_fits(params, config, dram_bytes)
    except ValueError:
        return False
    return True


def resolve_model(name_or_model, seed=1):
    """(label, Model): a named shape with random weights, a checkpoint path, or a Model."""
    if isinstance(name_or_model, Model):
        return "custom", name_or_model
    if name_or_model in SHAPES:
        return name_or_model, random_model(SHAPES[name_or_model], seed=seed)
    if os.path.isfile(name_or_model):
        return os.path.basename(name_or_model), load_model_file(name_or_model)
    raise ValueError(f"unknown shape {name_or_model!r}; known: {', '.join(SHAPES)} (or a MODEL.bin)")


# Measuring -------------------------------------------------------------------------------------

def bench(device, model, batches=(1, 2, 4, 8), positions=4, start_pos=0, prompt_len=None, seed=1,
          label=None, progress=None):
    """Measure prefill and decode of ``model`` (see resolve_model; ``label`` names it in the
    runs) at each batch size on ``device``. Returns {"shape", "config", "runs": [one per
    (phase, batch)], "simulator", "upload_seconds", "seq_len" (the context compiled)}."""
    say = progress or (lambda msg: None)
    if not hasattr(device, "accel_counters"):
        raise ValueError(f"bench reads the core's cycle counters; {getattr(device, 'name', 'this target')} "
                         f"has none (the golden model has no cycles): use --target sim or a board")
    params = device.accel_params()
    batches = list(batches)
    if max(batches) > params.slots:
        raise ValueError(f"--batch {max(batches)}: {device.name}'s core has {params.slots} batch slots")
    prompt_len = prompt_len or max(batches)
    if positions < 1 or start_pos < 0 or prompt_len < 1:
        raise ValueError("bench: positions and prompt length must be positive, the start position not negative")
    resolved, model = resolve_model(model, seed)
    label = label or resolved
    c = model.config
    need = max(start_pos + positions, prompt_len)
    seq_len = min(c.seq_len, params.max_seq)
    if need > seq_len:
        raise ValueError(f"bench: {need} positions exceed the context of {seq_len}")

    t0 = time.monotonic()
    bar = UploadBar(label) if say else None         # one line with the rate and the time left
    try:
        lm, seq_len = _load_fitting(device, model, seq_len, need, bar, say, label)
    finally:
        if bar:
            bar.close()
    runner, rng = lm.runner, np.random.default_rng(seed)
    say(f"[bench] {label}: compiled and uploaded in {time.monotonic() - t0:.0f} s")
    wall0, soc0 = time.monotonic(), device.cycles()
    core = {"cycles": 0}          # every run's, the untimed fill included

    def run(slots, kv):
        """One program run; its counters and its roofline bound."""
        _, argmax = runner.step(slots, kv, want_logits=False)
        counters = device.accel_counters(per_class=True)
        core["cycles"] += counters["cycles"]
        needed = weight_bytes(c) + sum(slot_bytes(c, pos, params.kv_format) for _, pos in slots)
        counters.update(slots=len(slots), bound_cycles=needed / isa.BEAT_BYTES)
        return counters, argmax

    runs = []
    for b in batches:
        # Prefill: positions 0..prompt_len-1 of region 0, b per run (the last run may be short).
        tokens = rng.integers(0, c.vocab_size, prompt_len)
        steps = [run([(int(tokens[p]), p) for p in range(p0, min(p0 + b, prompt_len))],
                     [0] * min(b, prompt_len - p0))[0]
                 for p0 in range(0, prompt_len, b)]
        runs.append(_summary(label, c, params, "prefill", b, steps, [0, prompt_len - 1]))
        say(f"[bench] {label} prefill B={b}: {runs[-1]['cycles_per_token']:.0f} cycles/token")

    if start_pos:
        # The decode regions hold positions before start_pos (untimed), as after a prompt.
        for region in range(max(batches)):
            fill = rng.integers(0, c.vocab_size, start_pos)
            for p0 in range(0, start_pos, runner.max_slots):
                chunk = range(p0, min(p0 + runner.max_slots, start_pos))
                run([(int(fill[p]), p) for p in chunk], [region] * len(chunk))
    for b in batches:
        tokens = [int(t) for t in rng.integers(0, c.vocab_size, b)]
        steps = []
        for pos in range(start_pos, start_pos + positions):
            counters, tokens = run([(t, pos) for t in tokens], list(range(b)))
            steps.append(counters)
        runs.append(_summary(label, c, params, "decode", b, steps, [start_pos, start_pos + positions - 1]))
        say(f"[bench] {label} decode B={b}: {runs[-1]['cycles_per_token']:.0f} cycles/token")

    _add_speedups(runs)
    wall, soc_cycles = time.monotonic() - wall0, device.cycles() - soc0
    core_cycles = core["cycles"]
    return {"shape": label, "config": vars(c).copy(), "runs": runs,
            "simulator": {"soc_cycles": soc_cycles, "seconds": round(wall, 1),
                          "cycles_per_second": round(soc_cycles / wall),
                          "core_cycles": core_cycles, "core_busy_fraction": round(core_cycles / soc_cycles, 3)},
            "upload_seconds": round(wall0 - t0, 1), "seq_len": seq_len}


def _load_fitting(device, model, seq_len, need, progress, say, label):
    """device.load at the model's context, or, where the image and the slots' KV regions do
    not fit the device's DRAM, at the longest halving of it that holds the ``need`` positions
    measured (a shorter context moves no byte a step reads: each slot reads rows 0..pos)."""
    while True:
        try:
            return device.load(model, seq_len=seq_len, progress=progress), seq_len
        except ValueError as e:
            if "bytes of DRAM" not in str(e) or seq_len // 2 < need:
                raise
            say(f"[bench] {label}: {e}; trying a context of {seq_len // 2}")
            seq_len //= 2


def _summary(label, c, params, phase, batch, steps, positions):
    """One run's figures from the counters of its program runs."""
    cycles = sum(s["cycles"] for s in steps)
    tokens = sum(s["slots"] for s in steps)
    macs = matrix_macs(c) * tokens
    bytes_read = sum(s["bytes_read"] for s in steps)
    classes = {}
    for s in steps:
        for name, v in s["class_cycles"].items():
            classes[name] = classes.get(name, 0) + v
    out = {
        "shape": label, "phase": phase, "batch": batch, "positions": positions,
        "program_runs": len(steps), "tokens": tokens, "cycles": cycles,
        "cycles_per_token": round(cycles / tokens, 1),
        "tokens_per_cycle": tokens / cycles,
        "batch_speedup": None,
        "roofline_bound_cycles_per_token": round(sum(s["bound_cycles"] for s in steps) / tokens, 1),
        "roofline_efficiency": round(sum(s["bound_cycles"] for s in steps) / cycles, 4),
        # Of the multipliers there are: mac_beats sets of mac_lanes per slot (the second set
        # takes a beat only while MATVEC catches up with weights DRAM delivered ahead).
        "mac_utilisation": round(macs / (params.mac_lanes * params.mac_beats * batch * cycles), 4),
        "mac_array_utilisation": round(macs / (params.mac_lanes * params.mac_beats * params.slots * cycles), 4),
        "macs_per_cycle": round(macs / cycles, 3),
        "arithmetic_intensity": round(macs / bytes_read, 4),
        "weight_beat_fraction": round(sum(s["mac_busy"] for s in steps) / cycles, 4),
        "dram_stall_fraction": round(sum(s["dram_stall"] for s in steps) / cycles, 4),
        "bytes_read_per_token": round(bytes_read / tokens),
        "bytes_written_per_token": round(sum(s["bytes_written"] for s in steps) / tokens),
        "class_cycles_per_token": {k: round(v / tokens, 1) for k, v in sorted(classes.items(), key=lambda kv: -kv[1])},
    }
    out["projected_tokens_per_s"] = project(out["cycles_per_token"], out["bytes_read_per_token"], batch,
                                            out["class_cycles_per_token"].get("MATVEC", 0), c)
    return out


def project(cycles_per_token, bytes_per_token, batch, stream_cycles_per_token, config=None):
    """Tokens/s on each board. The core runs one instruction at a time, so a token takes its
    non-streaming cycles at the board's clock plus its weight stream (``stream_cycles_per_token``,
    the MATVEC cycles), which a board's DRAM may slow to bytes/token over its bandwidth. None
    where the board's build has fewer slots than ``batch``, or (given the model's ``config``)
    cannot hold the model in its scratchpads or its DRAM."""
    out = {}
    for name, b in BOARDS.items():
        build = isa.TARGET_PARAMS.get(name)
        if (b["slots"] is not None and batch > b["slots"]) or \
                (config is not None and build is not None and not fits(build, config, b.get("dram_bytes"))):
            out[name] = None
            continue
        stream = max(stream_cycles_per_token / b["clock_hz"], bytes_per_token / b["dram_bytes_per_s"])
        seconds = (cycles_per_token - stream_cycles_per_token) / b["clock_hz"] + stream
        out[name] = round(1 / seconds, 1)
    return out


def _add_speedups(runs):
    """batch_speedup = tokens per cycle at B over tokens per cycle at B = 1, per phase."""
    for phase in ("prefill", "decode"):
        base = [r for r in runs if r["phase"] == phase and r["batch"] == 1]
        for r in runs:
            if r["phase"] == phase and base:
                r["batch_speedup"] = round(r["tokens_per_cycle"] / base[0]["tokens_per_cycle"], 3)


def cpu_baseline(model, positions, seed=1, label=None):
    """Tokens/s of the C baseline (driver.cpu_baseline) decoding ``positions`` positions of
    ``model`` (see resolve_model) on one core of this machine, best of three passes."""
    from driver import cpu_baseline as cpu
    resolved, model = resolve_model(model, seed)
    label = label or resolved
    positions = max(1, min(positions, model.config.seq_len))
    tokens = np.random.default_rng(seed).integers(0, model.config.vocab_size, positions)
    out = cpu.run(model, tokens, repeats=3)
    return {"shape": label, **out}
