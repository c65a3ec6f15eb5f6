"""Choosing the next token from logits, with llama2.c's semantics and random numbers.

Greedy (temperature 0) is argmax. Otherwise the logits are divided by the temperature and
soft-maxed; with 0 < topp < 1 the draw is restricted to the smallest set of most likely tokens
whose probabilities sum past ``topp`` (nucleus sampling), else it is over the whole
distribution. The coin comes from llama2.c's xorshift generator, so a seed means the same
stream of coins as ``run -s SEED``.
"""

import numpy as np

from driver.checks import SEED_MAX, check_temperature, check_topp

_MASK64 = (1 << 64) - 1


class XorShiftRng:
    """llama2.c's xorshift64* generator: ``random_u32`` and ``random_f32`` in [0, 1)."""

    def __init__(self, seed):
        if not 0 < seed <= SEED_MAX:
            raise ValueError(f"seed {seed} is out of range: xorshift64* takes 1..{SEED_MAX} "
                             f"(0 would stick at 0; larger values do not fit its 64-bit state)")
        self.state = seed

    def random_u32(self):
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & _MASK64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & _MASK64) >> 32

    def random_f32(self):
        return np.float32((self.random_u32() >> 8) / 16777216.0)


def softmax(x):
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max())
    return e / e.sum()


def sample_mult(probs, coin):
    """The first index whose cumulative probability exceeds ``coin``."""
    cdf = np.cumsum(probs, dtype=np.float32)
    above = np.nonzero(coin < cdf)[0]
    return int(above[0]) if len(above) else len(probs) - 1     # rounding: the last index


def sample_topp(probs, topp, coin):
    """Nucleus sampling. Tokens below (1 - topp) / (n - 1) cannot be in the nucleus and are
    dropped before the sort, as llama2.c does to keep the sort short."""
    n = len(probs)
    cutoff = (1.0 - topp) / (n - 1)
    candidates = np.nonzero(probs >= cutoff)[0]
    # Descending probability; equal probabilities keep index order (a stable sort).
    order = candidates[np.argsort(-probs[candidates], kind="stable")]
    cumulative = np.cumsum(probs[order], dtype=np.float32)
    past = np.nonzero(cumulative > topp)[0]
    last = int(past[0]) if len(past) else len(order) - 1
    r = coin * cumulative[last]
    chosen = np.nonzero(r < cumulative[:last + 1])[0]
    return int(order[chosen[0]]) if len(chosen) else int(order[last])


class Sampler:
    """``temperature`` 0 means greedy; ``seed`` seeds llama2.c's generator."""

    def __init__(self, temperature=1.0, topp=0.9, seed=1):
        self.temperature = float(check_temperature(float(temperature)))
        self.topp = float(check_topp(float(topp)))
        self.rng = XorShiftRng(seed)

    @property
    def greedy(self):
        return self.temperature == 0.0

    def sample(self, logits):
        """The next token from float logits (one vector)."""
        logits = np.asarray(logits, np.float32)
        if self.greedy:
            return int(np.argmax(logits))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            scaled = logits / np.float32(self.temperature)
        if not np.all(np.isfinite(scaled)):
            # A temperature so small that a logit overflows float32: the distribution is
            # argmax's, its limit as the temperature goes to 0.
            return int(np.argmax(logits))
        probs = softmax(scaled)
        coin = self.rng.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            return sample_mult(probs, coin)
        return sample_topp(probs, self.topp, coin)
