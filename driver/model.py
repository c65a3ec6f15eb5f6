"""llama2.c checkpoints: config and weights, with every malformed file named as such.

Only the legacy fp32 format (28-byte header) for now; versions 1 and 2 ("ak42") come with
issue 4. A negative vocab_size in the header means an unshared classifier (``wcls`` follows).
"""

import struct
from dataclasses import dataclass

import numpy as np


class ModelFormatError(ValueError):
    """The file is not a llama2.c checkpoint this loader can read, or is damaged."""


@dataclass(frozen=True)
class Config:
    dim: int            # transformer width
    hidden_dim: int     # FFN width
    n_layers: int
    n_heads: int
    n_kv_heads: int     # < n_heads: grouped-query attention
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_size(self):
        return self.dim // self.n_heads

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_size

    def validate(self):
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ModelFormatError(f"header field {name} = {getattr(self, name)} must be positive")
        if self.dim % self.n_heads:
            raise ModelFormatError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ModelFormatError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_size % 2:
            raise ModelFormatError(f"head size {self.head_size} is odd: RoPE rotates pairs")


@dataclass
class Model:
    config: Config
    weights: dict       # name -> float32 array, shapes in LEGACY_LAYOUT order

    def layer(self, name, l):
        return self.weights[name][l]


def _layout(c):
    """Tensor names and shapes in file order. Matrices are (out, in): y = W @ x."""
    L, d, h, kv = c.n_layers, c.dim, c.hidden_dim, c.kv_dim
    hs = c.head_size
    layout = [
        ("token_embedding", (c.vocab_size, d)),
        ("rms_att", (L, d)),
        ("wq", (L, d, d)),
        ("wk", (L, kv, d)),
        ("wv", (L, kv, d)),
        ("wo", (L, d, d)),
        ("rms_ffn", (L, d)),
        ("w1", (L, h, d)),
        ("w2", (L, d, h)),
        ("w3", (L, h, d)),
        ("rms_final", (d,)),
        ("freq_cis_real", (c.seq_len, hs // 2)),   # unused: RoPE is recomputed
        ("freq_cis_imag", (c.seq_len, hs // 2)),
    ]
    if not c.shared_classifier:
        layout.append(("wcls", (c.vocab_size, d)))
    return layout


def load_legacy(path):
    """Read a legacy llama2.c fp32 checkpoint."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ModelFormatError(f"cannot read model {path}: {e}") from None
    if len(blob) < 28:
        raise ModelFormatError(f"{path}: {len(blob)} bytes is shorter than the 28-byte llama2.c header")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", blob[:28])
    config = Config(dim, hidden, n_layers, n_heads, n_kv_heads, abs(vocab), seq_len, vocab > 0)
    config.validate()
    layout = _layout(config)
    need = 28 + 4 * sum(int(np.prod(shape)) for _, shape in layout)
    if len(blob) < need:
        raise ModelFormatError(f"{path}: truncated: the header promises {need} bytes, the file has {len(blob)}")
    if len(blob) > need:
        raise ModelFormatError(f"{path}: {len(blob) - need} bytes more than the header describes "
                               f"(not a legacy fp32 checkpoint, or a wrong header)")
    weights, offset = {}, 28
    for name, shape in layout:
        count = int(np.prod(shape))
        weights[name] = np.frombuffer(blob, dtype="<f4", count=count, offset=offset).reshape(shape)
        offset += 4 * count
    if config.shared_classifier:
        weights["wcls"] = weights["token_embedding"]
    for name, w in weights.items():
        if not np.all(np.isfinite(w)):
            raise ModelFormatError(f"{path}: tensor {name} holds NaN or infinity")
    return Model(config, weights)


def save_legacy(model, path):
    """Write ``model`` as a legacy llama2.c fp32 checkpoint (negative vocab_size when the
    classifier is not shared)."""
    c = model.config
    vocab = c.vocab_size if c.shared_classifier else -c.vocab_size
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.seq_len))
        for name, shape in _layout(c):
            w = np.asarray(model.weights[name], dtype="<f4")
            if w.shape != shape:
                raise ValueError(f"save: tensor {name} has shape {w.shape}, the config needs {shape}")
            f.write(w.tobytes())


def random_model(config, seed=0, scale=None):
    """A random-weight model of ``config`` (for shapes nobody has to download)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in _layout(config):
        if name.startswith("rms"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.startswith("freq"):
            w = np.zeros(shape)
        else:
            fan_in = shape[-1]
            w = rng.standard_normal(shape) * (scale or fan_in ** -0.5)
        weights[name] = w.astype(np.float32)
    if config.shared_classifier:
        weights["wcls"] = weights["token_embedding"]
    return Model(config, weights)
