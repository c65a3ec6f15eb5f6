"""What a command reads before it opens a target, read and checked here: the target's address
and CSR map, the checkpoint and tokenizer, the prompts, the token files (driver/checks.py holds
the rules for single values). Anything wrong is a UsageError: exit 2, nothing started."""

import json
import os

from driver import checks
from driver.checks import UsageError
from driver.errors import CSRMapError


def check_target(args, golden=False):
    """The target's address and CSR map, checked before anything starts; the golden model only
    where the command means something without hardware."""
    from driver.device import parse_target
    if args.target == "golden":
        if not golden:
            raise UsageError(f"--target golden: the golden model is the ISA interpreter, with no DRAM link, "
                             f"CRC unit or cycle counters, so `{args.command}` has nothing to measure there; "
                             f"use --target sim, sim://HOST:PORT or serial://")
        for option, value in (("--csr", args.csr), ("--timeout", args.timeout)):
            if value is not None:
                raise UsageError(f"{option} {value}: --target golden has no link and no CSR map; "
                                 f"{option} is for sim, sim://HOST:PORT and serial://")
        return
    parse_target(args.target)
    if args.csr is not None:
        from driver.csr import CSRMap
        checks.check_input_file(args.csr, "--csr")
        CSRMap(args.csr)


def known_target(args):
    """(core Params, DRAM bytes) of ``args.target`` known without opening it, or None. Golden and
    the simulated SoC share theirs (spec.isa.TARGET_PARAMS["sim"], GoldenTarget.dram_size, which
    a test compares with the simulator's); a board's come from its build's CSR map, which holds
    the core's parameters as ACCEL_PARAM_* constants and main_ram's size."""
    from spec import isa
    from driver.runtime import GoldenTarget
    if args.target == "golden" or (args.target.startswith("sim") and args.csr is None):
        return isa.TARGET_PARAMS["sim"], GoldenTarget.dram_size
    if args.csr is None:
        return None
    from driver.csr import CSRMap
    csr = CSRMap(args.csr)
    try:
        params = isa.params_from_constants({key: csr.constants[f"accel_param_{key}"] for key in
                                            isa.params_dict(isa.Params())})
        dram = csr.region("main_ram")[1]
    except (KeyError, TypeError, ValueError, IndexError, CSRMapError):
        return None                 # an older build's map: the device tells once it is open
    return params, dram


def model_paths(args):
    """The checkpoint and tokenizer: the bundled default model when MODEL is omitted; the
    tokenizer defaults to tokenizer.bin beside the checkpoint."""
    from driver.runtime import DEFAULT_MODEL, DEFAULT_TOKENIZER
    model = DEFAULT_MODEL if args.model is None else checks.check_input_file(args.model, "model")
    tok = getattr(args, "tokenizer", None)
    if tok is not None:
        checks.check_input_file(tok, "-z tokenizer")
    if tok is None:
        if args.model is None:
            tok = DEFAULT_TOKENIZER
        else:
            beside = os.path.join(os.path.dirname(os.path.abspath(model)), "tokenizer.bin")
            tok = beside if os.path.exists(beside) else None
    return model, tok


def read_model(args, tokenizer_required):
    """The checkpoint and its tokenizer, read and checked before any target is opened."""
    from driver.model import load
    from driver.tokenizer import Tokenizer
    path, tok = model_paths(args)
    if tok is None and tokenizer_required:
        raise UsageError(f"no tokenizer: pass -z TOKENIZER.bin (there is no tokenizer.bin beside {path})")
    model = load(path)
    tokenizer = Tokenizer.load(tok, vocab_size=model.config.vocab_size) if tok else None
    return path, model, tokenizer


def read_prompts(args):
    given = getattr(args, "prompt", None)
    if given and args.prompts_file is not None:
        raise UsageError("give prompts with -i or with --prompts-file, not both")
    if args.prompts_file is None:
        return given or [""]
    checks.check_input_file(args.prompts_file, "--prompts-file")
    try:
        with open(args.prompts_file, encoding="utf-8-sig") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise UsageError(f"--prompts-file {args.prompts_file!r} is not UTF-8 text: {e}") from None
    if not prompts:
        raise UsageError(f"--prompts-file {args.prompts_file!r} holds no prompt (one per non-empty line)")
    return prompts


def random_payload(rng, n, chunk=1 << 20):
    """``n`` bytes from ``rng``, made a chunk at a time: Random.randbytes(n) asks for 8n bits in
    one C int, which overflows from 256 MiB."""
    return b"".join(rng.randbytes(min(chunk, n - at)) for at in range(0, n, chunk))


def encode_prompts(prompts, model, tokenizer, steps):
    """Each prompt's tokens (BOS first), checked against the positions it may use (``steps``,
    llama2.c's -n, 0 = the context, capped by it) before any target starts; a prompt that
    cannot fit is refused before the merges, whose cost grows with its length squared."""
    steps = model.config.seq_len if steps == 0 else min(steps, model.config.seq_len)
    encoded = []
    for text in prompts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UsageError(f"the prompt {text[:40]!r} is not valid text: {e.reason} at character {e.start} "
                             f"(a byte sequence that is not UTF-8?)") from None
        checks.check_prompt_fits(tokenizer, text, steps)
        encoded.append(checks.check_tokens(tokenizer.encode(text, bos=True), model.config.vocab_size, steps,
                                           "generate: the prompt (BOS included)", "-n, capped by the context,"))
    return encoded


def read_token_file(path, config):
    """Whitespace-separated token ids, each in the vocabulary, no more than the context."""
    checks.check_input_file(path, "--tokens")
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [int(t) for t in f.read().split()]
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"--tokens {path!r}: expected whitespace-separated integer token ids") from None
    return checks.check_tokens(tokens, config.vocab_size, config.seq_len, f"--tokens {path!r}",
                               "the model's context")


def read_projections(path):
    """A bench --json report whose board projections go beside the CPU figures: checked for the
    fields they are read from before minutes of measuring, not after."""
    checks.check_input_file(path, "--projections")
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"--projections {path!r} is not a JSON file: {e}") from None
    runs = report.get("runs") if isinstance(report, dict) else None
    if not isinstance(runs, list) or not runs or not all(
            isinstance(r, dict) and {"shape", "phase", "batch"} <= r.keys()
            and isinstance(r.get("projected_tokens_per_s"), dict) for r in runs):
        raise UsageError(f"--projections {path!r} is not a `litetransformer bench --json` report (it needs "
                         f"\"runs\", each with shape, phase, batch and projected_tokens_per_s)")
    return report
