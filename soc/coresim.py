"""The transformer core alone in Verilator, for long differential runs.

The full SoC simulates ~0.4 M cycles/s and loads DRAM over the serial link; this tier verilates
just the Accelerator between behavioural native ports (soc/coresim/harness.cpp: four read ports,
each with its own latency per job so their data arrive out of step, and eight write ports) and loads
DRAM from files, so thousands of random programs run in minutes. Cycle counts here are not the
SoC's (the ports never refresh or change banks); they come from the simulated SoC.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from migen import *
from litex.gen.fhdl.verilog import convert      # LiteX's printer, as in the SoC builds

from litedram.common import LiteDRAMNativePort

from spec import isa
from driver.cache import manifest_problem, write_manifest
from soc.sim import cache_root, hash_inputs, _HASHED_SOURCES

CORESIM_BANK_SHIFT = 2

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coresim", "harness.cpp")

# Top level with plain, stable port names --------------------------------------------------------

class CoreTop(Module):
    def __init__(self, params, dram_size):
        from gateware.accelerator import Accelerator
        aw = max((dram_size // isa.BEAT_BYTES - 1).bit_length(), 1) + 1
        rps = [LiteDRAMNativePort("read", address_width=aw, data_width=128) for _ in range(4)]
        wps = [LiteDRAMNativePort("write", address_width=aw, data_width=128) for _ in range(isa.WRITE_PORTS_PER_BANK)]
        # Bank runs of 4 beats: the read stream changes port far more often than on real DRAM.
        # Read ports 0-1 are the read stream's, 2-3 the weight stream's; those a Params leaves
        # unused (read_ports, weight_ports below 2, write_ports below 8) stay idle.
        self.submodules.core = core = Accelerator(rps[:params.read_ports],
                                                  wps[:params.write_ports],
                                                  dram_size=dram_size, params=params,
                                                  bank_shift=CORESIM_BANK_SHIFT,
                                                  weight_ports=rps[2:2 + params.weight_ports])
        for csr in core.get_csrs():          # bare core: CSRStatus drives its word from fields
            if hasattr(csr, "fields") and csr.__class__.__name__ == "CSRStatus":
                csr.finalize(32, "big")
                self.submodules += csr
        self.clock_domains.cd_sys = ClockDomain()
        self.ios = {self.cd_sys.clk, self.cd_sys.rst}

        def io(name, width, drive=None, driven_by=None):
            s = Signal(width, name=name)
            self.ios.add(s)
            if drive is not None:
                self.comb += drive.eq(s)
            if driven_by is not None:
                self.comb += s.eq(driven_by)
            return s

        io("prog", 32, drive=core.prog.storage)
        io("slots", 32, drive=core.slots.storage)
        io("nslots", 8, drive=core.nslots.storage)
        io("watchdog", 32, drive=core.watchdog.storage)
        io("start", 1, drive=core.control.fields.start)
        io("class_sel", 8, drive=core.class_sel.storage)
        io("status", 32, driven_by=core.status.status)
        io("busy", 1, driven_by=core.status.status[0])
        io("done", 1, driven_by=core.status.status[1])
        io("err_addr", 32, driven_by=core.err_addr.status)
        for name in ("cycles", "mac_busy", "dram_stall", "bytes_read", "bytes_written", "class_cycles"):
            io(name, 64, driven_by=getattr(core, name).status)
        io("retired", 32, driven_by=core.retired.status)
        io("fsm_state", 8, driven_by=core.fsm_state)
        io("attn_state", 8, driven_by=core.attn_state)
        for prefix, port in [(f"rd{i}", p) for i, p in enumerate(rps)] + [(f"wr{i}", p) for i, p in enumerate(wps)]:
            io(f"{prefix}_cmd_valid", 1, driven_by=port.cmd.valid)
            io(f"{prefix}_cmd_ready", 1, drive=port.cmd.ready)
            io(f"{prefix}_cmd_addr", aw, driven_by=port.cmd.addr)
        for prefix, port in [(f"rd{i}", p) for i, p in enumerate(rps)]:
            io(f"{prefix}_rdata_valid", 1, drive=port.rdata.valid)
            io(f"{prefix}_rdata_ready", 1, driven_by=port.rdata.ready)
            io(f"{prefix}_rdata_data", 128, drive=port.rdata.data)
        for prefix, port in [(f"wr{i}", p) for i, p in enumerate(wps)]:
            io(f"{prefix}_wdata_valid", 1, driven_by=port.wdata.valid)
            io(f"{prefix}_wdata_ready", 1, drive=port.wdata.ready)
            io(f"{prefix}_wdata_data", 128, driven_by=port.wdata.data)
            io(f"{prefix}_wdata_we", 16, driven_by=port.wdata.we)

# Build, cached by a hash of its inputs ----------------------------------------------------------

def input_hash(params, dram_size):
    h = hashlib.sha256()
    h.update(repr((isa.params_dict(params), dram_size)).encode())
    hash_inputs(h, _HASHED_SOURCES + ["soc/coresim.py", "soc/coresim"])
    return h.hexdigest()[:16]


def build(params, dram_size, progress=None):
    """Verilate the core once per (params, dram size, sources); returns the binary's path."""
    if shutil.which("verilator") is None:
        raise RuntimeError("verilator not found: run scripts/setup.sh")
    out = os.path.join(cache_root(), f"core-{input_hash(params, dram_size)}")
    binary = os.path.join(out, "obj_dir", "Vcore")
    if os.path.isdir(out):
        problem = manifest_problem(out)
        if problem is None:
            return binary
        if progress:
            progress(f"the cached core-alone simulator {out} is damaged ({problem}): rebuilding")
    if progress:
        progress("building the core-alone simulator (Verilator, ~1-2 min)")
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    top = CoreTop(params, dram_size)
    conv = convert(top, ios=top.ios, name="core")
    with open(os.path.join(tmp, "core.v"), "w") as f:
        f.write(conv.main_source)
    for name, contents in conv.data_files.items():     # ROM contents, read by $readmemh at start
        with open(os.path.join(tmp, name), "w") as f:
            f.write(contents)
    with open(os.path.join(tmp, "fsm_states.json"), "w") as f:
        json.dump({int(v): k for k, v in top.core.sequencer.fsm.encoding.items()}, f)
    with open(os.path.join(tmp, "attn_states.json"), "w") as f:
        json.dump({int(v): k for k, v in top.core.attention.fsm.encoding.items()}, f)
    shutil.copy(HARNESS, tmp)
    cmd = ["verilator", "--cc", "core.v", "--exe", "harness.cpp", "--top-module", "core", "--build",
           "-j", "1", "-O3", "-Wno-fatal", "-Wno-WIDTH", "-Wno-CASEINCOMPLETE", "-Wno-lint",
           "-CFLAGS", "-O2", "--x-assign", "fast", "--x-initial", "fast"]
    with open(os.path.join(tmp, "build.log"), "w") as log:
        r = subprocess.run(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"core-alone Verilator build failed: see {tmp}/build.log")
    write_manifest(tmp, [os.path.join("obj_dir", "Vcore"), "fsm_states.json", "attn_states.json"])
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return binary

# Runner -------------------------------------------------------------------------------------------

@dataclass
class CoreResult:
    status: int
    error: int
    err_addr: int
    dram: bytes
    counters: dict


class CoreSim:
    """A running core-alone simulator; ``run(dram, prog, slots, nslots)`` per program."""

    def __init__(self, params, dram_size, progress=None):
        self.params, self.dram_size = params, dram_size
        binary = build(params, dram_size, progress)
        with open(os.path.join(os.path.dirname(os.path.dirname(binary)), "fsm_states.json")) as f:
            self.states = {int(k): v for k, v in json.load(f).items()}
        with open(os.path.join(os.path.dirname(os.path.dirname(binary)), "attn_states.json")) as f:
            self.attn_states = {int(k): v for k, v in json.load(f).items()}
        self.tmp = tempfile.mkdtemp(prefix="lt-coresim-")
        self.proc = subprocess.Popen([binary, str(dram_size)], cwd=os.path.dirname(os.path.dirname(binary)),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def run(self, dram, prog, slots, nslots, watchdog=0, stall_percent=10, seed=0, max_cycles=20_000_000):
        if len(dram) > self.dram_size:
            raise ValueError("DRAM image larger than the simulated DRAM")
        src, dst = os.path.join(self.tmp, "in.bin"), os.path.join(self.tmp, "out.bin")
        with open(src, "wb") as f:
            f.write(dram)
        self.proc.stdin.write(f"{src} {dst} {prog} {slots} {nslots} {watchdog} {stall_percent} {seed} {max_cycles}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if not line or line[0] not in ("done", "hung"):
            raise RuntimeError(f"core simulator stopped (exit {self.proc.poll()})")
        status, err_addr, *counts = (int(v) for v in line[1:])
        if line[0] == "hung":
            raise RuntimeError(f"core did not finish within {max_cycles} cycles; state "
                               f"{self.states.get(counts[-1], counts[-1])}, {counts[0]} cycles counted")
        names = ("cycles", "mac_busy", "dram_stall", "bytes_read", "bytes_written", "retired", "stray")
        counters = dict(zip(names, counts))
        with open(dst, "rb") as f:
            out = f.read()
        return CoreResult(status, (status >> 8) & 0xff, err_addr, out, counters)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_steps(shape, batch, config, positions, stall_percent=0, seed=1, dram_mib=None, progress=None):
    """Greedy decode steps of a model shape (driver.bench.SHAPES) with random weights on the
    core alone and on golden, every DRAM byte compared after each measured step (positions
    before them run on golden only). ``dram_mib``: compile for a board's DRAM (less the
    decode-loop firmware's reserve, as litetransformer does on the SoC) and simulate that
    much; by default 1 GiB. Used by scripts/core_cycles.py."""
    from driver.bench import SHAPES
    from driver.compiler import compile_model, GoldenRunner
    from driver.firmware import RESERVED_BYTES
    from driver.intforward import QuantizedModel
    from driver.model import random_model
    params = isa.TARGET_PARAMS[config]
    if batch > params.slots:
        raise ValueError(f"--batch {batch}: the {config} core has {params.slots} slots")
    c = SHAPES[shape]
    seq_len = min(c.seq_len, params.max_seq)
    if max(positions) >= seq_len:
        raise ValueError(f"--positions: {max(positions)} is past the context of {seq_len}")
    budget = (dram_mib << 20) - RESERVED_BYTES if dram_mib else 1 << 30
    cm = compile_model(QuantizedModel(random_model(c, seed=seed)), params, seq_len=seq_len,
                       dram_size=budget, kv_regions=batch)
    dram_size = dram_mib << 20 if dram_mib else -(-(cm.base + cm.total_bytes) // (1 << 20)) << 20
    golden = GoldenRunner(cm)
    golden.core.dram = bytearray(golden.core.dram) + bytearray(dram_size - len(golden.core.dram))
    tokens = [(17 * s + 3) % c.vocab_size for s in range(batch)]
    steps = []
    with CoreSim(params, dram_size, progress=progress) as sim:
        for pos in range(max(positions) + 1):
            slots = [(t, pos) for t in tokens]
            table = isa.pack_slots([(t, p, cm.kv_base(s)) for s, (t, p) in enumerate(slots)])
            golden.core.dram[cm.slots:cm.slots + len(table)] = table
            before = bytes(golden.core.dram)
            _, argmax = golden.step(slots, want_logits=False)      # the greedy program, as bench runs
            if pos not in positions:            # fill the KV cache on golden only
                tokens = argmax
                continue
            # The hardware starts from golden's DRAM before this step and must end where it did.
            r = sim.run(before, cm.prog_greedy, cm.slots, batch, stall_percent=stall_percent, seed=seed + pos)
            same = r.error == 0 and r.dram == bytes(golden.core.dram)
            steps.append({"pos": pos, "cycles": r.counters["cycles"], "bit_exact": same,
                          **{k: r.counters[k] for k in ("mac_busy", "dram_stall", "bytes_read", "bytes_written",
                                                        "retired")}})
            tokens = argmax
    return {"shape": shape, "batch": batch, "config": config, "stall_percent": stall_percent,
            "dram_bytes": dram_size, "model_bytes": cm.total_bytes, "steps": steps}
