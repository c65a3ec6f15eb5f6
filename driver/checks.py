"""The rules every command's arguments and inputs are held to, checked before a simulator starts,
a model compiles or a byte is uploaded.

Each rule is written once here. The command line uses them as argparse types, so a bad value is
refused while the arguments are read; the library calls that take the same values (the sampler,
``LoadedModel.generate``) call the same functions. One message style: what was wrong, the value
given, what is allowed.
"""

import argparse
import math
import os

SEED_MAX = (1 << 64) - 1      # llama2.c's xorshift64* state is 64 bits; 0 would stay 0 for ever


class UsageError(ValueError):
    """An argument or input that the command cannot take (exit status 2)."""


def _parse_int(text):
    text = str(text).strip()
    try:
        return int(text, 0)
    except ValueError:
        return int(text, 10)        # "010": int(.., 0) refuses leading zeros


def _argument(what, convert, kind, lo, hi, note):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not {kind}") from None
        check_range(what, value, lo, hi, note, argparse.ArgumentTypeError)
        return value
    parse.__name__ = what           # argparse names the type in its own messages
    return parse


def integer(what, lo=None, hi=None, note=""):
    """An argparse type: an integer in [lo, hi] (either end open when None)."""
    return _argument(what, _parse_int, "an integer", lo, hi, note)


def real(what, lo=None, hi=None, note=""):
    """An argparse type: a finite number in [lo, hi] (NaN and infinities are refused)."""
    return _argument(what, float, "a number", lo, hi, note)


def check_range(what, value, lo=None, hi=None, note="", error=UsageError):
    """Raise ``error`` unless ``value`` is a finite number in [lo, hi]."""
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{what} {value} is not allowed: it must be a finite number{_bounds(lo, hi)}{note}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{what} {value} is out of range: it must be{_bounds(lo, hi)}{note}")
    return value


def _bounds(lo, hi):
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


# The sampling values (llama2.c's -t, -p, -s) ---------------------------------------------------------

def check_temperature(t, error=UsageError):
    return check_range("temperature", t, 0.0, None, " (0 = greedy)", error)


def check_topp(p, error=UsageError):
    return check_range("top-p", p, 0.0, 1.0, " (0 or 1: sample from the whole distribution)", error)


def check_seed(seed, sequences=1, error=UsageError):
    """A generate seed: 0 (take one from the clock) or 1..SEED_MAX; sequence i of a batch uses
    seed + i, so the last one must stay below 2**64 too."""
    check_range("seed", seed, 0, SEED_MAX, " (0 = from the clock)", error)
    if seed and seed + sequences - 1 > SEED_MAX:
        raise error(f"seed {seed} is out of range for {sequences} sequences: sequence i uses seed + i, "
                    f"which must stay <= {SEED_MAX}")
    return seed


temperature = real("temperature", 0.0, None, " (0 = greedy)")
topp = real("top-p", 0.0, 1.0, " (0 or 1: sample from the whole distribution)")
seed = integer("seed", 0, SEED_MAX, " (0 = from the clock)")
rng_seed = integer("seed", 0, SEED_MAX)


# Files ------------------------------------------------------------------------------------------------

def check_output_file(path, what="output file", keep_text=False):
    """A file the command will write: its folder must exist and be writable, and the path must
    not be a folder; with ``keep_text`` (a page whose other sections stay) an existing file must
    be UTF-8 text. Checked before the work whose result it holds."""
    if not path:
        raise UsageError(f"{what} is an empty path")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a folder, not a file")
    if not os.path.isdir(folder):
        raise UsageError(f"{what} {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{what} {path!r} is not writable")
    if keep_text and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                f.read()
        except UnicodeDecodeError as e:
            raise UsageError(f"{what} {path!r} is not UTF-8 text ({e.reason} at byte {e.start}): its "
                             f"sections cannot be rewritten in place") from None
    return path


def check_input_file(path, what="input file"):
    """A file the command will read: a regular file (not a folder, a device or a FIFO, which could
    hang a read), readable; an empty path is refused rather than taken as "none"."""
    if not path:
        raise UsageError(f"{what} is an empty path")
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path!r} does not exist" if not os.path.exists(path)
                         else f"{what} {path!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path!r} is not readable")
    return path


# Tokens and prompts -----------------------------------------------------------------------------------

def check_tokens(tokens, vocab, positions, what, room):
    """Token ids for a run: at least one, each in [0, vocab), no more than ``positions`` (``room``
    says which limit that is). Used where the ids are read (a token file, the prompts) and where
    they are run (LoadedModel, the firmware's loop), so each says the same."""
    if not tokens:
        raise UsageError(f"{what} holds no token ids")
    bad = next((t for t in tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise UsageError(f"{what}: token id {bad} is outside the vocabulary [0, {vocab})")
    if len(tokens) > positions:
        raise UsageError(f"{what}: {len(tokens)} tokens exceed {room} of {positions} positions")
    return tokens


def check_prompt_fits(tokenizer, text, positions, what="generate"):
    """Refuse a prompt that cannot fit ``positions`` before it is tokenised (the merges cost time
    quadratic in its length): no token covers more bytes than the tokenizer's longest piece."""
    low = tokenizer.min_tokens(text)
    if low > positions:
        raise UsageError(f"{what}: the prompt ({len(text)} characters) needs at least {low} tokens (BOS "
                         f"included), more than the {positions} positions it may use (-n, capped by the context)")
