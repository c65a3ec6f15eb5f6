"""A compiled model on a target: upload once, then one program run per step.

    with Device.open("sim") as dev:                     # or "golden", "sim://…", "serial://…"
        lm = dev.load("model.bin", tokenizer="tokenizer.bin")
        out = lm.generate(["Once upon a time"], steps=64, temperature=0.0)
        ev = lm.eval([1, 403, 2, 85], logits=True)

A step runs the program once over up to B slots; each slot is (token, position, KV region).
Slots that share a KV region at consecutive positions are exact: the core writes every slot's
K/V for a layer before any slot's attention reads the cache. So prompts are prefilled B
positions per pass, independent sequences decode together (one KV region each), and teacher
forcing (``eval``) feeds B positions per pass — all bit-identical to one position per run.

Greedy decoding takes the core's own ARGMAX (16 bytes back per slot); sampling with a
temperature reads the slot's logits back and samples on the host with llama2.c's rules and
random numbers (driver.sampling).
"""

import hashlib
import os
import sys
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from spec import isa, numerics, spec_hash
from driver.cache import PROJECT_DIR, cache_root, hash_files, load_pickle, store_pickle
from driver.checks import (UsageError, check_prompt_fits, check_seed, check_temperature, check_tokens,
                           check_topp)
from driver.compiler import CompiledModel, GoldenRunner, compile_model
from driver.errors import DeviceError, LinkError
from driver.firmware import RESERVED_BYTES as FIRMWARE_BYTES
from driver.intforward import QuantizedModel
from driver.model import Model, load as load_model_file
from driver.sampling import Sampler
from driver.tokenizer import StreamDecoder, Tokenizer

BOS, EOS = 1, 2
# The model the project trains and ships (scripts/train_default_model.py).
DEFAULT_MODEL_DIR = os.path.join(PROJECT_DIR, "models", "tinytales")
DEFAULT_MODEL = os.path.join(DEFAULT_MODEL_DIR, "model.bin")
DEFAULT_TOKENIZER = os.path.join(DEFAULT_MODEL_DIR, "tokenizer.bin")
LOGIT_SCALE = 1.0 / (1 << numerics.ACT_FRAC)      # the core's logits are int32 Q16


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
        # CRC-verified; what the device already holds (the same model, loaded before) is not sent
        self.upload_stats = device.upload(compiled.base, compiled.image, progress=progress, skip_present=True)
        start, end = compiled.constant_range()
        self.constant = (start, end, zlib.crc32(compiled.image[start - compiled.base:end - compiled.base]))
        self.max_slots = min(cp.slots, params.slots)
        self.counters = None
        self.suspect = False            # a step failed on the link: its commands may have gone astray

    def step(self, slots, kv=None, watchdog=0, want_logits=True):
        """Run one step: ``slots`` = (token, pos) per active slot, slot i on KV region
        ``kv[i]`` (default i). Returns (logits int64 (nslots, vocab) or None, argmax per slot).
        After a step that failed on the link, the next one first checks the image's CRC and
        uploads it again if a garbled command wrote into it (UARTBone carries no checksum, so a
        corrupted address can land a write anywhere)."""
        try:
            if self.suspect:
                self._check_image()
            return self._step(slots, kv, watchdog, want_logits)
        except (LinkError, DeviceError):
            self.suspect = True
            raise

    def _check_image(self):
        cm, dev = self.cm, self.device
        start, end, crc = self.constant
        if dev.checksum(start, end - start) != crc:
            print(f"[link] {dev.name}: a garbled command wrote into the model's image; uploading it again",
                  file=sys.stderr, flush=True)
            dev.upload(cm.base, cm.image, skip_present=True)
        self.suspect = False

    def _step(self, slots, kv, watchdog, want_logits):
        cm, dev = self.cm, self.device
        kv = list(range(len(slots))) if kv is None else list(kv)
        if not 1 <= len(slots) <= self.max_slots:
            raise ValueError(f"step: {len(slots)} slots; the core takes 1..{self.max_slots}")
        if len(kv) != len(slots):
            raise ValueError(f"step: {len(slots)} slots but {len(kv)} KV regions")
        table = isa.pack_slots([(t, p, cm.kv_base(r)) for (t, p), r in zip(slots, kv)])
        # The ARGMAX results are set to a value no run writes (all ones) with the slot table, in
        # one verified write where they follow it: a start command that the link garbled would
        # otherwise leave the last run's results to be read as this one's.
        sentinel = b"\xff" * (isa.BEAT_BYTES * len(slots))
        if cm.argmax == cm.slots + isa.BEAT_BYTES * cm.params.slots:
            dev.write_dram(cm.slots, table.ljust(cm.argmax - cm.slots, b"\0") + sentinel)
        else:
            dev.write_dram(cm.slots, table)
            dev.write_dram(cm.argmax, sentinel)
        prog = cm.prog if want_logits else cm.prog_greedy         # greedy: no logits STORE
        self.counters = dev.run_program(prog, cm.slots, len(slots), watchdog=watchdog)
        # ARGMAX's beats and the logits after them come back in one CRC-verified read.
        am_bytes = isa.BEAT_BYTES * len(slots)
        logits_at = cm.logits - cm.argmax
        raw = dev.read_dram(cm.argmax, logits_at + cm.logits_stride * len(slots) if want_logits else am_bytes)
        am, logits = raw[:am_bytes], None
        if want_logits:
            logits = np.stack([np.frombuffer(raw, "<i4", cm.config.vocab_size, logits_at + s * cm.logits_stride)
                               for s in range(len(slots))]).astype(np.int64)
        if am == sentinel:
            raise LinkError(f"{dev.name}: the run reported done but wrote no results: its start command "
                            f"was lost or garbled on the link")
        argmax = [int.from_bytes(am[16 * s:16 * s + 4], "little") for s in range(len(slots))]
        return logits, argmax


class GoldenStepper(GoldenRunner):
    """The golden model behind the DeviceRunner interface (no counters: it has no cycles)."""

    def __init__(self, compiled):
        super().__init__(compiled)
        self.max_slots = compiled.params.slots
        self.counters = None
        self.upload_stats = None

    def step(self, slots, kv=None, watchdog=0, want_logits=True):
        return super().step(slots, kv, want_logits)


class GoldenTarget:
    """``Device.open("golden")``: the ISA interpreter as a target, with the simulated SoC's
    core parameters and DRAM size so that what compiles here runs there."""

    name = "golden"
    dram_size = 256 << 20

    def __init__(self, params=None):
        self._params = params or isa.TARGET_PARAMS["sim"]

    def accel_params(self):
        return self._params

    def info(self):
        """What ``litetransformer info`` shows of a device, for the interpreter: its spec and the
        core parameters it runs with; no link, clock or counters."""
        import spec
        return {"target": self.name, "ident": "golden model (spec.golden, the ISA interpreter)",
                "spec_version": ".".join(map(str, spec.SPEC_VERSION)), "spec_hash": f"{spec_hash():08x}",
                "dram_bytes": self.dram_size, "params": isa.params_dict(self._params)}

    def load(self, model, tokenizer=None, seq_len=None, progress=None, allow_lossy=False, compiled=None):
        return load(self, model, tokenizer, seq_len, progress, allow_lossy, compiled)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Compilation, cached -------------------------------------------------------------------------------
_COMPILER_SOURCES = ("driver/compiler.py", "driver/intforward.py", "spec")


def _weights_hash(model):
    h = hashlib.sha256(repr(model.config).encode())
    for name in sorted(model.weights):
        h.update(name.encode())
        h.update(np.ascontiguousarray(model.weights[name], dtype="<f4").tobytes())
    return h


def compile_cached(model, params, dram_size, seq_len=None, kv_regions=None, cache_dir=None):
    """compile_model(QuantizedModel(model), …), kept on disk under a key of the weights, the
    spec hash, the compiler's sources and the arguments. Deterministic, so a hit is exact."""
    h = _weights_hash(model)
    h.update(f"{spec_hash():x}".encode())
    h.update(repr((isa.params_dict(params), dram_size, seq_len, kv_regions)).encode())
    hash_files(h, _COMPILER_SOURCES)
    key = h.hexdigest()[:24]
    directory = cache_dir or os.path.join(cache_root(), "compiled")
    path = os.path.join(directory, key + ".pkl")
    cm = load_pickle(path, notice=lambda line: print(line, file=sys.stderr, flush=True))
    if isinstance(cm, CompiledModel):
        return cm
    cm = compile_model(QuantizedModel(model, positions=seq_len), params, dram_size=dram_size, seq_len=seq_len,
                       kv_regions=kv_regions)
    store_pickle(path, cm)
    return cm


def compile_for(model, params, dram_size, seq_len=None, allow_lossy=False, name="the target"):
    """compile_cached for a core of ``params`` beside ``dram_size`` bytes of DRAM (the top
    FIRMWARE_BYTES kept for the decode-loop firmware), under the lossy rule: a model with a
    tensor or activation that the integer formats miss is refused (UsageError), unless
    ``allow_lossy`` (then each gets a warning line). Needs no device: the CLI calls it before a
    target whose parameters it knows is opened."""
    seq_len = min(seq_len or model.config.seq_len, model.config.seq_len, params.max_seq)
    try:
        cm = compile_cached(model, params, dram_size - FIRMWARE_BYTES, seq_len=seq_len)
    except ValueError as e:
        if "DRAM" not in str(e):
            raise
        raise ValueError(f"{e} (the top {FIRMWARE_BYTES >> 10} KiB of {name}'s DRAM are kept for "
                         f"the decode-loop firmware)") from None
    if cm.lossy:
        if not allow_lossy:
            raise UsageError(f"the core's integer formats cannot represent this model faithfully: "
                             + "; ".join(cm.lossy[:4]) + ("; ..." if len(cm.lossy) > 4 else "")
                             + " (--allow-lossy runs it anyway)")
        for line in cm.lossy:
            print(f"warning: {line}", file=sys.stderr, flush=True)
    return cm


def load(target, model, tokenizer=None, seq_len=None, progress=None, allow_lossy=False, compiled=None):
    """Compile ``model`` (a Model or a checkpoint path) for ``target``'s core and DRAM, upload
    it, and return a LoadedModel. ``tokenizer``: a Tokenizer or a tokenizer.bin path.
    ``compiled``: what compile_for gave before the target was opened, used if it was made for
    this target's core and DRAM (else the model is compiled again, lossy rule included)."""
    if not isinstance(model, Model):
        model = load_model_file(model)
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.load(tokenizer, vocab_size=model.config.vocab_size)
    params = target.accel_params()
    cm = compiled
    if cm is None or cm.params != params or cm.dram_size != target.dram_size - FIRMWARE_BYTES \
            or cm.seq_len != min(seq_len or model.config.seq_len, model.config.seq_len, params.max_seq):
        cm = compile_for(model, params, target.dram_size, seq_len, allow_lossy, target.name)
    if isinstance(target, GoldenTarget):
        runner = GoldenStepper(cm)
    else:
        runner = DeviceRunner(target, cm, progress=progress)
    return LoadedModel(runner, model, tokenizer, target.name)


# Generation and evaluation -------------------------------------------------------------------------
@dataclass
class Sequence:
    """One prompt's generation: its tokens so far and where it stands."""
    prompt_tokens: list
    tokens: list = field(default_factory=list)      # prompt, then generated
    pos: int = 0                                    # next position to run
    done: bool = False
    stop_reason: str = ""

    @property
    def generated(self):
        return self.tokens[len(self.prompt_tokens):]


@dataclass
class PhaseStats:
    positions: int = 0
    passes: int = 0
    cycles: int = 0
    seconds: float = 0.0

    def as_dict(self):
        d = {"positions": self.positions, "passes": self.passes, "seconds": round(self.seconds, 3)}
        if self.cycles:
            d["cycles"] = self.cycles
            d["cycles_per_token"] = round(self.cycles / max(self.positions, 1), 1)
        if self.seconds > 0:
            d["tokens_per_s"] = round(self.positions / self.seconds, 2)
        return d


class LoadedModel:
    """A model on a target. ``generate`` and ``eval`` run steps through ``runner``."""

    def __init__(self, runner, model, tokenizer, target_name):
        self.runner, self.model, self.tokenizer = runner, model, tokenizer
        self.config = model.config
        self.seq_len = runner.cm.seq_len
        self.target_name = target_name
        self.slots = runner.max_slots
        self.kv_regions = runner.cm.kv_regions

    # One pass ---------------------------------------------------------------------------------------
    def _pass(self, work, want_logits, stats):
        """Run ``work`` = [(token, pos, kv_region)] (≤ B entries) as one step."""
        t0 = time.monotonic()
        logits, argmax = self.runner.step([(t, p) for t, p, _ in work], [r for _, _, r in work],
                                          want_logits=want_logits)
        stats.seconds += time.monotonic() - t0
        stats.passes += 1
        stats.positions += len(work)
        if self.runner.counters:
            stats.cycles += self.runner.counters["cycles"]
        return logits, argmax

    def check_prompt(self, tokens, steps):
        """A prompt's ids against the vocabulary and the ``steps`` positions it may use."""
        return check_tokens(tokens, self.config.vocab_size, steps, "generate: the prompt (BOS included)",
                            "-n, capped by the context,")

    # Generation -------------------------------------------------------------------------------------
    def generate(self, prompts, steps=256, temperature=1.0, topp=0.9, seed=None, on_token=None, mode="host"):
        """Generate from each prompt (text, or a list of token ids starting with BOS) as
        independent sequences decoding together, one KV region and one slot each.

        ``steps`` is llama2.c's -n: total positions, prompt included (0 or more than the
        context means the context). A sequence stops at ``steps``, at the context's end, or
        when it produces BOS or EOS. ``on_token(index, token, text)`` is called per generated
        token as it arrives. Returns a dict: ``sequences`` (prompt_tokens, generated_tokens,
        tokens, text, stop) and ``stats`` (prefill and decode: positions, passes, cycles,
        seconds).

        ``mode="firmware"``: the SoC's CPU runs the loop (driver.firmware), greedy only
        (temperature 0) and one prompt; the host only streams the tokens it prints."""
        if isinstance(prompts, (str, bytes)) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if steps < 0:
            raise UsageError(f"generate: steps (-n) {steps} is negative: give 0 (the context) or a positive count")
        check_temperature(temperature)
        check_topp(topp)
        check_seed(seed or 0, max(len(prompts), 1))
        if mode == "firmware":
            from driver.firmware import generate as firmware_generate
            return firmware_generate(self, prompts, steps, temperature, seed, on_token)
        if mode != "host":
            raise ValueError(f"generate: mode {mode!r}: use 'host' or 'firmware'")
        if not prompts:
            raise ValueError("generate: no prompts")
        if len(prompts) > self.kv_regions:
            raise ValueError(f"generate: {len(prompts)} prompts at once; the image holds "
                             f"{self.kv_regions} KV regions (one per sequence)")
        steps = self.seq_len if steps == 0 or steps > self.seq_len else steps
        seqs = []
        for p in prompts:
            toks = self.check_prompt(self._encode(p, steps), steps)
            seqs.append(Sequence(prompt_tokens=toks, tokens=list(toks)))
        seed = seed if seed else (time.time_ns() & 0xFFFFFFFF) or 1
        samplers = [Sampler(temperature, topp, seed + i) for i in range(len(seqs))]
        decoders = [StreamDecoder(self.tokenizer, prev=s.prompt_tokens[-1]) if self.tokenizer else None
                    for s in seqs]
        prefill, decode = PhaseStats(), PhaseStats()
        greedy = temperature == 0.0
        while True:
            # Each running sequence gets a slot for its next position; prompt positions before
            # the last need no output, so a prefilling sequence takes as many slots as are free.
            work, owners = [], []
            active = [i for i, s in enumerate(seqs) if not s.done]
            if not active:
                break
            for i in active:
                s = seqs[i]
                work.append((s.tokens[s.pos], s.pos, i))
                owners.append(i)
            for i in active:
                s = seqs[i]
                last_prompt = len(s.prompt_tokens) - 1
                pos = s.pos + 1
                while len(work) < self.slots and pos <= last_prompt:
                    work.append((s.tokens[pos], pos, i))
                    owners.append(i)
                    pos += 1
            in_prefill = all(p < len(seqs[i].prompt_tokens) for (_, p, i) in work)   # prompt tokens only
            logits, argmax = self._pass(work, want_logits=not greedy, stats=prefill if in_prefill else decode)
            for slot, ((_, pos, i), owner) in enumerate(zip(work, owners)):
                s = seqs[i]
                s.pos = pos + 1
                if pos < len(s.prompt_tokens) - 1:
                    continue                                 # inside the prompt: output unused
                nxt = argmax[slot] if greedy else samplers[i].sample(logits[slot] * LOGIT_SCALE)
                s.tokens.append(nxt)
                if nxt in (BOS, EOS):
                    s.done, s.stop_reason = True, "bos" if nxt == BOS else "eos"
                    s.tokens.pop()                           # llama2.c stops without printing it
                elif s.pos >= steps:
                    s.done, s.stop_reason = True, "steps"
                if not (s.stop_reason in ("bos", "eos")) and on_token:
                    text = decoders[i].feed(nxt) if decoders[i] else ""
                    on_token(i, nxt, text)
        out = []
        for s, dec in zip(seqs, decoders):
            seq = {"prompt_tokens": len(s.prompt_tokens), "generated_tokens": len(s.generated),
                   "tokens": s.tokens, "stop": s.stop_reason}
            if self.tokenizer:
                # What llama2.c prints: every piece after BOS, the prompt's included.
                seq["text"] = self.tokenizer.decode_all(s.tokens[1:], prev=s.tokens[0])
                seq["generated_text"] = self.tokenizer.decode_all(s.generated, prev=s.prompt_tokens[-1])
                if on_token and dec:
                    tail = dec.flush()
                    if tail:
                        on_token(seqs.index(s), None, tail)
            out.append(seq)
        return {"sequences": out, "seed": seed,
                "stats": {"target": self.target_name, "batch": len(seqs), "slots": self.slots,
                          "prefill": prefill.as_dict(), "decode": decode.as_dict()}}

    def _encode(self, prompt, steps):
        if isinstance(prompt, (list, tuple)):
            return [int(t) for t in prompt]
        if self.tokenizer is None:
            raise ValueError("generate: a text prompt needs a tokenizer (-z TOKENIZER.bin)")
        check_prompt_fits(self.tokenizer, prompt, steps)
        return self.tokenizer.encode(prompt, bos=True, eos=False)

    # Teacher forcing --------------------------------------------------------------------------------
    def eval(self, tokens, logits=False):
        """Feed ``tokens`` at positions 0, 1, … (teacher forcing), B positions per pass on
        one KV region. Returns ``argmax`` (one per fed position), with ``logits`` the float
        logits too, and ``stats``."""
        tokens = check_tokens([int(t) for t in tokens], self.config.vocab_size, self.seq_len, "eval", "the context")
        stats, am_all, lg_all = PhaseStats(), [], []
        for start in range(0, len(tokens), self.slots):
            chunk = tokens[start:start + self.slots]
            lg, am = self._pass([(t, start + k, 0) for k, t in enumerate(chunk)], logits, stats)
            am_all += am
            if logits:
                lg_all += [row * LOGIT_SCALE for row in lg]
        out = {"positions": len(tokens), "argmax": am_all, "stats": stats.as_dict()}
        if logits:
            out["logits"] = [row.astype(np.float32).tolist() for row in lg_all]
        return out
