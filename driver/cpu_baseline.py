"""The CPU baseline: llama2.c's fp32 forward pass in C (driver/cpu/forward.c), one thread.

Built with the system C compiler (``$CC``, else ``cc``) at -O3 -march=native on first use and
kept in the cache under a hash of the source, the flags, the compiler and the CPU; ``run`` times
a Model's decode on this machine and can return the logits to compare with driver.reference.
"""

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import tempfile

import numpy as np

from driver.cache import cache_root
from driver.model import save_legacy

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu", "forward.c")
CFLAGS = ["-O3", "-march=native", "-std=gnu99"]
THREADS = 1          # no OpenMP: the baseline is one core


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler():
    cc = shlex.split(os.environ.get("CC", "cc"))
    if not shutil.which(cc[0]):
        raise RuntimeError(f"the CPU baseline needs a C compiler: {cc[0]!r} not found "
                           f"(install gcc, e.g. `apt-get install gcc`, or set CC)")
    return cc


def build():
    """Path of the compiled baseline, compiling it first if the cache has none."""
    cc = _compiler()
    version = subprocess.run(cc + ["--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256(repr((cc, CFLAGS, version, cpu_name(), platform.machine())).encode())
    with open(SOURCE, "rb") as f:
        h.update(f.read())
    directory = os.path.join(cache_root(), "cpu-" + h.hexdigest()[:16])
    binary = os.path.join(directory, "cpu_forward")
    if os.path.exists(binary):
        return binary
    os.makedirs(directory, exist_ok=True)
    tmp = f"{binary}.{os.getpid()}.tmp"
    r = subprocess.run(cc + CFLAGS + ["-o", tmp, SOURCE, "-lm"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"compiling the CPU baseline failed ({' '.join(cc + CFLAGS)}):\n{r.stderr}")
    os.replace(tmp, binary)
    return binary


def run(model, tokens, repeats=3, logits=False):
    """Feed ``tokens`` at positions 0, 1, … through ``model`` (a driver.model.Model) ``repeats``
    times on one CPU thread. Returns {positions, seconds (best pass), tokens_per_s, threads,
    cpu, cflags} and with ``logits`` the fp32 logits (positions, vocab) of every position."""
    binary = build()
    with tempfile.TemporaryDirectory(prefix="lt-cpu-") as tmp:
        model_path, tokens_path = os.path.join(tmp, "model.bin"), os.path.join(tmp, "tokens.txt")
        logits_path = os.path.join(tmp, "logits.f32")
        save_legacy(model, model_path)
        with open(tokens_path, "w") as f:
            f.write(" ".join(str(int(t)) for t in tokens))
        cmd = [binary, model_path, tokens_path, str(repeats)] + ([logits_path] if logits else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"CPU baseline failed: {r.stderr.strip()}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out.update(cpu=cpu_name(), cflags=" ".join(CFLAGS))
        if logits:
            out["logits"] = np.fromfile(logits_path, "<f4").reshape(len(tokens), model.config.vocab_size)
    return out
