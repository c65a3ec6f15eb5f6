#!/usr/bin/env python3
"""Measure the full-SoC simulator's speed in simulated cycles per second, two ways:

  wall  SoC cycles (the SoC's own cycle counter) / wall seconds: what a user sees, including
        any time the simulator process is not on a CPU (another job, the host's Python);
  cpu   SoC cycles / the simulator process's own CPU seconds (/proc/PID/stat): Verilator's
        speed, independent of what else runs on the machine.

Two phases: "idle" (the host sleeps; the CPU sits in the BIOS prompt loop, the core is idle)
and "busy" (decode steps of a random aidreams260K-shaped model back to back on one slot, as
`litetransformer bench` runs them; the core is busy for part of the time, the host link
for the rest). ``--perf FILE`` records a `perf` profile of the simulator during the busy phase.

    LITETRANSFORMER_CACHE=... .venv/bin/python scripts/simspeed.py [--seconds 8] [--perf perf.data]
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from driver.device import Device          # noqa: E402
from driver.bench import resolve_model    # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK     # utime + stime


def measure(dev, work, seconds):
    pid = dev.sim.proc.pid
    c0, w0, s0, h0 = dev.cycles(), time.monotonic(), cpu_seconds(pid), time.process_time()
    n = 0
    while time.monotonic() - w0 < seconds:
        work()
        n += 1
    c1, w1, s1, h1 = dev.cycles(), time.monotonic(), cpu_seconds(pid), time.process_time()
    cyc, wall, sim_cpu, host_cpu = c1 - c0, w1 - w0, s1 - s0, h1 - h0
    return {"soc_cycles": cyc, "wall_s": round(wall, 2), "sim_cpu_s": round(sim_cpu, 2),
            "host_cpu_s": round(host_cpu, 2), "iterations": n,
            "cycles_per_wall_s": round(cyc / wall), "cycles_per_sim_cpu_s": round(cyc / max(sim_cpu, 1e-9))}


def _perf(args, dev):
    return subprocess.Popen(["perf", "record", "-F", "999", "-o", args.perf, "-p", str(dev.sim.proc.pid),
                             "--", "sleep", str(args.seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    ap.add_argument("--shape", default="aidreams260K")
    ap.add_argument("--build", help="a simulator build directory to run (default: build or reuse the cached one)")
    ap.add_argument("--idle-only", action="store_true", help="skip the busy phase")
    ap.add_argument("--perf", help="record a perf profile of the simulator in the busy phase to this file")
    args = ap.parse_args()

    if args.build:
        from soc.sim import SimBuild, SimProcess
        build = SimBuild(os.path.abspath(args.build))
        proc = SimProcess(build)
        dev = Device.open(f"sim://127.0.0.1:{proc.port}", csr=build.csr_csv)
        dev.sim = proc
    else:
        dev = Device.open("sim")
    with dev:
        perf = None
        if args.perf and args.idle_only:
            perf = _perf(args, dev)
        out = {"idle": measure(dev, lambda: time.sleep(0.5), args.seconds)}
        if args.idle_only:
            if perf:
                perf.wait()
            print(json.dumps(out))
            return
        _, model = resolve_model(args.shape)
        lm = dev.load(model, seq_len=min(model.config.seq_len, dev.accel_params().max_seq))
        runner, state = lm.runner, {"pos": 0, "tok": 1}

        def step():
            _, argmax = runner.step([(state["tok"], state["pos"])], [0], want_logits=False)
            state["tok"], state["pos"] = int(argmax[0]), (state["pos"] + 1) % 64

        step()
        if args.perf:
            perf = _perf(args, dev)
        out["busy"] = measure(dev, step, args.seconds)
        if perf:
            perf.wait()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
