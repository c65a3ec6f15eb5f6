"""litetransformer: one command line for the simulator, boards and the host driver.

    litetransformer sim                                  build if needed, run, print the link
    litetransformer info --target T                      ident, spec, DRAM, clock
    litetransformer selftest --target T --bytes N        upload N random bytes, check the CRC
    litetransformer build --board ulx3s [--load|--flash] bitstream with the open toolchain
    litetransformer verify --programs N --seed S --target T  random programs: hardware vs golden model
    litetransformer bench --shape S --positions N --target T  decode cycles/token, roofline, MAC use

Targets: sim (start a private simulator), core (verify only: the transformer core alone in Verilator), sim://127.0.0.1:PORT (attach to `litetransformer sim`),
serial:///dev/ttyUSB0?baud=1000000 (a board; pass --csr build/<board>/csr.csv).
"""

import argparse
import json
import random
import signal
import sys
import time
import zlib

from driver.errors import LiteTransformerError


def _err(msg):
    print(msg, file=sys.stderr, flush=True)


def _target_args(parser):
    parser.add_argument("--target", default="sim", help="sim | sim://HOST:PORT | serial:///dev/ttyX?baud=N")
    parser.add_argument("--csr", default=None, help="LiteX csr.csv of the target (boards; default for sim: the local build)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for any single reply")


def _open(args):
    from driver.device import Device
    return Device.open(args.target, csr=args.csr, timeout=args.timeout, progress=_err)


# Commands -----------------------------------------------------------------------------------------

def cmd_sim(args):
    from soc import sim
    t0 = time.monotonic()
    build = sim.build(progress=_err)
    proc = sim.SimProcess(build)
    print(f"simulator running: {proc.url}  (log {proc.log_path}, {time.monotonic() - t0:.1f} s to start)", flush=True)
    print(f"try: litetransformer info --target {proc.url}", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))
    try:
        while not stop["now"]:
            if not proc.alive():
                _err(f"simulator exited with code {proc.proc.returncode}:\n{proc.log_tail()}")
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        proc.stop()
    return 0


def cmd_info(args):
    with _open(args) as dev:
        info = dev.info()
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:13s} {v}")
    return 0


def cmd_selftest(args):
    if args.bytes <= 0:
        raise ValueError("--bytes must be positive")
    rng = random.Random(args.seed)
    payload = rng.randbytes(args.bytes)
    t_open = time.monotonic()
    with _open(args) as dev:
        opened = time.monotonic() - t_open

        last = {"t": 0.0}
        tty = sys.stderr.isatty()

        def progress(done, total):
            # At most once a second; in place on a terminal, one line each in a log.
            now = time.monotonic()
            if args.quiet or (now - last["t"] < 1.0 and done < total):
                return
            last["t"] = now
            print(f"{chr(13) if tty else ''}  uploaded {done >> 10} / {total >> 10} KiB",
                  end="" if tty else "\n", file=sys.stderr, flush=True)

        stats = dev.upload(args.offset, payload, progress=progress)
        if not args.quiet and tty:
            print(file=sys.stderr)
        # Read back a sample through the host DRAM window (a different port than the writer).
        sample_len = min(4096, len(payload) - len(payload) % 4)
        sample_at = (rng.randrange(0, len(payload) - sample_len + 1) // 4) * 4 if sample_len else 0
        sample = dev.read_dram(args.offset + sample_at, sample_len)
        sample_ok = sample == payload[sample_at:sample_at + sample_len]
        result = {
            "ok": bool(sample_ok and stats["host_crc"] == stats["device_crc"]),
            "target": dev.name,
            "bytes": len(payload),
            "padded_bytes": stats["bytes"],
            "host_crc": f"{stats['host_crc']:08x}",
            "device_crc": f"{stats['device_crc']:08x}",
            "payload_crc": f"{zlib.crc32(payload):08x}",
            "readback_bytes": sample_len,
            "readback_ok": sample_ok,
            "cycles": stats["cycles"],
            "bytes_per_cycle": round(stats["bytes_per_cycle"], 4),
            "bytes_per_second": round(stats["bytes_per_second"]),
            "upload_seconds": round(stats["seconds"], 2),
            "open_seconds": round(opened, 2),
        }
        cycles_per_second = stats["cycles"] / max(stats["seconds"], 1e-9)
        result["device_cycles_per_second"] = round(cycles_per_second)
    if not args.quiet:
        _err(f"upload {result['bytes']} B: {result['bytes_per_cycle']} B/cycle, "
             f"{result['bytes_per_second'] / 1e3:.0f} kB/s wall, device ran {cycles_per_second / 1e6:.2f} M cycles/s; "
             f"CRC host {result['host_crc']} device {result['device_crc']}; "
             f"read-back {sample_len} B {'ok' if sample_ok else 'MISMATCH'}")
    if args.json:
        print(json.dumps(result))
    else:
        print("PASS" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


def cmd_build(args):
    from soc import boards
    report = boards.build(args.board, output_dir=args.output_dir, progress=_err)
    if report.get("bitstream") and (args.load or args.flash):
        boards.load(args.board, report["bitstream"], flash=args.flash)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:16s} {v}")
    return 0 if report.get("bitstream") else 1


def cmd_verify(args):
    from driver.verify import verify
    if args.programs <= 0:
        raise ValueError("--programs must be positive")
    result = verify(args.target, args.programs, args.seed, csr=args.csr, progress=None if args.quiet else _err)
    line = (f"verify {result['target']}: {result['programs']} programs from seed {result['seed']}, "
            f"{result['mismatches']} mismatches, {result['cycles']} core cycles, {result['seconds']} s")
    _err(line)
    if "first_mismatch" in result:
        m = result["first_mismatch"]
        _err(f"first mismatch: seed {m['seed']}, first differing DRAM byte {m['first_byte']}, error {m['error']}, "
             f"retired {m['retired']} (golden {m['expected_retired']})\n" + "\n".join(m["program"]))
    if args.json:
        print(json.dumps(result))
    else:
        print("PASS" if result["mismatches"] == 0 else "FAIL")
    return 0 if result["mismatches"] == 0 else 1


def cmd_bench(args):
    from driver.bench import SHAPES, measure_decode
    if args.shape not in SHAPES:
        raise ValueError(f"unknown shape {args.shape!r}; known: {', '.join(SHAPES)}")
    if args.positions <= 0:
        raise ValueError("--positions must be positive")
    with _open(args) as dev:
        result = measure_decode(dev, args.shape, positions=args.positions, progress=None if args.quiet else _err)
    steps = result.pop("steps")
    if not args.quiet:
        _err(f"{result['shape']} decode, batch 1, {args.positions} positions: {result['cycles_per_token']} cycles/token, "
             f"roofline efficiency {result['roofline_efficiency']:.3f} (bound {steps[-1]['roofline_bound_cycles']} cycles "
             f"at 16 B/cycle), MAC busy {result['mac_busy_fraction']:.3f}, DRAM-stalled {result['dram_stall_fraction']:.3f}")
        _err("cycles per instruction class (last step): " + ", ".join(
            f"{k} {v}" for k, v in sorted(result["class_cycles_last"].items(), key=lambda kv: -kv[1])))
    result["runs"] = [{k: s[k] for k in ("pos", "cycles", "roofline_efficiency", "mac_utilisation")} for s in steps]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cycles_per_token']} cycles/token")
    return 0


# Entry point --------------------------------------------------------------------------------------

def make_parser():
    parser = argparse.ArgumentParser(prog="litetransformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sim", help="build (if needed) and run the simulated SoC; print its link address")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("info", help="ident, spec version, DRAM size and clock of a target")
    _target_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("selftest", help="upload random bytes, compare the device CRC, read back a sample")
    _target_args(p)
    p.add_argument("--bytes", type=int, default=256 * 1024)
    p.add_argument("--offset", type=lambda s: int(s, 0), default=0, help="DRAM offset (beat aligned)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("build", help="build a board bitstream with the open toolchain")
    p.add_argument("--board", required=True, help="ulx3s")
    p.add_argument("--output-dir", default=None, help="default: build/<board> (not under /tmp: YoWASP hides it)")
    p.add_argument("--load", action="store_true", help="program the FPGA with openFPGALoader")
    p.add_argument("--flash", action="store_true", help="write the SPI flash with openFPGALoader")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="random valid programs on the hardware and the golden model, compared")
    _target_args(p)
    p.add_argument("--programs", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="decode cycles/token, roofline efficiency and MAC use from the core's counters")
    _target_args(p)
    p.add_argument("--shape", default="stories260K", help="aidreams260K | stories260K | stories15M (random weights)")
    p.add_argument("--positions", type=int, default=8, help="decode steps from position 0")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LiteTransformerError, ValueError, RuntimeError, TimeoutError) as e:
        _err(f"litetransformer {args.command}: error: {e}")
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(e), "error_type": type(e).__name__}))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
