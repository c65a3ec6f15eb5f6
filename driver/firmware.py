"""The decode-loop firmware (firmware/) on a device's CPU: build it against the device's LiteX
build, boot it from the BIOS prompt, and hand it greedy generation requests.

    fw = Firmware.start(device)              # build (cached), upload, `boot`, wait for its prompt
    out = fw.run(compiled, [1, 403, 85], steps=64, on_token=print)

The host writes a request (the "mailbox") at the top of DRAM and types ``g`` on the CPU console;
the firmware prints ``T <id>`` per generated token and a summary line ``S …`` (or ``E …`` for an
error). firmware/README.md describes the layout and the protocol.
"""

import hashlib
import importlib.metadata
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time

from spec import isa
from driver.cache import PROJECT_DIR, cache_root
from driver.errors import AcceleratorError, DeviceError

# The top of DRAM the firmware owns: code, data, stack, and the mailbox in its last bytes.
# firmware/Makefile's defaults are the same numbers (a hand build needs no driver).
RESERVED_BYTES = 256 << 10
MAILBOX_BYTES = 8 << 10
MAILBOX_MAGIC = 0x424d544c           # "LTMB"
MAILBOX_VERSION = 1
MAILBOX_HEADER_WORDS = 16
MAX_PROMPT_TOKENS = MAILBOX_BYTES // 4 - MAILBOX_HEADER_WORDS
PROMPT = b"ltfw> "

FIRMWARE_DIR = os.path.join(PROJECT_DIR, "firmware")
_SOURCES = ("main.c", "linker.ld", "Makefile")
_LIBS = ("libbase/libbase.a", "libc/libc.a", "libcompiler_rt/libcompiler_rt.a")


# Build (cached) -----------------------------------------------------------------------------------

def _tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def input_hash(build_dir):
    """Hash of what firmware.bin is made of: its sources, the LiteX build's generated headers
    and libraries, the layout constants, LiteX and the compiler."""
    h = hashlib.sha256(repr((RESERVED_BYTES, MAILBOX_BYTES)).encode())
    for name in _SOURCES:
        with open(os.path.join(FIRMWARE_DIR, name), "rb") as f:
            h.update(name.encode() + f.read())
    generated = os.path.join(build_dir, "software", "include", "generated")
    for path in sorted(os.listdir(generated)) + [os.path.join("..", "..", lib) for lib in _LIBS]:
        with open(os.path.join(generated, path), "rb") as f:
            h.update(path.encode() + f.read())
    h.update(importlib.metadata.version("litex").encode())
    h.update(_tool_version(["riscv64-unknown-elf-gcc", "--version"]).encode())
    return h.hexdigest()[:16]


def build(build_dir, progress=None):
    """firmware.bin for the SoC built in ``build_dir`` (its csr.csv's folder); returns (path, id).
    Built once per input hash into the cache; the id is that hash, printed by the firmware."""
    if shutil.which("riscv64-unknown-elf-gcc") is None:
        raise RuntimeError("cannot build the firmware: riscv64-unknown-elf-gcc is missing (scripts/setup.sh installs it)")
    build_dir = os.path.abspath(build_dir)
    if not os.path.isdir(os.path.join(build_dir, "software", "include", "generated")):
        raise RuntimeError(f"cannot build the firmware: {build_dir} holds no LiteX software build "
                           f"(software/include/generated)")
    key = input_hash(build_dir)
    target = os.path.join(cache_root(), "firmware-" + key)
    binary = os.path.join(target, "firmware.bin")
    if os.path.exists(binary):
        return binary, key
    os.makedirs(cache_root(), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="firmware-" + key + "-", dir=cache_root())
    if progress:
        progress(f"[firmware] building {key} against {build_dir}")
    cmd = ["make", "-C", workdir, "-f", os.path.join(FIRMWARE_DIR, "Makefile"),
           f"BUILD_DIR={build_dir}", f"RESERVED_BYTES={RESERVED_BYTES:#x}", f"MAILBOX_BYTES={MAILBOX_BYTES:#x}",
           f"FIRMWARE_ID={key}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"firmware build failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    if os.path.exists(target):
        shutil.rmtree(target)
    os.rename(workdir, target)
    return binary, key


# Mailbox ------------------------------------------------------------------------------------------

def pack_mailbox(compiled, prompt_tokens, steps, kv_region=0, watchdog=0):
    """The request as firmware/main.c's struct mailbox reads it."""
    if not 1 <= len(prompt_tokens) <= min(steps, MAX_PROMPT_TOKENS):
        raise ValueError(f"firmware: a prompt of {len(prompt_tokens)} tokens needs 1 <= tokens <= steps "
                         f"({steps}) and at most {MAX_PROMPT_TOKENS} tokens")
    header = [MAILBOX_MAGIC, MAILBOX_VERSION, compiled.prog_greedy, compiled.slots, compiled.argmax,
              compiled.kv_base(kv_region), steps, len(prompt_tokens), watchdog]
    header += [0] * (MAILBOX_HEADER_WORDS - len(header))
    return struct.pack(f"<{len(header) + len(prompt_tokens)}I", *header, *prompt_tokens)


# The running firmware -----------------------------------------------------------------------------

class Firmware:
    """The firmware running on ``device``'s CPU. Use ``Firmware.start(device)``."""

    def __init__(self, device, ident):
        self.device, self.ident = device, ident
        self.mailbox = device.dram_size - MAILBOX_BYTES        # DRAM byte address
        self.unfinished = False         # a request whose output was not read to the prompt

    @classmethod
    def start(cls, device, progress=None, boot_timeout=60.0):
        """Build (cached), upload and boot the firmware unless this build already runs.
        ``boot_timeout``: seconds the console may stay silent before the firmware's prompt."""
        if device.firmware:
            return device.firmware
        path, ident = build(os.path.dirname(os.path.abspath(device.csr.path)), progress)
        if device.console_prompt == "ltfw":
            # A firmware already runs (booted by an earlier session): keep it if it is this one.
            device.console_write("v")
            m = re.search(rb"V (\w+)", device.console_read(PROMPT, timeout=10.0))
            if m and m.group(1).decode() == ident:
                device.firmware = cls(device, ident)
                return device.firmware
            raise DeviceError(f"{device.name} runs another firmware ({m.group(1).decode() if m else '?'}, "
                              f"this driver's is {ident}): reset the device to get back to the BIOS")
        with open(path, "rb") as f:
            image = f.read()
        offset = device.dram_size - RESERVED_BYTES
        device.upload(offset, image)
        main_ram, _ = device.csr.region("main_ram")
        device.console_write(f"boot 0x{main_ram + offset:x}\n")
        try:
            banner = device.console_read(PROMPT, timeout=boot_timeout)
        except DeviceError as e:
            raise DeviceError(f"{device.name}: the firmware did not start: {e}") from None
        if f"LiteTransformer firmware {ident}".encode() not in banner:
            raise DeviceError(f"{device.name}: the firmware did not start; console:\n"
                              f"{banner[-400:].decode(errors='replace')}")
        device.console_prompt = "ltfw"
        device.firmware = cls(device, ident)
        return device.firmware

    def run(self, compiled, prompt_tokens, steps, kv_region=0, watchdog=0, on_token=None, timeout=120.0):
        """Greedy generation of one sequence on the device: ``prompt_tokens`` (BOS first) fed in
        order, then each ARGMAX fed back, until BOS/EOS or ``steps`` positions. ``on_token(id)``
        per generated token as its line arrives. Returns generated ``tokens``, ``positions``,
        ``prefill_cycles``, ``decode_cycles``, ``stop`` and the wall-clock ``prefill_seconds`` (to
        the first token) and ``decode_seconds``. ``timeout``: seconds without console output."""
        dev = self.device
        mailbox = pack_mailbox(compiled, prompt_tokens, steps, kv_region, watchdog)
        if self.unfinished:
            # An earlier request was abandoned (an exception in on_token, say): let it finish
            # and drop its lines, so that they are not taken for this one's.
            dev.console_read(PROMPT, timeout=timeout)
        dev.write_dram(self.mailbox, mailbox)
        t0 = time.monotonic()
        t_first = None
        self.unfinished = True
        dev.console_write("g")
        tokens = []
        while True:
            line = dev.console_read(b"\n", timeout=timeout).strip()
            if line.startswith(b"T "):
                tokens.append(int(line[2:]))
                if t_first is None:
                    t_first = time.monotonic()
                if on_token:
                    on_token(tokens[-1])
            elif line.startswith(b"S "):
                positions, prefill, decode, stop = line[2:].split()
                break
            elif line.startswith(b"E "):
                dev.console_read(PROMPT, timeout=timeout)
                self.unfinished = False
                fields = line[2:].split()
                if fields[0] == b"mailbox":
                    raise DeviceError(f"{dev.name}: the firmware refused the mailbox at 0x{self.mailbox:x}")
                code, addr = int(fields[0]), int(fields[1], 16)
                name = isa.ERROR_NAMES.get(code, f"code {code}")
                raise AcceleratorError(f"{dev.name}: transformer core stopped with {name} at 0x{addr:08x} "
                                       f"(firmware)", code=code, addr=addr)
        dev.console_read(PROMPT, timeout=timeout)
        self.unfinished = False
        t_end = time.monotonic()
        t_first = t_first or t_end
        return {"tokens": tokens, "positions": int(positions), "prefill_cycles": int(prefill, 16),
                "decode_cycles": int(decode, 16), "stop": stop.decode(),
                "prefill_seconds": t_first - t0, "decode_seconds": t_end - t_first}


# LoadedModel.generate(mode="firmware") ----------------------------------------------------------

def generate(lm, prompts, steps, temperature, seed, on_token):
    """Greedy generation of one prompt by the firmware's loop on ``lm``'s device; the same
    arguments and result as driver.runtime.LoadedModel.generate (one slot, one position per
    pass; cycles are the core's, summed by the firmware)."""
    from driver.runtime import PhaseStats
    from driver.tokenizer import StreamDecoder
    if temperature != 0.0:
        raise ValueError(f"generate: firmware mode decodes greedily on the device's ARGMAX; "
                         f"temperature must be 0, not {temperature}")
    if isinstance(prompts, (str, bytes)) or (prompts and isinstance(prompts[0], int)):
        prompts = [prompts]
    if len(prompts) != 1:
        raise ValueError(f"generate: firmware mode runs one sequence; got {len(prompts)} prompts")
    device = getattr(lm.runner, "device", None)
    if device is None:
        raise ValueError(f"generate: firmware mode needs a device with a CPU (sim or a board), not {lm.target_name}")
    steps = lm.seq_len if steps <= 0 or steps > lm.seq_len else steps
    prompt = lm.check_prompt(lm._encode(prompts[0], steps), steps)
    decoder = StreamDecoder(lm.tokenizer, prev=prompt[-1]) if lm.tokenizer else None

    def on_id(token):
        if on_token:
            on_token(0, token, decoder.feed(token) if decoder else "")

    out = Firmware.start(device).run(lm.runner.cm, prompt, steps, on_token=on_id)
    tokens, generated = prompt + out["tokens"], out["tokens"]
    seq = {"prompt_tokens": len(prompt), "generated_tokens": len(generated), "tokens": tokens, "stop": out["stop"]}
    if lm.tokenizer:
        seq["text"] = lm.tokenizer.decode_all(tokens[1:], prev=tokens[0])
        seq["generated_text"] = lm.tokenizer.decode_all(generated, prev=prompt[-1])
        tail = decoder.flush()
        if on_token and tail:
            on_token(0, None, tail)
    # As in host mode: every prompt position is prefill, the ones after it decode.
    prefill_positions = min(len(prompt), out["positions"])
    decode_positions = out["positions"] - prefill_positions
    prefill = PhaseStats(prefill_positions, prefill_positions, out["prefill_cycles"], out["prefill_seconds"])
    decode = PhaseStats(decode_positions, decode_positions, out["decode_cycles"], out["decode_seconds"])
    return {"sequences": [seq], "seed": seed or 0,
            "stats": {"target": lm.target_name, "batch": 1, "slots": 1, "mode": "firmware",
                      "prefill": prefill.as_dict(), "decode": decode.as_dict()}}
