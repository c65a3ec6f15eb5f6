"""The commands that measure: verify (hardware against the golden model), bench (the core's
counters against the roofline) and yardstick (the CPU runtimes users would run instead)."""

import json

from driver import checks, inputs
from driver.checks import UsageError
from driver.cliutil import err as _err, open_device as _open


def cmd_verify(args):
    from driver.verify import verify
    from spec import isa
    if args.target != "core":
        inputs.check_target(args)
    if args.config not in isa.TARGET_PARAMS:
        raise UsageError(f"--config {args.config!r}: the configurations are {', '.join(isa.TARGET_PARAMS)}")
    if args.config != "sim" and args.target != "core":
        raise ValueError("--config picks the configuration of --target core; a device has its own")
    if args.stall_percent is not None and args.target != "core":
        raise ValueError("--stall-percent is the core simulator's port backpressure (--target core)")
    result = verify(args.target, args.programs, args.seed, csr=args.csr, progress=None if args.quiet else _err,
                    config=args.config, stall_percent=10 if args.stall_percent is None else args.stall_percent)
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
    from driver import bench, bench_report
    from spec import isa
    batches = bench.parse_batches(args.batch)
    known = inputs.known_target(args)
    params = known[0] if known else None
    if params and max(batches) > params.slots:
        raise UsageError(f"--batch {max(batches)}: {args.target}'s core has {params.slots} batch slots")
    if args.model is not None and args.shape is not None:
        raise UsageError("give MODEL.bin or --shape, not both")
    if args.model is not None:
        checks.check_input_file(args.model, "model")
    models = [args.model] if args.model is not None else (args.shape if args.shape is not None else "stories260K").split(",")
    if args.shape is not None and not all(models):
        raise UsageError(f"--shape {args.shape!r}: give shape names separated by commas, e.g. stories15M")
    if args.target == "golden":
        raise UsageError("bench reads the core's cycle counters and the golden model has no cycles: "
                         "use --target sim, sim://HOST:PORT or a board")
    inputs.check_target(args)
    # Where the results go, checked before minutes of measuring, not after.
    if args.plot is not None:
        checks.check_output_file(args.plot, "--plot")
        bench_report.pyplot()
    if args.markdown is not None:
        checks.check_output_file(args.markdown, "--markdown", keep_text=True)
    progress = None if args.quiet else _err
    named = [bench.resolve_model(m, seed=args.seed) for m in models]      # (label, Model)
    results = []
    with _open(args) as dev:
        for label, model in named:
            try:
                bench.check_fits(dev.accel_params(), model.config)
            except ValueError as e:
                raise ValueError(f"{label}: {e}") from None
        for label, model in named:
            results.append(bench.bench(dev, model, batches, positions=args.positions, start_pos=args.start_pos,
                                       prompt_len=args.prompt_len, seed=args.seed, label=label, progress=progress))
        report = {"target": args.target, "params": isa.params_dict(dev.accel_params()), "batches": batches,
                  "decode_positions": [args.start_pos, args.start_pos + args.positions - 1],
                  "prompt_len": args.prompt_len or max(batches), "boards": bench.BOARDS,
                  "shapes": [r["shape"] for r in results], "runs": [run for r in results for run in r["runs"]],
                  "simulator": [{"shape": r["shape"], "upload_seconds": r["upload_seconds"], **r["simulator"]}
                                for r in results]}
    if not args.no_cpu:
        # The same weights, decoded on one core of this machine.
        report["cpu"] = [bench.cpu_baseline(model, max(args.start_pos + args.positions, 32), seed=args.seed,
                                            label=label) for label, model in named]
    if args.plot:
        bench_report.plot(report, args.plot)
    if args.markdown:
        bench_report.write_markdown(report, args.markdown, args.section)
    text = "\n".join(bench_report.tables(report))
    if args.json:
        if not args.quiet:
            _err(text)
        print(json.dumps(report))
    else:
        print(text)
    return 0


def cmd_yardstick(args):
    from driver import bench, bench_report, yardstick
    shapes = args.shape.split(",")
    for s in shapes:
        if s not in bench.SHAPES:
            raise ValueError(f"--shape {s!r}: known shapes are {', '.join(bench.SHAPES)}")
    if args.markdown is not None:
        checks.check_output_file(args.markdown, "--markdown", keep_text=True)
    projections = None
    if args.projections is not None:
        projections = inputs.read_projections(args.projections)
    report = yardstick.run(shapes, batch=args.batch, positions=args.positions, seed=args.seed,
                           progress=None if args.quiet else _err)
    lines = yardstick.tables(report, projections)
    if args.markdown:
        bench_report.write_section(args.markdown, args.section, lines)
    if args.json:
        if not args.quiet:
            _err("\n".join(lines))
        print(json.dumps(report))
    else:
        print("\n".join(lines))
    return 0
