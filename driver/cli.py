"""litetransformer: one command line for the simulator, boards and the host driver.

    litetransformer sim [--etherbone|--pcie]             build if needed, run, print the link(s)
    litetransformer info --target T                      ident, spec, DRAM, clock
    litetransformer selftest --target T --bytes N        upload N random bytes, check the CRC
    litetransformer build --board ulx3s|arty [--load]   bitstream (ECP5) or Vivado project + counts
    litetransformer verify --programs N --seed S --target T  random programs: hardware vs golden model
    litetransformer bench [MODEL.bin | --shape S] --batch 1,2,4,8 --target T [--plot F.png]  prefill/decode from the counters
    litetransformer generate [MODEL.bin] -z TOK.bin -i PROMPT -n STEPS -t TEMP -p TOPP -s SEED --target T [--firmware]
    litetransformer eval MODEL.bin --tokens FILE --target T [--logits]   teacher-forced argmax per position
    litetransformer fidelity MODEL.bin -z TOK.bin          integer path and runq vs fp32 (no hardware)

Targets: golden (the ISA interpreter, no hardware), sim (start a private simulator), core (verify only: the transformer core alone in Verilator), sim://127.0.0.1:PORT (attach to `litetransformer sim`),
serial:///dev/ttyUSB0?baud=1000000 (a board; pass --csr build/<board>/csr.csv), etherbone://IP (Etherbone
over UDP: `litetransformer sim --etherbone` or a board with Ethernet; --csr as for a board), pcie://127.0.0.1:PORT
(`litetransformer sim --pcie`; --csr as it prints)."""

import argparse
import json
import os
import random
import signal
import sys
import time
import traceback
import zlib

from driver import checks, inputs
from driver.checks import UsageError
from driver.errors import CSRMapError, LiteTransformerError
from driver.cliutil import err as _err, open_any as _open_any, open_device as _open
from driver.cli_measure import cmd_bench, cmd_verify, cmd_yardstick
from driver.progress import UploadBar

# driver.bench.SHAPES's names, for --help without importing numpy (tests/driver/test_bench.py
# checks that they agree).
BENCH_SHAPES = ("aidreams260K", "stories260K", "stories15M", "stories42M", "stories110M")




def _target_args(parser):
    parser.add_argument("--target", default="sim", help="sim | sim://HOST:PORT | serial:///dev/ttyX?baud=N | "
                        "etherbone://IP[:PORT] | pcie://HOST:PORT (generate/eval: also golden)")
    parser.add_argument("--csr", default=None, help="LiteX csr.csv of the target (boards; default for sim: the local build)")
    parser.add_argument("--timeout", type=checks.real("timeout", 0.1, 3600.0), default=None,
                        help="seconds to wait for any single reply (default 5; also bounds a silent console at boot)")


def _model_args(parser, tokenizer, lossy=True):
    parser.add_argument("model", nargs="?", default=None,
                        help="checkpoint (llama2.c legacy, v1 or v2); default: the bundled model")
    if lossy:
        parser.add_argument("--allow-lossy", action="store_true",
                            help="run a model whose tensors or activations the integer formats miss (warns)")
    if tokenizer:
        parser.add_argument("-z", dest="tokenizer", default=None, help="tokenizer.bin (default: beside the checkpoint)")


def _output_args(parser):
    parser.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    parser.add_argument("--quiet", action="store_true")


# Commands -----------------------------------------------------------------------------------------

def cmd_sim(args):
    from soc import sim
    t0 = time.monotonic()
    if args.pcie and args.etherbone:
        raise UsageError("--pcie and --etherbone: one link beside the UART per simulator")
    if args.pcie:
        from soc.pcie import sim as pciesim
        build = pciesim.build(progress=_err)
        proc = pciesim.PCIeSimProcess(build)
    else:
        build = sim.build(sim.ETHERBONE_PARAMS if args.etherbone else None, progress=_err)
        proc = sim.SimProcess(build)
    print(f"simulator running: {proc.url}  (log {proc.log_path}, {time.monotonic() - t0:.1f} s to start)", flush=True)
    print(f"try: litetransformer info --target {proc.url}" + (f" --csr {build.csr_csv}" if args.pcie else ""),
          flush=True)
    if args.etherbone:
        print(f"etherbone://{sim.ETH_DEVICE_IP} on TAP {sim.ETH_TAP} (this host {sim.ETH_HOST_IP}/24); "
              f"try: litetransformer info --target etherbone://{sim.ETH_DEVICE_IP} --csr {build.csr_csv}", flush=True)
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
    inputs.check_target(args, golden=True)
    with _open_any(args) as dev:
        info = dev.info()
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:13s} {v}")
    return 0


def cmd_selftest(args):
    inputs.check_target(args)
    if args.offset % 4:
        raise UsageError(f"--offset 0x{args.offset:x}: uploads start on a 4-byte boundary at least "
                         f"(the device's beat, checked once it is open)")
    t_open = time.monotonic()
    with _open(args) as dev:
        opened = time.monotonic() - t_open
        align = max(dev.port_bytes, 4)
        if args.offset % align or args.offset + args.bytes > dev.dram_size:
            raise UsageError(f"--offset 0x{args.offset:x} --bytes {args.bytes}: the range must start on a "
                             f"{align}-byte boundary and end within {dev.name}'s {dev.dram_size} bytes of DRAM")
        rng = random.Random(args.seed)
        payload = inputs.random_payload(rng, args.bytes)

        bar = None if args.quiet else UploadBar(f"{args.bytes} random bytes")
        try:
            stats = dev.upload(args.offset, payload, progress=bar)
        finally:
            if bar:
                bar.close()
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
            **({"dma_bytes_per_cycle": round(stats["dma_bytes_per_cycle"], 4)} if "dma_bytes_per_cycle" in stats else {}),
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
    options = {k: getattr(args, k) for k in ("device", "sdram_module", "sys_clk_freq", "baudrate")}
    report = boards.build(args.board, output_dir=args.output_dir, progress=_err, options=options, seed=args.seed,
                          driver=args.driver)
    if report.get("bitstream") and (args.load or args.flash):
        boards.load(args.board, report["bitstream"], flash=args.flash)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:16s} {v}")
    # (an Artix-7 board's build ends with its Vivado project, not a bitstream)
    return 0 if report.get("bitstream") or report.get("vivado_project") else 1


def _compile_known(args, known, model):
    """The model compiled for a target whose core and DRAM are known before it is opened, so that
    what the compiler refuses (a model too large, one the integer formats miss) is refused
    before a simulator starts; the compile cache keeps it for the load. None otherwise."""
    if known is None or args.target == "golden":
        return None
    from driver.runtime import compile_for
    params, dram_size = known
    return compile_for(model, params, dram_size, allow_lossy=args.allow_lossy, name=args.target)


def _load(args, dev, path, model, tokenizer, compiled=None):
    t0 = time.monotonic()
    bar = None if args.quiet else UploadBar(os.path.basename(str(path)))
    try:
        lm = dev.load(model, tokenizer=tokenizer, progress=bar, allow_lossy=args.allow_lossy, compiled=compiled)
    finally:
        if bar:
            bar.close()
    if not args.quiet:
        c = lm.config
        up = getattr(lm.runner, "upload_stats", None)
        sent = "" if not up else (f", image {up['bytes'] >> 10} KiB, {up['bytes_sent'] >> 10} KiB sent (the rest "
                                  f"already on the device)" if up["bytes_sent"] < up["bytes"] else "")
        _err(f"[load] {path}: dim {c.dim}, hidden {c.hidden_dim}, {c.n_layers} layers, {c.n_heads} heads "
             f"({c.n_kv_heads} KV), vocab {c.vocab_size}, context {lm.seq_len}; on {lm.target_name} "
             f"in {time.monotonic() - t0:.1f} s{sent}")
    return lm


def _stats_line(stats):
    parts = []
    for phase in ("prefill", "decode"):
        st = stats[phase]
        if not st["positions"]:
            continue
        line = f"{phase} {st['positions']} positions in {st['passes']} passes, {st['seconds']:.2f} s"
        if "tokens_per_s" in st:
            line += f" ({st['tokens_per_s']} tok/s wall)"
        if "cycles_per_token" in st:
            line += f", {st['cycles_per_token']:.0f} cycles/token"
        parts.append(line)
    return f"{stats['target']}, batch {stats['batch']}: " + "; ".join(parts)


def cmd_generate(args):
    if args.firmware and args.temperature != 0.0:
        raise UsageError("--firmware decodes greedily on the device's ARGMAX: pass -t 0")
    inputs.check_target(args, golden=True)
    prompts = inputs.read_prompts(args)
    checks.check_seed(args.seed, len(prompts))
    known = inputs.known_target(args)
    params = known[0] if known else None
    if params and len(prompts) > params.slots:
        raise UsageError(f"{len(prompts)} prompts at once: {args.target}'s core decodes at most {params.slots} "
                         f"sequences together (one batch slot and one KV region each)")
    path, model, tokenizer = inputs.read_model(args, tokenizer_required=True)
    # Every prompt is tokenised and checked against the vocabulary and the positions it may use
    # before the target starts (the target's context can only be shorter: LoadedModel checks that).
    encoded = inputs.encode_prompts(prompts, model, tokenizer, args.steps)
    if args.firmware and len(prompts) != 1:
        raise UsageError(f"--firmware runs one sequence; got {len(prompts)} prompts")
    compiled = _compile_known(args, known, model)
    stream = len(prompts) == 1 and not args.json
    with _open_any(args) as dev:
        lm = _load(args, dev, path, model, tokenizer, compiled)
        if stream:
            first = encoded[0]
            sys.stdout.write(lm.tokenizer.decode_all(first[1:], prev=first[0]))
            sys.stdout.flush()
        def on_token(index, token, text):
            if stream:
                sys.stdout.write(text)
                sys.stdout.flush()
        result = lm.generate(encoded, steps=args.steps, temperature=args.temperature, topp=args.topp,
                             seed=args.seed, on_token=on_token, mode="firmware" if args.firmware else "host")
    seqs = result["sequences"]
    if stream:
        print()
    elif not args.json:
        for i, s in enumerate(seqs):
            print(f"[{i}] {s['text']}")
    if not args.quiet:
        _err(_stats_line(result["stats"]) + f"; seed {result['seed']}")
    if args.json:
        out = dict(seqs[0]) if len(seqs) == 1 else {"sequences": seqs}
        if len(seqs) > 1:
            out.update(prompt_tokens=[s["prompt_tokens"] for s in seqs],
                       generated_tokens=[s["generated_tokens"] for s in seqs], text=[s["text"] for s in seqs])
        out.update(stats=result["stats"], seed=result["seed"])
        print(json.dumps(out))
    return 0


def cmd_eval(args):
    inputs.check_target(args, golden=True)
    path, model, tokenizer = inputs.read_model(args, tokenizer_required=False)
    tokens = inputs.read_token_file(args.tokens, model.config)
    compiled = _compile_known(args, inputs.known_target(args), model)
    with _open_any(args) as dev:
        lm = _load(args, dev, path, model, tokenizer, compiled)
        result = lm.eval(tokens, logits=args.logits)
    if not args.quiet:
        st = result["stats"]
        _err(f"eval {result['positions']} positions on {lm.target_name}: {st['passes']} passes, {st['seconds']:.2f} s"
             + (f", {st['cycles_per_token']:.0f} cycles/token" if "cycles_per_token" in st else ""))
    if args.json:
        print(json.dumps(result))
    else:
        print(" ".join(str(t) for t in result["argmax"]))
    return 0


def cmd_fidelity(args):
    from driver import fidelity
    model_path, model, tokenizer = inputs.read_model(args, tokenizer_required=True)    # prompts are encoded
    prompts = fidelity.PROMPTS + fidelity.MORE_PROMPTS if args.prompts_file is None else inputs.read_prompts(args)
    for text in prompts:
        checks.check_prompt_fits(tokenizer, text, model.config.seq_len, "fidelity")
    result = {"model": model_path, **fidelity.report(model, tokenizer, prompts, args.steps, kernels=args.kernels,
                                                      kv_formats=args.kv_formats, greedy=args.greedy, say=_err,
                                                      progress=None if args.quiet else _err, kv_format=args.kv_format)}
    print(json.dumps(result) if args.json else "done")
    return 0


# Entry point --------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors also end with the JSON line that --json promises."""

    def error(self, message):
        self.print_usage(sys.stderr)
        _err(f"{self.prog}: error: {message}")
        if "--json" in _ARGV:
            print(json.dumps({"ok": False, "error": message, "error_type": "UsageError"}), flush=True)
        sys.exit(2)


_ARGV = []


def make_parser():
    from spec import isa
    parser = _Parser(prog="litetransformer", description=__doc__, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=lambda **kw: _Parser(allow_abbrev=False, **kw))

    p = sub.add_parser("sim", help="build (if needed) and run the simulated SoC; print its link address")
    p.add_argument("--etherbone", action="store_true",
                   help="the SoC with Etherbone too, on a TAP interface it opens (root or CAP_NET_ADMIN)")
    p.add_argument("--pcie", action="store_true",
                   help="the SoC with LitePCIe, driven by a simulated root complex (cocotb; pip install '.[pcie]')")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("info", help="ident, spec version, DRAM size and clock of a target")
    _target_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("selftest", help="upload random bytes, compare the device CRC, read back a sample")
    _target_args(p)
    p.add_argument("--bytes", type=checks.integer("byte count", 1, 1 << 32), default=256 * 1024)
    p.add_argument("--offset", type=checks.integer("offset", 0, 1 << 32), default=0, help="DRAM offset (beat aligned)")
    p.add_argument("--seed", type=checks.rng_seed, default=1)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("build", help="a board's bitstream with the open toolchain (ulx3s), or its Vivado "
                                     "project with lint and Yosys's resource counts (arty, acorn)")
    p.add_argument("--board", required=True, help="ulx3s, arty or acorn (Acorn CLE-215+ / NiteFury)")
    p.add_argument("--output-dir", default=None, help="default: build/<board> (not under /tmp: YoWASP hides it)")
    p.add_argument("--device", default=None, help="FPGA part (ulx3s: LFE5U-85F; arty: a7-100; acorn: cle-215+ or cle-215: the ones that hold the core)")
    p.add_argument("--sdram-module", default=None, help="SDRAM part (ulx3s: MT48LC16M16, AS4C32M16 or AS4C16M16)")
    p.add_argument("--sys-clk-freq", type=float, default=None, help="system clock in Hz (ulx3s: 25e6..50e6, arty and acorn: 50e6..100e6)")
    p.add_argument("--baudrate", type=int, default=None, help="UART link rate (default 1000000)")
    p.add_argument("--seed", type=int, default=None, help="nextpnr placer seed (ECP5 boards; default: the board's)")
    p.add_argument("--driver", action="store_true",
                   help="PCIe boards: also write LitePCIe's kernel driver and user library for this build (build/<board>/driver)")
    p.add_argument("--load", action="store_true", help="program the FPGA with openFPGALoader")
    p.add_argument("--flash", action="store_true", help="write the SPI flash with openFPGALoader")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="random valid programs on the hardware and the golden model, compared")
    _target_args(p)
    p.add_argument("--programs", type=checks.integer("program count", 1, 10 ** 9), default=100)
    p.add_argument("--seed", type=checks.rng_seed, default=1)
    p.add_argument("--config", default="sim",
                   help="--target core only: build the core with this target's parameters (spec.isa.TARGET_PARAMS)")
    p.add_argument("--stall-percent", type=checks.integer("stall percentage", 0, 99), default=None,
                   help="--target core only: chance in %% per cycle that a DRAM port refuses a request (default 10)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="prefill and batched decode from the core's counters: cycles/token, roofline, "
                                     "MAC use, projections, CPU baseline")
    p.add_argument("model", nargs="?", default=None, help="a checkpoint to bench instead of a named shape")
    p.add_argument("--shape", default=None, help="comma-separated, random weights: " + ", ".join(
        BENCH_SHAPES) + " (default stories260K)")
    p.add_argument("--batch", default="1,2,4,8", help="batch sizes, comma-separated (at most the core's slots)")
    p.add_argument("--positions", type=checks.integer("positions", 1, 1 << 20), default=4,
                   help="decode steps per batch size")
    p.add_argument("--start-pos", type=checks.integer("start position", 0, 1 << 20), default=0,
                   help="first decode position (earlier ones are prefilled, untimed)")
    p.add_argument("--prompt-len", type=checks.integer("prompt length", 1, 1 << 20), default=None,
                   help="prefill positions (default: the largest batch)")
    p.add_argument("--seed", type=checks.rng_seed, default=1, help="random weights and tokens")
    p.add_argument("--no-cpu", action="store_true", help="skip the C baseline on this machine's CPU")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the roofline (matplotlib)")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="write the tables into a section of FILE.md")
    p.add_argument("--section", default="results", help="the --markdown section (<!-- bench:SECTION -->)")
    _target_args(p)
    _output_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("yardstick", help="the CPU yardsticks on this machine: the C kernel and llama.cpp "
                                         "(F32, Q8_0; one thread and all; one sequence and a batch)")
    p.add_argument("--shape", default="stories15M", help="comma-separated, random weights: " + ", ".join(
        BENCH_SHAPES))
    p.add_argument("--batch", type=checks.integer("batch", 1, 64), default=8, help="the batched runs' sequences")
    p.add_argument("--positions", type=checks.integer("positions", 1, 1 << 16), default=32,
                   help="decode positions per pass")
    p.add_argument("--seed", type=checks.rng_seed, default=1, help="random weights and tokens")
    p.add_argument("--projections", default=None, metavar="BENCH.json",
                   help="a bench --json report: its board projections go beside the CPU figures")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="write the tables into a section of FILE.md")
    p.add_argument("--section", default="yardstick", help="the --markdown section (<!-- bench:SECTION -->)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_yardstick)

    p = sub.add_parser("generate", help="generate text from a llama2.c checkpoint (llama2.c's run options)")
    _model_args(p, tokenizer=True)
    p.add_argument("-i", dest="prompt", action="append", default=None,
                   help="prompt text; repeat -i for several prompts decoded together as one batch")
    p.add_argument("--prompts-file", default=None, help="one prompt per line, decoded together as one batch")
    p.add_argument("-n", dest="steps", type=checks.integer("steps", 0, None, " (0 = the context)"), default=256,
                   help="total positions, prompt included (0: the context)")
    p.add_argument("-t", dest="temperature", type=checks.temperature, default=1.0, help="0 = greedy (argmax on the device)")
    p.add_argument("-p", dest="topp", type=checks.topp, default=0.9, help="top-p (nucleus) sampling, in [0, 1]")
    p.add_argument("-s", dest="seed", type=checks.seed, default=0, help=f"random seed, 1..2^64-1 (0: from the clock)")
    p.add_argument("--firmware", action="store_true",
                   help="the SoC's CPU runs the decode loop (firmware/); greedy only (-t 0), one prompt")
    _target_args(p)
    _output_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="teacher forcing: argmax (and logits) after each fed token")
    _model_args(p, tokenizer=False)
    p.add_argument("--tokens", required=True, help="file of whitespace-separated token ids")
    p.add_argument("--logits", action="store_true", help="also return the logits")
    _target_args(p)
    _output_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("fidelity", help="integer path and llama2.c's runq against fp32: teacher-forced top-1 over "
                                        "several prompts, per-kernel errors, greedy prefixes")
    _model_args(p, tokenizer=True, lossy=False)
    p.add_argument("-n", dest="steps", type=checks.integer("steps", 1, 1 << 20), default=128,
                   help="fp32 greedy tokens after each prompt, each one predicted teacher-forced (capped by the context)")
    p.add_argument("--prompts-file", default=None,
                   help="one prompt per line (default: eight, driver.fidelity.PROMPTS and MORE_PROMPTS)")
    p.add_argument("--kernels", action="store_true",
                   help="also each kernel's error and what it costs (driver/kernel_error.py; minutes)")
    p.add_argument("--kv-formats", action="store_true",
                   help="also the agreement with each candidate K/V cache format (kernel_error.KV_FORMATS; minutes)")
    p.add_argument("--kv-format", choices=isa.KV_FORMATS, default=isa.TARGET_PARAMS["sim"].kv_format,
                   help="the integer path's K/V cache format (default: the simulated core's)")
    p.add_argument("--greedy", action="store_true", help="also free-running greedy common prefixes")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fidelity)
    return parser


def main(argv=None):
    """Exit status: 0 done, 1 a runtime failure (link, device, simulator, files that vanished),
    2 an argument or input the command cannot take (nothing was started), 130 interrupted. A
    failure is one line on stderr, and under --json also the last stdout line; never a traceback
    (LITETRANSFORMER_TRACEBACK=1 shows it for a bug report)."""
    _ARGV[:] = sys.argv[1:] if argv is None else list(argv)
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as e:                 # argparse: --help (0) or a usage error (2)
        return e.code
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # A text that cannot be encoded on the way out (stdout's encoding) is not the user's input.
        usage = isinstance(e, (ValueError, CSRMapError)) and not isinstance(e, UnicodeError)
        known = usage or isinstance(e, (LiteTransformerError, RuntimeError, TimeoutError, OSError))
        message = str(e) if known else (f"internal error: {type(e).__name__}: {e} (a bug in litetransformer; "
                                        f"LITETRANSFORMER_TRACEBACK=1 prints where)")
        if not known and os.environ.get("LITETRANSFORMER_TRACEBACK"):
            traceback.print_exc()
        _err(f"litetransformer {args.command}: error: {message}")
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": message,
                              "error_type": "UsageError" if type(e) is ValueError else type(e).__name__}),
                  flush=True)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
